"""WebSocket routes, the framework side: both of Robyn's API styles, the per-endpoint registry,
broadcast and send-to-id, and the decision to accept or refuse a handshake.

Two styles, one machinery:

* receive loop (Robyn >= 0.80): ``@app.websocket("/chat")`` on ``async def chat(ws, ...)`` that
  awaits ``ws.receive_text()``; ``@chat.on_connect`` / ``@chat.on_close`` hooks.
* callbacks (Robyn < 0.80, removed there without replacement): ``ws = WebSocket(app, "/chat")``
  with ``@ws.on("connect" | "message" | "close")``; a returned string is sent to that client.

Per route, everything is compiled once when the app starts (``WebSocketDispatcher``): parameter
getters (path params ``/ws/:room``, query params, DI, ``request``) come from ``params.py`` like for
HTTP handlers. Per handshake, ``WebSocketDispatcher.handle`` authenticates (``auth_required``),
resolves parameters (an error refuses the handshake with 400) and runs the connect handler
*before* the upgrade, so it can refuse with an HTTP status (return a ``Response`` or raise
``HTTPException``), or accept and close at once (``ws.close(1008, ...)`` or raise
``WebSocketException``). Messages sent from the connect handler are delivered right after 101.

This module never touches a socket: it drives the connection object the server hands to the
session (``server/interface.py``: ``WebSocketConnection``).
"""

from __future__ import annotations

import asyncio
import inspect
import logging
import uuid
from typing import Any, Callable, Optional, Sequence, Union

import orjson

from .conversion import TEXT, Converter, encode_headers
from .exceptions import HTTPException, WebSocketException
from .params import ParamError, is_async_callable, resolve_getters
from .request import QueryParams, Request
from .response import Response
from .routing import Router
from .server.interface import NO_MESSAGE, ConnectionClosed, HTTPResponse, WebSocketAccept, close_payload

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


class _Closing:
    """What ``close()`` returns: the close has started already; awaiting waits for the end."""

    __slots__ = ("conn",)

    def __init__(self, conn: Any) -> None:
        self.conn = conn

    def __await__(self):
        if self.conn is not None:
            return (yield from self.conn.wait_closed().__await__())
        return None


class Clients(dict):
    """An endpoint's live clients in this process, by id. ``relay``, under ``--processes N``,
    hands a broadcast to the other worker processes (``WebSocketDispatcher.connect_peers``)."""

    __slots__ = ("relay",)

    def __init__(self) -> None:
        super().__init__()
        self.relay: Optional[Callable[[Union[str, bytes]], None]] = None


def send_to_all(clients: Clients, message: Union[str, bytes]) -> int:
    """Write ``message`` to every live client in ``clients`` (encoded once), never waiting for
    any of them; returns how many it was written to."""
    if not clients:
        return 0
    frame = None
    sent = 0
    for peer in list(clients.values()):
        conn = peer._conn
        if conn is None or conn.closed:
            continue
        if frame is None:
            frame = conn.prepare(message)
        try:
            conn.send_frame_nowait(frame)
            sent += 1
        except ConnectionClosed:
            pass
    return sent


class WebSocketConnector:
    """One client connection (Robyn's ``WebSocketConnector``): id, query params, sending to
    this or another client of the same endpoint, broadcast, close. Sync and async variants."""

    __slots__ = ("id", "query_params", "path_params", "request", "identity", "endpoint", "subprotocol",
                 "_conn", "_outbox", "_pending_close", "_clients", "close_code", "close_reason",
                 "closed_by", "__dict__")

    def __init__(self, endpoint: str, request: Request, clients: Clients) -> None:
        self.id = str(uuid.uuid4())
        self.endpoint = endpoint
        self.request = request
        self.query_params: QueryParams = request.query_params
        self.path_params: dict = request.path_params
        self.identity = request.identity
        self.subprotocol: Optional[str] = None  # chosen in the handshake (``subprotocols=``)
        self._conn: Any = None
        self._outbox: list = []
        self._pending_close: Optional[tuple[int, str]] = None
        self._clients = clients
        self.close_code: Optional[int] = None
        self.close_reason: str = ""
        self.closed_by: str = ""

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
        """Send to the client ``recipient_id`` of this endpoint; False if it is gone."""
        peer = self._peer(recipient_id)
        if peer is None:
            return False
        try:
            peer._send_nowait(message)
        except WebSocketDisconnect:
            return False
        return True

    async def async_send_to(self, recipient_id: str, message: Union[str, bytes]) -> bool:
        return self.sync_send_to(recipient_id, message)

    sync_send_bytes_to = sync_send_to
    async_send_bytes_to = async_send_to

    def sync_broadcast(self, message: Union[str, bytes]) -> int:
        """Send to every live client of this endpoint (this one included), never waiting for
        any of them: a client whose unsent data passes ``ws_max_write_buffer`` is dropped (1013)
        rather than stalling the others. Under ``--processes N`` the other workers' clients get it
        too (``Clients.relay``). Returns how many clients of *this process* it was written to."""
        return self._broadcast(message)

    def _broadcast(self, message: Union[str, bytes]) -> int:
        clients = self._clients
        if clients.relay is not None:  # --processes N: the other workers' clients too
            clients.relay(message)
        return send_to_all(clients, message)

    async def async_broadcast(self, message: Union[str, bytes]) -> int:
        """Like ``sync_broadcast``, then waits for *this* client's own backlog the way
        ``send`` does (so a loop of broadcasts is paced by its sender, never by the others)."""
        sent = self._broadcast(message)
        conn = self._conn
        if conn is not None and conn.write_paused and not conn.closed:
            try:
                await conn.drain()
            except ConnectionClosed as exc:
                raise _disconnect(exc) from None
        return sent

    sync_broadcast_bytes = sync_broadcast
    async_broadcast_bytes = async_broadcast

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
        return message.encode() if message.__class__ is str else message  # type: ignore[union-attr]

    async def receive_json(self) -> Any:
        return orjson.loads(await self.receive())

    async def send_text(self, data: str) -> None:
        conn = self._conn
        if conn is None:
            return self._send_nowait(str(data))
        try:
            conn.write_message(data if data.__class__ is str else str(data))
            if conn.write_paused:
                await conn.drain()
        except ConnectionClosed as exc:
            raise _disconnect(exc) from None

    async def send_bytes(self, data: bytes) -> None:
        conn = self._conn
        if conn is None:
            return self._send_nowait(bytes(data))
        try:
            conn.write_message(data if data.__class__ is bytes else bytes(data))
            if conn.write_paused:
                await conn.drain()
        except ConnectionClosed as exc:
            raise _disconnect(exc) from None

    async def send_json(self, data: Any) -> None:
        await self.send_text(orjson.dumps(data).decode())

    async def send(self, data: Union[str, bytes]) -> None:
        if isinstance(data, (bytes, bytearray, memoryview)):
            await self.send_bytes(bytes(data))
        else:
            await self.send_text(data)

    async def broadcast(self, data: Union[str, bytes]) -> int:
        return await self.async_broadcast(data)

    async def send_to(self, recipient_id: str, data: Union[str, bytes]) -> bool:
        return self.sync_send_to(recipient_id, data)


# -- registration ------------------------------------------------------------------------------

class _Hooks:
    """``on_connect`` / ``on_close`` attached to a receive-loop handler (``@chat.on_connect``)."""


class WebSocketRoute:
    """A registered receive-loop route (``@app.websocket``); compiled by the dispatcher."""

    kind = "loop"

    def __init__(self, router: Any, endpoint: str, handler: Callable, auth_required: bool = False,
                 subprotocols: Sequence[str] = ()) -> None:
        if not inspect.iscoroutinefunction(handler):
            raise TypeError(f"@websocket({endpoint!r}): the handler {handler.__qualname__} must be 'async def'")
        self.router = router
        self.endpoint = endpoint
        self.handler = handler
        self.auth_required = auth_required
        self.subprotocols = check_subprotocols(endpoint, subprotocols)
        self.on_connect: Optional[Callable] = None
        self.on_close: Optional[Callable] = None


def websocket_decorator(router: Any, endpoint: str, auth_required: bool = False,
                        subprotocols: Sequence[str] = ()) -> Callable:
    """``@app.websocket(endpoint)``: register ``handler``; add ``.on_connect``/``.on_close``."""

    def decorator(handler: Callable) -> Callable:
        route = WebSocketRoute(router, endpoint, handler, auth_required, subprotocols)

        def on_connect(fn: Callable) -> Callable:
            route.on_connect = fn
            return fn

        def on_close(fn: Callable) -> Callable:
            route.on_close = fn
            return fn

        handler.on_connect = on_connect  # type: ignore[attr-defined]
        handler.on_close = on_close  # type: ignore[attr-defined]
        handler.websocket_route = route  # type: ignore[attr-defined]
        router.web_socket_router[endpoint] = route
        return handler

    return decorator


def create_websocket_decorator(app: Any) -> Callable:
    """Robyn's factory: ``websocket = create_websocket_decorator(app)``; ``@websocket("/x")``."""
    return app.websocket


class WebSocket:
    """The callback API: ``ws = WebSocket(app, "/chat")``, then ``@ws.on("connect")``,
    ``@ws.on("message")``, ``@ws.on("close")``. Handlers take ``(ws)`` or ``(ws, msg)`` (sync or
    async) plus any injectable parameter; a returned ``str``/``bytes`` is sent to that client."""

    kind = "callbacks"
    EVENTS = ("connect", "message", "close")

    def __init__(self, robyn_object: Any, endpoint: str, auth_required: bool = False,
                 subprotocols: Sequence[str] = ()) -> None:
        self.robyn_object = robyn_object
        self.router = robyn_object
        self.auth_required = auth_required
        self.subprotocols = check_subprotocols(endpoint, subprotocols)
        self.methods: dict[str, Callable] = {}
        robyn_object.add_web_socket(endpoint, self)  # sets self.endpoint

    def on(self, event: str) -> Callable:
        if event not in self.EVENTS:
            raise ValueError(f"unknown WebSocket event {event!r}; use one of {', '.join(self.EVENTS)}")

        def decorator(fn: Callable) -> Callable:
            self.methods[event] = fn
            return fn
        return decorator

    def inject(self, **kwargs: Any) -> None:
        self.robyn_object.inject(**kwargs)

    def inject_global(self, **kwargs: Any) -> None:
        self.robyn_object.inject_global(**kwargs)


def register_websocket(router: Any, endpoint: str, ws: Any) -> None:
    """``app.add_web_socket(endpoint, ws)``: a ``WebSocket``, or a ``{"connect", "message",
    "close"}`` dict of handlers (Robyn's old form)."""
    if isinstance(ws, dict):
        unknown = set(ws) - set(WebSocket.EVENTS)
        if unknown:
            raise ValueError(f"unknown WebSocket event(s) {sorted(unknown)}; use connect, message, close")
        obj = WebSocket.__new__(WebSocket)
        obj.robyn_object = obj.router = router
        obj.auth_required = False
        obj.subprotocols = ()
        obj.methods = dict(ws)
        ws = obj
    elif not isinstance(ws, (WebSocket, WebSocketRoute)):
        raise TypeError(f"add_web_socket expects a WebSocket or a dict of handlers, got {type(ws).__name__}")
    ws.endpoint = endpoint
    router.web_socket_router[endpoint] = ws


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


# -- compiled routes ----------------------------------------------------------------------------

_WS_NAMES = frozenset({"ws", "websocket", "socket", "connector", "conn"})
_MSG_NAMES = frozenset({"msg", "message", "data"})


class _Call:
    """A handler compiled with its parameter getters: ``call(ws, request, msg)``."""

    __slots__ = ("fn", "is_async", "plan", "name")

    def __init__(self, fn: Callable, endpoint: str, global_deps: dict, router_deps: dict,
                 with_message: bool) -> None:
        self.fn = fn
        self.is_async = is_async_callable(fn)
        self.name = getattr(fn, "__qualname__", repr(fn))
        getters = dict(resolve_getters(fn, endpoint, global_deps, router_deps))
        plan = []  # (name, kind, getter) with kind 0 = ws, 1 = message, 2 = injected
        params = [p for p in inspect.signature(fn).parameters.values()
                  if p.kind not in (p.VAR_POSITIONAL, p.VAR_KEYWORD)]
        named_ws = any(p.name in _WS_NAMES for p in params)
        named_msg = with_message and any(p.name in _MSG_NAMES for p in params)
        for i, p in enumerate(params):
            if p.name in _WS_NAMES or (not named_ws and i == 0):
                plan.append((p.name, 0, None))
            elif with_message and (p.name in _MSG_NAMES or (not named_msg and i == 1)):
                plan.append((p.name, 1, None))
            else:
                plan.append((p.name, 2, getters[p.name]))
        self.plan = plan

    def bind(self, ws: WebSocketConnector, request: Request) -> dict:
        """Resolve injected parameters once per connection (ParamError → refused with 400)."""
        return {name: getter(request) for name, kind, getter in self.plan if kind == 2}

    def args(self, ws: Any, bound: dict, msg: Any = None) -> dict:
        out = dict(bound)
        for name, kind, _ in self.plan:
            if kind == 0:
                out[name] = ws
            elif kind == 1:
                out[name] = msg
        return out


class _Compiled:
    """One WebSocket endpoint, ready to serve: its calls, its client registry."""

    def __init__(self, spec: Any, app: Any) -> None:
        self.endpoint = spec.endpoint
        self.kind = spec.kind
        self.auth_required = bool(getattr(spec, "auth_required", False))
        self.subprotocols: tuple[str, ...] = getattr(spec, "subprotocols", ())
        self.clients = Clients()
        gdeps = app.dependencies.global_dependency_map
        router = getattr(spec, "router", None) or app
        rdeps = router.dependencies.router_dependency_map
        if spec.kind == "loop":
            self.handler = _Call(spec.handler, self.endpoint, gdeps, rdeps, False)
            connect, close, message = spec.on_connect, spec.on_close, None
        else:
            self.handler = None
            connect = spec.methods.get("connect")
            message = spec.methods.get("message")
            close = spec.methods.get("close")
        self.on_connect = _Call(connect, self.endpoint, gdeps, rdeps, False) if connect else None
        self.on_message = _Call(message, self.endpoint, gdeps, rdeps, True) if message else None
        self.on_close = _Call(close, self.endpoint, gdeps, rdeps, False) if close else None


# What sync message handlers return; anything else is checked for an awaitable (a sync function
# that returns a coroutine), so the common case costs one class lookup per message, not inspect.
_PLAIN_RESULTS = frozenset((str, bytes, type(None), dict, list))


async def _call(call: _Call, kwargs: dict) -> Any:
    result = call.fn(**kwargs)
    if call.is_async or inspect.isawaitable(result):
        result = await result
    return result


class WebSocketDispatcher:
    """The app's WebSocket routes; ``Dispatcher.handle`` hands it every upgrade request."""

    def __init__(self, app: Any, settings: Any) -> None:
        self.app = app
        self.settings = settings
        self.close_timeout = settings.ws_close_timeout
        self.router: Router[_Compiled] = Router()
        self.endpoints: dict[str, _Compiled] = {}
        self.convert = Converter(None)
        for endpoint, spec in app.web_socket_router.items():
            compiled = _Compiled(spec, app)
            self.router.add("WS", endpoint, compiled)
            self.endpoints[endpoint] = compiled

    # -- other worker processes (server/interface.py, "Peers") ------------------------------

    def connect_peers(self, publish: Callable[[bytes], None]) -> Callable[[bytes], None]:
        """Make every endpoint's broadcast reach the other workers' clients too. A message
        between workers is ``t`` or ``b`` (text, binary), the endpoint's length (2 bytes), the
        endpoint, then the payload."""
        for endpoint, ep in self.endpoints.items():
            head = endpoint.encode()
            head = len(head).to_bytes(2, "big") + head

            def relay(message: Union[str, bytes], head: bytes = head) -> None:
                if message.__class__ is str:
                    publish(b"t" + head + message.encode())  # type: ignore[union-attr]
                else:
                    publish(b"b" + head + bytes(message))
            ep.clients.relay = relay
        return self.from_peer

    def from_peer(self, data: bytes) -> None:
        """A broadcast another worker published: to this process's clients of that endpoint."""
        n = int.from_bytes(data[1:3], "big")
        ep = self.endpoints.get(data[3:3 + n].decode())
        if ep is None:
            return
        payload = data[3 + n:]
        send_to_all(ep.clients, payload.decode() if data[:1] == b"t" else payload)

    def has_path(self, path: bytes) -> bool:
        methods, _ = self.router.match(path)
        return methods is not None

    def handle(self, raw: Any) -> Any:
        methods, values = self.router.match(raw.path)
        if methods is None:
            return None
        compiled = methods["WS"]
        from .routing import param_names
        params = dict(zip(param_names(compiled.endpoint), values)) if values else {}
        return self._handshake(compiled, Request._from_server(raw, params))

    # -- before the upgrade -----------------------------------------------------------------

    def _refusal(self, value: Any) -> HTTPResponse:
        return value if isinstance(value, HTTPResponse) else self.convert(value)

    async def _handshake(self, ep: _Compiled, request: Request) -> Any:
        if ep.auth_required:
            handler = self.app.authentication_handler
            if handler is None:
                logger.error("WebSocket %s has auth_required=True but no authentication handler is "
                             "configured (app.configure_authentication)", ep.endpoint)
                return HTTPResponse(500, TEXT, b"Internal Server Error\n")
            identity = handler.authenticate(request)
            if inspect.isawaitable(identity):
                identity = await identity
            if identity is None:
                return self._refusal(handler.unauthorized_response)
            request.identity = identity
        ws = WebSocketAdapter(ep.endpoint, request, ep.clients)
        if ep.subprotocols:
            ws.subprotocol = choose_subprotocol(request.headers.get_all("sec-websocket-protocol"),
                                                ep.subprotocols)
        try:
            bound = {c: c.bind(ws, request) for c in (ep.handler, ep.on_connect, ep.on_message, ep.on_close)
                     if c is not None}
        except ParamError as exc:
            return HTTPResponse(400, TEXT, (str(exc) + "\n").encode())
        if ep.on_connect is not None:
            call = ep.on_connect
            try:
                result = await _call(call, call.args(ws, bound[call]))
            except HTTPException as exc:
                headers = encode_headers((str(k).lower(), str(v)) for k, v in (exc.headers or {}).items())
                return HTTPResponse(exc.status_code, TEXT + headers, str(exc.detail).encode())
            except WebSocketException as exc:
                ws.close(exc.code, exc.reason)
                result = None
            except Exception:
                logger.exception("WebSocket connect handler %s on %s failed; refusing with 500",
                                 call.name, ep.endpoint)
                return HTTPResponse(500, TEXT, b"Internal Server Error\n")
            if isinstance(result, (Response, HTTPResponse)):
                return self._refusal(result)
            if result is not None:
                if isinstance(result, (str, bytes)):
                    ws._outbox.append(result)
                else:
                    logger.error("WebSocket connect handler %s returned %s; return str, bytes, None or "
                                 "a Response (to refuse)", call.name, type(result).__name__)
        return WebSocketAccept(lambda conn: self._session(ep, ws, bound, conn), subprotocol=ws.subprotocol)

    # -- after the upgrade ----------------------------------------------------------------------

    async def _session(self, ep: _Compiled, ws: WebSocketAdapter, bound: dict, conn: Any) -> None:
        ws._conn = conn
        clients = ep.clients
        try:
            for message in ws._outbox:
                conn.send_nowait(message)
            ws._outbox = []
            if ws._pending_close is not None:
                await conn.close(*ws._pending_close)
            else:
                clients[ws.id] = ws
                if ep.kind == "loop":
                    await self._run_loop(ep, ws, bound, conn)
                else:
                    await self._run_callbacks(ep, ws, bound, conn)
        except ConnectionClosed:
            pass
        finally:
            clients.pop(ws.id, None)
            ws.close_code = conn.close_code if conn.closed else None
            ws.close_reason = conn.close_reason
            ws.closed_by = conn.closed_by
            if ep.on_close is not None:
                call = ep.on_close
                try:
                    await _call(call, call.args(ws, bound[call]))
                except Exception:
                    logger.exception("WebSocket close handler %s on %s failed", call.name, ep.endpoint)

    async def _run_loop(self, ep: _Compiled, ws: WebSocketAdapter, bound: dict, conn: Any) -> None:
        call = ep.handler
        task = asyncio.ensure_future(self._guard(call, ws, call.args(ws, bound[call]), conn))
        closed = asyncio.ensure_future(conn.wait_closed())
        try:
            await asyncio.wait((task, closed), return_when=asyncio.FIRST_COMPLETED)
            if not task.done():
                # Closed while the handler was busy elsewhere: give it the close timeout.
                ep.clients.pop(ws.id, None)
                done, _ = await asyncio.wait((task,), timeout=self.close_timeout)
                if not done:
                    logger.warning("WebSocket handler %s on %s still running %.1f s after the close; "
                                   "cancelling it", call.name, ep.endpoint, self.close_timeout)
                    task.cancel()
                    await asyncio.wait((task,))
        finally:
            closed.cancel()
            if not task.done():
                task.cancel()

    @staticmethod
    async def _guard(call: _Call, ws: WebSocketAdapter, kwargs: dict, conn: Any) -> None:
        """Run the receive-loop handler; how it ends decides how the connection closes."""
        try:
            await call.fn(**kwargs)
        except (WebSocketDisconnect, ConnectionClosed, ConnectionError):
            return
        except WebSocketException as exc:
            if not conn.closed:
                conn.close_nowait(exc.code, exc.reason)
            return
        except asyncio.CancelledError:
            raise
        except Exception:
            logger.exception("WebSocket handler %s on %s failed; closing 1011", call.name, ws.endpoint)
            if not conn.closed:
                conn.close_nowait(1011, "internal error")
            return
        if not conn.closed:  # the handler is done with this client
            conn.close_nowait(1000, "")

    async def _run_callbacks(self, ep: _Compiled, ws: WebSocketAdapter, bound: dict, conn: Any) -> None:
        call = ep.on_message
        if call is None:
            await conn.wait_closed()
            return
        fn = call.fn
        is_async = call.is_async
        base = call.args(ws, bound[call])
        msg_name = next((name for name, kind, _ in call.plan if kind == 1), None)
        receive = conn.receive
        while True:
            message = await receive()  # ConnectionClosed ends the session
            if msg_name is not None:
                base[msg_name] = message
            try:
                result = fn(**base)
                if is_async or (result.__class__ not in _PLAIN_RESULTS and inspect.isawaitable(result)):
                    result = await result
            except WebSocketException as exc:
                if not conn.closed:
                    conn.close_nowait(exc.code, exc.reason)
                continue
            except WebSocketDisconnect:
                continue
            except Exception:
                logger.exception("WebSocket message handler %s on %s failed", call.name, ep.endpoint)
                continue
            if result is not None and not conn.closed:
                if not isinstance(result, (str, bytes)):
                    result = orjson.dumps(result).decode()
                await conn.send(result)


__all__ = ["WebSocket", "WebSocketAdapter", "WebSocketConnector", "WebSocketDisconnect",
           "WebSocketDispatcher", "create_websocket_decorator", "register_websocket", "websocket_decorator"]
