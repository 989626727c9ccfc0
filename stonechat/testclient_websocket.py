"""WebSockets in ``TestClient`` without a socket: the in-process connection the real session
runs against, and the object a test drives.

``TestClient.websocket_connect(path)`` sends the handshake through the app's real
``handle`` (routing, authentication, parameters, the connect handler: ``websocket/session.py``);
a refusal raises :class:`WebSocketRefused` with its status and body. An accepted handshake
starts the app's real session with an :class:`InProcessWebSocket`, which implements
``server/interface.py``'s ``WebSocketConnection`` on two in-memory queues instead of frames
on a transport. The test holds a :class:`WebSocketTestSession`:

    with client.websocket_connect("/chat?room=a", subprotocols=["v1"]) as ws:
        ws.send_text("hi")
        assert ws.receive_text() == "a: hi"
        ws.close(1000)

Everything runs on the ``TestClient``'s event loop, in the test's thread: the app's side
runs while the test waits in a ``receive_*``, ``close`` or the handshake, and for a few loop
steps after each ``send_*`` (so a handler that only reacts has reacted). Every wait is
bounded (``timeout``, default 5 s): a test fails with ``TimeoutError``, it never hangs.

Close semantics are the real server's: our peer (the test) answers a close at once, so a
server-side close is complete immediately; a close from the test reaches the app after the
messages sent before it. After the server closes, ``receive_*`` and ``send_*`` raise
``WebSocketDisconnect`` with its code and reason, also kept in ``ws.close_code`` and
``ws.close_reason``. Connections of one client share the app's registry, so broadcast
between two test WebSockets works. There is no flow control (``write_paused`` stays false)
and no ping/pong: nothing is on a wire.
"""

from __future__ import annotations

import asyncio
import logging
from collections import deque
from typing import Any, Callable, Optional, Union

import orjson

from .core.conversion import decode_header_block
from .core.datastructures import Headers
from .server.interface import NO_MESSAGE, ConnectionClosed, HTTPRequest, WebSocketAccept, close_payload
from .websocket.api import WebSocketDisconnect

logger = logging.getLogger("stonechat.websocket")

Message = Union[str, bytes]

# Frames prepared for one in-process connection can be given to any other (broadcast).
IN_PROCESS_FRAMES = "in-process"


class _Close:
    """In the test's queue: the server closed with ``code``/``reason``."""

    __slots__ = ("code", "reason")

    def __init__(self, code: int, reason: str) -> None:
        self.code = code
        self.reason = reason


def _as_message(message: Any) -> Message:
    if message.__class__ is str or message.__class__ is bytes:
        return message
    if isinstance(message, (bytes, bytearray, memoryview)):
        return bytes(message)
    if isinstance(message, str):
        return str(message)
    raise TypeError(f"a WebSocket message is str or bytes, not {type(message).__name__}")


class InProcessWebSocket:
    """The server side of one in-process WebSocket (``WebSocketConnection``): what the app's
    session sends goes to the test's queue, what the test sends to the app's."""

    frame_kind: Any = IN_PROCESS_FRAMES
    write_paused = False  # nothing is on a wire: sends never wait

    def __init__(self, loop: asyncio.AbstractEventLoop, request: HTTPRequest, close_timeout: float) -> None:
        self.loop = loop
        self.request = request
        self.close_timeout = close_timeout
        self.open = True
        self.close_code = 1006
        self.close_reason = ""
        self.closed_by = ""
        self.closed_future: asyncio.Future = loop.create_future()
        self.session_task: Optional[asyncio.Task] = None
        # test → app
        self.inbox: deque = deque()
        self.waiter: Optional[asyncio.Future] = None
        self.pending_close: Optional[tuple[int, str]] = None
        # app → test
        self.outbox: deque = deque()
        self.out_waiter: Optional[asyncio.Future] = None

    # -- state -------------------------------------------------------------------------------

    @property
    def closed(self) -> bool:
        return not self.open

    def _set_closed(self, code: int, reason: str, by: str) -> None:
        if not self.open:
            return
        self.open = False
        self.close_code, self.close_reason, self.closed_by = code, reason, by
        logger.info("WebSocket %s (in-process) closed by %s: %d %s",
                    self.request.path.decode("latin-1"), by, code, reason or "(no reason)")
        waiter, self.waiter = self.waiter, None
        if waiter is not None and not waiter.done():
            waiter.set_exception(ConnectionClosed(code, reason, by))
        if not self.closed_future.done():
            self.closed_future.set_result(None)

    def _to_test(self, item: Any) -> None:
        waiter, self.out_waiter = self.out_waiter, None
        if waiter is not None and not waiter.done():
            waiter.set_result(item)
        else:
            self.outbox.append(item)

    # -- the app's side (server/interface.py WebSocketConnection) ---------------------------

    async def receive(self) -> Message:
        message = self.receive_nowait()
        if message is NO_MESSAGE:
            message = await self.next_message()
        return message

    def receive_nowait(self) -> Any:
        inbox = self.inbox
        if inbox:
            message = inbox.popleft()
            if self.pending_close is not None and not inbox:
                self.loop.call_soon(self._finish_test_close)
            return message
        if not self.open:
            raise ConnectionClosed(self.close_code, self.close_reason, self.closed_by)
        return NO_MESSAGE

    def next_message(self) -> "asyncio.Future[Any]":
        if self.waiter is not None:
            raise RuntimeError("receive() is already being awaited by another task")
        waiter = self.waiter = self.loop.create_future()
        return waiter

    def write_message(self, message: Message) -> None:
        if not self.open:
            raise ConnectionClosed(self.close_code, self.close_reason, self.closed_by, sending=True)
        self._to_test(_as_message(message))

    async def send(self, message: Message) -> None:
        self.write_message(message)

    def send_nowait(self, message: Message) -> None:
        self.write_message(message)

    async def drain(self) -> None:
        return None

    def prepare(self, message: Message) -> bytes:
        message = _as_message(message)
        return b"t" + message.encode() if isinstance(message, str) else b"b" + message

    def send_frame_nowait(self, frame: bytes) -> None:
        self.write_message(frame[1:].decode() if frame[:1] == b"t" else frame[1:])

    def close_nowait(self, code: int = 1000, reason: str = "") -> None:
        close_payload(code, reason)  # ValueError for a code or reason a close frame cannot carry
        if not self.open:
            return
        self._to_test(_Close(code, reason))
        self._set_closed(code, reason, "server")  # the test answers a close at once

    async def close(self, code: int = 1000, reason: str = "") -> None:
        self.close_nowait(code, reason)
        await asyncio.shield(self.closed_future)

    async def wait_closed(self) -> None:
        await asyncio.shield(self.closed_future)

    def on_closed(self, callback: Callable[[], None]) -> None:
        self.closed_future.add_done_callback(lambda _: callback())

    # -- the test's side -----------------------------------------------------------------------

    def deliver(self, message: Message) -> None:
        """A message from the test to the app."""
        waiter, self.waiter = self.waiter, None
        if waiter is not None and not waiter.done():
            waiter.set_result(message)
        else:
            self.inbox.append(message)

    def close_from_test(self, code: int, reason: str) -> None:
        """The test closes: the app sees it after the messages sent before it (as the real
        server defers a close until the session took those, bounded by ``ws_close_timeout``)."""
        if not self.open or self.pending_close is not None:
            return
        self.pending_close = (code, reason)
        if not self.inbox:
            self.loop.call_soon(self._finish_test_close)
        else:
            self.loop.call_later(self.close_timeout, self._finish_test_close)

    def _finish_test_close(self) -> None:
        if self.pending_close is not None:
            code, reason = self.pending_close
            self._set_closed(code, reason, "client")

    def next_for_test_nowait(self) -> Any:
        """A message (or ``_Close``) the app has sent, if there is one to take now, else None."""
        if self.outbox:
            return self.outbox.popleft()
        if not self.open:
            return _Close(self.close_code, self.close_reason)
        return None

    async def next_for_test(self) -> Any:
        """The next message (or ``_Close``) from the app."""
        item = self.next_for_test_nowait()
        if item is not None:
            return item
        waiter = self.out_waiter = self.loop.create_future()
        try:
            return await waiter
        finally:
            if self.out_waiter is waiter:
                self.out_waiter = None

    async def run_session(self, accept: WebSocketAccept) -> None:
        """The app's session, run as the server runs it (server/ws.py ``_run_session``)."""
        try:
            await accept.session(self)
        except (ConnectionClosed, asyncio.CancelledError):
            pass
        except Exception:
            logger.exception("WebSocket session on %s failed", self.request.path.decode("latin-1"))
            if self.open:
                self.close_nowait(1011, "internal error")
            return
        if self.open:
            self.close_nowait(1000, "")


class WebSocketRefused(Exception):
    """The app answered the handshake with an HTTP response instead of accepting it."""

    def __init__(self, path: str, status_code: int, headers: Headers, content: bytes) -> None:
        self.status_code = status_code
        self.headers = headers
        self.content = content
        super().__init__(f"WebSocket handshake on {path} refused with {status_code}: "
                         f"{self.text.strip()[:200]!r}")

    @property
    def text(self) -> str:
        return self.content.decode("utf-8", "replace")

    def json(self) -> Any:
        return orjson.loads(self.content)


class WebSocketTestSession:
    """One WebSocket from the test's side (``TestClient.websocket_connect``)."""

    __test__ = False  # not a pytest test class

    # loop steps given to the app after each send
    SETTLE_STEPS = 10

    def __init__(self, loop: asyncio.AbstractEventLoop, conn: InProcessWebSocket, accept: WebSocketAccept,
                 path: str, timeout: float) -> None:
        self._loop = loop
        self._conn = conn
        self.path = path
        self.timeout = timeout
        self.accepted_subprotocol: Optional[str] = accept.subprotocol
        headers = decode_header_block(accept.headers)
        if accept.subprotocol:
            headers.set("sec-websocket-protocol", accept.subprotocol)
        self.headers = headers  # of the 101 answer
        self.close_code: Optional[int] = None  # set once the WebSocket is closed, by either side
        self.close_reason: Optional[str] = None
        self.closed_by: Optional[str] = None
        conn.session_task = loop.create_task(conn.run_session(accept))
        self._settle()

    # -- running the app ---------------------------------------------------------------------

    def _run(self, awaitable: Any, timeout: Optional[float], what: str) -> Any:
        limit = self.timeout if timeout is None else timeout
        if self._loop.is_closed():
            if asyncio.iscoroutine(awaitable):
                awaitable.close()
            raise RuntimeError(f"WebSocket {self.path}: the TestClient is closed, its app no longer runs")
        try:
            return self._loop.run_until_complete(asyncio.wait_for(awaitable, limit))
        except asyncio.TimeoutError:
            raise TimeoutError(f"WebSocket {self.path}: {what} within {limit} s") from None

    def _settle(self) -> None:
        async def steps() -> None:
            for _ in range(self.SETTLE_STEPS):
                await asyncio.sleep(0)
        self._loop.run_until_complete(steps())

    def _disconnect(self) -> WebSocketDisconnect:
        conn = self._conn
        self.close_code, self.close_reason, self.closed_by = conn.close_code, conn.close_reason, conn.closed_by
        return WebSocketDisconnect(conn.close_code, conn.close_reason)

    # -- sending -------------------------------------------------------------------------------

    def send(self, data: Message) -> None:
        """Send ``str`` as a text message, ``bytes`` as a binary one."""
        if self._conn.closed or self._conn.pending_close is not None:
            raise self._disconnect()
        self._conn.deliver(_as_message(data))
        self._settle()

    def send_text(self, data: str) -> None:
        if not isinstance(data, str):
            raise TypeError(f"send_text() takes a str, not {type(data).__name__}")
        self.send(data)

    def send_bytes(self, data: bytes) -> None:
        if not isinstance(data, (bytes, bytearray, memoryview)):
            raise TypeError(f"send_bytes() takes bytes, not {type(data).__name__}")
        self.send(bytes(data))

    def send_json(self, data: Any, mode: str = "text") -> None:
        """JSON in a text message (``mode="binary"``: in a binary one)."""
        encoded = orjson.dumps(data)
        self.send(encoded.decode() if mode == "text" else encoded)

    # -- receiving -----------------------------------------------------------------------------

    def receive(self, timeout: Optional[float] = None) -> Message:
        """The next message as sent (``str`` or ``bytes``); ``WebSocketDisconnect`` once the
        WebSocket is closed, ``TimeoutError`` if nothing comes within ``timeout``."""
        item = self._conn.next_for_test_nowait()
        if item is None:
            item = self._run(self._conn.next_for_test(), timeout, "no message from the app")
        if item.__class__ is _Close:
            raise self._disconnect()
        return item

    def receive_text(self, timeout: Optional[float] = None) -> str:
        message = self.receive(timeout)
        if not isinstance(message, str):
            raise TypeError(f"WebSocket {self.path}: expected a text message, got binary {message[:60]!r}")
        return message

    def receive_bytes(self, timeout: Optional[float] = None) -> bytes:
        message = self.receive(timeout)
        if not isinstance(message, bytes):
            raise TypeError(f"WebSocket {self.path}: expected a binary message, got text {message[:60]!r}")
        return message

    def receive_json(self, timeout: Optional[float] = None) -> Any:
        return orjson.loads(self.receive(timeout))

    # -- closing -------------------------------------------------------------------------------

    @property
    def closed(self) -> bool:
        return self._conn.closed

    def close(self, code: int = 1000, reason: str = "", timeout: Optional[float] = None) -> None:
        """Close with ``code``/``reason`` and wait until the app's session (its close handler
        included) has finished. Closing an already closed WebSocket does nothing."""
        close_payload(code, reason)  # ValueError for a code or reason a close frame cannot carry
        conn = self._conn
        conn.close_from_test(code, reason)
        self.wait_session(timeout)
        self.close_code, self.close_reason, self.closed_by = conn.close_code, conn.close_reason, conn.closed_by

    def wait_session(self, timeout: Optional[float] = None) -> None:
        """Wait until the app's session for this WebSocket has finished."""
        task = self._conn.session_task
        if task is not None and not task.done():
            limit = self._conn.close_timeout + 1.0 if timeout is None else timeout
            self._run(asyncio.shield(task), limit, "the app's session did not end")

    def __enter__(self) -> "WebSocketTestSession":
        return self

    def __exit__(self, exc_type: Any, *exc: Any) -> None:
        if exc_type is None:
            self.close()
            return
        try:  # the test failed already: close, but never hide its exception
            self.close()
        except Exception:
            logger.exception("closing the WebSocket %s after a failed test", self.path)

    def __repr__(self) -> str:
        state = f"closed {self.close_code}" if self.closed else "open"
        return f"<WebSocketTestSession {self.path} {state}>"


def shut_down(loop: asyncio.AbstractEventLoop, connections: list[InProcessWebSocket]) -> None:
    """The client is closing: like a server stopping, close the open ones with 1001 and
    wait (bounded) for their sessions to end."""
    tasks = []
    for conn in connections:
        if conn.open:
            conn.close_nowait(1001, "server shutting down")
        if conn.session_task is not None and not conn.session_task.done():
            tasks.append(conn.session_task)
    if tasks:
        timeout = max(conn.close_timeout for conn in connections) + 1.0
        loop.run_until_complete(asyncio.wait(tasks, timeout=timeout))
        for task in tasks:
            if not task.done():
                task.cancel()
        loop.run_until_complete(asyncio.wait(tasks))


__all__ = ["InProcessWebSocket", "WebSocketRefused", "WebSocketTestSession"]
