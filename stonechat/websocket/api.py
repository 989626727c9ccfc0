"""The WebSocket API of the framework: both of Robyn's styles, the objects handlers get, the
per-endpoint registry, broadcast and send-to-id, and how routes are registered.

Two styles, one machinery:

* receive loop (Robyn >= 0.80): ``@app.websocket("/chat")`` on ``async def chat(ws, ...)`` that
  awaits ``ws.receive_text()``; ``@chat.on_connect`` / ``@chat.on_close`` hooks.
* callbacks (Robyn < 0.80, removed there without replacement): ``ws = WebSocket(app, "/chat")``
  with ``@ws.on("connect" | "message" | "close")``; a returned string is sent to that client.

What happens per handshake and per connection (parameters, authentication, the connect handler's
decision, running the handler) is ``websocket/session.py``. Neither module touches a socket:
they drive the connection object the server hands to the session (``server/interface.py``:
``WebSocketConnection``).
"""

from __future__ import annotations

import inspect
import logging
import uuid
from dataclasses import replace
from typing import Any, Callable, Optional, Sequence, Union

import orjson

from ..core.datastructures import Headers, QueryParams
from ..core.registry import WebSocketSpec, WebSocketStyle
from ..core.request import Request
from .rooms import Joining, RoomHub, fan_out
from ..server.interface import NO_MESSAGE, ConnectionClosed, WebSocketConnection, close_payload

logger = logging.getLogger("stonechat.websocket")


class WebSocketDisconnect(Exception):
    """The WebSocket closed: raised by ``receive_*`` (and by sends after the close).
    ``code``/``reason`` are the peer's close frame (1005: no code, 1006: dropped without one)."""

    def __init__(self, code: int = 1000, reason: str = "", message: Optional[str] = None) -> None:
        super().__init__(message or f"WebSocket disconnected (code {code}{': ' + reason if reason else ''})")
        self.code = code
        self.reason = reason


def _disconnect(exc: ConnectionClosed) -> WebSocketDisconnect:
    return WebSocketDisconnect(exc.code, exc.reason, str(exc))


async def _drain(conn: WebSocketConnection) -> None:
    """Wait while this client's unsent data is over ``ws_write_limit`` (its close → disconnect)."""
    try:
        await conn.drain()
    except ConnectionClosed as exc:
        raise _disconnect(exc) from None


class _Closing:
    """What ``close()`` returns: the close has started already; awaiting waits for the end."""

    __slots__ = ("conn",)

    def __init__(self, conn: Optional[WebSocketConnection]) -> None:
        self.conn = conn

    def __await__(self):
        if self.conn is not None:
            return (yield from self.conn.wait_closed().__await__())
        return None


class Clients(dict):
    """An endpoint's live clients in this process, by id. ``relay``, under ``--processes N``
    or with a broker, hands a broadcast to the other processes (``WebSocketDispatcher.connect_peers``);
    ``hub`` is the app's rooms (``rooms.py``); ``recovery``: the endpoint's clients get envelopes."""

    __slots__ = ("relay", "hub", "recovery")

    def __init__(self) -> None:
        super().__init__()
        self.relay: Optional[Callable[[Union[str, bytes]], None]] = None
        self.hub: Optional[RoomHub] = None
        self.recovery = False


def send_to_all(clients: Clients, message: Union[str, bytes]) -> int:
    """Write ``message`` to every live client in ``clients`` (encoded once per frame kind), never waiting for
    any of them; returns how many it was written to."""
    return fan_out(clients, message) if clients else 0


class WebSocketConnector:
    """One client connection (Robyn's ``WebSocketConnector``): id, query params, sending to
    this or another client of the same endpoint, broadcast, close. Sync and async variants."""

    __slots__ = ("id", "query_params", "path_params", "request", "identity", "endpoint", "subprotocol",
                 "_conn", "_outbox", "_pending_close", "_clients", "_rooms", "close_code", "close_reason",
                 "closed_by", "__dict__")

    def __init__(self, endpoint: str, request: Request, clients: Clients) -> None:
        self.id = str(uuid.uuid4())
        self.endpoint = endpoint
        self.request = request
        self.query_params: QueryParams = request.query_params
        self.path_params: dict = request.path_params
        self.identity = request.identity
        self.subprotocol: Optional[str] = None  # chosen in the handshake (``subprotocols=``)
        self._conn: Optional[WebSocketConnection] = None  # set when the session starts (after 101)
        self._outbox: list = []
        self._pending_close: Optional[tuple[int, str]] = None
        self._clients = clients
        self._rooms: Optional[dict] = None  # room name → rooms.LocalRoom, once it joins one
        self.close_code: Optional[int] = None
        self.close_reason: str = ""
        self.closed_by: str = ""

    @property
    def headers(self) -> Headers:
        """The handshake request's headers (``ws.headers.get("x-token")``), in both API styles;
        ``ws.request`` is the whole handshake request (query and path params, identity,
        ``ip_addr``). Robyn has no way to read them (its issue #1446)."""
        return self.request.headers

    @property
    def _connector(self) -> "WebSocketConnector":  # Robyn's adapter keeps it here
        return self

    @property
    def closed(self) -> bool:
        conn = self._conn
        return self._pending_close is not None if conn is None else conn.closed

    # -- sending ---------------------------------------------------------------------------

    def _send_nowait(self, message: Union[str, bytes]) -> None:
        conn = self._conn
        if conn is None:
            if self._pending_close is not None:
                raise WebSocketDisconnect(*self._pending_close, message="cannot send: the WebSocket is closed")
            self._outbox.append(message)
            return
        try:
            conn.send_nowait(message)
        except ConnectionClosed as exc:
            raise _disconnect(exc) from None

    def _peer(self, recipient_id: str) -> Optional["WebSocketConnector"]:
        peer = self._clients.get(str(recipient_id))
        if peer is None:
            logger.warning("WebSocket %s: no client with id %s (closed, or on another process)",
                           self.endpoint, recipient_id)
        return peer

    def sync_send_to(self, recipient_id: str, message: Union[str, bytes]) -> bool:
        """Send to the client ``recipient_id``: of this endpoint, or of any endpoint in any
        process the broker reaches. False if it is gone; for a client of another process,
        True once handed to the broker (``async_send_to`` says whether some process took it)."""
        recipient_id = str(recipient_id)
        if recipient_id in self._clients or self._clients.hub is None:
            peer = self._peer(recipient_id)
            if peer is None:
                return False
            try:
                peer._send_nowait(message)
            except WebSocketDisconnect:
                return False
            return True
        sent = self._clients.hub.send_to(recipient_id, message)
        if sent is True or sent is False:
            return sent
        return True  # handed to the broker: another process may have it

    async def async_send_to(self, recipient_id: str, message: Union[str, bytes]) -> bool:
        recipient_id = str(recipient_id)
        hub = self._clients.hub
        if recipient_id in self._clients or hub is None:
            return self.sync_send_to(recipient_id, message)
        sent = hub.send_to(recipient_id, message)
        if sent is True or sent is False:
            return sent
        return bool(await sent)

    sync_send_bytes_to = sync_send_to
    async_send_bytes_to = async_send_to

    def sync_broadcast(self, message: Union[str, bytes], room: Optional[str] = None) -> int:
        """Send to every live client of this endpoint (this one included), never waiting for
        any of them: a client whose unsent data passes ``ws_max_write_buffer`` is dropped (1013)
        rather than stalling the others. Under ``--processes N`` the other workers' clients get it
        too (``Clients.relay``). Returns how many clients of *this process* it was written to.
        With ``room``: to every member of that room, on every endpoint and process (see
        ``join``); returns how many members it has in this process."""
        return self._broadcast(message, room)

    def _broadcast(self, message: Union[str, bytes], room: Optional[str] = None) -> int:
        clients = self._clients
        if room is not None:
            return self._room_broadcast(message, room)
        if clients.relay is not None:  # --processes N: the other workers' clients too
            clients.relay(message)
        return send_to_all(clients, message)

    def _room_broadcast(self, message: Any, room: str) -> int:
        hub = self._clients.hub
        if hub is None:
            raise RuntimeError("rooms are not available (the app is not serving)")
        hub.publish(room, message)  # not awaited: a failure is logged by the engine
        local = hub.rooms.get(room)
        return len(local) if local is not None else 0

    async def async_broadcast(self, message: Union[str, bytes], room: Optional[str] = None) -> int:
        """Like ``sync_broadcast``, then waits for *this* client's own backlog the way
        ``send`` does (so a loop of broadcasts is paced by its sender, never by the others)."""
        sent = self._broadcast(message, room)
        conn = self._conn
        if conn is not None and conn.write_paused and not conn.closed:
            await _drain(conn)
        return sent

    sync_broadcast_bytes = sync_broadcast
    async_broadcast_bytes = async_broadcast

    # -- rooms (rooms.py) ------------------------------------------------------------------

    def join(self, room: str, info: Optional[dict] = None, since: Any = None, announce: bool = False) -> Joining:
        """Join ``room`` (any endpoint's clients may share it). This process delivers its
        messages to this client at once; await the result to wait until every process does
        (and, with ``since``, until the missed messages were replayed: True, or False for
        "not recovered"). ``info``: a dict listed with this client by ``members()``.
        ``since``: the last position the client saw ("epoch:offset"), on endpoints with
        ``recovery=True``. ``announce``: publish join/leave messages to the room. Leaving is
        automatic when the connection ends, however it ends."""
        hub = self._clients.hub
        if hub is None:
            raise RuntimeError("rooms are not available (the app is not serving)")
        return hub.join(self, room, info, since, announce)

    def leave(self, room: str) -> bool:
        """Leave ``room``; False if this client was not in it."""
        hub = self._clients.hub
        return hub.leave(self, room) if hub is not None else False

    @property
    def rooms(self) -> frozenset:
        """The rooms this client is in."""
        return frozenset(self._rooms) if self._rooms else frozenset()

    sync_join = join
    sync_leave = leave

    async def async_join(self, room: str, info: Optional[dict] = None, since: Any = None,
                         announce: bool = False) -> Optional[bool]:
        return await self.join(room, info, since, announce)

    async def async_leave(self, room: str) -> bool:
        return self.leave(room)

    # -- closing -----------------------------------------------------------------------------

    def close(self, code: int = 1000, reason: str = "") -> _Closing:
        """Close with ``code`` and ``reason``. Starts at once (works from sync handlers); await
        the result to wait for the client's answer (bounded by ``ws_close_timeout``). Invalid
        codes raise ValueError before anything is sent; a second call does nothing."""
        close_payload(code, reason)  # validate
        conn = self._conn
        if conn is None:  # still in the connect handler: close right after the upgrade
            if self._pending_close is None:
                self._pending_close = (code, reason)
            return _Closing(None)
        conn.close_nowait(code, reason)
        return _Closing(conn)


class WebSocketAdapter(WebSocketConnector):
    """What a receive-loop handler gets (Robyn's ``WebSocketAdapter``)."""

    __slots__ = ()

    async def receive(self) -> Union[str, bytes]:
        """The next message as sent: ``str`` for text, ``bytes`` for binary."""
        conn = self._conn
        if conn is None:
            raise RuntimeError("receive() is not available in the connect handler (before the upgrade)")
        try:
            message = conn.receive_nowait()  # no coroutine per message: see next_message()
            if message is NO_MESSAGE:
                message = await conn.next_message()
        except ConnectionClosed as exc:
            raise _disconnect(exc) from None
        return message

    async def receive_text(self) -> str:
        conn = self._conn
        if conn is None:
            raise RuntimeError("receive_text() is not available in the connect handler (before the upgrade)")
        try:
            message = conn.receive_nowait()
            if message is NO_MESSAGE:
                message = await conn.next_message()
        except ConnectionClosed as exc:
            raise _disconnect(exc) from None
        if message.__class__ is str:
            return message
        return message.decode("utf-8", "replace")

    async def receive_bytes(self) -> bytes:
        message = await self.receive()
        return message.encode() if isinstance(message, str) else message

    async def receive_json(self) -> Any:
        return orjson.loads(await self.receive())

    async def send_text(self, data: str) -> None:
        conn = self._write(data if data.__class__ is str else str(data))
        if conn is not None:
            await _drain(conn)

    async def send_bytes(self, data: bytes) -> None:
        conn = self._write(data if data.__class__ is bytes else bytes(data))
        if conn is not None:
            await _drain(conn)

    def _write(self, message: Union[str, bytes]) -> Optional[WebSocketConnection]:
        """Write one message now; the connection if the caller must wait for it to drain.
        A plain call, not a coroutine, so a send costs no extra coroutine object."""
        conn = self._conn
        if conn is None:  # still in the connect handler: delivered right after the 101
            self._send_nowait(message)
            return None
        try:
            conn.write_message(message)
        except ConnectionClosed as exc:
            raise _disconnect(exc) from None
        return conn if conn.write_paused else None

    async def send_json(self, data: Any) -> None:
        await self.send_text(orjson.dumps(data).decode())

    async def send(self, data: Union[str, bytes]) -> None:
        if isinstance(data, (bytes, bytearray, memoryview)):
            await self.send_bytes(bytes(data))
        else:
            await self.send_text(data)

    async def broadcast(self, data: Union[str, bytes], room: Optional[str] = None) -> int:
        return await self.async_broadcast(data, room)

    async def send_to(self, recipient_id: str, data: Union[str, bytes]) -> bool:
        return await self.async_send_to(recipient_id, data)


# -- registration ------------------------------------------------------------------------------

def _update(router: Any, endpoint: str, **changes: Any) -> None:
    """Records never change: a hook added later replaces the endpoint's record."""
    router.web_socket_router[endpoint] = replace(router.web_socket_router[endpoint], **changes)


def websocket_decorator(router: Any, endpoint: str, auth_required: bool = False,
                        subprotocols: Sequence[str] = (), recovery: bool = False) -> Callable:
    """``@app.websocket(endpoint)``: record ``handler``; add ``.on_connect``/``.on_close``."""
    names = check_subprotocols(endpoint, subprotocols)

    def decorator(handler: Callable) -> Callable:
        if not inspect.iscoroutinefunction(handler):
            raise TypeError(f"@websocket({endpoint!r}): the handler {handler.__qualname__} must be 'async def'")
        router.web_socket_router[endpoint] = WebSocketSpec(
            endpoint, WebSocketStyle.RECEIVE_LOOP, router, handler=handler, auth_required=auth_required,
            subprotocols=names, recovery=bool(recovery))

        def on_connect(fn: Callable) -> Callable:
            _update(router, endpoint, on_connect=fn)
            return fn

        def on_close(fn: Callable) -> Callable:
            _update(router, endpoint, on_close=fn)
            return fn

        handler.on_connect = on_connect  # type: ignore[attr-defined]
        handler.on_close = on_close  # type: ignore[attr-defined]
        return handler

    return decorator


def create_websocket_decorator(app: Any) -> Callable:
    """Robyn's factory: ``websocket = create_websocket_decorator(app)``; ``@websocket("/x")``."""
    return app.websocket


class WebSocket:
    """The callback API: ``ws = WebSocket(app, "/chat")``, then ``@ws.on("connect")``,
    ``@ws.on("message")``, ``@ws.on("close")``. Handlers take ``(ws)`` or ``(ws, msg)`` (sync or
    async) plus any injectable parameter; a returned ``str``/``bytes`` is sent to that client."""

    EVENTS = ("connect", "message", "close")

    def __init__(self, robyn_object: Any, endpoint: str, auth_required: bool = False,
                 subprotocols: Sequence[str] = (), recovery: bool = False) -> None:
        self.robyn_object = robyn_object
        self.auth_required = auth_required
        self.recovery = bool(recovery)
        self.subprotocols = check_subprotocols(endpoint, subprotocols)
        self.methods: dict[str, Callable] = {}
        self.endpoint = ""
        robyn_object.add_web_socket(endpoint, self)  # sets self.endpoint

    def on(self, event: str) -> Callable:
        if event not in self.EVENTS:
            raise ValueError(f"unknown WebSocket event {event!r}; use one of {', '.join(self.EVENTS)}")

        def decorator(fn: Callable) -> Callable:
            self.methods[event] = fn
            _update(self.robyn_object, self.endpoint, **{_EVENT_FIELDS[event]: fn})
            return fn
        return decorator

    def inject(self, **kwargs: Any) -> None:
        self.robyn_object.inject(**kwargs)

    def inject_global(self, **kwargs: Any) -> None:
        self.robyn_object.inject_global(**kwargs)


_EVENT_FIELDS = {"connect": "on_connect", "message": "on_message", "close": "on_close"}


def register_websocket(router: Any, endpoint: str, ws: Any) -> None:
    """``app.add_web_socket(endpoint, ws)``: a ``WebSocket``, or a ``{"connect", "message",
    "close"}`` dict of handlers (Robyn's old form)."""
    subprotocols: tuple[str, ...]
    if isinstance(ws, dict):
        unknown = set(ws) - set(WebSocket.EVENTS)
        if unknown:
            raise ValueError(f"unknown WebSocket event(s) {sorted(unknown)}; use connect, message, close")
        handlers, auth_required, subprotocols, recovery = dict(ws), False, (), False
    elif isinstance(ws, WebSocket):
        ws.endpoint = endpoint
        handlers, auth_required, subprotocols = ws.methods, ws.auth_required, ws.subprotocols
        recovery = ws.recovery
    else:
        raise TypeError(f"add_web_socket expects a WebSocket or a dict of handlers, got {type(ws).__name__}")
    router.web_socket_router[endpoint] = WebSocketSpec(
        endpoint, WebSocketStyle.CALLBACKS, router, auth_required=auth_required, subprotocols=subprotocols,
        recovery=recovery, **{_EVENT_FIELDS[event]: fn for event, fn in handlers.items()})


# -- subprotocols (RFC 6455 section 1.9 and 4.2.2) ---------------------------------------------

_TOKEN_CHARS = frozenset("!#$%&'*+-.^_`|~0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ")


def check_subprotocols(endpoint: str, subprotocols: Sequence[str]) -> tuple[str, ...]:
    """The endpoint's subprotocols, in the order given; a name that is not an HTTP token (it
    could not appear in ``Sec-WebSocket-Protocol``) is refused when the route is registered."""
    if isinstance(subprotocols, str):
        raise TypeError(f"WebSocket {endpoint!r}: subprotocols is a list of names, not the string "
                        f"{subprotocols!r}")
    names = tuple(subprotocols)
    for name in names:
        if not isinstance(name, str) or not name or not set(name) <= _TOKEN_CHARS:
            raise ValueError(f"WebSocket {endpoint!r}: subprotocol {name!r} is not a valid token "
                             "(letters, digits and !#$%&'*+-.^_`|~)")
    return names


def choose_subprotocol(offered: Optional[list[str]], supported: tuple[str, ...]) -> Optional[str]:
    """The first subprotocol in the client's ``Sec-WebSocket-Protocol`` list (the client orders
    it by preference) that the endpoint supports; None when there is no match."""
    if not offered or not supported:
        return None
    for value in offered:
        for name in value.split(","):
            name = name.strip()
            if name in supported:
                return name
    return None


__all__ = ["WebSocket", "WebSocketAdapter", "WebSocketConnector", "WebSocketDisconnect",
           "create_websocket_decorator", "register_websocket", "websocket_decorator"]
