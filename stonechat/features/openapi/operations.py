"""The generated spec: one OpenAPI operation per registered route, read from the routes'
``RouteSpec`` records (what the user declared), never from the compiled routes.

Shape as Robyn's (key order summary, description, parameters, tags, deprecated, security,
requestBody, responses; ``:p`` → ``{p}`` as a required path parameter; ``summary`` =
``openapi_name``; ``description`` = the docstring; query parameters from a ``QueryParams``
subclass; bodies from ``Body``/``JsonBody`` subclasses, TypedDicts and Pydantic models; the
success response from the return annotation or ``response_model`` under ``status_code``;
``responses=`` added), with what stonechat does besides written down too, so the spec never
contradicts the server:

* path parameters typed from the handler's annotation (``id: int`` → integer; Robyn: string),
  ``*rest`` as ``{rest}``, and the handler's individual query parameters (``q: int = 0``);
* the answers the framework itself gives: 400 (a bad parameter or JSON body), 401 (an
  ``auth_required`` route), 422 (a Pydantic body, with Robyn's error body);
* the media type of the success response as the route sends it: ``str`` → text/plain,
  ``bytes`` → application/octet-stream, scalars (int, datetime, ...) as text/plain (listed with
  Robyn's application/json), no annotation or a ``Response`` → ``*/*``, ``None`` → no body.
"""

from __future__ import annotations

import copy
import enum
import inspect
import logging
import typing
from typing import Any, Iterable, Literal, Optional, get_origin

from ...core.datastructures import QueryParams
from ...core.markers import Body, FormData, Files, JsonBody
from ...core.models import is_model_class
from ...core.params import individual_params
from ...core.registry import RouteSpec
from ...core.response import FileResponse, Response, StreamingResponse
from ...core.routing import param_names
from .document import OpenAPI
from .schemas import LEAF_SCHEMAS, SchemaBuilder, is_union, own_annotations

logger = logging.getLogger("stonechat")

# Path Item Object fields: CONNECT has none, so CONNECT routes are not documented.
DOCUMENTED_METHODS = frozenset({"GET", "PUT", "POST", "DELETE", "OPTIONS", "HEAD", "PATCH", "TRACE"})

SUCCESS = "Successful Response"
_NO_ANNOTATION = inspect.Parameter.empty

def openapi_path(endpoint: str) -> str:
    """``/users/:id/*rest`` → ``/users/{id}/{rest}``."""
    return "/".join("{" + seg[1:] + "}" if seg[:1] in (":", "*") and len(seg) > 1 else seg
                    for seg in endpoint.split("/"))


def security_schemes(auth_handlers: Iterable[Any], existing: dict[str, Any]) -> dict[str, Any]:
    """The schemes ``configure_authentication`` implies (Robyn: a Bearer token getter →
    ``BearerAuth``; any other → ``ApiKeyAuth`` on the Authorization header, unless a scheme
    exists). Schemes the user declared win."""
    found: dict[str, Any] = {}
    for handler in auth_handlers:
        scheme = str(getattr(getattr(handler, "token_getter", None), "scheme", "") or "")
        if scheme.lower().startswith("bearer"):
            found.setdefault("BearerAuth", {"type": "http", "scheme": "bearer"})
        elif not existing and not found:
            found["ApiKeyAuth"] = {"type": "apiKey", "in": "header", "name": "Authorization"}
    return {name: scheme for name, scheme in found.items() if name not in existing}


def generate(openapi: OpenAPI, routes: Iterable[RouteSpec], auth_handlers: Iterable[Any] = ()) -> dict[str, Any]:
    """The whole document for ``routes`` (a fresh dict; ``openapi`` is not changed)."""
    document = copy.deepcopy(openapi.openapi_spec)
    document.setdefault("paths", {})
    components = document.setdefault("components", {})
    schemes = components.setdefault("securitySchemes", {})
    schemes.update(security_schemes(auth_handlers, schemes))
    builder = SchemaBuilder(components.setdefault("schemas", {}))
    for spec in routes:
        if not spec.include_in_schema or spec.method not in DOCUMENTED_METHODS:
            continue
        try:
            found = operation(spec, builder, list(schemes))
        except Exception as exc:  # e.g. a model field Pydantic has no JSON Schema for
            logger.warning("OpenAPI: %s is left out of the spec: %s: %s", spec.name, type(exc).__name__, exc)
            continue
        document["paths"].setdefault(openapi_path(spec.endpoint), {})[spec.method.lower()] = found
    for name in [name for name, bucket in components.items() if not bucket]:
        del components[name]  # an empty securitySchemes would show an empty "Authorize" dialog
    return document


def _hints(handler: Any) -> dict[str, Any]:
    try:
        return typing.get_type_hints(handler)
    except Exception:
        return {}


def operation(spec: RouteSpec, builder: SchemaBuilder, scheme_names: list[str]) -> dict[str, Any]:
    handler = spec.handler
    signature = inspect.signature(handler)
    hints = _hints(handler)
    found: dict[str, Any] = {
        "summary": spec.openapi_name,
        "description": inspect.getdoc(handler) or "No description provided",
        "parameters": [],
        "tags": list(spec.openapi_tags),
    }
    if spec.deprecated:
        found["deprecated"] = True
    if spec.auth_required and scheme_names:
        found["security"] = [{name: []} for name in scheme_names]

    individual = {p.name: p for p in individual_params(handler, spec.endpoint, is_model_class)}
    parameters = found["parameters"]
    for name in param_names(spec.endpoint):
        param = individual.get(name)
        schema = builder.parameter(param.annotation if param is not None else str, False)
        parameters.append({"name": name, "in": "path", "required": True, "schema": schema})
    listed = {p["name"] for p in parameters}
    query_class = _query_class(signature, hints)
    if query_class is not None:
        for name, annotation in own_annotations(query_class, QueryParams if issubclass(query_class, QueryParams)
                                                else None).items():
            if name not in listed:
                parameters.append({"name": name, "in": "query", "required": False,
                                   "schema": {"type": builder.query_type(annotation)}})
                listed.add(name)
    for param in individual.values():
        if not param.in_path and param.name not in listed:
            parameters.append({"name": param.name, "in": "query", "required": param.required,
                               "schema": builder.parameter(param.annotation, param.is_list)})

    body, body_kind = _request_body(signature, hints, builder)
    if body is not None:
        found["requestBody"] = body

    responses: dict[str, Any] = {}
    success = str(spec.status_code or 200)
    answer = spec.response_model if spec.response_model is not None else hints.get("return", signature.return_annotation)
    responses[success] = success_response(answer, builder, spec.status_code or 200)
    reads_form = any(p.annotation in (FormData, Files) or hints.get(name) in (FormData, Files)
                     or name in ("form_data", "files") for name, p in signature.parameters.items())
    if individual or body_kind == "json" or reads_form:
        responses.setdefault("400", {"description": "Bad Request: a parameter or the request body is invalid"})
    if spec.auth_required:
        responses.setdefault("401", {"description": "Unauthorized"})
    if body_kind == "model":
        responses.setdefault("422", {"description": "Validation Error",
                                     "content": {"application/json": {"schema": builder.validation_error()}}})
    if spec.responses:
        responses.update(declared_responses(spec.responses, builder))
    found["responses"] = responses
    return found


def _query_class(signature: inspect.Signature, hints: dict[str, Any]) -> Optional[type]:
    """A ``QueryParams`` subclass the handler declares its query parameters with (Robyn: the
    default of a ``query_params`` parameter, overridden by an annotation)."""
    chosen = None
    param = signature.parameters.get("query_params")
    if param is not None and inspect.isclass(param.default):
        chosen = param.default
    for name, param in signature.parameters.items():
        annotation = hints.get(name, param.annotation)
        if inspect.isclass(annotation) and issubclass(annotation, QueryParams):
            chosen = annotation
    return chosen


def _request_body(signature: inspect.Signature, hints: dict[str, Any],
                  builder: SchemaBuilder) -> tuple[Optional[dict[str, Any]], str]:
    """The Request Body Object and how the framework reads the body: ``"model"`` (validated by
    Pydantic: 422), ``"json"`` (parsed: 400 when it is not JSON), ``"raw"`` or ``""`` (none)."""
    chosen: Any = None
    param = signature.parameters.get("body")
    if param is not None and inspect.isclass(param.default):
        chosen = param.default
    for name, param in signature.parameters.items():
        annotation = hints.get(name, param.annotation)
        if is_model_class(annotation) or typing.is_typeddict(annotation) or (
                inspect.isclass(annotation) and issubclass(annotation, (JsonBody, Body))):
            chosen = annotation
    if chosen is None:
        return None, ""
    if is_model_class(chosen):
        return {"content": {"application/json": {"schema": builder.model(chosen)}}, "required": True}, "model"
    stop = JsonBody if issubclass(chosen, JsonBody) else Body if issubclass(chosen, Body) else None
    schema = {"type": "object", "properties": builder.properties(chosen, stop)}
    body: dict[str, Any] = {"content": {"application/json": {"schema": schema}}}
    if typing.is_typeddict(chosen) or issubclass(chosen, JsonBody):
        body["required"] = True  # no body is not JSON: the framework answers 400
        return body, "json"
    return body, "raw"


def _is_scalar(annotation: Any) -> bool:
    """A return sent as ``str(value)`` in text/plain."""
    if annotation in (int, float, bool):
        return True
    if isinstance(annotation, type) and (annotation in LEAF_SCHEMAS or issubclass(annotation, enum.Enum)):
        return annotation is not bytes
    return get_origin(annotation) is Literal


def success_response(annotation: Any, builder: SchemaBuilder, status: int) -> dict[str, Any]:
    found: dict[str, Any] = {"description": SUCCESS}
    if annotation is None or annotation is type(None) or status in (204, 304):
        return found
    if (annotation is _NO_ANNOTATION or isinstance(annotation, str)
            or (inspect.isclass(annotation) and issubclass(annotation, (Response, StreamingResponse, FileResponse)))):
        found["content"] = {"*/*": {"schema": {}}}
        return found
    schema = builder.field("response object", annotation)
    if annotation is str:
        found["content"] = {"text/plain": {"schema": schema}}
    elif annotation is bytes:
        found["content"] = {"application/octet-stream": {"schema": schema}}
    elif _is_scalar(annotation) or (is_union(annotation) and all(_is_scalar(a) or a is str
                                                                   for a in typing.get_args(annotation))):
        found["content"] = {"text/plain": {"schema": schema}, "application/json": {"schema": copy.deepcopy(schema)}}
    else:
        found["content"] = {"application/json": {"schema": schema}}
    return found


def declared_responses(responses: dict[Any, Any], builder: SchemaBuilder) -> dict[str, Any]:
    """``responses={404: "Not found", 422: {"description": ..., "model": Error}}`` → Response
    Objects: a string is the description; a dict is a Response Object whose ``model`` becomes
    its application/json schema; anything else is ignored with a warning."""
    built: dict[str, Any] = {}
    for status, value in responses.items():
        key = str(status)
        if isinstance(value, str):
            built[key] = {"description": value}
            continue
        if not isinstance(value, dict):
            logger.warning("OpenAPI response for status %s is neither a str nor a dict; ignored", key)
            continue
        response = copy.deepcopy({k: v for k, v in value.items() if k != "model"})
        response.setdefault("description", "")
        model = value.get("model")
        if model is not None:
            response.setdefault("content", {})["application/json"] = {"schema": builder.field("response object", model)}
        built[key] = response
    return built


__all__ = ["DOCUMENTED_METHODS", "generate", "openapi_path", "operation", "security_schemes"]
