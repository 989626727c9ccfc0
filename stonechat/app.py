"""The app object users touch: ``Robyn``/``App`` and ``SubRouter``.

Registration happens here (decorators, middlewares, lifecycle, settings); nothing runs per
request. ``start()`` compiles everything into a ``Dispatcher`` once (``_build``) and hands a
small ``ServedApp`` to the server layer, which knows it only through ``server/interface.py``.
"""

from __future__ import annotations

import inspect
import logging
import os
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Callable, Optional, Sequence, Union

from .authentication import AuthenticationHandler, make_auth_hook
from .config import Config
from .conversion import Converter, DefaultHeaders
from .dependency_injection import DependencyMap
from .dispatch import Dispatcher, Route
from .lifecycle import Lifecycle, StartupError
from .params import compile_call, is_async_callable, arity
from .request import Headers, Request
from .routing import Router, normalize_endpoint, param_names
from .server.settings import ServerSettings, SettingsError
from .server.signals import hold_stop_signals
from .watchdog import BlockingWatchdog

logger = logging.getLogger("stonechat")

HTTP_METHODS = ("GET", "POST", "PUT", "DELETE", "PATCH", "HEAD", "OPTIONS", "CONNECT", "TRACE")


class HttpMethod:
    """Robyn's ``HttpMethod`` enum-like names (``HttpMethod.GET`` == ``"GET"``)."""
    GET = "GET"
    POST = "POST"
    PUT = "PUT"
    DELETE = "DELETE"
    PATCH = "PATCH"
    HEAD = "HEAD"
    OPTIONS = "OPTIONS"
    CONNECT = "CONNECT"
    TRACE = "TRACE"


class State:
    """``app.state``: a plain namespace for resources made at startup (pools, clients...)."""

    def __repr__(self) -> str:
        return f"State({vars(self)!r})"


class _Middleware:
    __slots__ = ("kind", "endpoint", "fn", "is_async", "n_args")

    def __init__(self, kind: str, endpoint: Optional[str], fn: Callable) -> None:
        self.kind = kind
        self.endpoint = endpoint
        self.fn = fn
        self.is_async = is_async_callable(fn)
        self.n_args = arity(fn)

    def entry(self) -> tuple[Callable, bool, int]:
        fn, n = self.fn, self.n_args
        if self.kind == "before" and n == 0:
            return (lambda request: fn()), self.is_async, 1
        return fn, self.is_async, n


class BaseRouter:
    """Everything shared by the app and sub-routers: routes, hooks, DI, WebSocket routes."""

    def __init__(self, prefix: str = "", dependencies: Optional[DependencyMap] = None) -> None:
        self.prefix = "" if prefix in ("", "/") else normalize_endpoint(prefix)
        self.dependencies = dependencies if dependencies is not None else DependencyMap()
        self.router: Router[Route] = Router()
        self.routes: list[Route] = []
        self.middlewares: list[_Middleware] = []
        self.web_socket_router: dict[str, Any] = {}
        self.exception_handler: Optional[Callable] = None
        self.authentication_handler: Optional[AuthenticationHandler] = None
        self.included_routers: list["BaseRouter"] = []

    # -- routes ----------------------------------------------------------------------------

    def add_route(self, route_type: Union[str, Any], endpoint: str, handler: Callable,
                  is_const: bool = False, auth_required: bool = False, openapi_name: str = "",
                  openapi_tags: Optional[list] = None, status_code: Optional[int] = None,
                  response_model: Any = None, responses: Any = None, deprecated: bool = False,
                  include_in_schema: bool = True, threaded: Optional[bool] = None) -> Callable:
        method = str(getattr(route_type, "value", route_type)).upper()
        if method.startswith("HTTPMETHOD."):
            method = method.split(".", 1)[1]
        if method not in HTTP_METHODS:
            raise ValueError(f"unknown HTTP method {route_type!r}; use one of {', '.join(HTTP_METHODS)}")
        endpoint = self._full_path(endpoint)
        is_async = is_async_callable(handler)
        if is_const and method != "GET":
            raise ValueError("const=True is only for GET routes")
        call = compile_call(handler, endpoint, self.dependencies.global_dependency_map,
                            self.dependencies.router_dependency_map)
        route = Route(method, endpoint, handler, call, is_async, param_names(endpoint),
                      threaded=bool(threaded) if threaded is not None else None,  # type: ignore[arg-type]
                      const=is_const, auth_required=auth_required, status_code=status_code,
                      options={"openapi_name": openapi_name, "openapi_tags": openapi_tags,
                               "response_model": response_model, "responses": responses,
                               "deprecated": deprecated, "include_in_schema": include_in_schema})
        self.router.add(method, endpoint, route)  # raises RouteConflict at once
        self.routes.append(route)
        return handler

    def _full_path(self, endpoint: str) -> str:
        endpoint = normalize_endpoint(endpoint)
        if self.prefix:
            return self.prefix if endpoint == "/" else self.prefix + endpoint
        return endpoint

    def _route_decorator(self, method: str, endpoint: str, **options: Any) -> Callable:
        def decorator(handler: Callable) -> Callable:
            self.add_route(method, endpoint, handler, **options)
            return handler
        return decorator

    def get(self, endpoint: str, const: bool = False, auth_required: bool = False, openapi_name: str = "",
            openapi_tags: Optional[list] = None, status_code: Optional[int] = None, response_model: Any = None,
            responses: Any = None, deprecated: bool = False, include_in_schema: bool = True,
            threaded: Optional[bool] = None) -> Callable:
        return self._route_decorator("GET", endpoint, is_const=const, auth_required=auth_required,
                                     openapi_name=openapi_name, openapi_tags=openapi_tags,
                                     status_code=status_code, response_model=response_model,
                                     responses=responses, deprecated=deprecated,
                                     include_in_schema=include_in_schema, threaded=threaded)

    def _method(name: str):  # type: ignore[misc]
        def decorator_factory(self: "BaseRouter", endpoint: str, auth_required: bool = False,
                              openapi_name: str = "", openapi_tags: Optional[list] = None,
                              status_code: Optional[int] = None, response_model: Any = None,
                              responses: Any = None, deprecated: bool = False,
                              include_in_schema: bool = True, threaded: Optional[bool] = None) -> Callable:
            return self._route_decorator(name, endpoint, auth_required=auth_required,
                                         openapi_name=openapi_name, openapi_tags=openapi_tags,
                                         status_code=status_code, response_model=response_model,
                                         responses=responses, deprecated=deprecated,
                                         include_in_schema=include_in_schema, threaded=threaded)
        decorator_factory.__name__ = name.lower()
        decorator_factory.__doc__ = f"Register a {name} route: ``@app.{name.lower()}('/path')``."
        return decorator_factory

    post = _method("POST")
    put = _method("PUT")
    delete = _method("DELETE")
    patch = _method("PATCH")
    head = _method("HEAD")
    options = _method("OPTIONS")
    connect = _method("CONNECT")
    trace = _method("TRACE")
    del _method

    # -- middlewares, errors, auth, DI -----------------------------------------------------

    def before_request(self, endpoint: Optional[str] = None) -> Callable:
        return self._middleware("before", endpoint)

    def after_request(self, endpoint: Optional[str] = None) -> Callable:
        return self._middleware("after", endpoint)

    def _middleware(self, kind: str, endpoint: Optional[str]) -> Callable:
        if callable(endpoint):  # used bare: @app.before_request
            self.middlewares.append(_Middleware(kind, None, endpoint))
            return endpoint
        path = self._full_path(endpoint) if endpoint is not None else None

        def decorator(fn: Callable) -> Callable:
            self.middlewares.append(_Middleware(kind, path, fn))
            return fn
        return decorator

    def exception(self, handler: Callable) -> Callable:
        """Set the handler for exceptions raised by route handlers (covers every route)."""
        self.exception_handler = handler
        return handler

    def configure_authentication(self, authentication_handler: AuthenticationHandler) -> None:
        self.authentication_handler = authentication_handler

    def inject(self, **kwargs: Any) -> None:
        self.dependencies.add_router_dependency(**kwargs)

    def inject_global(self, **kwargs: Any) -> None:
        self.dependencies.add_global_dependency(**kwargs)

    def include_router(self, router: "BaseRouter") -> None:
        """Add a SubRouter's routes, hooks and WebSocket routes (prefix already applied)."""
        # One global dependency dict for the whole app: the sub-router's entries join the app's,
        # and its routes are re-bound to the app's dict so later inject_global() calls reach them.
        app_globals = self.dependencies.global_dependency_map
        for key, value in router.dependencies.global_dependency_map.items():
            app_globals.setdefault(key, value)
        rebind = router.dependencies.global_dependency_map is not app_globals
        for route in router.routes:
            self.router.add(route.method, self._prefixed(route.endpoint), route)
            route.endpoint = self._prefixed(route.endpoint)
            if rebind:
                route.call = compile_call(route.handler, route.endpoint, app_globals,
                                          router.dependencies.router_dependency_map)
            self.routes.append(route)
        router.dependencies.global_dependency_map = app_globals
        for mw in router.middlewares:
            if mw.endpoint is None:
                # A SubRouter's global hook covers that router's routes only (Robyn: the whole app).
                for route in router.routes:
                    scoped = _Middleware(mw.kind, route.endpoint, mw.fn)
                    self.middlewares.append(scoped)
            else:
                self.middlewares.append(_Middleware(mw.kind, self._prefixed(mw.endpoint), mw.fn))
        for path, ws in router.web_socket_router.items():
            self.web_socket_router[self._prefixed(path)] = ws
            ws.endpoint = self._prefixed(path)
        for key, value in router.dependencies.global_dependency_map.items():
            self.dependencies.global_dependency_map.setdefault(key, value)
        if router.authentication_handler is None:
            router.authentication_handler = self.authentication_handler
        self.included_routers.append(router)

    def _prefixed(self, endpoint: str) -> str:
        if not self.prefix or endpoint.startswith(self.prefix + "/") or endpoint == self.prefix:
            return endpoint
        return self.prefix + endpoint if endpoint != "/" else self.prefix

    # -- WebSockets (the API lives in websocket.py) ---------------------------------------

    def websocket(self, endpoint: str, auth_required: bool = False, subprotocols: Sequence[str] = ()) -> Callable:
        """``@app.websocket("/chat")``; ``subprotocols=["v2.chat", "v1.chat"]`` lets the handshake
        pick the first of the client's offered subprotocols found there (``ws.subprotocol``)."""
        from .websocket import websocket_decorator
        return websocket_decorator(self, self._full_path(endpoint), auth_required=auth_required,
                                   subprotocols=subprotocols)

    def add_web_socket(self, endpoint: str, ws: Any) -> None:
        from .websocket import register_websocket
        register_websocket(self, self._full_path(endpoint), ws)


class Robyn(BaseRouter):
    """The application. ``App`` is the same class under stonechat's own name."""

    def __init__(self, file_object: Optional[str] = None, config: Optional[Config] = None,
                 openapi_file_path: Optional[str] = None, openapi: Any = None,
                 dependencies: Optional[DependencyMap] = None, **settings: Any) -> None:
        super().__init__("", dependencies)
        self.file_path = file_object
        self.directory_path = os.path.dirname(os.path.abspath(file_object)) if file_object else os.getcwd()
        self.config = config
        self.openapi = openapi
        self.request_headers = Headers()
        self.response_headers = Headers()
        self.excluded_response_headers_paths: list[str] = []
        self.lifecycle = Lifecycle()
        self.state = State()
        self.threaded_default = False
        self.settings_overrides: dict[str, Any] = dict(settings)
        # A bad keyword setting fails here, by name; the environment is read (and a bad value
        # reported without a traceback) when the app starts.
        ServerSettings.from_sources(self.settings_overrides, environ={})
        self.dispatcher: Optional[Dispatcher] = None
        self.executor: Optional[ThreadPoolExecutor] = None
        self.websocket_hub: Any = None

    # -- lifecycle -------------------------------------------------------------------------

    def startup_handler(self, handler: Callable) -> Callable:
        self.lifecycle.add_startup(handler)
        return handler

    def shutdown_handler(self, handler: Callable) -> Callable:
        self.lifecycle.add_shutdown(handler)
        return handler

    def lifespan(self, factory: Callable) -> Callable:
        """Register an async context manager factory (e.g. ``@asynccontextmanager``), entered at
        startup and exited at shutdown; it may take the app as its one argument."""
        if inspect.isasyncgenfunction(factory):
            from contextlib import asynccontextmanager
            self.lifecycle.add_lifespan(asynccontextmanager(factory))
        else:
            self.lifecycle.add_lifespan(factory)
        return factory

    # -- app-wide headers ------------------------------------------------------------------

    def add_request_header(self, key: str, value: str) -> None:
        self.request_headers.append(key, value)

    def set_request_header(self, key: str, value: str) -> None:
        self.request_headers.set(key, value)

    def add_response_header(self, key: str, value: str) -> None:
        self.response_headers.append(key, value)

    def set_response_header(self, key: str, value: str) -> None:
        self.response_headers.set(key, value)

    def exclude_response_headers_for(self, paths: Optional[list[str]]) -> None:
        self.excluded_response_headers_paths = [normalize_endpoint(p) for p in (paths or [])]

    def set_threaded_default(self, threaded: bool = True) -> None:
        """Run every sync handler without an explicit ``threaded=`` on the thread pool."""
        self.threaded_default = threaded

    @staticmethod
    def is_port_in_use(port: int, host: str = "127.0.0.1") -> bool:
        from .server.runner import port_in_use
        return port_in_use(host, int(port))

    # -- building and serving --------------------------------------------------------------

    def _build(self, settings: ServerSettings, debug: bool = False) -> Dispatcher:
        """Compile every route's pipeline once; after this nothing is decided per request."""
        defaults = DefaultHeaders(self.response_headers if not self.response_headers.is_empty() else None)
        excluded = frozenset(self.excluded_response_headers_paths)
        global_before = [m.entry() for m in self.middlewares if m.kind == "before" and m.endpoint is None]
        global_after = [m.entry() for m in self.middlewares if m.kind == "after" and m.endpoint is None]
        auth_hook = (make_auth_hook(self), True, 1)
        for route in self.routes:
            route.convert = Converter(route.status_code, DefaultHeaders() if route.endpoint in excluded else defaults)
            scoped_before = [m.entry() for m in self.middlewares if m.kind == "before" and m.endpoint == route.endpoint]
            scoped_after = [m.entry() for m in self.middlewares if m.kind == "after" and m.endpoint == route.endpoint]
            route.before = global_before + ([auth_hook] if route.auth_required else []) + scoped_before
            route.after = global_after + scoped_after
            if route.threaded is None:
                route.threaded = self.threaded_default and not route.is_async
            route.fast = not (route.before or route.after or route.is_async or route.threaded)
        if any(r.threaded for r in self.routes) and self.executor is None:
            self.executor = ThreadPoolExecutor(settings.thread_pool_size, thread_name_prefix="stonechat-handler")
        exception_handler = self.exception_handler
        websocket = None
        if self.web_socket_router:
            from .websocket_dispatch import WebSocketDispatcher
            websocket = self.websocket_hub = WebSocketDispatcher(self, settings)
        self.dispatcher = Dispatcher(
            self.router, defaults=defaults, exception_handler=exception_handler,
            exception_is_async=bool(exception_handler and is_async_callable(exception_handler)),
            global_before=global_before, global_after=global_after,
            request_headers=self.request_headers.get_headers() if not self.request_headers.is_empty() else None,
            excluded_paths=excluded, blocking_warn_s=settings.blocking_warn_ms / 1000.0,
            executor=self.executor, debug=debug, websocket=websocket)
        return self.dispatcher

    def served(self, settings: Optional[ServerSettings] = None, debug: bool = False) -> "ServedApp":
        """The object the server runs (see ``server/interface.py``)."""
        settings = settings or ServerSettings.from_sources(self.settings_overrides)
        return ServedApp(self, self._build(settings, debug), settings)

    def start(self, host: str = "127.0.0.1", port: int = 8080, _check_port: bool = True,
              client_timeout: int = 30, keep_alive_timeout: int = 20, **settings: Any) -> None:
        """Serve until stopped (Ctrl+C or SIGTERM). Host and port may come from
        ``STONECHAT_HOST``/``STONECHAT_PORT`` or ``ROBYN_HOST``/``ROBYN_PORT``, which win."""
        hold_stop_signals()  # first: a stop signal from now on is never lost (server/signals.py)
        from .serving import start_app
        start_app(self, host, port, keep_alive_timeout, settings)


App = Robyn


class SubRouter(BaseRouter):
    """Routes under a common prefix, added to an app with ``app.include_router``."""

    def __init__(self, *args: Any, prefix: str = "", tags: Optional[list] = None, config: Any = None,
                 openapi: Any = None, file_object: Optional[str] = None,
                 dependencies: Optional[DependencyMap] = None) -> None:
        # New style: SubRouter("/users") or SubRouter(prefix="/users"). Legacy style passes
        # __file__ or __name__ first: SubRouter(__file__, "/users"), SubRouter(__name__, prefix=...).
        if args and not prefix:
            first = args[0]
            if len(args) >= 2:
                prefix = args[1]
            elif isinstance(first, str) and first.startswith("/") and not first.endswith(".py"):
                prefix = first
        super().__init__(prefix, dependencies)
        self.tags = tags or []


class ServedApp:
    """The application as the server sees it: ``handle``, ``startup``, ``shutdown``."""

    def __init__(self, app: Robyn, dispatcher: Dispatcher, settings: ServerSettings) -> None:
        self.app = app
        self.dispatcher = dispatcher
        self.handle = dispatcher.handle
        self.settings = settings
        self.watchdog: Optional[BlockingWatchdog] = None

    def connect_peers(self, publish: Callable[[bytes], None]) -> Callable[[bytes], None]:
        """Under ``--processes N``: WebSocket broadcasts reach every worker's clients."""
        websocket = self.dispatcher.websocket
        if websocket is None:
            return lambda data: None
        return websocket.connect_peers(publish)

    async def startup(self) -> None:
        await self.app.lifecycle.startup(self.app)
        await self._compute_const_routes()
        if self.settings.blocking_warn_ms > 0:
            self.watchdog = BlockingWatchdog(self.dispatcher, self.settings.blocking_warn_ms / 1000.0)
            self.watchdog.start()

    async def _compute_const_routes(self) -> None:
        for route in self.app.routes:
            if not route.const:
                continue
            try:
                result = route.call(Request())
                if inspect.isawaitable(result):
                    result = await result
                response = route.convert(result)
            except Exception as exc:
                raise StartupError(f"const route {route.name}", exc) from exc
            if response.stream is not None:
                raise StartupError(f"const route {route.name}", TypeError("a const route cannot stream"))
            route.cached = response

    async def shutdown(self) -> None:
        if self.watchdog is not None:
            self.watchdog.stop()
        await self.app.lifecycle.shutdown(self.settings.shutdown_handler_timeout)
        if self.app.executor is not None:
            self.app.executor.shutdown(wait=False, cancel_futures=True)

    def skip_shutdown(self) -> None:
        """The stop was forced before ``shutdown()`` began: it will not run; log what that skips."""
        self.app.lifecycle.log_skipped()


__all__ = ["App", "BaseRouter", "HttpMethod", "Robyn", "ServedApp", "State", "SubRouter", "SettingsError"]
