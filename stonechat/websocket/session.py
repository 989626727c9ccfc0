"""WebSocket routes at run time: compiled once when the app starts, then per handshake and per
connection. The HTTP counterpart is ``core/dispatch.py``; the API objects are in ``api.py``.

Per route, everything is compiled once (``WebSocketDispatcher``): parameter getters (path params
``/ws/:room``, query params, DI, ``request``) come from ``core/params.py`` like for HTTP handlers. Per
handshake, ``WebSocketDispatcher.handle`` authenticates (``auth_required``), picks a subprotocol,
resolves parameters (an error refuses the handshake with 400) and runs the connect handler
*before* the upgrade, so it can refuse with an HTTP status (return a ``Response`` or raise
``HTTPException``), or accept and close at once (``ws.close(1008, ...)`` or raise
``WebSocketException``). Messages sent from the connect handler are delivered right after 101.
Per connection, ``_session`` runs the receive-loop handler or the callbacks, and the close
handler once the connection is closed, whoever closed it.
"""

from __future__ import annotations

import asyncio
import inspect
import logging
from typing import Any, Awaitable, Callable, Optional, Union

import orjson

from ..core.auth import AuthenticationHandler, authenticate
from ..core.conversion import Converter
from ..core.error_response import ErrorResponder
from ..core.errors import WebSocketException
from ..core.params import is_async_callable, resolve_getters
from ..core.registry import WebSocketSpec, WebSocketStyle
from ..core.request import Request
from ..core.response import Response
from ..core.routing import Router, param_names
from ..server.interface import NO_MESSAGE, ConnectionClosed, HTTPRequest, HTTPResponse, WebSocketAccept, WebSocketConnection
from ..pubsub.workers import WorkerMesh
from .rooms import RoomHub
from .api import (
    Clients,
    WebSocketAdapter,
    WebSocketConnector,
    WebSocketDisconnect,
    choose_subprotocol,
    send_to_all,
)

logger = logging.getLogger("stonechat.websocket")


def _ignore(data: bytes) -> None:
    pass


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
        # (name, kind, getter) with kind 0 = ws, 1 = message, 2 = injected (then getter is set)
        plan: list[tuple[str, int, Optional[Callable[[Request], Any]]]] = []
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
        return {name: getter(request) for name, _, getter in self.plan if getter is not None}

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

    def __init__(self, spec: WebSocketSpec, global_deps: dict, app_auth: Optional[AuthenticationHandler]) -> None:
        self.endpoint = spec.endpoint
        self.param_names = param_names(spec.endpoint)  # the handshake zips these with the match
        self.style = spec.style
        self.auth_required = spec.auth_required
        self.authentication_handler = spec.router.authentication_handler or app_auth
        self.subprotocols = spec.subprotocols
        self.clients = Clients()
        self.clients.recovery = spec.recovery
        rdeps = spec.router.dependencies.router_dependency_map

        def compiled(fn: Optional[Callable], with_message: bool = False) -> Optional[_Call]:
            return _Call(fn, self.endpoint, global_deps, rdeps, with_message) if fn is not None else None

        self.handler = compiled(spec.handler)
        self.on_connect = compiled(spec.on_connect)
        self.on_message = compiled(spec.on_message, True)
        self.on_close = compiled(spec.on_close)


class _AfterClose:
    """A receive-loop handler whose connection closed while it was busy elsewhere (not in
    ``receive()``, which raises at once): the client leaves the endpoint's registry at once,
    and the handler gets ``ws_close_timeout`` to finish before it is cancelled."""

    __slots__ = ("ep", "ws", "call", "task", "timeout", "timer", "running")

    def __init__(self, ep: "_Compiled", ws: Any, call: "_Call", task: Optional["asyncio.Task[Any]"],
                 timeout: float) -> None:
        self.ep = ep
        self.ws = ws
        self.call = call
        self.task = task
        self.timeout = timeout
        self.timer: Optional[asyncio.TimerHandle] = None
        self.running = True

    def closed(self) -> None:
        if not self.running:
            return
        clients = self.ep.clients
        clients.pop(self.ws.id, None)
        if clients.hub is not None:
            clients.hub.disconnected(self.ws)
        self.timer = asyncio.get_running_loop().call_later(self.timeout, self.expired)

    def expired(self) -> None:
        self.timer = None
        if self.running and self.task is not None:
            logger.warning("WebSocket handler %s on %s still running %.1f s after the close; "
                           "cancelling it", self.call.name, self.ep.endpoint, self.timeout)
            self.task.cancel()

    def over(self) -> None:
        self.running = False
        if self.timer is not None:
            self.timer.cancel()
            self.timer = None


# What sync message handlers return; anything else is checked for an awaitable (a sync function
# that returns a coroutine), so the common case costs one class lookup per message, not inspect.
_PLAIN_RESULTS = frozenset((str, bytes, type(None), dict, list))


async def _call(call: _Call, kwargs: dict) -> Any:
    result = call.fn(**kwargs)
    if call.is_async or inspect.isawaitable(result):
        result = await result
    return result


class _MessageCalls:
    """The callback API's message handler, called on each message and its reply written.

    A plain-def handler on the server's own connections is called from the connection's
    data_received as each message arrives (``deliver_to``, ``run``): no task wake-up, no
    coroutine and no future per message, as the C++ servers do it. It runs in the session
    task's context (contextvars as in a task). Otherwise (``async def``, or a connection of
    app.asgi or the test client) ``run_in_task`` calls it from the session task.

    It hands the session task back the cases that must wait: a handler that returned an
    awaitable, a reply the client does not drain (``write_paused``: reading then pauses as the
    messages queue, which is the backpressure), a closed connection. The task does that one
    wait and arms it again; messages that queued meanwhile go through ``handle`` in order."""

    __slots__ = ("conn", "fn", "base", "msg_name", "name", "endpoint", "context", "wake")

    def __init__(self, conn: Any, call: _Call, base: dict, msg_name: Optional[str], endpoint: str) -> None:
        self.conn = conn
        self.fn = call.fn
        self.name = call.name
        self.base = base
        self.msg_name = msg_name
        self.endpoint = endpoint
        self.context: Any = getattr(conn, "context", None)  # only read by set_result (deliver_to)
        self.wake: Optional[asyncio.Future[Any]] = None

    def handle(self, message: Union[str, bytes], run: Any = None) -> Any:
        """Call the handler on ``message`` and write its reply; ``None`` when done, else what
        the task must await (an awaitable the handler returned, or ``_DRAIN``)."""
        conn = self.conn
        base = self.base
        if self.msg_name is not None:
            base[self.msg_name] = message
        try:
            result = self.fn(**base) if run is None else run(self.fn, **base)
        except WebSocketException as exc:
            if not conn.closed:
                conn.close_nowait(exc.code, exc.reason)
            return None
        except WebSocketDisconnect:
            return None
        except Exception:
            logger.exception("WebSocket message handler %s on %s failed", self.name, self.endpoint)
            return None
        if result.__class__ not in _PLAIN_RESULTS and inspect.isawaitable(result):
            return result
        if result is not None and not conn.closed:
            if not isinstance(result, (str, bytes)):
                result = orjson.dumps(result).decode()
            conn.write_message(result)
            if conn.write_paused:
                return _DRAIN
        return None

    # What the connection calls, in the place of a future's methods:

    def done(self) -> bool:
        return False

    def set_result(self, message: Union[str, bytes]) -> None:
        try:
            wait = self.handle(message, self.context.run)
        except ConnectionClosed as exc:
            self.set_exception(exc)
            return
        if wait is None and not self.conn.closed:
            self.conn.deliver_to(self)  # the next message too
        else:
            self._hand_back(wait)

    def set_exception(self, exc: BaseException) -> None:
        wake, self.wake = self.wake, None
        if wake is not None and not wake.done():
            wake.set_exception(exc)

    def _hand_back(self, wait: Any) -> None:
        wake, self.wake = self.wake, None
        if wake is not None and not wake.done():
            wake.set_result(wait)

    async def run(self) -> None:
        """The session task's part: messages that queued, the waits handed back."""
        conn = self.conn
        try:
            while True:
                message = conn.receive_nowait()  # ConnectionClosed ends the session
                if message is NO_MESSAGE:
                    self.wake = conn.loop.create_future()
                    conn.deliver_to(self)
                    wait = await self.wake
                else:
                    wait = self.handle(message)
                if wait is _DRAIN:
                    await conn.drain()
                elif wait is not None:
                    await self._finish(wait)
        finally:
            if conn.waiter is self:
                conn.deliver_to(None)
            self.wake = None

    async def run_in_task(self) -> None:
        """Every message handled in the session task: for an ``async def`` handler, and for a
        connection that cannot ``deliver_to`` (app.asgi's, the test client's). The receive
        and write halves are plain calls: no coroutine per message but the handler's own."""
        conn = self.conn
        while True:
            message = conn.receive_nowait()  # ConnectionClosed ends the session
            if message is NO_MESSAGE:
                message = await conn.next_message()
            wait = self.handle(message)
            if wait is _DRAIN:
                await conn.drain()
            elif wait is not None:
                await self._finish(wait)

    async def _finish(self, awaitable: Any) -> None:
        conn = self.conn
        try:
            result = await awaitable
        except WebSocketException as exc:
            if not conn.closed:
                conn.close_nowait(exc.code, exc.reason)
            return
        except WebSocketDisconnect:
            return
        except Exception:
            logger.exception("WebSocket message handler %s on %s failed", self.name, self.endpoint)
            return
        if result is not None and not conn.closed:
            if not isinstance(result, (str, bytes)):
                result = orjson.dumps(result).decode()
            conn.write_message(result)
            if conn.write_paused:
                await conn.drain()


_DRAIN = object()  # _MessageCalls.handle: the reply waits for the client to read


class WebSocketDispatcher:
    """The app's WebSocket routes; ``Dispatcher.handle`` hands it every upgrade request."""

    def __init__(self, specs: dict[str, WebSocketSpec], global_deps: dict,
                 app_auth: Optional[AuthenticationHandler], settings: Any, errors: ErrorResponder,
                 hub: Optional[RoomHub] = None) -> None:
        self.settings = settings
        self.hub = hub
        self.errors = errors
        self.close_timeout = settings.ws_close_timeout
        self.router: Router[_Compiled] = Router()
        self.endpoints: dict[str, _Compiled] = {}
        self.convert = Converter(None)
        self.mesh: Optional[WorkerMesh] = None
        for endpoint, spec in specs.items():
            compiled = _Compiled(spec, global_deps, app_auth)
            self.router.add("WS", endpoint, compiled)
            self.endpoints[endpoint] = compiled
            if hub is not None:
                compiled.clients.hub = hub
                hub.endpoints[endpoint] = compiled.clients

    def use_broker(self) -> None:
        """The hub's broker carries endpoint broadcasts to the other processes (Redis)."""
        hub = self.hub
        if hub is not None:
            for endpoint, ep in self.endpoints.items():
                ep.clients.relay = hub.relay_endpoint(endpoint)

    # -- other worker processes (server/interface.py, "Peers") ------------------------------

    def connect_peers(self, publish: Callable[[bytes], None]) -> Callable[[bytes], None]:
        """Make every endpoint's broadcast reach the other workers' clients too. A message
        between workers is ``t`` or ``b`` (text, binary), the endpoint's length (2 bytes), the
        endpoint, then the payload; anything else is the rooms' (``pubsub/workers.py``)."""
        hub = self.hub
        if hub is not None and hub.broker.name != "local":
            return _ignore  # a broker between processes (Redis) carries it all already
        if hub is not None:
            mesh = WorkerMesh(publish, hub.presence_ttl)
            hub.use(mesh)
            mesh.attach(hub)
            self.mesh = mesh
        for endpoint, ep in self.endpoints.items():
            head = endpoint.encode()
            head = len(head).to_bytes(2, "big") + head

            def relay(message: Union[str, bytes], head: bytes = head) -> None:
                if isinstance(message, str):
                    publish(b"t" + head + message.encode())
                else:
                    publish(b"b" + head + bytes(message))
            ep.clients.relay = relay
        return self.from_peer

    def from_peer(self, data: bytes) -> None:
        """A broadcast another worker published: to this process's clients of that endpoint."""
        kind = data[:1]
        if kind != b"t" and kind != b"b":
            if self.mesh is not None:
                self.mesh.receive(data)
            return
        n = int.from_bytes(data[1:3], "big")
        ep = self.endpoints.get(data[3:3 + n].decode())
        if ep is None:
            return
        payload = data[3 + n:]
        send_to_all(ep.clients, payload.decode() if data[:1] == b"t" else payload)

    def has_path(self, path: bytes) -> bool:
        methods, _ = self.router.match(path)
        return methods is not None

    def handle(self, raw: HTTPRequest) -> Optional[Awaitable[Any]]:
        methods, values = self.router.match(raw.path)
        if methods is None:
            return None
        compiled = methods["WS"]
        params = dict(zip(compiled.param_names, values)) if values else {}
        return self._handshake(compiled, Request._from_server(raw, params))

    # -- before the upgrade -----------------------------------------------------------------

    def _refusal(self, value: Any) -> HTTPResponse:
        return value if isinstance(value, HTTPResponse) else self.convert(value)

    async def _handshake(self, ep: _Compiled, request: Request) -> Any:
        try:
            return await self._accept(ep, request)
        except Exception as exc:  # HTTPException, ParamError, a failing handler: refused
            answer = self.errors(exc, self.convert, f"the WebSocket handshake on {ep.endpoint}")
            return answer if isinstance(answer, HTTPResponse) else await answer

    async def _accept(self, ep: _Compiled, request: Request) -> Any:
        if ep.auth_required:
            refusal = await authenticate(ep.authentication_handler, request)
            if refusal is not None:
                return self._refusal(refusal)
        ws = WebSocketAdapter(ep.endpoint, request, ep.clients)
        if ep.subprotocols:
            ws.subprotocol = choose_subprotocol(request.headers.get_all("sec-websocket-protocol"),
                                                ep.subprotocols)
        bound = {c: c.bind(ws, request) for c in (ep.handler, ep.on_connect, ep.on_message, ep.on_close)
                 if c is not None}  # a ParamError refuses with 400
        if ep.on_connect is not None:
            call = ep.on_connect
            try:
                result = await _call(call, call.args(ws, bound[call]))
            except WebSocketException as exc:  # accept, then close with its code
                ws.close(exc.code, exc.reason)
                result = None
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

    async def _session(self, ep: _Compiled, ws: WebSocketAdapter, bound: dict, conn: WebSocketConnection) -> None:
        ws._conn = conn
        clients = ep.clients
        hub = clients.hub
        try:
            for message in ws._outbox:
                conn.send_nowait(message)
            ws._outbox = []
            if ws._pending_close is not None:
                await conn.close(*ws._pending_close)
            else:
                clients[ws.id] = ws
                if hub is not None:
                    hub.connected(ws)
                if ep.style is not WebSocketStyle.RECEIVE_LOOP:
                    await self._run_callbacks(ep, ws, bound, conn)
                else:
                    # The receive-loop handler, right here in the session's task: no task more
                    # per connection and no frame more between each message and the handler
                    # (an idle one waits in receive() and nothing else; _AfterClose watches
                    # for the close). How the handler ends decides how the connection closes.
                    call = ep.handler
                    assert call is not None  # a receive-loop endpoint always has its handler
                    watch = _AfterClose(ep, ws, call, asyncio.current_task(), self.close_timeout)
                    conn.on_closed(watch.closed)
                    try:
                        await call.fn(**call.args(ws, bound[call]))
                    except (WebSocketDisconnect, ConnectionClosed, ConnectionError):
                        pass
                    except WebSocketException as exc:
                        if not conn.closed:
                            conn.close_nowait(exc.code, exc.reason)
                    except Exception:
                        logger.exception("WebSocket handler %s on %s failed; closing 1011", call.name, ws.endpoint)
                        if not conn.closed:
                            conn.close_nowait(1011, "internal error")
                    else:
                        if not conn.closed:  # the handler is done with this client
                            conn.close_nowait(1000, "")
                    finally:
                        watch.over()
        except ConnectionClosed:
            pass
        finally:
            clients.pop(ws.id, None)
            if hub is not None:
                hub.disconnected(ws)  # leaves every room, however the connection ended
            ws.close_code = conn.close_code if conn.closed else None
            ws.close_reason = conn.close_reason
            ws.closed_by = conn.closed_by
            if ep.on_close is not None:
                call = ep.on_close
                try:
                    await _call(call, call.args(ws, bound[call]))
                except Exception:
                    logger.exception("WebSocket close handler %s on %s failed", call.name, ep.endpoint)

    async def _run_callbacks(self, ep: _Compiled, ws: WebSocketAdapter, bound: dict, conn: WebSocketConnection) -> None:
        call = ep.on_message
        if call is None:
            await conn.wait_closed()
            return
        fn = call.fn
        is_async = call.is_async
        base = call.args(ws, bound[call])
        msg_name = next((name for name, kind, _ in call.plan if kind == 1), None)
        if not is_async and getattr(conn, "deliver_to", None) is not None:
            await _MessageCalls(conn, call, base, msg_name, ep.endpoint).run()
            return
        await _MessageCalls(conn, call, base, msg_name, ep.endpoint).run_in_task()


__all__ = ["WebSocketDispatcher"]
