"""A WebSocket through a mounted ASGI app (``mount.py``): the handshake the app decides
(``websocket.accept`` with its subprotocol and headers, ``websocket.close`` before it: 403, or a
``websocket.http.response`` denial: the app's own answer), then the session that bridges the
server's ``WebSocketConnection`` to the app's ``receive``/``send``: messages both ways without a
coroutine per received message, close codes and reasons both ways, ``OSError`` from ``send``
once the connection is gone (ASGI spec 2.4).
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any, Awaitable, Optional, Union

from ..core.conversion import TEXT
from ..server.interface import NO_MESSAGE, ConnectionClosed, HTTPRequest, HTTPResponse, WebSocketAccept
from .headers import block_from_asgi
from .scope import ASGI, ClientDisconnected, address, internal_error, scope_paths

logger = logging.getLogger("stonechat.asgi")

_WS_EXTENSIONS: dict[str, dict] = {"websocket.http.response": {}}

def _subprotocols(headers: list[tuple[bytes, bytes]]) -> list[str]:
    found = []
    for name, value in headers:
        if name == b"sec-websocket-protocol":
            found += [p.strip() for p in value.decode("latin-1").split(",") if p.strip()]
    return found


class WebSocketCycle:
    """One WebSocket through a mounted app: the handshake (the app's accept, close or denial
    response decides it), then the session that bridges the server's connection to the app."""

    __slots__ = ("mount", "raw", "loop", "handshake", "task", "conn", "connected", "decided", "accepted",
                 "ready", "pending", "pending_close", "denial", "timer")

    def __init__(self, mount: Any, raw: HTTPRequest) -> None:
        self.mount = mount
        self.raw = raw
        self.conn: Any = None  # the server's WebSocketConnection, once the 101 is out
        self.connected = False  # websocket.connect was received
        self.decided = False  # the handshake is answered
        self.accepted = False
        self.pending: list[Union[str, bytes]] = []  # sent between the accept and the 101
        self.pending_close: Optional[tuple[int, str]] = None
        self.denial: Optional[list] = None  # [status, headers, body parts] of a denial response
        self.timer: Optional[asyncio.TimerHandle] = None

    def start(self) -> Awaitable[Any]:
        loop = self.mount.starter.running_loop()
        if loop is None:
            return self._start_in_loop()
        self.loop = loop
        raw = self.raw
        path, raw_path, root = scope_paths(self.mount.prefix, raw)
        scope = {
            "type": "websocket", "asgi": ASGI, "http_version": raw.http_version,
            "scheme": "wss" if raw.scheme == "https" else "ws", "path": path, "raw_path": raw_path,
            "query_string": raw.query, "root_path": root, "headers": raw.headers,
            "client": address(raw.client), "server": address(raw.server),
            "subprotocols": _subprotocols(raw.headers), "extensions": _WS_EXTENSIONS,
        }
        if self.mount.state:
            scope["state"] = self.mount.state.copy()
        self.handshake = loop.create_future()
        self.handshake.add_done_callback(self._handshake_done)
        self.ready = loop.create_future()  # set when the session starts (or never will)
        self.task = loop.create_task(self._run(scope))
        return self.handshake

    async def _start_in_loop(self) -> Any:
        return await self.start()

    def _decide(self, answer: Any) -> None:
        self.decided = True
        if not self.handshake.done():
            self.handshake.set_result(answer)
            if isinstance(answer, WebSocketAccept):
                # The server starts the session at once; if it never does (the client left
                # meanwhile) the app must not wait for it forever.
                self.timer = self.loop.call_later(self.mount.close_timeout + 1.0, self._abandon)
                return
        self._abandon()  # refused (or the client is gone): a receive() now gets the disconnect

    def _handshake_done(self, future: asyncio.Future) -> None:
        if future.cancelled():
            self._abandon()

    def _abandon(self) -> None:
        if not self.ready.done():
            self.ready.set_result(None)

    # -- the session (after the 101) ---------------------------------------------------------

    async def _session(self, conn: Any) -> None:
        if self.timer is not None:
            self.timer.cancel()
        self.conn = conn
        try:
            for message in self.pending:
                conn.send_nowait(message)
            if self.pending_close is not None:
                conn.close_nowait(*self.pending_close)
        except ConnectionClosed:
            pass
        self.pending = []
        if not self.ready.done():
            self.ready.set_result(None)
        # The app runs the connection; cancelling the session (server stop) cancels the app.
        await self.task

    # -- the app's receive and send ---------------------------------------------------------

    async def _receive(self) -> dict:
        if not self.connected:
            self.connected = True
            return {"type": "websocket.connect"}
        conn = self.conn
        if conn is None:
            if not self.ready.done():
                await asyncio.shield(self.ready)
            conn = self.conn
            if conn is None:
                return {"type": "websocket.disconnect", "code": 1006, "reason": ""}
        try:
            message = conn.receive_nowait()
            if message is NO_MESSAGE:
                message = await conn.next_message()
        except ConnectionClosed as exc:
            return {"type": "websocket.disconnect", "code": exc.code, "reason": exc.reason}
        if message.__class__ is str:
            return {"type": "websocket.receive", "text": message}
        return {"type": "websocket.receive", "bytes": message}

    async def _send(self, message: dict) -> None:
        kind = message["type"]
        if kind == "websocket.send":
            data = message.get("text")
            if data is None:
                data = message.get("bytes")
                if data is None:
                    raise TypeError("ASGI message 'websocket.send' needs 'text' or 'bytes'")
            conn = self.conn
            if conn is None:
                if not self.accepted:
                    raise RuntimeError("ASGI message 'websocket.send' sent before 'websocket.accept'")
                if self.ready.done():
                    raise ClientDisconnected("the WebSocket is closed")
                self.pending.append(data)
                return
            try:
                conn.write_message(data)
                if conn.write_paused:
                    await conn.drain()
            except ConnectionClosed as exc:
                raise ClientDisconnected(str(exc)) from None
        elif kind == "websocket.close":
            code = message.get("code") or 1000
            reason = message.get("reason") or ""
            if not self.decided:
                self._decide(HTTPResponse(403, TEXT, b"Forbidden\n"))
            elif self.conn is not None:
                self.conn.close_nowait(code, reason)
            elif self.accepted and self.pending_close is None:
                self.pending_close = (code, reason)
        elif kind == "websocket.accept":
            if self.decided:
                raise RuntimeError("ASGI message 'websocket.accept' sent after the handshake was answered")
            headers = message.get("headers")
            block = block_from_asgi(headers)[0] if headers else b""
            self.accepted = True
            self._decide(WebSocketAccept(self._session, block, message.get("subprotocol")))
        elif kind == "websocket.http.response.start":
            if self.decided or self.denial is not None:
                raise RuntimeError("ASGI message 'websocket.http.response.start' sent after the handshake was answered")
            self.denial = [message["status"], message.get("headers", ()), []]
        elif kind == "websocket.http.response.body":
            denial = self.denial
            if denial is None or self.decided:
                raise RuntimeError("ASGI message 'websocket.http.response.body' without a denial response start")
            denial[2].append(message.get("body", b""))
            if not message.get("more_body", False):
                block, _ = block_from_asgi(denial[1])
                self._decide(HTTPResponse(denial[0], block, b"".join(denial[2])))
        else:
            raise RuntimeError(f"unexpected ASGI message {kind!r} on a WebSocket")

    async def _run(self, scope: dict) -> None:
        name = self.mount.name
        path = self.raw.target.decode("latin-1")
        try:
            await self.mount.app(scope, self._receive, self._send)
        except ClientDisconnected:
            pass
        except Exception as exc:
            conn = self.conn
            if not self.decided:
                logger.error("%s failed during the WebSocket handshake on %s", name, path, exc_info=exc)
                self._decide(internal_error())
            elif conn is not None and not conn.closed:
                logger.error("%s failed on the WebSocket %s; closing 1011", name, path, exc_info=exc)
                conn.close_nowait(1011, "internal error")
            else:
                logger.info("%s raised %r on %s after the WebSocket closed", name, exc, path)
        else:
            if not self.decided:
                logger.error("%s returned without accepting or refusing the WebSocket on %s", name, path)
                self._decide(internal_error())


__all__ = ["WebSocketCycle"]
