"""``app.mcp``: a Model Context Protocol server at ``POST /mcp`` (Robyn's ``robyn.mcp``).

JSON-RPC 2.0 over plain HTTP POST, the "Streamable HTTP" transport of MCP without sessions
or server-sent events: each POST carries one message (or a batch) and the answer is one
``application/json`` body; a POST of notifications only is answered ``202 Accepted``; ``GET
/mcp`` is 405 (no server-initiated stream). That is all the official ``mcp`` client needs to
connect, list and call: it probes ``server/discover`` (the 2026 stateless protocol), gets
``-32022`` with the versions spoken here, and falls back to the ``initialize`` handshake.

Protocol versions: 2024-11-05 (Robyn's), 2025-03-26, 2025-06-18, 2025-11-25; ``initialize``
answers with the client's version when it is one of these, else the newest. A request whose
``MCP-Protocol-Version`` header names another version gets HTTP 400 (the spec's rule) with
that error. Methods: ``initialize``, ``ping``, ``tools/list|call``, ``resources/list|read``,
``resources/templates/list``, ``prompts/list|get``; notifications are accepted and ignored.

Everything a call needs is worked out when the decorator runs: the tool's JSON schema and
argument checks from its signature, a resource template's regex. Bad input is a JSON-RPC
error, never an HTTP 500: -32700 (not JSON), -32600 (not a request), -32601 (unknown method),
-32602 (unknown tool or prompt, missing or mistyped arguments), -32002 (no such resource);
an exception inside a tool is a result with ``isError: true`` (so the model sees it), inside a
resource or prompt a -32603 error. A browser page may call the endpoint only from a loopback
origin or one in ``app.mcp.allowed_origins`` (the spec's guard against DNS rebinding; other
clients send no ``Origin``). Differences from Robyn, each because Robyn is broken
there: URI templates are listed by ``resources/templates/list`` (as the spec says, instead of
as if they were resources), a tool taking one ``args`` dict with an explicit ``input_schema``
(Robyn's own example) receives the arguments (Robyn calls it with keywords and fails), dict
and list results are JSON (Robyn: Python's ``repr``), template values are percent-decoded and
converted to the parameter's annotated type.
"""

from __future__ import annotations

import base64
import inspect
import logging
import re
import typing
from dataclasses import asdict, dataclass
from typing import Any, Callable, Optional, Union
from urllib.parse import unquote, urlsplit

import orjson

from ..core.request import Request
from ..core.response import Response

logger = logging.getLogger("stonechat.mcp")

PROTOCOL_VERSIONS = ("2025-11-25", "2025-06-18", "2025-03-26", "2024-11-05")  # newest first
LATEST_PROTOCOL_VERSION = PROTOCOL_VERSIONS[0]
ENDPOINT = "/mcp"

PARSE_ERROR = -32700
INVALID_REQUEST = -32600
METHOD_NOT_FOUND = -32601
INVALID_PARAMS = -32602
INTERNAL_ERROR = -32603
RESOURCE_NOT_FOUND = -32002
UNSUPPORTED_PROTOCOL_VERSION = -32022

_JSON_HEADERS = {"content-type": "application/json"}


class MCPError(Exception):
    """A JSON-RPC error to answer with: ``code``, ``message``, optional ``data``."""

    def __init__(self, code: int, message: str, data: Any = None) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.data = data


# Robyn's records of what is registered (``resources/list`` etc. are made from these).

@dataclass
class MCPResource:
    uri: str
    name: str
    description: Optional[str] = None
    mimeType: Optional[str] = None


@dataclass
class MCPTool:
    name: str
    description: str
    inputSchema: dict


@dataclass
class MCPPrompt:
    name: str
    description: str
    arguments: Optional[list] = None


# -- types: JSON schema from annotations, and the matching check ---------------------------------

_PRIMITIVES: dict[Any, tuple[str, Callable[[Any], bool]]] = {
    str: ("string", lambda v: isinstance(v, str)),
    int: ("integer", lambda v: isinstance(v, int) and not isinstance(v, bool)),
    float: ("number", lambda v: isinstance(v, (int, float)) and not isinstance(v, bool)),
    bool: ("boolean", lambda v: isinstance(v, bool)),
}
_ARRAYS = (list, tuple, set, frozenset)
_JSON_TYPE_CHECKS: dict[str, Callable[[Any], bool]] = {
    "string": lambda v: isinstance(v, str),
    "integer": lambda v: isinstance(v, int) and not isinstance(v, bool),
    "number": lambda v: isinstance(v, (int, float)) and not isinstance(v, bool),
    "boolean": lambda v: isinstance(v, bool),
    "array": lambda v: isinstance(v, list),
    "object": lambda v: isinstance(v, dict),
    "null": lambda v: v is None,
}
_EMPTY = inspect.Parameter.empty


class _Type:
    """One annotation, compiled: its JSON schema, a check for a JSON value, and how to make
    it from a string (URI template values, prompt arguments)."""

    __slots__ = ("schema", "check", "from_text", "name", "validate")

    def __init__(self, annotation: Any) -> None:
        self.validate: Optional[Callable[[Any], Any]] = None  # pydantic models: value → model
        self.from_text: Callable[[str], Any] = str
        self.name = getattr(annotation, "__name__", str(annotation))
        if annotation is _EMPTY or annotation is Any:
            self.schema: dict = {"type": "string"} if annotation is _EMPTY else {}  # Robyn: string
            self.check: Callable[[Any], bool] = lambda v: True
            self.name = "any value"
            return
        origin = typing.get_origin(annotation)
        args = typing.get_args(annotation)
        if annotation in _PRIMITIVES:
            kind, self.check = _PRIMITIVES[annotation]
            self.schema = {"type": kind}
            self.from_text = _TEXT_CONVERTERS.get(annotation, str)
        elif origin is Union or type(annotation).__name__ == "UnionType":
            options = [_Type(a) for a in args if a is not type(None)]
            nullable = len(options) < len(args)
            if len(options) == 1:
                self.schema = dict(options[0].schema)
                self.from_text = options[0].from_text
            else:
                self.schema = {"anyOf": [o.schema for o in options]}
            if nullable:
                self.schema = {"anyOf": [self.schema, {"type": "null"}]} if self.schema else {}
            self.check = _union_check(options, nullable)
            self.name = " or ".join(o.name for o in options) + (" or null" if nullable else "")
        elif origin is typing.Literal:
            values = list(args)
            self.schema = {"enum": values}
            self.check = _literal_check(values)
            self.name = "one of " + ", ".join(repr(x) for x in values)
            if all(isinstance(x, str) for x in values):
                self.from_text = str
        elif annotation in _ARRAYS or origin in _ARRAYS:
            item = _Type(args[0]) if args and origin is not tuple else None
            self.schema = {"type": "array", **({"items": item.schema} if item is not None and item.schema else {})}
            self.check = _array_check(item)
            self.name = "an array"
        elif annotation is dict or origin is dict:
            self.schema = {"type": "object"}
            self.check = lambda v: isinstance(v, dict)
            self.name = "an object"
        elif hasattr(annotation, "model_json_schema") and hasattr(annotation, "model_validate"):
            self.schema = annotation.model_json_schema()  # a pydantic model
            self.check = lambda v: isinstance(v, dict)
            self.validate = annotation.model_validate
            self.name = f"an object ({annotation.__name__})"
        else:
            self.schema = {}
            self.check = lambda v: True


def _union_check(options: list[_Type], nullable: bool) -> Callable[[Any], bool]:
    def check(value: Any) -> bool:
        return (value is None and nullable) or any(o.check(value) for o in options)
    return check


def _literal_check(values: list) -> Callable[[Any], bool]:
    def check(value: Any) -> bool:
        return any(value == x and type(value) is type(x) for x in values)
    return check


def _array_check(item: Optional[_Type]) -> Callable[[Any], bool]:
    def check(value: Any) -> bool:
        return isinstance(value, list) and (item is None or all(item.check(x) for x in value))
    return check


def _to_bool(text: str) -> bool:
    lowered = text.strip().lower()
    if lowered in ("true", "1", "yes", "on"):
        return True
    if lowered in ("false", "0", "no", "off"):
        return False
    raise ValueError(text)


_TEXT_CONVERTERS: dict[Any, Callable[[str], Any]] = {int: int, float: float, bool: _to_bool, str: str}


class _Param:
    __slots__ = ("name", "type", "required", "default")

    def __init__(self, name: str, annotation: Any, default: Any) -> None:
        self.name = name
        self.type = _Type(annotation)
        self.required = default is _EMPTY
        self.default = default


class _Signature:
    """A function's parameters for calls by name: what ``tools/call`` and ``prompts/get`` check."""

    def __init__(self, fn: Callable, what: str) -> None:
        self.fn = fn
        self.what = what
        self.is_async = inspect.iscoroutinefunction(fn)
        try:
            hints = typing.get_type_hints(fn)
        except Exception:  # an annotation that does not resolve: use them as written
            hints = {}
        self.params: list[_Param] = []
        self.var_keyword = False
        for p in inspect.signature(fn).parameters.values():
            if p.name == "self":
                continue
            if p.kind is p.VAR_KEYWORD:
                self.var_keyword = True
                continue
            if p.kind is p.VAR_POSITIONAL:
                continue
            self.params.append(_Param(p.name, hints.get(p.name, p.annotation), p.default))
        self.by_name = {p.name: p for p in self.params}

    def schema(self) -> dict:
        properties = {}
        for p in self.params:
            prop = dict(p.type.schema)
            if not p.required and p.default is not None and _json_able(p.default):
                prop["default"] = p.default
            properties[p.name] = prop
        return {"type": "object", "properties": properties,
                "required": [p.name for p in self.params if p.required]}

    def bind(self, arguments: dict, from_text: bool = False) -> dict:
        """Check ``arguments`` against the parameters: the keyword arguments of the call, or
        ``MCPError(-32602)`` saying what is wrong."""
        unknown = [k for k in arguments if k not in self.by_name]
        if unknown and not self.var_keyword:
            takes = ", ".join(p.name for p in self.params) or "no arguments"
            raise MCPError(INVALID_PARAMS, f"{self.what}: unknown argument(s) {', '.join(map(repr, unknown))} "
                                           f"(it takes {takes})")
        missing = [p.name for p in self.params if p.required and p.name not in arguments]
        if missing:
            raise MCPError(INVALID_PARAMS, f"{self.what}: missing required argument(s) {', '.join(map(repr, missing))}")
        kwargs = {}
        for key, value in arguments.items():
            param = self.by_name.get(key)
            if param is not None:
                value = _convert(param, value, self.what, from_text)
            kwargs[key] = value
        return kwargs


def _convert(param: _Param, value: Any, what: str, from_text: bool) -> Any:
    kind = param.type
    if from_text and isinstance(value, str) and kind.from_text is not str:
        try:
            return kind.from_text(value)
        except ValueError:
            raise MCPError(INVALID_PARAMS, f"{what}: argument {param.name!r} must be {kind.name}, "
                                           f"got {value!r}") from None
    if not kind.check(value):
        raise MCPError(INVALID_PARAMS, f"{what}: argument {param.name!r} must be {kind.name}, "
                                       f"got {_json_type(value)} {_short(value)}")
    if kind.validate is not None:
        try:
            return kind.validate(value)
        except Exception as exc:  # pydantic's ValidationError
            raise MCPError(INVALID_PARAMS, f"{what}: argument {param.name!r} is invalid: {exc}") from None
    return value


def _json_able(value: Any) -> bool:
    try:
        orjson.dumps(value)
        return True
    except TypeError:
        return False


def _json_type(value: Any) -> str:
    for name, check in _JSON_TYPE_CHECKS.items():
        if check(value):
            return name
    return type(value).__name__


def _short(value: Any) -> str:
    text = orjson.dumps(value).decode() if _json_able(value) else repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def _check_schema(schema: dict, arguments: dict, what: str) -> None:
    """For a tool registered with its own ``input_schema``: required keys and top-level
    property types (a full JSON Schema validator is not a dependency of stonechat)."""
    missing = [k for k in schema.get("required", ()) if k not in arguments]
    if missing:
        raise MCPError(INVALID_PARAMS, f"{what}: missing required argument(s) {', '.join(map(repr, missing))}")
    properties = schema.get("properties") or {}
    for key, value in arguments.items():
        spec = properties.get(key)
        if not isinstance(spec, dict):
            if schema.get("additionalProperties") is False:
                raise MCPError(INVALID_PARAMS, f"{what}: unknown argument {key!r}")
            continue
        kinds = spec.get("type")
        kinds = [kinds] if isinstance(kinds, str) else kinds
        if kinds and not any(_JSON_TYPE_CHECKS.get(k, lambda v: True)(value) for k in kinds):
            raise MCPError(INVALID_PARAMS, f"{what}: argument {key!r} must be {' or '.join(kinds)}, "
                                           f"got {_json_type(value)} {_short(value)}")


# -- what is registered, compiled ----------------------------------------------------------------

def _takes_whole_arguments(sig: _Signature, declared: Optional[set]) -> bool:
    """Robyn's example style: ``def tool(args)`` with an explicit schema whose properties do
    not include ``args``: the function gets the arguments dict itself."""
    return (declared is not None and len(sig.params) == 1 and not sig.var_keyword
            and sig.params[0].name not in declared)


class _Tool:
    def __init__(self, name: str, fn: Callable, input_schema: Optional[dict]) -> None:
        self.name = name
        self.sig = _Signature(fn, f"tool {name!r}")
        self.explicit_schema = input_schema
        self.schema = input_schema if input_schema is not None else self.sig.schema()
        declared = set((input_schema or {}).get("properties") or {}) if input_schema is not None else None
        self.whole = _takes_whole_arguments(self.sig, declared)

    def call(self, arguments: dict) -> Any:
        if self.explicit_schema is not None:
            _check_schema(self.explicit_schema, arguments, self.sig.what)
        if self.whole:
            return self.sig.fn(arguments)
        return self.sig.fn(**self.sig.bind(arguments))


class _Prompt:
    def __init__(self, name: str, fn: Callable, arguments: Optional[list]) -> None:
        self.name = name
        self.sig = _Signature(fn, f"prompt {name!r}")
        self.declared = arguments
        declared = {a.get("name") for a in arguments if isinstance(a, dict)} if arguments is not None else None
        self.whole = _takes_whole_arguments(self.sig, declared)

    def call(self, arguments: dict) -> Any:
        if self.declared is not None:
            missing = [a["name"] for a in self.declared
                       if isinstance(a, dict) and a.get("required") and a.get("name") not in arguments]
            if missing:
                raise MCPError(INVALID_PARAMS, f"{self.sig.what}: missing required argument(s) "
                                               f"{', '.join(map(repr, missing))}")
        if self.whole:
            return self.sig.fn(arguments)
        return self.sig.fn(**self.sig.bind(arguments, from_text=True))


_TEMPLATE_VAR = re.compile(r"\{(\+?)(\w+)\}")
_MULTI_SEGMENT = frozenset({"path", "file_path", "directory"})  # Robyn: these match across "/"


class _Resource:
    def __init__(self, uri: str, fn: Callable) -> None:
        self.uri = uri
        self.sig = _Signature(fn, f"resource {uri!r}")
        self.names = [m.group(2) for m in _TEMPLATE_VAR.finditer(uri)]
        self.is_template = bool(self.names)
        if self.is_template:
            pattern, last = [], 0
            for m in _TEMPLATE_VAR.finditer(uri):
                pattern.append(re.escape(uri[last:m.start()]))
                wide = m.group(1) == "+" or m.group(2) in _MULTI_SEGMENT
                pattern.append(f"(?P<{m.group(2)}>.+)" if wide else f"(?P<{m.group(2)}>[^/]+)")
                last = m.end()
            pattern.append(re.escape(uri[last:]))
            self.regex: Optional[re.Pattern] = re.compile("".join(pattern) + r"\Z")
            absent = [n for n in self.names if n not in self.sig.by_name]
            if absent and not self.sig.var_keyword:
                raise ValueError(f"MCP resource {uri!r}: {getattr(fn, '__qualname__', fn)} has no parameter "
                                 f"for {', '.join(map(repr, absent))}")
        else:
            self.regex = None

    def match(self, uri: str) -> Optional[dict]:
        if self.regex is None:
            return {} if uri == self.uri else None
        m = self.regex.match(uri)
        return {k: unquote(v) for k, v in m.groupdict().items()} if m else None

    def call(self, values: dict, params: dict) -> Any:
        if values:
            return self.sig.fn(**self.sig.bind(values, from_text=True))
        if self.sig.params:  # Robyn: a fixed URI's function with a parameter gets the request params
            return self.sig.fn(params)
        return self.sig.fn()


async def _result(value: Any) -> Any:
    return await value if inspect.isawaitable(value) else value


def _text(value: Any) -> str:
    """A returned value as the text of a content item: strings as they are, JSON for data."""
    if isinstance(value, str):
        return value
    if isinstance(value, (bytes, bytearray, memoryview)):
        return bytes(value).decode("utf-8", "replace")
    if value is None or isinstance(value, (dict, list, tuple, bool)):
        try:
            return orjson.dumps(value).decode()
        except TypeError:
            pass
    return str(value)


# -- the JSON-RPC side ----------------------------------------------------------------------------

class MCPHandler:
    """What is registered and how each method answers (Robyn's ``MCPHandler``)."""

    def __init__(self) -> None:
        self.resources: dict[str, Callable] = {}
        self.tools: dict[str, Callable] = {}
        self.prompts: dict[str, Callable] = {}
        self.resource_metadata: dict[str, MCPResource] = {}
        self.tool_metadata: dict[str, MCPTool] = {}
        self.prompt_metadata: dict[str, MCPPrompt] = {}
        self.server_info: dict[str, Any] = {"name": "stonechat-mcp-server", "version": "1.0.0"}
        self.instructions: Optional[str] = None
        self._resources: dict[str, _Resource] = {}
        self._tools: dict[str, _Tool] = {}
        self._prompts: dict[str, _Prompt] = {}
        self._methods: dict[str, Callable[[dict], Any]] = {
            "initialize": self._initialize,
            "ping": self._ping,
            "tools/list": self._list_tools,
            "tools/call": self._call_tool,
            "resources/list": self._list_resources,
            "resources/templates/list": self._list_resource_templates,
            "resources/read": self._read_resource,
            "prompts/list": self._list_prompts,
            "prompts/get": self._get_prompt,
        }

    # -- registration (Robyn's names) --------------------------------------------------------

    def register_resource(self, uri: str, name: str, handler: Callable, description: Optional[str] = None,
                          mime_type: Optional[str] = None) -> None:
        self._resources[uri] = _Resource(uri, handler)
        self.resources[uri] = handler
        self.resource_metadata[uri] = MCPResource(uri=uri, name=name, description=description, mimeType=mime_type)

    def register_tool(self, name: str, handler: Callable, description: str,
                      input_schema: Optional[dict] = None) -> None:
        tool = self._tools[name] = _Tool(name, handler, input_schema)
        self.tools[name] = handler
        self.tool_metadata[name] = MCPTool(name=name, description=description, inputSchema=tool.schema)

    def register_prompt(self, name: str, handler: Callable, description: str,
                        arguments: Optional[list] = None) -> None:
        prompt = self._prompts[name] = _Prompt(name, handler, arguments)
        if arguments is None:
            arguments = [{"name": p.name, "description": f"Parameter {p.name}", "required": p.required}
                         for p in prompt.sig.params]
        self.prompts[name] = handler
        self.prompt_metadata[name] = MCPPrompt(name=name, description=description, arguments=arguments)

    # -- one JSON-RPC message ----------------------------------------------------------------

    async def handle_request(self, request_data: Any) -> Optional[dict]:
        """The answer to one decoded JSON-RPC message; ``None`` for a notification."""
        if not isinstance(request_data, dict):
            return _error(None, INVALID_REQUEST, "Invalid Request: a JSON-RPC message is an object")
        request_id = request_data.get("id")
        if "id" in request_data and not _valid_id(request_id):
            return _error(None, INVALID_REQUEST, "Invalid Request: id must be a string or an integer")
        method = request_data.get("method")
        if request_data.get("jsonrpc") != "2.0":
            return _error(request_id, INVALID_REQUEST, 'Invalid Request: "jsonrpc" must be "2.0"')
        if method is None and "id" in request_data and ("result" in request_data or "error" in request_data):
            return None  # a response from the client (to nothing we asked): nothing to say
        if not isinstance(method, str):
            return _error(request_id, INVALID_REQUEST, "Invalid Request: method must be a string")
        params = request_data.get("params")
        notification = "id" not in request_data
        if notification:
            return None  # notifications/initialized, cancelled...: nothing to do here
        if params is None:
            params = {}
        elif not isinstance(params, dict):
            return _error(request_id, INVALID_PARAMS, "Invalid params: params must be an object")
        run = self._methods.get(method)
        if run is None:
            return _error(request_id, METHOD_NOT_FOUND, f"Method not found: {method}")
        try:
            result = await run(params)
        except MCPError as exc:
            return _error(request_id, exc.code, exc.message, exc.data)
        except Exception as exc:
            logger.exception("MCP %s failed", method)
            return _error(request_id, INTERNAL_ERROR, "Internal error", f"{type(exc).__name__}: {exc}")
        return {"jsonrpc": "2.0", "id": request_id, "result": result}

    # -- the methods ---------------------------------------------------------------------------

    async def _initialize(self, params: dict) -> dict:
        requested = params.get("protocolVersion")
        result: dict[str, Any] = {
            "protocolVersion": requested if requested in PROTOCOL_VERSIONS else LATEST_PROTOCOL_VERSION,
            "capabilities": {"resources": {"subscribe": False, "listChanged": False},
                             "tools": {"listChanged": False}, "prompts": {"listChanged": False}},
            "serverInfo": dict(self.server_info),
        }
        if self.instructions:
            result["instructions"] = self.instructions
        return result

    async def _ping(self, params: dict) -> dict:
        return {}

    async def _list_tools(self, params: dict) -> dict:
        return {"tools": [asdict(t) for t in self.tool_metadata.values()]}

    async def _call_tool(self, params: dict) -> dict:
        name = params.get("name")
        tool = self._tools.get(name) if isinstance(name, str) else None
        if tool is None:
            raise MCPError(INVALID_PARAMS, f"Tool not found: {name}" if name else "tools/call needs a tool name")
        arguments = params.get("arguments")
        if arguments is None:
            arguments = {}
        if not isinstance(arguments, dict):
            raise MCPError(INVALID_PARAMS, f"tool {name!r}: arguments must be an object")
        try:
            value = await _result(tool.call(arguments))
        except MCPError:
            raise
        except Exception as exc:  # the tool failed: the model is told, as a result (MCP spec)
            logger.warning("MCP tool %r raised %s: %s", name, type(exc).__name__, exc, exc_info=True)
            return {"content": [{"type": "text", "text": f"{type(exc).__name__}: {exc}"}], "isError": True}
        content = [] if value is None else [{"type": "text", "text": _text(value)}]
        return {"content": content, "isError": False}

    async def _list_resources(self, params: dict) -> dict:
        return {"resources": [asdict(self.resource_metadata[uri]) for uri, r in self._resources.items()
                              if not r.is_template]}

    async def _list_resource_templates(self, params: dict) -> dict:
        templates = []
        for uri, r in self._resources.items():
            if r.is_template:
                meta = self.resource_metadata[uri]
                templates.append({"uriTemplate": uri, "name": meta.name, "description": meta.description,
                                  "mimeType": meta.mimeType})
        return {"resourceTemplates": templates}

    async def _read_resource(self, params: dict) -> dict:
        uri = params.get("uri")
        if not isinstance(uri, str) or not uri:
            raise MCPError(INVALID_PARAMS, "URI is required (a string)")
        for template, resource in self._resources.items():
            values = resource.match(uri)
            if values is not None:
                break
        else:
            raise MCPError(RESOURCE_NOT_FOUND, f"Resource not found: {uri}", {"uri": uri})
        value = await _result(resource.call(values, params))
        mime = self.resource_metadata[template].mimeType or "text/plain"
        if isinstance(value, (bytes, bytearray, memoryview)):
            return {"contents": [{"uri": uri, "mimeType": mime, "blob": base64.b64encode(bytes(value)).decode()}]}
        return {"contents": [{"uri": uri, "mimeType": mime, "text": _text(value)}]}

    async def _list_prompts(self, params: dict) -> dict:
        return {"prompts": [asdict(p) for p in self.prompt_metadata.values()]}

    async def _get_prompt(self, params: dict) -> dict:
        name = params.get("name")
        prompt = self._prompts.get(name) if isinstance(name, str) else None
        if prompt is None:
            raise MCPError(INVALID_PARAMS, f"Prompt not found: {name}" if name else "prompts/get needs a prompt name")
        arguments = params.get("arguments")
        if arguments is None:
            arguments = {}
        if not isinstance(arguments, dict):
            raise MCPError(INVALID_PARAMS, f"prompt {name!r}: arguments must be an object")
        value = await _result(prompt.call(arguments))
        return {"description": self.prompt_metadata[prompt.name].description, "messages": _messages(value)}


def _messages(value: Any) -> list:
    def one(item: Any) -> dict:
        if isinstance(item, dict) and "role" in item:
            return item
        return {"role": "user", "content": {"type": "text", "text": _text(item)}}
    if isinstance(value, list):
        return [one(item) for item in value]
    return [one(value)]


def _valid_id(value: Any) -> bool:
    return value is None or isinstance(value, str) or (isinstance(value, int) and not isinstance(value, bool))


def _error(request_id: Any, code: int, message: str, data: Any = None) -> dict:
    error: dict[str, Any] = {"code": code, "message": message}
    if data is not None:
        error["data"] = data
    return {"jsonrpc": "2.0", "id": request_id, "error": error}


def _json_response(status: int, payload: Any) -> Response:
    return Response(status, dict(_JSON_HEADERS), orjson.dumps(payload))


class MCPApp:
    """``app.mcp``: the decorators, and the ``POST /mcp`` route they answer on."""

    def __init__(self, robyn_app: Any) -> None:
        self.app = robyn_app
        self.handler = MCPHandler()
        # Browser pages from these origins may call the endpoint (besides loopback ones); a
        # request without ``Origin`` (any non-browser client) is always served. "*": any.
        self.allowed_origins: list[str] = []
        robyn_app.add_route("POST", ENDPOINT, self._endpoint)

    def _origin_allowed(self, origin: str) -> bool:
        """DNS rebinding guard (the MCP spec's "servers MUST validate the Origin header"): a
        web page may drive the tools only from a loopback origin or one the app allowed."""
        if "*" in self.allowed_origins or origin in self.allowed_origins:
            return True
        host = urlsplit(origin).hostname or ""
        return host in ("localhost", "127.0.0.1", "::1") or host.endswith(".localhost")

    async def _endpoint(self, request: Request) -> Response:
        origin = request.headers.get("origin")
        if origin is not None and not self._origin_allowed(origin.strip()):
            return _json_response(403, _error(None, INVALID_REQUEST, f"Origin not allowed: {origin} "
                                              "(add it to app.mcp.allowed_origins)"))
        try:
            body = orjson.loads(request.body_bytes)
        except orjson.JSONDecodeError as exc:
            return _json_response(200, _error(None, PARSE_ERROR, "Parse error", str(exc)))
        version = request.headers.get("mcp-protocol-version")
        if version is not None and version.strip() not in PROTOCOL_VERSIONS:
            request_id = body.get("id") if isinstance(body, dict) and _valid_id(body.get("id")) else None
            return _json_response(400, _error(request_id, UNSUPPORTED_PROTOCOL_VERSION, "Unsupported protocol version",
                                              {"supported": list(PROTOCOL_VERSIONS), "requested": version}))
        if isinstance(body, list):  # a batch (JSON-RPC 2.0; MCP 2025-03-26 and before)
            if not body:
                return _json_response(200, _error(None, INVALID_REQUEST, "Invalid Request: empty batch"))
            answers = [a for a in [await self.handler.handle_request(m) for m in body] if a is not None]
            return _json_response(200, answers) if answers else Response(202, {}, b"")
        answer = await self.handler.handle_request(body)
        return _json_response(200, answer) if answer is not None else Response(202, {}, b"")

    # -- decorators (Robyn's) ------------------------------------------------------------------

    def resource(self, uri: Optional[str] = None, name: Optional[str] = None, description: Optional[str] = None,
                 mime_type: Optional[str] = None) -> Callable:
        """``@app.mcp.resource("user://{user_id}/profile")``: what ``resources/read`` returns for
        matching URIs (template values are the function's keyword arguments)."""
        def decorator(fn: Callable) -> Callable:
            actual_name = name or fn.__name__.replace("_", " ").title()
            self.handler.register_resource(uri or f"function://{fn.__name__}", actual_name, fn,
                                           description or _doc(fn) or f"Resource: {actual_name}",
                                           mime_type or "text/plain")
            return fn
        return decorator

    def tool(self, name: Optional[str] = None, description: Optional[str] = None,
             input_schema: Optional[dict] = None) -> Callable:
        """``@app.mcp.tool()``: a function the model may call; its JSON schema comes from the
        signature (``str``, ``int``, ``float``, ``bool``, lists, dicts, ``Optional``, ``Literal``,
        pydantic models) unless ``input_schema`` is given."""
        def decorator(fn: Callable) -> Callable:
            self.handler.register_tool(name or fn.__name__, fn, description or _doc(fn) or f"Tool: {fn.__name__}",
                                       input_schema)
            return fn
        return decorator

    def prompt(self, name: Optional[str] = None, description: Optional[str] = None,
               arguments: Optional[list] = None) -> Callable:
        """``@app.mcp.prompt()``: a prompt template; returns a string (one user message), a
        list of strings or ``{"role", "content"}`` messages."""
        def decorator(fn: Callable) -> Callable:
            self.handler.register_prompt(name or fn.__name__, fn,
                                         description or _doc(fn) or f"Prompt: {fn.__name__}", arguments)
            return fn
        return decorator


def _doc(fn: Callable) -> Optional[str]:
    doc = inspect.getdoc(fn)
    return doc.strip() if doc else None


__all__ = ["LATEST_PROTOCOL_VERSION", "MCPApp", "MCPError", "MCPHandler", "MCPPrompt", "MCPResource", "MCPTool",
           "PROTOCOL_VERSIONS"]
