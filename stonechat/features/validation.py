"""Pydantic at a route's edges (Robyn's §19): the request body a model parameter receives, and
the ``response_model`` a dict return is validated through.

* A parameter annotated with a ``pydantic.BaseModel`` subclass gets
  ``Model.model_validate_json(body)``. Invalid JSON, an empty body and failed validation all
  answer 422 ``{"detail": [<Pydantic's error dicts, made JSON-safe>], "error": "Validation
  Error"}`` (Robyn's body) and the handler is not called.
* At most one such parameter per handler: the whole body is parsed into it
  (``MultiplePydanticBodyError`` at registration, as Robyn).
* ``response_model=Model``: a returned dict is validated through the model and sent as the
  model's JSON; other returns pass untouched. Returned models and lists of models are plain
  conversion (``core/conversion.py``).

Pydantic stays optional: nothing here imports it; a model is recognised by
``core/models.py`` only once the app itself imported Pydantic. Everything is decided at
registration; a route without a model pays nothing.
"""

from __future__ import annotations

import inspect
import logging
import sys
import typing
from typing import Any, Callable, Optional

from ..core.errors import ParamError
from ..core.models import is_model_class
from ..core.params import Getter
from ..core.request import Request

logger = logging.getLogger("stonechat")


class MultiplePydanticBodyError(TypeError):
    """A handler declares more than one Pydantic body parameter (raised at registration)."""

    def __init__(self, handler_name: str, param_names: list[str]) -> None:
        super().__init__(
            f"Handler '{handler_name}' has multiple Pydantic body parameters {param_names}. Only one "
            f"Pydantic body parameter per handler is supported: the whole request body is parsed "
            f"into that single model.")


def body_model(annotation: Any) -> Optional[Getter]:
    """The getter for a parameter annotated with a Pydantic model (``core/params.py`` hook)."""
    if not is_model_class(annotation):
        return None
    validate_json = annotation.model_validate_json
    validation_error = sys.modules["pydantic"].ValidationError

    def validated_body(request: Request) -> Any:
        try:
            return validate_json(request.body_bytes)
        except validation_error as exc:
            raise ParamError("Validation Error", status=422,
                             body={"detail": json_safe_errors(exc.errors()), "error": "Validation Error"}) from None
    return validated_body


def json_safe_errors(errors: list[dict]) -> list[dict]:
    """Pydantic's error dicts with what JSON cannot hold made text: a bytes ``input`` (the raw
    body, for invalid JSON) decoded, ``loc`` as a list, ``ctx`` values as strings (they may hold
    the exception a validator raised)."""
    safe = []
    for error in errors:
        error = dict(error)
        value = error.get("input")
        if isinstance(value, (bytes, bytearray)):
            error["input"] = bytes(value).decode("utf-8", "replace")
        if "loc" in error:
            error["loc"] = list(error["loc"])
        ctx = error.get("ctx")
        if isinstance(ctx, dict):
            error["ctx"] = {key: str(item) for key, item in ctx.items()}
        safe.append(error)
    return safe


def check_handler(handler: Callable, method: str, endpoint: str) -> None:
    """Registration-time checks of a handler's model parameters (Robyn's)."""
    try:
        hints = typing.get_type_hints(handler)
    except Exception:
        hints = {}
    params = inspect.signature(handler).parameters
    models = [name for name, param in params.items() if is_model_class(hints.get(name, param.annotation))]
    if len(models) > 1:
        raise MultiplePydanticBodyError(getattr(handler, "__name__", str(handler)), models)
    if models and method in ("GET", "HEAD"):
        logger.warning("Handler '%s' on %s '%s' uses Pydantic body parameter(s) %s, but %s requests "
                       "typically do not carry a request body",
                       getattr(handler, "__name__", handler), method, endpoint, models, method)


def with_response_model(call: Callable[[Request], Any], model: Any, is_async: bool) -> Callable[[Request], Any]:
    """``call`` whose dict result is validated through ``model`` (a Pydantic model; any other
    ``response_model`` only documents the route and leaves ``call`` as it is)."""
    if not is_model_class(model):
        return call
    validate = model.model_validate

    def through_model(result: Any) -> Any:
        return validate(result) if isinstance(result, dict) else result

    if is_async:
        async def async_call(request: Request) -> Any:
            return through_model(await call(request))
        return async_call

    def sync_call(request: Request) -> Any:
        return through_model(call(request))
    return sync_call


__all__ = ["MultiplePydanticBodyError", "body_model", "check_handler", "json_safe_errors", "with_response_model"]
