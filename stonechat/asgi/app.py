"""A stonechat app as an ASGI 3 application: ``app.asgi``, for ``uvicorn module:app.asgi``,
``granian --interface asgi module:app.asgi``, ``hypercorn module:app.asgi``.

Each ASGI call is turned into the server contract (``server/interface.py``) and handed to the
same ``ServedApp`` the native server runs, so routing, hooks, parameters, errors, both WebSocket
API styles and the lifecycle are the very same code:

* ``http``: an ``HTTPRequest`` from the scope (raw path and query, lower-case header pairs,
  client, server, scheme, HTTP version; ``root_path`` stripped from the path, as Starlette does),
  the body read whole within ``max_body_size`` (413 past it), then ``handle()``; the answer goes
  out as ``http.response.start`` (with Content-Length when the body is whole) and
  ``http.response.body``: no body for HEAD, 1xx, 204 and 304. A streamed body is sent chunk by
  chunk while ``http.disconnect`` is watched; when the client leaves, the stream stops and its
  generator is closed.
* ``websocket``: ``handle()`` decides the handshake as natively (connect handler, auth,
  parameters). A refusal is sent as an HTTP response through the ``websocket.http.response``
  extension when the server offers it, else as ``websocket.close`` before the accept (403).
  The session then runs on an ``ASGIWebSocket`` (``connection.py``).
* ``lifespan``: ``lifespan.startup`` runs what the native server runs before it accepts
  (startup handlers, lifespans and mounted apps, const routes, the blocking watchdog). A
  failure answers ``lifespan.startup.failed`` with a message naming the failing handler, after
  the shutdown side ran (as natively). ``lifespan.shutdown`` runs the shutdown side.

What the ASGI server does instead of stonechat's (the socket, HTTP parsing and its limits,
keep-alive, drain at shutdown, pings, several processes) is listed in ``docs/asgi.md``.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any, Callable, Optional
from urllib.parse import quote

from ..server.interface import (NO_BODY_STATUSES, TEXT_PLAIN, FileBody, Finished, HTTPRequest, HTTPResponse, HTTPResponseThen,
                                WebSocketAccept)
from .connection import ASGIWebSocket
from .headers import asgi_from_block
from .scope import ASGIRequest

logger = logging.getLogger("stonechat.asgi")

_TOO_LARGE = HTTPResponse(413, TEXT_PLAIN, b"Request body too large\n")


def request_from_scope(scope: dict, websocket: bool = False) -> HTTPRequest:
    """The server contract's request for an ASGI ``http``/``websocket`` scope (body not read)."""
    root = scope.get("root_path") or ""
    raw = ASGIRequest(root)
    raw.method = scope.get("method", "GET")
    path = scope.get("raw_path")
    if path:
        path = path.partition(b"?")[0]
        if root:
            outer = root.encode("utf-8")
            if path.startswith(outer) and path[len(outer):len(outer) + 1] in (b"/", b""):
                path = path[len(outer):] or b"/"
    else:
        text = scope["path"]
        if root and text.startswith(root) and text[len(root):len(root) + 1] in ("/", ""):
            text = text[len(root):] or "/"
        path = quote(text, safe="/%:@!$&'()*+,;=-._~").encode("ascii")
    raw.path = path
    query = scope.get("query_string") or b""
    raw.query = query
    raw.target = path + b"?" + query if query else path
    headers = [(bytes(name).lower(), bytes(value)) for name, value in scope.get("headers", ())]
    raw.headers = headers
    for name, value in headers:
        if name == b"host":
            raw.host = value
            break
    client = scope.get("client")
    raw.client = tuple(client) if client else None
    server = scope.get("server")
    raw.server = tuple(server) if server else None
    scheme = scope.get("scheme") or ("ws" if websocket else "http")
    raw.scheme = {"ws": "http", "wss": "https"}.get(scheme, scheme)
    raw.http_version = scope.get("http_version") or "1.1"
    raw.websocket = websocket
    return raw


class ASGIApp:
    """``app.asgi``: the ASGI 3 callable of a stonechat app.

    ``build()`` makes the ``ServedApp`` (once, at ``lifespan.startup`` or the first call);
    ``wrap(serve)``, when given, puts the app's ASGI middleware around ``serve``."""

    def __init__(self, build: Callable[[], Any], wrap: Optional[Callable[[Any], Any]] = None) -> None:
        self._build = build
        self._wrap = wrap
        self._chain: Any = None
        self._served: Any = None
        self.started = False
        self.stopped = False
        self.startup_error: Optional[BaseException] = None
        self._warned = False

    def served(self) -> Any:
        if self._served is None:
            self._served = self._build()
        return self._served

    async def __call__(self, scope: dict, receive: Any, send: Any) -> None:
        if self._wrap is not None:
            chain = self._chain
            if chain is None:
                chain = self._chain = self._wrap(self.serve)
            await chain(scope, receive, send)
        else:
            await self.serve(scope, receive, send)

    async def serve(self, scope: dict, receive: Any, send: Any) -> None:
        """The app itself, inside any middleware."""
        kind = scope["type"]
        if kind == "http":
            await self._http(scope, receive, send)
        elif kind == "websocket":
            await self._websocket(scope, receive, send)
        elif kind == "lifespan":
            await self._lifespan(receive, send)
        else:
            raise ValueError(f"stonechat cannot serve ASGI scope type {kind!r}")

    def _ready(self) -> Any:
        served = self._served
        if served is None:
            served = self.served()
        if not self.started and not self._warned:
            self._warned = True
            lifecycle = served.app.lifecycle
            if lifecycle.startup_handlers or lifecycle.lifespans:
                logger.warning("the ASGI server sent no lifespan.startup: startup handlers and lifespans "
                               "did not run (run uvicorn with --lifespan on)")
        return served

    # -- lifespan -----------------------------------------------------------------------------

    async def _lifespan(self, receive: Any, send: Any) -> None:
        while True:
            event = await receive()
            kind = event["type"]
            if kind == "lifespan.startup":
                try:
                    await self.startup()
                except Exception as exc:
                    await send({"type": "lifespan.startup.failed", "message": str(exc)})
                    return
                await send({"type": "lifespan.startup.complete"})
            elif kind == "lifespan.shutdown":
                try:
                    await self.shutdown()
                except Exception as exc:
                    await send({"type": "lifespan.shutdown.failed", "message": str(exc)})
                    return
                await send({"type": "lifespan.shutdown.complete"})
                return

    async def startup(self) -> None:
        """What the native server runs before it accepts; on failure the shutdown side runs too."""
        try:
            served = self.served()
        except Exception as exc:  # a bad setting: the message names it
            logger.error("not serving: %s", exc)
            self.startup_error = exc
            raise
        try:
            await served.startup()
        except Exception as exc:
            self.startup_error = exc
            logger.error("not serving: startup failed (%s); running shutdown handlers", exc)
            await self.shutdown()
            raise
        self.started = True

    async def shutdown(self) -> None:
        if self.stopped or self._served is None:
            return
        self.stopped = True
        await self._served.shutdown()

    # -- HTTP ---------------------------------------------------------------------------------

    async def _http(self, scope: dict, receive: Any, send: Any) -> None:
        served = self._served if self.started else self._ready()
        raw = request_from_scope(scope)
        limit = served.settings.max_body_size
        for name, value in raw.headers:
            if name == b"content-length":
                if value.isdigit() and int(value) > limit:
                    await self._respond(raw, _TOO_LARGE, send, receive)
                    return
                break
        parts = []
        size = 0
        while True:
            event = await receive()
            kind = event["type"]
            if kind == "http.request":
                chunk = event.get("body", b"")
                if chunk:
                    size += len(chunk)
                    if size > limit:
                        await self._respond(raw, _TOO_LARGE, send, receive)
                        return
                    parts.append(chunk)
                if not event.get("more_body", False):
                    break
            elif kind == "http.disconnect":
                return
        if parts:
            raw.body = parts[0] if len(parts) == 1 else b"".join(parts)
        try:
            result = served.handle(raw)
            if not isinstance(result, HTTPResponse):
                result = await (Finished(result) if result.__class__ is tuple else result)
        except Exception:
            logger.exception("unhandled error in the application for %s %s", raw.method,
                             raw.target.decode("latin-1"))
            result = HTTPResponse(500, b"content-type: text/plain; charset=utf-8\r\n", b"Internal Server Error\n")
        if not isinstance(result, HTTPResponse):  # a WebSocketAccept for a plain request
            result = HTTPResponse(400, b"content-type: text/plain; charset=utf-8\r\n",
                                  b"Bad request: not a WebSocket handshake\n")
        await self._respond(raw, result, send, receive)
        if result.__class__ is HTTPResponseThen:  # background tasks, once the response is sent
            result.after()

    async def _respond(self, raw: HTTPRequest, response: HTTPResponse, send: Any, receive: Any) -> None:
        status = response.status
        headers = asgi_from_block(response.headers)
        stream = response.stream
        if stream is None:
            if status in NO_BODY_STATUSES:
                await send({"type": "http.response.start", "status": status, "headers": headers})
                await send({"type": "http.response.body", "body": b""})
                return
            body = response.body
            headers.append((b"content-length", str(len(body)).encode()))
            await send({"type": "http.response.start", "status": status, "headers": headers})
            await send({"type": "http.response.body", "body": b"" if raw.method == "HEAD" else body})
            return
        if isinstance(stream, FileBody):  # a file: its length is known
            headers.append((b"content-length", str(stream.length).encode()))
        await send({"type": "http.response.start", "status": status, "headers": headers})
        if raw.method == "HEAD" or status in NO_BODY_STATUSES:
            await _close_stream(stream)
            await send({"type": "http.response.body", "body": b""})
            return
        await _send_stream(stream, send, receive)

    # -- WebSocket ----------------------------------------------------------------------------

    async def _websocket(self, scope: dict, receive: Any, send: Any) -> None:
        event = await receive()
        if event["type"] != "websocket.connect":  # the client left before the handshake
            return
        served = self._served if self.started else self._ready()
        raw = request_from_scope(scope, websocket=True)
        try:
            result = served.handle(raw)
            if result.__class__ is not HTTPResponse:
                result = await (Finished(result) if result.__class__ is tuple else result)
        except Exception:
            logger.exception("unhandled error in the WebSocket handshake on %s", raw.target.decode("latin-1"))
            result = HTTPResponse(500, b"content-type: text/plain; charset=utf-8\r\n", b"Internal Server Error\n")
        if not isinstance(result, WebSocketAccept):
            await self._refuse(scope, result, send)
            return
        accept: dict = {"type": "websocket.accept", "subprotocol": result.subprotocol}
        if result.headers:
            accept["headers"] = asgi_from_block(result.headers)
        await send(accept)
        conn = ASGIWebSocket(raw, receive, send, served.settings)
        conn.start()
        try:
            await result.session(conn)
        except Exception:
            logger.exception("WebSocket session on %s failed", conn.path)
            if not conn.closed:
                conn.close_nowait(1011, "internal error")
        finally:
            await conn.finish()

    @staticmethod
    async def _refuse(scope: dict, response: HTTPResponse, send: Any) -> None:
        """The upgrade refused: this HTTP answer where the server takes one, else 403."""
        if "websocket.http.response" in (scope.get("extensions") or {}):
            body = response.body
            if response.stream is not None:
                body = b"".join([chunk async for chunk in response.stream])
            headers = asgi_from_block(response.headers)
            headers.append((b"content-length", str(len(body)).encode()))
            await send({"type": "websocket.http.response.start", "status": response.status, "headers": headers})
            await send({"type": "websocket.http.response.body", "body": body})
        else:
            await send({"type": "websocket.close", "code": 1008, "reason": ""})


async def _close_stream(stream: Any) -> None:
    closer = getattr(stream, "aclose", None)
    if closer is not None:
        await closer()


async def _send_stream(stream: Any, send: Any, receive: Any) -> None:
    """Send a streamed body chunk by chunk; when ``http.disconnect`` arrives meanwhile, stop (the
    stream may be waiting for data, so the task is interrupted) and close the generator."""
    task = asyncio.current_task()
    assert task is not None
    streaming = True
    gone = False

    async def watch() -> None:
        nonlocal gone
        while True:
            event = await receive()
            if event["type"] == "http.disconnect":
                gone = True
                if streaming:
                    task.cancel()
                return

    watcher = asyncio.ensure_future(watch())
    try:
        try:
            async for chunk in stream:
                if chunk:
                    await send({"type": "http.response.body", "body": chunk, "more_body": True})
            await send({"type": "http.response.body", "body": b""})
        except asyncio.CancelledError:
            if not gone:
                raise
        except OSError:  # the ASGI server says the client is gone (spec 2.4)
            pass
        finally:
            streaming = False
            watcher.cancel()
        uncancel = getattr(task, "uncancel", None)  # 3.11+: cancellations are counted
        if gone and uncancel is not None and task.cancelling():  # type: ignore[attr-defined]
            uncancel()  # the cancel was ours, to stop the stream: the call itself goes on
    finally:
        await _close_stream(stream)


__all__ = ["ASGIApp", "request_from_scope"]
