"""ASGI applications inside stonechat: ``app.mount(prefix, asgi_app)``.

Owns the prefix table and, per request, the translation between the server's contract
(``server/interface.py``) and ASGI 3: the scope (``path`` is the full path and ``root_path`` the
mount's prefix, as the ASGI spec and Starlette >= 0.33 read them: the app's own route path is
``path`` minus ``root_path``), ``receive``/``send``, and the answer the server writes: a finished
``HTTPResponse``, or one whose ``stream`` the app's later ``send`` calls feed (chunk by chunk,
with backpressure both ways). WebSockets are ``mount_websocket.py``; the scope's pieces
``scope.py``.

The hot path (stonechat's server hosting a Starlette app): the scope is one dict built from what
the server parsed (its header list is handed over, not copied) and the app's first step runs
inside ``handle()`` (``eager.py``), so an app that answers at once costs one task and its
response is written in the callback that parsed the request. Request bodies arrive whole: the
server has read them (``max_body_size`` applies) before the app runs, so ``receive`` gives one
``http.request`` message.
"""

from __future__ import annotations

import asyncio
import logging
from collections import deque
from dataclasses import dataclass
from typing import Any, Awaitable, Optional, Union

from ..core.conversion import TEXT
from ..server.interface import HTTPRequest, HTTPResponse
from .eager import EagerStarter
from .headers import block_from_asgi
from .lifespan import ASGILifespan
from .mount_websocket import WebSocketCycle
from .scope import ASGI, ClientDisconnected, internal_error, scope_paths

logger = logging.getLogger("stonechat.asgi")

_HEAD_BODY_MAX = 64 * 1024 * 1024


@dataclass(frozen=True)
class MountSpec:
    """``app.mount(prefix, app)`` as recorded: ``prefix`` is "" for the root, else "/api"."""

    prefix: str
    app: Any
    name: str  # what the logs call it: "mounted app FastAPI at /api"


class Mount:
    """One ASGI application at a prefix, compiled for one ``served()`` (``App._build``)."""

    __slots__ = ("prefix", "app", "name", "state", "background", "close_timeout", "background_timeout", "starter")

    def __init__(self, prefix: str, app: Any, name: str, settings: Any) -> None:
        self.prefix = prefix  # "" for the root, else "/api" (no trailing slash)
        self.app = app
        self.name = name
        self.state: dict = {}  # what the app's lifespan put in its "state"; each request gets a copy
        self.background: set[asyncio.Task] = set()  # calls still running after their response
        self.close_timeout = settings.ws_close_timeout
        self.background_timeout = min(settings.drain_timeout, settings.shutdown_handler_timeout / 2)
        self.starter = EagerStarter()  # each call's first step, on a task made ahead (eager.py)

    def handle(self, raw: HTTPRequest) -> Union[HTTPResponse, Awaitable[Any]]:
        if raw.websocket:
            return WebSocketCycle(self, raw).start()
        return _HTTPCycle(self, raw).start()

    def lifespan(self) -> ASGILifespan:
        """The app's lifespan, for the lifecycle to enter at startup and exit at shutdown."""
        return ASGILifespan(self.app, self.name, self.state, self.finish_background)

    def keep(self, task: asyncio.Task) -> None:
        self.background.add(task)
        task.add_done_callback(self.background.discard)

    async def finish_background(self) -> None:
        """Before the app's lifespan shutdown: let calls that outlived their response (Starlette
        background tasks) finish, for at most half of ``shutdown_handler_timeout``."""
        tasks = [t for t in self.background if not t.done()]
        if not tasks:
            return
        logger.info("waiting for %d call(s) of %s still running (up to %.1f s)", len(tasks), self.name,
                    self.background_timeout)
        _, pending = await asyncio.wait(tasks, timeout=self.background_timeout)
        if pending:
            logger.warning("%s: cancelling %d call(s) still running", self.name, len(pending))
            for task in pending:
                task.cancel()
            await asyncio.wait(pending, timeout=1.0)


class MountTable:
    """The app's mounts. ``Dispatcher.handle`` asks it only when no stonechat route matched, so
    stonechat's own routes cost nothing more; the longest prefix wins, the root mount last."""

    __slots__ = ("entries", "root")

    def __init__(self, mounts: list[Mount]) -> None:
        others = sorted((m for m in mounts if m.prefix), key=lambda m: -len(m.prefix))
        self.entries = tuple((m.prefix.encode(), len(m.prefix), m) for m in others)
        self.root: Optional[Mount] = next((m for m in mounts if not m.prefix), None)

    def find(self, path: bytes) -> Optional[Mount]:
        for prefix, n, mount in self.entries:
            if path.startswith(prefix) and (len(path) == n or path[n] == 47):  # 47: "/"
                return mount
        return self.root


# -- HTTP --------------------------------------------------------------------------------------

class _HTTPCycle:
    """One HTTP request through a mounted app."""

    __slots__ = ("mount", "raw", "loop", "status", "headers", "response", "future", "stream",
                 "body_taken", "complete", "finished", "disconnected", "waiter")

    def __init__(self, mount: Mount, raw: HTTPRequest) -> None:
        self.mount = mount
        self.raw = raw
        self.status: Optional[int] = None
        self.headers: Any = ()
        self.response: Optional[HTTPResponse] = None  # answered while still inside handle()
        self.future: Optional[asyncio.Future] = None  # what the server awaits otherwise
        self.stream: Optional[_ResponseStream] = None
        self.body_taken = False
        self.complete = False  # the whole response was handed over
        self.finished = False  # the app's call returned
        self.disconnected = False
        self.waiter: Optional[asyncio.Future] = None  # a receive() waiting for the end

    def start(self) -> Union[HTTPResponse, Awaitable[Any]]:
        mount = self.mount
        loop = mount.starter.running_loop()
        if loop is None:
            return self._start_in_loop()
        self.loop = loop
        raw = self.raw
        path, raw_path, root = scope_paths(mount.prefix, raw)
        client = raw.client
        if client is not None and len(client) != 2:
            client = client[:2]  # IPv6 peer names have four items; ASGI wants (host, port)
        server = raw.server
        if server is not None and len(server) != 2:
            server = server[:2]
        scope = {
            "type": "http", "asgi": ASGI, "http_version": raw.http_version, "method": raw.method,
            "scheme": raw.scheme, "path": path, "raw_path": raw_path, "query_string": raw.query,
            "root_path": root, "headers": raw.headers, "client": client, "server": server,
        }
        if mount.state:
            scope["state"] = mount.state.copy()
        task = mount.starter.start(loop, self._run(scope))
        if task is not None and not self.finished:
            mount.keep(task)
        response = self.response
        if response is not None:
            return response
        if self.status is not None:  # the head is there and the app waits: stream the body
            self._head_only()
            return self.response  # type: ignore[return-value]
        future = self.future = loop.create_future()
        future.add_done_callback(self._server_done)
        return future

    async def _start_in_loop(self) -> HTTPResponse:
        answer = self.start()
        if answer.__class__ is not HTTPResponse:
            answer = await answer  # type: ignore[misc]
        return answer  # type: ignore[return-value]

    # -- the app's receive and send ---------------------------------------------------------

    async def _receive(self) -> dict:
        if not self.body_taken:
            self.body_taken = True
            return {"type": "http.request", "body": self.raw.body, "more_body": False}
        if not self.disconnected and not self.complete:
            waiter = self.waiter
            if waiter is None:
                waiter = self.waiter = self.loop.create_future()
            await asyncio.shield(waiter)
        return {"type": "http.disconnect"}

    async def _send(self, message: dict) -> None:
        if self.disconnected:
            raise ClientDisconnected("the client went away")
        kind = message["type"]
        if kind == "http.response.body":
            body = message.get("body", b"")
            more = message.get("more_body", False)
            stream = self.stream
            if stream is None:
                if self.status is None:
                    raise RuntimeError("ASGI message 'http.response.body' sent before 'http.response.start'")
                if self.complete:
                    raise RuntimeError("ASGI message 'http.response.body' sent after the response was complete")
                if not more:
                    self._answer(self._whole(body))
                    return
                stream = self._begin_stream()
            elif self.complete:
                raise RuntimeError("ASGI message 'http.response.body' sent after the response was complete")
            await stream.put(body, more)
        elif kind == "http.response.start":
            if self.status is not None:
                raise RuntimeError("ASGI message 'http.response.start' sent twice")
            self.status = message["status"]
            self.headers = message.get("headers", ())
            if self.future is not None:
                # Past handle(): if the app waits before its body, the head goes out at once
                # (a server-sent event stream needs its headers before its first event).
                self.loop.call_soon(self._head_only)
        else:
            raise RuntimeError(f"unexpected ASGI message {kind!r} in an HTTP response")

    # -- answering --------------------------------------------------------------------------

    def _whole(self, body: bytes) -> HTTPResponse:
        block, length = block_from_asgi(self.headers)
        self.complete = True
        if self.waiter is not None:
            self._wake()
        if length > 0 and not body and self.raw.method == "HEAD":
            # The server writes len(body) as a HEAD answer's Content-Length: keep the app's.
            if length <= _HEAD_BODY_MAX:
                return HTTPResponse(self.status, block, bytes(length))  # type: ignore[arg-type]
            return HTTPResponse(self.status, block, stream=_NoBody())  # type: ignore[arg-type]
        return HTTPResponse(self.status, block, body)  # type: ignore[arg-type]

    def _begin_stream(self) -> "_ResponseStream":
        block, _ = block_from_asgi(self.headers)
        stream = self.stream = _ResponseStream(self)
        self._answer(HTTPResponse(self.status, block, stream=stream))  # type: ignore[arg-type]
        return stream

    def _answer(self, response: HTTPResponse) -> None:
        future = self.future
        if future is None:
            self.response = response  # still inside handle(): returned from there
        elif not future.done():
            future.set_result(response)

    def _head_only(self) -> None:
        if self.stream is None and not self.complete and not self.disconnected:
            try:
                self._begin_stream()
            except Exception as exc:  # a bad header: the app's send will not see it, so say it here
                logger.error("%s sent an invalid response head for %s %s: %s", self.mount.name,
                             self.raw.method, self.raw.target.decode("latin-1"), exc)
                self.complete = True
                self._answer(internal_error())

    def _server_done(self, future: asyncio.Future) -> None:
        if future.cancelled():  # the client left (or the drain deadline passed) before the answer
            self._gone()

    def _gone(self) -> None:
        if self.disconnected:
            return
        self.disconnected = True
        self._wake()
        if self.stream is not None:
            self.stream.abort()

    def _wake(self) -> None:
        waiter = self.waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    # -- the app's call ---------------------------------------------------------------------

    async def _run(self, scope: dict) -> None:
        try:
            await self.mount.app(scope, self._receive, self._send)
        except BaseException as exc:
            self._failed(exc)
            if not isinstance(exc, Exception):
                raise
        else:
            if not self.complete:
                self._unfinished()
        finally:
            self.finished = True

    def _failed(self, exc: BaseException) -> None:
        raw = self.raw
        if self.disconnected:
            logger.debug("%s ended with %r after the client left", self.mount.name, exc)
            return
        if self.stream is not None:
            if not self.complete:
                self.stream.fail(exc)  # the server logs it and closes the connection
                return
        elif not self.complete:
            self.complete = True
            if isinstance(exc, asyncio.CancelledError):
                self._answer(HTTPResponse(503, TEXT, b"Service unavailable: server shutting down\n"))
                return
            status = getattr(exc, "status_code", None)
            if status.__class__ is int and 400 <= status <= 599:  # type: ignore[operator]
                # Starlette's HTTPException out of an app used bare (StaticFiles' 404): the answer
                # the Starlette app around it would have given.
                detail = str(getattr(exc, "detail", "") or "").encode()
                self._answer(HTTPResponse(status, TEXT, detail + b"\n" if detail else b""))  # type: ignore[arg-type]
                return
            logger.error("%s failed on %s %s", self.mount.name, raw.method, raw.target.decode("latin-1"),
                         exc_info=exc)
            self._answer(internal_error())
            return
        if not isinstance(exc, asyncio.CancelledError):
            logger.error("%s failed on %s %s after its response", self.mount.name, raw.method,
                         raw.target.decode("latin-1"), exc_info=exc)

    def _unfinished(self) -> None:
        what = f"{self.mount.name} returned without finishing its response to {self.raw.method} " \
               f"{self.raw.target.decode('latin-1')}"
        if self.stream is not None:
            self.stream.fail(RuntimeError(what))
            return
        logger.error(what)
        self.complete = True
        self._answer(internal_error())


class _NoBody:
    """The stream of a HEAD answer whose GET body would be too large to stand in for."""

    def __aiter__(self) -> "_NoBody":
        return self

    async def __anext__(self) -> bytes:
        raise StopAsyncIteration


class _ResponseStream:
    """A response body the app is still sending, as the async iterator the server writes
    (``HTTPResponse.stream``). The app may run two chunks ahead of the server; its next ``send``
    waits until the server took one, so a slow client slows the app instead of growing memory."""

    __slots__ = ("cycle", "chunks", "reader", "room", "ended", "error", "discard")

    def __init__(self, cycle: _HTTPCycle) -> None:
        self.cycle = cycle
        self.chunks: deque[bytes] = deque()
        self.reader: Optional[asyncio.Future] = None  # the server waiting for a chunk
        self.room: Optional[asyncio.Future] = None  # the app waiting for the server
        self.ended = False
        self.error: Optional[BaseException] = None
        self.discard = False  # a HEAD answer: the server wants no body

    def __aiter__(self) -> "_ResponseStream":
        return self

    async def __anext__(self) -> bytes:
        chunks = self.chunks
        while not chunks:
            if self.error is not None:
                error, self.error = self.error, None
                raise error
            if self.ended:
                raise StopAsyncIteration
            reader = self.reader = self.cycle.loop.create_future()
            try:
                await reader
            except asyncio.CancelledError:  # the client left, or the drain deadline passed
                self.cycle._gone()
                raise
            finally:
                self.reader = None
        chunk = chunks.popleft()
        room = self.room
        if room is not None:
            self.room = None
            if not room.done():
                room.set_result(None)
        return chunk

    async def aclose(self) -> None:
        """The server is done with the body: complete, or it stopped early (client gone)."""
        if self.ended and not self.chunks:
            return
        if self.cycle.raw.method == "HEAD":
            self.discard = True
            self.chunks.clear()
            self._free()
            return
        self.cycle._gone()

    async def put(self, body: bytes, more: bool) -> None:
        if self.discard:
            if not more:
                self.ended = True
                self.cycle.complete = True
            return
        if body:
            self.chunks.append(body)
        if not more:
            self.ended = True
            self.cycle.complete = True
            self.cycle._wake()
        reader = self.reader
        if reader is not None and not reader.done():
            reader.set_result(None)
        if more and len(self.chunks) >= 2:
            room = self.room = self.cycle.loop.create_future()
            await room

    def fail(self, error: BaseException) -> None:
        self.error = error
        self.ended = True
        reader = self.reader
        if reader is not None and not reader.done():
            reader.set_result(None)

    def abort(self) -> None:
        self.chunks.clear()
        room = self.room
        if room is not None:
            self.room = None
            if not room.done():
                room.set_exception(ClientDisconnected("the client went away"))

    def _free(self) -> None:
        room = self.room
        if room is not None:
            self.room = None
            if not room.done():
                room.set_result(None)


__all__ = ["Mount", "MountSpec", "MountTable"]
