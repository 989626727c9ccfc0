"""Robyn's ``robyn.testing``: call an app's handlers in-process, without a socket.

``TestClient(app)`` builds the app exactly as ``app.start()`` does (``app.served()``) and sends
each request through
``Dispatcher.handle`` as a server-built ``HTTPRequest``: routing, middlewares, parameter
injection, DI, conversion and error handling are the real ones. Only the socket and the HTTP/1.1
framing are left out. Const routes are computed on first use. Used as a context manager the
client also runs the app's startup handlers on entry and its shutdown handlers on exit (like
Robyn's, a client used without ``with`` runs neither). Handlers run on the client's own event loop.

    with TestClient(app) as client:          # runs startup, and shutdown on exit
        r = client.get("/items/1", query_params={"q": "x"}, headers={"x-key": "k"})
        assert r.status_code == 200 and r.json()["id"] == 1

Methods: ``get/head/options/post/put/patch/delete(path, **kw)`` with keyword arguments ``body``
(str/bytes), ``json_data`` (any JSON value), ``headers`` (dict), ``query_params`` (dict; list
values repeat the key), ``form_data`` (dict; url-encoded, or multipart with ``files``) and
``files`` (``{field: bytes}`` or ``{field: (filename, bytes[, content_type])}``).
The client is synchronous: call it from ordinary (non-async) test functions.

WebSockets (beyond Robyn's client, as Starlette's): ``with client.websocket_connect(path,
headers=..., subprotocols=[...]) as ws:`` runs the real handshake and session in-process,
``ws.send_text/send_bytes/send_json``, ``ws.receive_text/receive_bytes/receive_json`` (bounded
by ``timeout``), ``ws.close(code, reason)``, ``ws.close_code``/``ws.close_reason``; a refused
handshake raises ``WebSocketRefused`` with its status and body (``testclient_websocket.py``).
"""

from __future__ import annotations

import asyncio
import base64
import os
import uuid
from typing import Any, Optional
from urllib.parse import quote, urlencode

import orjson

from .core.conversion import decode_header_block
from .core.datastructures import Headers
from .server.interface import Finished, HTTPRequest, HTTPResponse, HTTPResponseThen, WebSocketAccept
from .testclient_websocket import InProcessWebSocket, WebSocketRefused, WebSocketTestSession, shut_down

_NO_BODY = frozenset({204, 304}) | frozenset(range(100, 200))


class TestResponse:
    """What a request through ``TestClient`` answered."""

    __test__ = False  # not a pytest test class

    def __init__(self, status_code: int, headers: Headers, content: bytes) -> None:
        self.status_code = status_code
        self.headers = headers
        self.content = content

    @property
    def text(self) -> str:
        return self.content.decode("utf-8", "replace")

    @property
    def ok(self) -> bool:
        return 200 <= self.status_code < 300

    def json(self) -> Any:
        return orjson.loads(self.content)

    def __repr__(self) -> str:
        return f"<TestResponse {self.status_code}>"


class TestClient:
    __test__ = False  # not a pytest test class

    def __init__(self, app: Any, base_url: str = "http://testserver") -> None:
        self.app = app
        scheme, _, host = base_url.partition("://")
        self.scheme = scheme or "http"
        self.host = (host or "testserver").rstrip("/")
        self._loop: Optional[asyncio.AbstractEventLoop] = None
        self._served: Any = None
        self._lifecycle = False
        self._websockets: list[InProcessWebSocket] = []

    # -- lifecycle -------------------------------------------------------------------------

    def _ensure_started(self, lifecycle: bool = False) -> Any:
        if self._served is None:
            loop = asyncio.new_event_loop()
            served = self.app.served()
            try:
                if lifecycle:
                    loop.run_until_complete(served.startup())
                else:
                    loop.run_until_complete(served._compute_const_routes())
            except BaseException:
                loop.close()
                raise
            self._loop, self._served, self._lifecycle = loop, served, lifecycle
        return self._served

    def close(self) -> None:
        """Run the app's shutdown and release the client's event loop."""
        served, loop = self._served, self._loop
        self._served = self._loop = None
        websockets, self._websockets = self._websockets, []
        if served is not None and loop is not None:
            try:
                shut_down(loop, websockets)  # as a stopping server: 1001, then the sessions end
                if self._lifecycle:
                    loop.run_until_complete(served.shutdown())
                elif served.app.executor is not None:
                    served.app.executor.shutdown(wait=False, cancel_futures=True)
            finally:
                loop.close()

    def __enter__(self) -> "TestClient":
        if self._served is not None and not self._lifecycle:
            self.close()  # already used without ``with``: start again, this time fully
        self._ensure_started(lifecycle=True)
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    # -- requests --------------------------------------------------------------------------

    def request(self, method: str, path: str, *, body: Any = None, json_data: Any = None,
                headers: Optional[dict] = None, query_params: Optional[dict] = None,
                form_data: Optional[dict] = None, files: Optional[dict] = None) -> TestResponse:
        served = self._ensure_started()
        loop = self._loop
        assert loop is not None
        raw = self._build(method.upper(), path, body, json_data, headers, query_params, form_data, files)
        result = served.handle(raw)
        if not isinstance(result, HTTPResponse):
            result = loop.run_until_complete(_await(result))
            if not isinstance(result, HTTPResponse):
                raise TypeError(f"TestClient cannot follow a {type(result).__name__} (WebSocket upgrade?)")
        content = result.body
        length = len(content) if result.stream is None else getattr(result.stream, "length", None)
        if result.stream is not None:
            content = loop.run_until_complete(_collect(result.stream, raw.method != "HEAD"))
        response_headers = decode_header_block(result.headers)
        if result.status in _NO_BODY:
            content = b""
        elif length is not None:  # a body, or a file (whose length is known)
            response_headers.set("content-length", str(length))
        if raw.method == "HEAD":
            content = b""
        if isinstance(result, HTTPResponseThen):  # background tasks: run them, as the server would
            loop.run_until_complete(_background_done(served, result.after))
        return TestResponse(result.status, response_headers, content)

    def _build(self, method: str, path: str, body: Any, json_data: Any, headers: Optional[dict],
               query_params: Optional[dict], form_data: Optional[dict], files: Optional[dict]) -> HTTPRequest:
        raw = HTTPRequest()
        raw.method = method
        path, _, query = path.partition("?")
        if not path.startswith("/"):
            path = "/" + path
        if query_params:
            extra = urlencode([(k, v) for k, vs in query_params.items()
                               for v in (vs if isinstance(vs, (list, tuple)) else [vs])])
            query = f"{query}&{extra}" if query else extra
        raw.path = quote(path, safe="/%:@!$&'()*+,;=-._~").encode()
        raw.query = query.encode()
        raw.target = raw.path + (b"?" + raw.query if raw.query else b"")
        pairs: list[tuple[bytes, bytes]] = [(b"host", self.host.encode())]
        user = {str(k).lower(): v for k, v in (headers or {}).items()}
        content_type: Optional[str] = None
        data = b""
        if json_data is not None and body is None:
            data, content_type = orjson.dumps(json_data), "application/json"
        elif files:
            data, content_type = _multipart(form_data or {}, files)
        elif form_data is not None:
            data = urlencode(list(form_data.items())).encode()
            content_type = "application/x-www-form-urlencoded"
        elif body is not None:
            data = body.encode() if isinstance(body, str) else bytes(body)
        if content_type and "content-type" not in user:
            user["content-type"] = content_type
        if data and "content-length" not in user:
            user["content-length"] = str(len(data))
        for name, value in user.items():
            for v in value if isinstance(value, (list, tuple)) else [value]:
                pairs.append((name.encode("latin-1"), str(v).encode("latin-1")))
        raw.headers = pairs
        raw.body = data
        raw.client = ("127.0.0.1", 50000)
        raw.server = (self.host.partition(":")[0], 80)
        raw.scheme = self.scheme
        raw.host = self.host.encode()
        return raw

    # -- WebSockets (testclient_websocket.py) ---------------------------------------------------

    def websocket_connect(self, path: str, headers: Optional[dict] = None,
                          subprotocols: Optional[list[str]] = None, query_params: Optional[dict] = None,
                          timeout: float = 5.0) -> WebSocketTestSession:
        """Open a WebSocket on ``path`` through the app's real handshake; ``WebSocketRefused``
        if the app answers with an HTTP response. ``timeout`` bounds every wait on the app."""
        served = self._ensure_started()
        loop = self._loop
        assert loop is not None
        user = {str(k).lower(): v for k, v in (headers or {}).items()}
        user.setdefault("connection", "Upgrade")
        user.setdefault("upgrade", "websocket")
        user.setdefault("sec-websocket-key", base64.b64encode(os.urandom(16)).decode())
        user.setdefault("sec-websocket-version", "13")
        if subprotocols:
            user["sec-websocket-protocol"] = ", ".join(subprotocols)
        raw = self._build("GET", path, None, None, user, query_params, None, None)
        raw.websocket = True
        result = served.handle(raw)
        if not isinstance(result, (HTTPResponse, WebSocketAccept)):
            try:
                result = loop.run_until_complete(asyncio.wait_for(_await(result), timeout))
            except asyncio.TimeoutError:
                raise TimeoutError(f"WebSocket {path}: no answer to the handshake within {timeout} s") from None
        if isinstance(result, HTTPResponse):
            content = result.body
            if result.stream is not None:
                content = loop.run_until_complete(_collect(result.stream, True))
            raise WebSocketRefused(path, result.status, decode_header_block(result.headers), content)
        if not isinstance(result, WebSocketAccept):
            raise TypeError(f"the app answered the WebSocket handshake on {path} with {type(result).__name__}")
        conn = InProcessWebSocket(loop, raw, served.settings.ws_close_timeout)
        self._websockets = [c for c in self._websockets if c.open or not _ended(c)] + [conn]
        return WebSocketTestSession(loop, conn, result, path, timeout)

    def get(self, path: str, **kwargs: Any) -> TestResponse:
        return self.request("GET", path, **kwargs)

    def head(self, path: str, **kwargs: Any) -> TestResponse:
        return self.request("HEAD", path, **kwargs)

    def options(self, path: str, **kwargs: Any) -> TestResponse:
        return self.request("OPTIONS", path, **kwargs)

    def post(self, path: str, json_data: Any = None, **kwargs: Any) -> TestResponse:
        return self.request("POST", path, json_data=json_data, **kwargs)

    def put(self, path: str, json_data: Any = None, **kwargs: Any) -> TestResponse:
        return self.request("PUT", path, json_data=json_data, **kwargs)

    def patch(self, path: str, json_data: Any = None, **kwargs: Any) -> TestResponse:
        return self.request("PATCH", path, json_data=json_data, **kwargs)

    def delete(self, path: str, json_data: Any = None, **kwargs: Any) -> TestResponse:
        return self.request("DELETE", path, json_data=json_data, **kwargs)


def _ended(conn: InProcessWebSocket) -> bool:
    return conn.session_task is not None and conn.session_task.done()


async def _background_done(served: Any, start: Any) -> None:
    """Start a response's background tasks, and wait until the app has none left running."""
    start()
    while served.background_pending():
        await asyncio.sleep(0.005)


async def _await(awaitable: Any) -> Any:
    if awaitable.__class__ is tuple:  # a finishing quadruple (server/interface.py)
        awaitable = Finished(awaitable)
    return await awaitable


async def _collect(stream: Any, keep: bool) -> bytes:
    parts = []
    try:
        if keep:
            async for chunk in stream:
                parts.append(chunk)
    finally:
        closer = getattr(stream, "aclose", None)
        if closer is not None:
            await closer()
    return b"".join(parts)


def _multipart(fields: dict, files: dict) -> tuple[bytes, str]:
    boundary = uuid.uuid4().hex
    out = []
    for name, value in fields.items():
        out.append(f'--{boundary}\r\nContent-Disposition: form-data; name="{name}"\r\n\r\n'.encode())
        out.append(value.encode() if isinstance(value, str) else bytes(value))
        out.append(b"\r\n")
    for name, value in files.items():
        if isinstance(value, tuple):
            filename, content = value[0], value[1]
            ctype = value[2] if len(value) > 2 else "application/octet-stream"
        else:
            filename, content, ctype = name, value, "application/octet-stream"
        content = content.encode() if isinstance(content, str) else bytes(content)
        out.append((f'--{boundary}\r\nContent-Disposition: form-data; name="{name}"; '
                    f'filename="{filename}"\r\nContent-Type: {ctype}\r\n\r\n').encode())
        out.append(content)
        out.append(b"\r\n")
    out.append(f"--{boundary}--\r\n".encode())
    return b"".join(out), f"multipart/form-data; boundary={boundary}"


__all__ = ["TestClient", "TestResponse", "WebSocketRefused", "WebSocketTestSession"]
