"""Turning what a handler returns into the server's ``HTTPResponse``.

Each route gets one ``Converter`` built at registration time: the Content-Type lines and the
app's default response headers are encoded to bytes once, so converting the common returns
(``str``, ``dict``, ``bytes``) costs one encode and one object per request.

Return values (Robyn's table, with its defects fixed): ``str`` -> text/plain; ``bytes`` ->
application/octet-stream; ``dict``/``list`` -> JSON (orjson); ``Response``; ``FileResponse``;
``StreamingResponse``; a Pydantic model (and lists or dicts holding models, as JSON);
``(body, headers, status)``, ``(body, status)`` or
``(body, headers)`` tuples with any body type; ``None`` -> 200 with an empty body; anything else
-> ``str(value)`` as text/plain.
"""

from __future__ import annotations

import asyncio
import inspect
import json
import os
import threading
from concurrent.futures import ThreadPoolExecutor
from typing import Any, AsyncIterator, Iterable, Optional

import orjson

from ..server.interface import TEXT_PLAIN, HTTPResponse
from .datastructures import Headers, QueryParams
from .files import content_type_for, open_regular
from .response import FileResponse, Response, StreamingResponse

TEXT = TEXT_PLAIN  # one home: server/interface.py
JSON = b"content-type: application/json\r\n"
_new_response = object.__new__
OCTET = b"content-type: application/octet-stream\r\n"

# The server writes these itself; a handler's values for them are dropped.
_FRAMING = frozenset({"content-length", "transfer-encoding", "connection"})


def _header_line(name: str, value: str) -> bytes:
    if "\r" in value or "\n" in value or "\r" in name or "\n" in name or ":" in name:
        raise ValueError(f"invalid character in response header {name!r}")
    try:
        return b"%s: %s\r\n" % (name.encode("latin-1"), value.encode("latin-1"))
    except UnicodeEncodeError:
        return b"%s: %s\r\n" % (name.encode("utf-8"), value.encode("utf-8"))


def encode_headers(items: Iterable[tuple[str, str]]) -> bytes:
    return b"".join(_header_line(n, v) for n, v in items if n not in _FRAMING)


class DefaultHeaders:
    """The app's default response headers, pre-encoded; a response's own header wins."""

    __slots__ = ("items", "names", "block")

    def __init__(self, headers: Optional[Headers] = None) -> None:
        self.items = headers.multi_items() if headers is not None else []
        self.names = frozenset(n for n, _ in self.items)
        self.block = encode_headers(self.items)

    def block_without(self, names: Iterable[str]) -> bytes:
        skip = set(names)
        return encode_headers((n, v) for n, v in self.items if n not in skip)


NO_DEFAULTS = DefaultHeaders()


class Converter:
    """Converts one route's return values; ``status`` is the route's ``status_code`` option."""

    __slots__ = ("status", "defaults", "text_block", "json_block", "octet_block")

    def __init__(self, status: Optional[int] = None, defaults: DefaultHeaders = NO_DEFAULTS) -> None:
        if status is not None and not 200 <= status <= 599:
            raise ValueError(f"invalid status_code {status!r}: must be 200-599")
        self.status = status or 200
        self.defaults = defaults
        plain = defaults.block_without(["content-type"])
        self.text_block = TEXT + plain
        self.json_block = JSON + plain
        self.octet_block = OCTET + plain

    def __call__(self, value: Any) -> HTTPResponse:
        cls = value.__class__
        # The two common answers are made field by field: calling the class costs more than
        # four attribute stores (it goes through type.__call__ to a Python __init__).
        if cls is str:
            response = _new_response(HTTPResponse)
            response.body = value.encode()
            response.headers = self.text_block
        elif cls is dict or cls is list:
            response = _new_response(HTTPResponse)
            try:
                response.body = orjson.dumps(value)
            except TypeError:  # something orjson does not know inside, e.g. a Pydantic model
                response.body = json_bytes(value)
            response.headers = self.json_block
        elif cls is Response:
            return self.response(value)
        elif cls is bytes:
            return HTTPResponse(self.status, self.octet_block, value)
        elif value is None:  # Robyn answers the text "None"
            return HTTPResponse(self.status, self.text_block, b"None")
        else:
            return self._other(value)
        response.status = self.status
        response.stream = None
        return response

    def _other(self, value: Any) -> HTTPResponse:
        if isinstance(value, HTTPResponse):  # already on the wire (a cached or error answer)
            return value
        if isinstance(value, Response):
            return self.response(value)
        if isinstance(value, str):
            return HTTPResponse(self.status, self.text_block, str(value).encode())
        if isinstance(value, (bytes, bytearray, memoryview)):
            return HTTPResponse(self.status, self.octet_block, bytes(value))
        if isinstance(value, (dict, list)):
            return HTTPResponse(self.status, self.json_block, json_bytes(value))
        if isinstance(value, tuple):
            return self.response(self.tuple_response(value))
        if isinstance(value, StreamingResponse):
            return self.streaming(value)
        if isinstance(value, FileResponse):
            return self.response(value.to_response())
        if isinstance(value, QueryParams):  # Robyn answers a returned QueryParams as JSON
            return HTTPResponse(self.status, self.json_block, orjson.dumps(value.to_dict()))
        dump = getattr(value, "model_dump_json", None)
        if dump is not None:  # a Pydantic model
            return HTTPResponse(self.status, self.json_block, dump().encode())
        return HTTPResponse(self.status, self.text_block, str(value).encode())

    def tuple_response(self, value: tuple) -> Response:
        """``(body, headers, status)``, ``(body, status)`` or ``(body, headers)``."""
        if len(value) == 3:
            body, headers, status = value
        elif len(value) == 2:
            body, second = value
            if isinstance(second, int):
                headers, status = None, second
            else:
                headers, status = second, self.status
        else:
            raise ValueError(f"a tuple response has 2 or 3 items (body, headers, status), got {len(value)}")
        inner = self(body)
        response = Response(int(status), decode_header_block(inner.headers), inner.body)
        if headers:
            extra = headers if isinstance(headers, Headers) else Headers(headers)
            for name, values in extra.get_headers().items():
                response.headers._map[name] = values
        return response

    def response(self, response: Response) -> HTTPResponse:
        status = response.status_code
        if not 200 <= status <= 599:  # 1xx and 101 are the server's; others are not HTTP
            raise ValueError(f"invalid response status {status!r}: must be 200-599")
        own = response.headers._map
        lines = [_header_line(n, v) for n, vs in own.items() if n not in _FRAMING for v in vs]
        defaults = self.defaults
        if defaults.items:
            lines.extend(_header_line(n, v) for n, v in defaults.items if n not in own)
        cookies = response._cookies
        if cookies:
            lines.extend(_header_line("set-cookie", c.serialize(n)) for n, c in cookies.items())
        if response._file_path is not None:
            return self.file(status, lines, "content-type" in own, response._file_path)
        return HTTPResponse(status, b"".join(lines), response._body)

    @staticmethod
    def file(status: int, lines: list[bytes], typed: bool, path: str) -> HTTPResponse:
        """A file body, open, with its validators; dispatch narrows it to the request
        (``files.select``: 304, 206, 416)."""
        opened = open_regular(path)
        if opened is None:
            raise FileNotFoundError(f"cannot serve {path!r}: not a readable regular file")
        if not typed:
            lines.append(b"content-type: %s\r\n" % content_type_for(os.path.basename(path)).encode())
        lines.append(opened.validator_lines())
        return HTTPResponse(status, b"".join(lines), stream=opened)

    def streaming(self, value: StreamingResponse) -> HTTPResponse:
        shell = Response(value.status_code, value.headers, b"")
        head = self.response(shell)
        head.body = b""
        head.stream = _byte_chunks(value.content)
        return head


def _json_default(value: Any) -> Any:
    """orjson's fallback for values it cannot encode itself: a Pydantic model inside a returned
    list or dict is encoded as the model would encode itself (``model_dump(mode="json")``)."""
    dump = getattr(value, "model_dump", None)
    if dump is not None and callable(dump):
        return dump(mode="json")
    raise TypeError(f"Type is not JSON serializable: {type(value).__name__}")


def json_bytes(value: Any) -> bytes:
    """JSON for what the fast ``orjson.dumps`` refused: Pydantic models inside, integers beyond
    64 bits or strings holding lone surrogates (which orjson cannot encode; the stdlib escapes
    them as ASCII)."""
    try:
        return orjson.dumps(value, default=_json_default)
    except TypeError:
        return json.dumps(value, default=_json_default, separators=(",", ":")).encode()


def decode_header_block(block: bytes) -> Headers:
    """The inverse of ``encode_headers``: a ``name: value\r\n`` block back into ``Headers``
    (optional whitespace around the value is not part of it, RFC 9110 5.5)."""
    headers = Headers()
    for line in block.split(b"\r\n"):
        if line:
            name, _, value = line.partition(b":")
            headers.append(name.decode("latin-1").strip(), value.decode("latin-1").strip(" \t"))
    return headers


# Sync generators behind a StreamingResponse are pulled one chunk at a time on these threads
# (as Robyn does): a generator that sleeps between SSE events must not freeze the event loop.
STREAM_THREADS = 64
_stream_pool: Optional[ThreadPoolExecutor] = None
_END = object()


def _pool() -> ThreadPoolExecutor:
    global _stream_pool
    if _stream_pool is None:
        _stream_pool = ThreadPoolExecutor(STREAM_THREADS, thread_name_prefix="stonechat-stream")
    return _stream_pool


def _as_bytes(chunk: Any) -> bytes:
    return chunk.encode() if isinstance(chunk, str) else bytes(chunk)


async def _byte_chunks(content: Any) -> AsyncIterator[bytes]:
    """Normalise what a StreamingResponse holds into bytes chunks: an async iterator as is; a
    list or tuple directly; any other sync iterator pulled chunk by chunk on a thread, and
    closed (on a thread, once its current step is done) when the client leaves early."""
    if inspect.isasyncgen(content) or hasattr(content, "__anext__"):
        async for chunk in content:
            yield _as_bytes(chunk)
        return
    if isinstance(content, (list, tuple, str, bytes)):
        for chunk in ([content] if isinstance(content, (str, bytes)) else content):
            yield _as_bytes(chunk)
        return
    iterator = iter(content)
    step = threading.Lock()  # next() and close() never overlap: a running generator cannot be closed

    def pull() -> Any:
        with step:
            return next(iterator, _END)

    def close() -> None:
        with step:
            closer = getattr(iterator, "close", None)
            if closer is not None:
                closer()

    loop = asyncio.get_running_loop()
    finished = False
    try:
        while True:
            chunk = await loop.run_in_executor(_pool(), pull)
            if chunk is _END:
                finished = True
                return
            yield _as_bytes(chunk)
    finally:
        if not finished:
            _pool().submit(close)
