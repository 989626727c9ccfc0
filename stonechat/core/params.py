"""Handler parameter injection ("easy access params"), resolved once at registration.

``compile_call(handler, endpoint, deps)`` reads the signature a single time and returns
``call(request)``, which builds the arguments from a fixed list of getters. Resolution order
follows Robyn: by annotation, then by reserved name, then path param (when ``:name`` is in the
endpoint) or query param, with coercion by annotation.

A bad or missing value raises ``ParamError``, which dispatch answers with 400.

Annotations core does not know (a Pydantic model) are resolved by a feature: the app passes
``body_model`` (``features/validation.py``), which gives the getter for such an annotation.
``individual_params`` tells OpenAPI which parameters come from the path and the query string.
"""

from __future__ import annotations

import functools
import inspect
import typing
from dataclasses import dataclass
from typing import Any, Callable, Optional, Union

from . import markers as T
from .background import BackgroundTasks, tasks_for
from .datastructures import Headers, Identity, QueryParams, Url
from .errors import ParamError
from .request import Request
from .routing import param_names

_MISSING = inspect.Parameter.empty

_REQUEST_NAMES = frozenset({"r", "req", "request"})
_DEPENDENCY_NAMES = frozenset({"global_dependencies", "router_dependencies"})

Getter = Callable[[Request], Any]
# A feature's resolver for annotations core does not know: the getter, or None if not its own.
BodyModel = Callable[[Any], Optional[Getter]]


def _by_annotation(annotation: Any, body_model: Optional[BodyModel] = None) -> Optional[Getter]:
    if annotation is _MISSING or not isinstance(annotation, type):
        if _is_typeddict(annotation):
            return _json_body
        return None
    if issubclass(annotation, Request):
        return _identity
    if issubclass(annotation, BackgroundTasks):
        return tasks_for
    if issubclass(annotation, QueryParams):
        return lambda r: r.query_params
    if issubclass(annotation, Headers):
        return lambda r: r.headers
    if issubclass(annotation, T.PathParams):
        return lambda r: r.path_params
    if issubclass(annotation, T.JsonBody):
        return _json_body
    if issubclass(annotation, T.Body):
        return lambda r: r.body
    if issubclass(annotation, T.Method):
        return lambda r: r.method
    if issubclass(annotation, Url):
        return lambda r: r.url
    if issubclass(annotation, T.FormData):
        return lambda r: r.form_data
    if issubclass(annotation, T.Files):
        return lambda r: r.files
    if issubclass(annotation, T.IPAddress):
        return lambda r: r.ip_addr
    if issubclass(annotation, Identity):
        return lambda r: r.identity
    if _is_typeddict(annotation):
        return _json_body
    if body_model is not None:
        return body_model(annotation)
    return None


_BY_NAME: dict[str, Callable[[Request], Any]] = {
    "query_params": lambda r: r.query_params,
    "headers": lambda r: r.headers,
    "path_params": lambda r: r.path_params,
    "body": lambda r: r.body,
    "method": lambda r: r.method,
    "url": lambda r: r.url,
    "ip_addr": lambda r: r.ip_addr,
    "identity": lambda r: r.identity,
    "form_data": lambda r: r.form_data,
    "files": lambda r: r.files,
}


def _identity(r: Request) -> Request:
    return r


def _is_typeddict(annotation: Any) -> bool:
    return isinstance(annotation, type) and issubclass(annotation, dict) and hasattr(annotation, "__total__")


def _json_body(r: Request) -> Any:
    try:
        return r.json()
    except ValueError as exc:
        raise ParamError(f"Invalid JSON body: {exc}", body={"error": f"Invalid JSON body: {exc}"}) from None


def _coercer(annotation: Any, name: str) -> tuple[Callable[[str], Any], bool, bool]:
    """(convert one string, is_list, is_optional) for an individual parameter's annotation."""
    optional = False
    origin = typing.get_origin(annotation)
    args = typing.get_args(annotation)
    if origin is Union or (origin is not None and str(origin) == "<class 'types.UnionType'>"):
        non_none = [a for a in args if a is not type(None)]
        optional = len(non_none) < len(args)
        annotation = non_none[0] if len(non_none) == 1 else str
        origin = typing.get_origin(annotation)
        args = typing.get_args(annotation)
    if origin in (list, typing.List):
        inner, _, _ = _coercer(args[0] if args else str, name)
        return inner, True, optional
    if annotation is _MISSING or annotation is str or annotation is Any:
        return str, False, optional
    if annotation is bool:
        return _to_bool(name), False, optional
    if annotation in (int, float):
        kind = annotation
        def number(value: str) -> Any:
            try:
                return kind(value)
            except ValueError:
                raise ParamError(f"Invalid value {value!r} for parameter {name!r}: expected {kind.__name__}") from None
        return number, False, optional
    if callable(annotation):
        label = getattr(annotation, "__name__", str(annotation))
        def convert(value: str) -> Any:
            try:
                return annotation(value)
            except (ValueError, TypeError):
                raise ParamError(f"Invalid value {value!r} for parameter {name!r}: expected {label}") from None
        return convert, False, optional
    return str, False, optional


def _to_bool(name: str) -> Callable[[str], bool]:
    def convert(value: str) -> bool:
        lowered = value.lower()
        if lowered in ("true", "1", "yes", "on"):
            return True
        if lowered in ("false", "0", "no", "off", ""):
            return False
        raise ParamError(f"Invalid value {value!r} for parameter {name!r}: expected bool")
    return convert


def _individual(name: str, param: inspect.Parameter, annotation: Any, from_path: bool) -> Callable[[Request], Any]:
    convert, is_list, optional = _coercer(annotation, name)
    default = param.default
    has_default = default is not _MISSING
    missing_value = default if has_default else None

    def missing() -> Any:  # only on the rare path where the value is absent
        if has_default or optional:
            return missing_value
        raise ParamError(f"Missing required parameter: {name!r}")

    # Three specialised closures so the per-request path has no branching on the kind.
    if from_path:
        def from_path_params(r: Request) -> Any:
            value = r.path_params.get(name)
            return missing() if value is None else convert(value)
        return from_path_params

    if is_list:
        def from_query_list(r: Request) -> Any:
            values = r.query_params.get_all(name)
            return [convert(v) for v in values] if values else missing()
        return from_query_list

    def from_query(r: Request) -> Any:
        value = r.query_params.get(name)
        return missing() if value is None else convert(value)
    return from_query


def _type_hints(handler: Callable) -> dict[str, Any]:
    try:
        return typing.get_type_hints(handler)
    except Exception:
        return {}


def resolve_getters(handler: Callable, endpoint: str, global_deps: dict, router_deps: dict,
                    skip_first: bool = False,
                    body_model: Optional[BodyModel] = None) -> list[tuple[str, Callable[[Request], Any]]]:
    """One getter per handler parameter, in signature order."""
    path_names = set(param_names(endpoint))
    hints = _type_hints(handler)
    getters = []
    params = list(inspect.signature(handler).parameters.values())
    if skip_first:
        params = params[1:]
    for param in params:
        if param.kind in (param.VAR_POSITIONAL, param.VAR_KEYWORD):
            continue
        name = param.name
        annotation = hints.get(name, param.annotation)
        getter = _by_annotation(annotation, body_model)
        if getter is None:
            if name in _REQUEST_NAMES:
                getter = _identity
            elif name in _BY_NAME:
                getter = _BY_NAME[name]
            elif name == "global_dependencies":
                getter = (lambda d: lambda r: d)(global_deps)
            elif name == "router_dependencies":
                getter = (lambda d: lambda r: d)(router_deps)
            else:
                getter = _individual(name, param, annotation, name in path_names)
        getters.append((name, getter))
    return getters


def compile_call(handler: Callable, endpoint: str, global_deps: dict, router_deps: dict,
                 body_model: Optional[BodyModel] = None) -> Callable[[Request], Any]:
    """``call(request)`` for ``handler``: its arguments by keyword, as Robyn passes them (so a
    decorator around a handler can read ``kwargs["request"]``); a lone parameter annotated
    ``Request`` gets it positionally, as in Robyn.

    The call is generated once as real code (``handler(id=g0(request), request=request)``):
    no per-request loop or dict, the cheapest call Python has for the signature."""
    getters = resolve_getters(handler, endpoint, global_deps, router_deps, body_model=body_model)
    if not getters:
        return lambda request: handler()
    if len(getters) == 1 and getters[0][1] is _identity and _annotated_request(handler, getters[0][0]):
        return handler
    positional_only = {p.name for p in inspect.signature(handler).parameters.values()
                       if p.kind is p.POSITIONAL_ONLY}
    namespace: dict[str, Any] = {"handler": handler}
    arguments = []
    for i, (name, getter) in enumerate(getters):
        value = "request" if getter is _identity else f"g{i}(request)"
        if getter is not _identity:
            namespace[f"g{i}"] = getter
        arguments.append(value if name in positional_only else f"{name}={value}")
    source = f"def call(request):\n    return handler({', '.join(arguments)})\n"
    exec(compile(source, f"<stonechat call of {getattr(handler, '__qualname__', handler)}>", "exec"), namespace)
    return namespace["call"]


def uses_background_tasks(handler: Callable, endpoint: str) -> bool:
    """Whether ``handler`` has a ``BackgroundTasks`` parameter (its route then attaches the
    tasks to the response; routes without one pay nothing)."""
    return any(getter is tasks_for for _, getter in resolve_getters(handler, endpoint, {}, {}))


@dataclass(frozen=True)
class IndividualParam:
    """A handler parameter filled from the path or the query string (phase 3 above), as
    OpenAPI documents it."""

    name: str
    annotation: Any        # None when the parameter has none (a string)
    in_path: bool
    required: bool
    is_list: bool          # list[T]: every value of a repeated query key


def individual_params(handler: Callable, endpoint: str,
                      claimed: Optional[Callable[[Any], bool]] = None) -> list[IndividualParam]:
    """The parameters of ``handler`` that ``resolve_getters`` fills from the path or the query
    string; ``claimed(annotation)`` is true for annotations a feature resolves (a body model)."""
    path_names = set(param_names(endpoint))
    hints = _type_hints(handler)
    found = []
    for param in inspect.signature(handler).parameters.values():
        if param.kind in (param.VAR_POSITIONAL, param.VAR_KEYWORD):
            continue
        name = param.name
        annotation = hints.get(name, param.annotation)
        if _by_annotation(annotation) is not None or (claimed is not None and claimed(annotation)):
            continue
        if name in _REQUEST_NAMES or name in _BY_NAME or name in _DEPENDENCY_NAMES:
            continue
        _, is_list, optional = _coercer(annotation, name)
        in_path = name in path_names
        required = in_path or (param.default is _MISSING and not optional)
        found.append(IndividualParam(name, None if annotation is _MISSING else annotation, in_path,
                                     required, is_list))
    return found


def _annotated_request(handler: Callable, name: str) -> bool:
    try:
        annotation = typing.get_type_hints(handler).get(name)
    except Exception:
        annotation = None
    return isinstance(annotation, type) and issubclass(annotation, Request)


def is_async_callable(fn: Callable) -> bool:
    return inspect.iscoroutinefunction(fn) or inspect.iscoroutinefunction(getattr(fn, "__call__", None))


def returns_coroutine(fn: Callable) -> bool:
    """Whether calling ``fn`` makes a native coroutine: its code (through ``functools.partial``,
    a bound method, an object's ``__call__``) is an ``async def``. What the server steps with
    ``yield from`` (a function only marked as a coroutine function may return any awaitable)."""
    while isinstance(fn, functools.partial):
        fn = fn.func
    code = getattr(getattr(fn, "__func__", fn), "__code__", None)
    if code is None:
        call = getattr(type(fn), "__call__", None)
        code = getattr(call, "__code__", None)
    return code is not None and bool(code.co_flags & inspect.CO_COROUTINE)


def arity(fn: Callable) -> int:
    try:
        return len([p for p in inspect.signature(fn).parameters.values()
                    if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)])
    except (TypeError, ValueError):
        return 1


__all__ = ["BodyModel", "IndividualParam", "compile_call", "individual_params", "resolve_getters",
           "uses_background_tasks",
           "is_async_callable", "returns_coroutine", "arity"]
