"""The app object users touch: ``Robyn``/``App`` and ``SubRouter``.

Registration happens here (decorators, middlewares, lifecycle, settings) and only records:
each decorator makes a frozen record (``core/registry.py``; mounts: ``asgi/mount.py``).
``served()`` (called by ``start()`` and by ``TestClient``) compiles fresh routes from the records
into a ``Dispatcher`` (``_build``) and hands a small ``ServedApp`` to the server layer, which
knows it only through ``server/interface.py``; with ASGI middleware added, a ``MiddlewareHost``
around it (``asgi/middleware.py``). ``app.asgi`` is the same app for ASGI servers
(``asgi/app.py``). Nothing here runs per request.
"""

from __future__ import annotations

import asyncio
import inspect
import logging
import os
from concurrent.futures import ThreadPoolExecutor
from contextlib import asynccontextmanager
from dataclasses import replace
from typing import Any, Callable, Optional, Sequence, Union

from .asgi.app import ASGIApp
from .asgi.middleware import Middleware, MiddlewareHost, check_middleware, wrap
from .asgi.mount import Mount, MountSpec, MountTable
from .config import Config
from .core.auth import AuthenticationHandler, make_auth_hook
from .core.conversion import Converter, DefaultHeaders
from .core.datastructures import Headers
from .core.dependencies import DependencyMap
from .core.dispatch import Dispatcher, Route
from .core.error_response import ErrorResponder
from .core.files import OpenFile
from .core.lifecycle import Events, Lifecycle, StartupError
from .core.background import BackgroundRunner, arm_after_call
from .core.observation import Observation, RouteLabels
from .core.params import arity, compile_call, is_async_callable, returns_coroutine, uses_background_tasks
from .core.registry import HTTP_METHODS, FunctionInfo, HttpMethod, MiddlewareSpec, MiddlewareType, RouteSpec, WebSocketSpec
from .core.request import Request
from .core.routing import Router, normalize_endpoint
from .core.watchdog import BlockingWatchdog
from .envfile import EnvFile, load_env_file
from .features.mcp import MCPApp
from .features import access_log as access_logging, metrics as prometheus_metrics
from .features.health import Check, Health
from .features import validation
from .features.sessions import SessionManager
from .features.static import StaticDirectory, StaticFiles
from .features.openapi import configure as configure_openapi, served_routes as openapi_routes
from .server.interface import HTTPResponse
from .server.runner import port_in_use
from .server.settings import ServerSettings, SettingsError
from .server.signals import hold_stop_signals
from .serving import start_app
from .pubsub.broker import BROKER_SETTING_NAMES, BrokerError, BrokerSettings, BrokerStatus
from .pubsub.engines import make_broker
from .pubsub.local import LocalBroker
from .websocket.api import register_websocket, websocket_decorator
from .websocket.rooms import Room, RoomHub
from .websocket.session import WebSocketDispatcher

logger = logging.getLogger("stonechat")

class State:
    """``app.state``: a plain namespace for resources made at startup (pools, clients...)."""

    def __repr__(self) -> str:
        return f"State({vars(self)!r})"


def _hook_entry(spec: MiddlewareSpec) -> tuple[Callable, bool, int]:
    """What dispatch runs for a hook: ``(fn, is_async, number of positional parameters)``."""
    fn, n = spec.fn, arity(spec.fn)
    if spec.kind is MiddlewareType.BEFORE_REQUEST and n == 0:
        return (lambda request: fn()), is_async_callable(fn), 1
    return fn, is_async_callable(fn), n


class BaseRouter:
    """Everything shared by the app and sub-routers: routes, hooks, DI, WebSocket routes.

    Registration only records (``core/registry.py``); ``collect_*`` gives the records of this
    router and of the routers it includes, prefixes applied, for the app to compile."""

    def __init__(self, prefix: str = "", dependencies: Optional[DependencyMap] = None) -> None:
        self.prefix = "" if prefix in ("", "/") else normalize_endpoint(prefix)
        self.dependencies = dependencies if dependencies is not None else DependencyMap()
        self.router: Router[RouteSpec] = Router()  # conflicts are refused at registration
        self.route_specs: list[RouteSpec] = []
        self.middleware_specs: list[MiddlewareSpec] = []
        self.web_socket_router: dict[str, WebSocketSpec] = {}
        self.exception_handler: Optional[Callable] = None
        self.authentication_handler: Optional[AuthenticationHandler] = None
        self.included_routers: list["BaseRouter"] = []
        self.static_directories: list[tuple[str, str, Optional[str], bool]] = []  # serve_directory calls

    # -- routes ----------------------------------------------------------------------------

    def add_route(self, route_type: Union[str, Any], endpoint: str, handler: Callable,
                  is_const: bool = False, auth_required: bool = False, openapi_name: str = "",
                  openapi_tags: Optional[list] = None, status_code: Optional[int] = None,
                  response_model: Any = None, responses: Any = None, deprecated: bool = False,
                  include_in_schema: bool = True, threaded: Optional[bool] = None,
                  stream_body: bool = False) -> Callable:
        method = str(getattr(route_type, "value", route_type)).upper()
        if method.startswith("HTTPMETHOD."):
            method = method.split(".", 1)[1]
        if method not in HTTP_METHODS:
            raise ValueError(f"unknown HTTP method {route_type!r}; use one of {', '.join(HTTP_METHODS)}")
        if is_const and method != "GET":
            raise ValueError("const=True is only for GET routes")
        if stream_body and not is_async_callable(handler):
            raise ValueError(f"stream_body=True on {method} {endpoint}: the handler must be async "
                             "(it reads the body with `async for chunk in request.stream()`)")
        Converter(status_code)  # an invalid status_code fails here, by name
        validation.check_handler(handler, method, endpoint)  # at most one Pydantic body
        spec = RouteSpec(method, self._full_path(endpoint), handler, self, const=is_const,
                         auth_required=auth_required, threaded=threaded, status_code=status_code,
                         openapi_name=openapi_name, openapi_tags=tuple(openapi_tags or ()),
                         response_model=response_model, responses=responses, deprecated=deprecated,
                         include_in_schema=include_in_schema, stream_body=bool(stream_body))
        # The handler's signature is checked now, so a bad one fails at registration.
        compile_call(handler, spec.endpoint, {}, self.dependencies.router_dependency_map,
                     body_model=validation.body_model)
        self.router.add(method, spec.endpoint, spec)  # raises RouteConflict at once
        self.route_specs.append(spec)
        return handler

    def _full_path(self, endpoint: str) -> str:
        if self.prefix and not endpoint.strip():
            return self.prefix  # Robyn: on a SubRouter, "" is the prefix itself
        endpoint = normalize_endpoint(endpoint)
        if self.prefix:
            return self.prefix if endpoint == "/" else self.prefix + endpoint
        return endpoint

    def _route_decorator(self, method: str, endpoint: str, **options: Any) -> Callable:
        if options.get("openapi_tags") is None:
            options["openapi_tags"] = [method.lower()]  # Robyn: a decorator's routes are tagged by method
        def decorator(handler: Callable) -> Callable:
            self.add_route(method, endpoint, handler, **options)
            return handler
        return decorator

    def get(self, endpoint: str, const: bool = False, auth_required: bool = False, openapi_name: str = "",
            openapi_tags: Optional[list] = None, status_code: Optional[int] = None, response_model: Any = None,
            responses: Any = None, deprecated: bool = False, include_in_schema: bool = True,
            threaded: Optional[bool] = None, stream_body: bool = False) -> Callable:
        return self._route_decorator("GET", endpoint, is_const=const, auth_required=auth_required,
                                     openapi_name=openapi_name, openapi_tags=openapi_tags,
                                     status_code=status_code, response_model=response_model,
                                     responses=responses, deprecated=deprecated,
                                     include_in_schema=include_in_schema, threaded=threaded,
                                     stream_body=stream_body)

    def _method(name: str):  # type: ignore[misc]
        def decorator_factory(self: "BaseRouter", endpoint: str, auth_required: bool = False,
                              openapi_name: str = "", openapi_tags: Optional[list] = None,
                              status_code: Optional[int] = None, response_model: Any = None,
                              responses: Any = None, deprecated: bool = False,
                              include_in_schema: bool = True, threaded: Optional[bool] = None,
                              stream_body: bool = False) -> Callable:
            """``stream_body=True``: the (async) handler reads the body as it arrives with
            ``request.stream()`` / ``request.stream_form()`` (docs/uploads-and-tasks.md)."""
            return self._route_decorator(name, endpoint, auth_required=auth_required,
                                         openapi_name=openapi_name, openapi_tags=openapi_tags,
                                         status_code=status_code, response_model=response_model,
                                         responses=responses, deprecated=deprecated,
                                         include_in_schema=include_in_schema, threaded=threaded,
                                         stream_body=stream_body)
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
        return self._middleware(MiddlewareType.BEFORE_REQUEST, endpoint)

    def after_request(self, endpoint: Optional[str] = None) -> Callable:
        return self._middleware(MiddlewareType.AFTER_REQUEST, endpoint)

    def _middleware(self, kind: MiddlewareType, endpoint: Optional[str]) -> Callable:
        if callable(endpoint):  # used bare: @app.before_request
            self.middleware_specs.append(MiddlewareSpec(kind, None, endpoint))
            return endpoint
        path = self._full_path(endpoint) if endpoint is not None else None

        def decorator(fn: Callable) -> Callable:
            self.middleware_specs.append(MiddlewareSpec(kind, path, fn))
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

    def serve_directory(self, route: str, directory_path: str, index_file: Optional[str] = None,
                        show_files_listing: bool = False) -> None:
        """Serve the files under ``directory_path`` at ``route`` (features/static.py): GET and
        HEAD for an existing file get it, before any route; other requests go to the routes.
        ``index_file`` answers directory URLs; ``show_files_listing`` lists them instead. On a
        SubRouter, ``route`` is under its prefix (Robyn ignores a SubRouter's directories)."""
        self.static_directories.append((self._full_path(route), directory_path, index_file, show_files_listing))

    def include_router(self, router: "BaseRouter") -> None:
        """Add a SubRouter's routes, hooks and WebSocket routes (its prefix is already in their
        paths). The same SubRouter may be included in several apps."""
        for spec in router.collect_routes():
            self.router.add(spec.method, self._prefixed(spec.endpoint), spec)  # conflicts: now
        self.included_routers.append(router)

    def _prefixed(self, endpoint: str) -> str:
        if not self.prefix or endpoint.startswith(self.prefix + "/") or endpoint == self.prefix:
            return endpoint
        return self.prefix + endpoint if endpoint != "/" else self.prefix

    # -- the records, with the included routers' (what the app compiles) -------------------

    def collect_routes(self) -> list[RouteSpec]:
        found = list(self.route_specs)
        for router in self.included_routers:
            tags = list(getattr(router, "tags", None) or [])  # a SubRouter's tags lead its routes' (OpenAPI)
            found += [replace(s, endpoint=self._prefixed(s.endpoint),
                              openapi_tags=tuple(tags + [t for t in s.openapi_tags if t not in tags]))
                      for s in router.collect_routes()]
        return found

    def collect_middlewares(self) -> list[MiddlewareSpec]:
        found = list(self.middleware_specs)
        for router in self.included_routers:
            routes = router.collect_routes()
            for mw in router.collect_middlewares():
                if mw.endpoint is None:
                    # A SubRouter's global hook covers that router's routes only (Robyn: the whole app).
                    found += [MiddlewareSpec(mw.kind, self._prefixed(r.endpoint), mw.fn) for r in routes]
                else:
                    found.append(replace(mw, endpoint=self._prefixed(mw.endpoint)))
        return found

    def collect_websockets(self) -> dict[str, WebSocketSpec]:
        found = dict(self.web_socket_router)
        for router in self.included_routers:
            for path, spec in router.collect_websockets().items():
                found[self._prefixed(path)] = replace(spec, endpoint=self._prefixed(path))
        return found

    def collect_static_directories(self) -> list[tuple[str, str, Optional[str], bool]]:
        found = list(self.static_directories)
        for router in self.included_routers:
            found += [(self._prefixed(route), path, index, listing)
                      for route, path, index, listing in router.collect_static_directories()]
        return found

    def collect_global_dependencies(self) -> dict[str, Any]:
        """One global dependency dict for the whole app: an included router's entries join
        the app's (the app's own win)."""
        found = dict(self.dependencies.global_dependency_map)
        for router in self.included_routers:
            for key, value in router.collect_global_dependencies().items():
                found.setdefault(key, value)
        return found

    # -- WebSockets (the API lives in websocket/api.py) ------------------------------------

    def websocket(self, endpoint: str, auth_required: bool = False, subprotocols: Sequence[str] = (),
                  recovery: bool = False) -> Callable:
        """``@app.websocket("/chat")``; ``subprotocols=["v2.chat", "v1.chat"]`` lets the handshake
        pick the first of the client's offered subprotocols found there (``ws.subprotocol``);
        ``recovery=True``: room messages reach its clients in envelopes with their position
        (docs/scaling.md)."""
        return websocket_decorator(self, self._full_path(endpoint), auth_required=auth_required,
                                   subprotocols=subprotocols, recovery=recovery)

    def add_web_socket(self, endpoint: str, ws: Any) -> None:
        register_websocket(self, self._full_path(endpoint), ws)


class Robyn(BaseRouter):
    """The application. ``App`` is the same class under stonechat's own name."""

    def __init__(self, file_object: Optional[str] = None, config: Optional[Config] = None,
                 openapi_file_path: Optional[str] = None, openapi: Any = None,
                 dependencies: Optional[DependencyMap] = None, **settings: Any) -> None:
        super().__init__("", dependencies)
        # Rooms and broadcasts beyond this process (docs/scaling.md): checked now, by name.
        self.broker_overrides: dict[str, Any] = {k: settings.pop(k) for k in list(settings)
                                                 if k in BROKER_SETTING_NAMES}
        BrokerSettings.from_sources(self.broker_overrides, environ={})
        self.room_hub: Optional[RoomHub] = None
        self.file_path = file_object
        self.directory_path = os.path.dirname(os.path.abspath(file_object)) if file_object else os.getcwd()
        # robyn.env next to the app file, as Robyn reads it here (the environment wins; a bad
        # line is reported by start(), envfile.py)
        self.env_file: Optional[EnvFile] = load_env_file(self.directory_path) if file_object else None
        self.config = config
        self.openapi = configure_openapi(openapi, openapi_file_path, self.directory_path, file_object is not None)
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
        self._mcp_app: Optional[MCPApp] = None
        self.mount_specs: list[MountSpec] = []
        self.mounted: dict[str, Mount] = {}  # the mounts of the last build, by prefix
        self.asgi_middlewares: list[Middleware] = []
        self._asgi: Optional[ASGIApp] = None
        self.session_manager: Optional[SessionManager] = None
        self.metrics_path: Optional[str] = None  # app.enable_metrics()
        self.metrics: Optional[prometheus_metrics.Metrics] = None  # the last build's
        self.health_state: Optional[Health] = None  # app.health()
        self._metrics_directory = ""

    @property
    def mcp(self) -> MCPApp:
        """``app.mcp``: the MCP endpoint (``POST /mcp``, features/mcp.py), made on first use."""
        if self._mcp_app is None:
            self._mcp_app = MCPApp(self)
        return self._mcp_app

    def configure_sessions(self, secret_key: str, *, cookie_name: str = "session",
                           max_age: Optional[int] = 14 * 24 * 60 * 60, path: str = "/",
                           domain: Optional[str] = None, secure: bool = False, http_only: bool = True,
                           same_site: Optional[str] = "Lax") -> SessionManager:
        """Signed-cookie sessions (``request.session``), Robyn's cookie format
        (features/sessions.py): one global before hook loads the session, one global after hook
        writes the cookie when it changed. Only an app that calls this pays for sessions."""
        if self.session_manager is not None:
            raise RuntimeError("Sessions are already configured on this app; configure_sessions() may only be "
                               "called once (calling it again would register duplicate session middleware).")
        manager = SessionManager(secret_key, cookie_name=cookie_name, max_age=max_age, path=path, domain=domain,
                                 secure=secure, http_only=http_only, same_site=same_site)
        self.session_manager = manager
        load_session, save_session = manager.hooks()
        self.before_request()(load_session)
        self.after_request()(save_session)
        return manager

    # -- lifecycle -------------------------------------------------------------------------

    def startup_handler(self, handler: Callable) -> Callable:
        self.lifecycle.add_startup(handler)
        return handler

    def shutdown_handler(self, handler: Callable) -> Callable:
        self.lifecycle.add_shutdown(handler)
        return handler

    @property
    def event_handlers(self) -> dict[Events, FunctionInfo]:
        """Robyn's view of the lifecycle handlers: the last one registered for each event, as a
        ``FunctionInfo`` (stonechat runs all of them, in order)."""
        found = {}
        for event, handlers in ((Events.STARTUP, self.lifecycle.startup_handlers),
                                (Events.SHUTDOWN, self.lifecycle.shutdown_handlers)):
            if handlers:
                fn = handlers[-1]
                found[event] = FunctionInfo(fn, is_async_callable(fn), arity(fn))
        return found

    def lifespan(self, factory: Callable) -> Callable:
        """Register an async context manager factory (e.g. ``@asynccontextmanager``), entered at
        startup and exited at shutdown; it may take the app as its one argument."""
        if inspect.isasyncgenfunction(factory):
            self.lifecycle.add_lifespan(asynccontextmanager(factory))
        else:
            self.lifecycle.add_lifespan(factory)
        return factory

    # -- running in production (docs/production.md) -------------------------------------------

    def enable_metrics(self, path: str = "/metrics") -> None:
        """Prometheus metrics at ``path`` (needs ``stonechat[metrics]``); see docs/production.md."""
        prometheus_metrics.check_installed()
        if self.metrics_path is not None:
            raise ValueError(f"metrics are already enabled at {self.metrics_path}")
        self.metrics_path = normalize_endpoint(path)
        self.add_route("GET", self.metrics_path, prometheus_metrics.endpoint(lambda: self.metrics),
                       include_in_schema=False)

    def health(self, path: str = "/health", ready_path: str = "/ready",
               checks: Union[Sequence[Check], dict[str, Callable[[], Any]]] = (),
               check_timeout: float = 2.0) -> Health:
        """Liveness at ``path`` (200 while serving) and readiness at ``ready_path``: 503 until
        startup is done, from the moment the stop begins, and while a check fails. Each check
        (sync or async callable, or ``(name, callable)``) fails by raising, returning False or
        taking longer than ``check_timeout`` seconds."""
        if self.health_state is not None:
            raise ValueError("app.health() was called already")
        state = self.health_state = Health(checks, check_timeout)
        self.add_route("GET", path, state.live, include_in_schema=False)
        self.add_route("GET", ready_path, state.ready, include_in_schema=False)
        return state

    def before_fork(self, processes: int) -> None:
        """Called by ``start()`` before ``--processes N`` forks its workers."""
        if self.metrics_path is not None:
            self._metrics_directory = prometheus_metrics.prepare_processes()

    def worker_exited(self, pid: int) -> None:
        """Called by the ``--processes`` supervisor for each worker that exits (restarted or not)."""
        if self.metrics_path is not None and os.environ.get(prometheus_metrics.MULTIPROC_ENV):
            prometheus_metrics.forget_process(pid)

    def after_workers(self) -> None:
        """Called by ``start()`` once every ``--processes`` worker has exited."""
        if self._metrics_directory:
            prometheus_metrics.forget_directory(self._metrics_directory)
            self._metrics_directory = ""

    def check_settings(self, settings: ServerSettings) -> None:
        """At ``start()``: what the settings name must exist (a startup error names the option)."""
        if settings.access_log:
            try:
                access_logging.check_destination(settings.access_log)
            except ValueError as exc:
                raise SettingsError(str(exc)) from None

    # -- app-wide headers ------------------------------------------------------------------

    def add_request_header(self, key: str, value: str) -> None:
        self.request_headers.append(key, value)

    def set_request_header(self, key: str, value: str) -> None:
        self.request_headers.set(key, value)

    def static_directory_table(self) -> list[StaticDirectory]:
        """The ``serve_directory`` mounts, checked (``ValueError`` naming a directory that is
        not one); ``start()`` checks before it binds, so the error is one line, not a traceback."""
        return [StaticDirectory(*args) for args in self.collect_static_directories()]

    def add_response_header(self, key: str, value: str) -> None:
        self.response_headers.append(key, value)

    def set_response_header(self, key: str, value: str) -> None:
        self.response_headers.set(key, value)

    def exclude_response_headers_for(self, paths: Optional[list[str]]) -> None:
        self.excluded_response_headers_paths = [normalize_endpoint(p) for p in (paths or [])]

    def set_threaded_default(self, threaded: bool = True) -> None:
        """Run every sync handler without an explicit ``threaded=`` on the thread pool."""
        self.threaded_default = threaded

    # -- ASGI both ways (asgi/) ---------------------------------------------------------------

    def mount(self, prefix: str, asgi_app: Any, name: Optional[str] = None) -> None:
        """Serve the ASGI application ``asgi_app`` (FastAPI, Starlette, ``StaticFiles``...) under
        ``prefix``: every request and WebSocket there that no stonechat route answers goes to it,
        with ``root_path`` set to the prefix; its lifespan runs at startup and shutdown with the
        app's lifespans. ``prefix="/"`` serves everything stonechat's routes do not."""
        if not callable(asgi_app):
            raise TypeError(f"mount({prefix!r}, ...) expects an ASGI application, got {asgi_app!r}")
        prefix = "" if prefix.strip() in ("", "/") else normalize_endpoint(prefix)
        for spec in self.mount_specs:
            if spec.prefix == prefix:
                raise ValueError(f"mount({prefix or '/'!r}): {spec.name} is already mounted there")
        kind = getattr(asgi_app, "__qualname__", None) or type(asgi_app).__qualname__
        spec = MountSpec(prefix, asgi_app, name or f"mounted app {kind} at {prefix or '/'}")
        self.mount_specs.append(spec)
        self.lifecycle.add_lifespan(lambda: self.mounted[spec.prefix].lifespan(), name=spec.name)

    def add_asgi_middleware(self, middleware_class: Any, **options: Any) -> None:
        """Wrap the whole app in ASGI middleware (``middleware_class(app, **options)``), the last
        added outermost: under stonechat's server and under any ASGI server (``app.asgi``)."""
        check_middleware(middleware_class, options)
        self.asgi_middlewares.append((middleware_class, dict(options)))

    @property
    def asgi(self) -> ASGIApp:
        """The app as an ASGI 3 application: ``uvicorn module:app.asgi`` (also Granian, Hypercorn)."""
        if self._asgi is None:
            self._asgi = ASGIApp(self._served_for_asgi, lambda serve: wrap(serve, self.asgi_middlewares))
        return self._asgi

    def _served_for_asgi(self) -> "ServedApp":
        _log_to_stderr_if_unconfigured()
        return self._served_core(None, Config([]).debug)

    @staticmethod
    def is_port_in_use(port: int, host: str = "127.0.0.1") -> bool:
        return port_in_use(host, int(port))

    # -- building and serving --------------------------------------------------------------

    def _build(self, settings: ServerSettings, debug: bool = False) -> Dispatcher:
        """Compile fresh routes from the registration records; after this nothing is decided
        per request. Called by every ``served()``: the records themselves never change."""
        defaults = DefaultHeaders(self.response_headers if not self.response_headers.is_empty() else None)
        specs = self.collect_routes()
        if self._openapi_enabled():
            # /openapi.json, /docs and its files: const routes, without default headers (as Robyn).
            served = openapi_routes(self.openapi, specs, self._authentication_handlers(specs), self)
            specs += served
            excluded = frozenset(self.excluded_response_headers_paths + [s.endpoint for s in served])
        else:
            excluded = frozenset(self.excluded_response_headers_paths)
        middlewares = self.collect_middlewares()
        before, after = MiddlewareType.BEFORE_REQUEST, MiddlewareType.AFTER_REQUEST
        global_before = [_hook_entry(m) for m in middlewares if m.kind is before and m.endpoint is None]
        global_after = [_hook_entry(m) for m in middlewares if m.kind is after and m.endpoint is None]
        global_deps = self.collect_global_dependencies()
        router: Router[Route] = Router()
        routes: list[Route] = []
        background: Optional[BackgroundRunner] = None
        for spec in specs:
            is_async = is_async_callable(spec.handler)
            threaded = spec.threaded if spec.threaded is not None else self.threaded_default and not is_async
            call = compile_call(spec.handler, spec.endpoint, global_deps,
                                spec.router.dependencies.router_dependency_map, body_model=validation.body_model)
            takes_tasks = uses_background_tasks(spec.handler, spec.endpoint)
            if takes_tasks and spec.const:
                # a const route runs once at startup and then answers from its cache: tasks
                # added there would run once, or never for the requests that expect them
                raise ValueError(f"const=True on GET {spec.endpoint}: a const route cannot take BackgroundTasks")
            if takes_tasks:
                call = arm_after_call(call, is_async)
                background = background or BackgroundRunner()
            if spec.response_model is not None:
                call = validation.with_response_model(call, spec.response_model, is_async)
            route = Route(spec, call, is_async, threaded,
                          Converter(spec.status_code, DefaultHeaders() if spec.endpoint in excluded else defaults))
            route.background = takes_tasks
            auth = [(make_auth_hook(spec.router.authentication_handler or self.authentication_handler), True, 1)]
            route.before = (global_before + (auth if spec.auth_required else [])
                            + [_hook_entry(m) for m in middlewares if m.kind is before and m.endpoint == spec.endpoint])
            route.after = global_after + [_hook_entry(m) for m in middlewares
                                          if m.kind is after and m.endpoint == spec.endpoint]
            route.fast = not (route.before or route.after or is_async or threaded or takes_tasks)
            route.plain_async = (is_async and not (route.before or route.after or takes_tasks)
                                 and returns_coroutine(spec.handler))
            router.add(spec.method, spec.endpoint, route)
            routes.append(route)
        if any(r.threaded for r in routes) and self.executor is None:
            self.executor = ThreadPoolExecutor(settings.thread_pool_size, thread_name_prefix="stonechat-handler")
        hub = self.room_hub = self._room_hub()
        exception_handler = self.exception_handler
        errors = ErrorResponder(exception_handler, bool(exception_handler and is_async_callable(exception_handler)),
                                debug)
        websocket = None
        websockets = self.collect_websockets()
        if websockets:
            websocket = self.websocket_hub = WebSocketDispatcher(
                websockets, global_deps, self.authentication_handler, settings, errors, hub)
            if hub.broker.name != "local":
                websocket.use_broker()
        self.mounted = {spec.prefix: Mount(spec.prefix, spec.app, spec.name, settings) for spec in self.mount_specs}
        self.dispatcher = Dispatcher(
            router, routes, defaults=defaults, errors=errors, global_before=global_before, global_after=global_after,
            request_headers=self._headers_for_requests(),
            excluded_paths=excluded,
            # 0 turns the blocking warning off (README), here as for the watchdog thread
            blocking_warn_s=settings.blocking_warn_ms / 1000.0 if settings.blocking_warn_ms > 0 else float("inf"),
            executor=self.executor, websocket=websocket,
            mounts=MountTable(list(self.mounted.values())) if self.mounted else None,
            background=background)
        return self.dispatcher

    def _headers_for_requests(self) -> Optional[tuple[dict, dict]]:
        """What every request's ``headers`` gain: the app's request headers (appended), and —
        as in Robyn, whose request and response header sets share one slot, and whose own
        suite relies on it — the app's default *response* headers where the client sent no
        header of that name."""
        added = self.request_headers.get_headers()
        defaults = self.response_headers.get_headers()
        return (added, defaults) if added or defaults else None

    def broker_settings(self) -> BrokerSettings:
        """Keywords, then ``STONECHAT_BROKER*`` variables, then ``--broker URL`` (which wins)."""
        overrides = dict(self.broker_overrides)
        flag = (self.config or Config()).broker
        if flag:
            overrides["broker"] = flag
        return BrokerSettings.from_sources(overrides)

    def _room_hub(self) -> RoomHub:
        config = self.broker_settings()
        return RoomHub(make_broker(config), config)

    def room(self, name: str) -> Room:
        """A room by name: ``app.room("news").send(msg)`` from any handler or startup task,
        ``await app.room("news").members()`` / ``count()``."""
        return Room(self, name)

    def broker_status(self) -> BrokerStatus:
        """The broker's state for a health check (engine, connected, listener, counters)."""
        hub = self.room_hub
        return hub.status if hub is not None else BrokerStatus(listener="stopped")

    def _openapi_enabled(self) -> bool:
        """OpenAPI is on unless ``--disable-openapi`` (or ``Config.disable_openapi``) says not."""
        if self.config is not None:
            return not self.config.disable_openapi
        try:
            return not Config().disable_openapi
        except ValueError:  # a bad flag stops start() with its own message; OpenAPI is not the place
            return True

    def _authentication_handlers(self, specs: list[RouteSpec]) -> list[AuthenticationHandler]:
        """The app's and the routers' authentication handlers (for OpenAPI's security schemes)."""
        found = [self.authentication_handler] if self.authentication_handler is not None else []
        for spec in specs:
            handler = spec.router.authentication_handler
            if handler is not None and all(handler is not h for h in found):
                found.append(handler)
        return found

    def served(self, settings: Optional[ServerSettings] = None, debug: bool = False) -> Any:
        """The object the server runs (see ``server/interface.py``): the ``ServedApp``, or with ASGI
        middleware added the ``MiddlewareHost`` that runs the chain around it."""
        core = self._served_core(settings, debug)
        if self.asgi_middlewares:
            return MiddlewareHost(core, self.asgi_middlewares)
        return core

    def _served_core(self, settings: Optional[ServerSettings], debug: bool) -> "ServedApp":
        settings = settings or ServerSettings.from_sources(self.settings_overrides)
        return ServedApp(self, self._build(settings, debug), settings)

    def start(self, host: str = "127.0.0.1", port: int = 8080, _check_port: bool = True,
              client_timeout: int = 30, keep_alive_timeout: int = 20, **settings: Any) -> None:
        """Serve until stopped (Ctrl+C or SIGTERM). Host and port may come from
        ``STONECHAT_HOST``/``STONECHAT_PORT`` or ``ROBYN_HOST``/``ROBYN_PORT``, which win."""
        hold_stop_signals()  # first: a stop signal from now on is never lost (server/signals.py)
        for name in [k for k in settings if k in BROKER_SETTING_NAMES]:
            self.broker_overrides[name] = settings.pop(name)
        try:
            self.broker_settings()
        except ValueError as exc:
            raise SettingsError(str(exc)) from None
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
        # An app-wide Server (or Date) header replaces the server's own (server/interface.py).
        self.own_headers = frozenset(name.encode() for name in app.response_headers.keys()
                                     if name in ("server", "date"))

        table = dispatcher.mounts
        if (table is not None and table.root is not None and not table.entries and not dispatcher.routes
                and dispatcher.websocket is None):
            # The whole app is one ASGI app at "/": nothing to look up first.
            self.handle = table.root.handle
        if app.collect_static_directories():
            self.handle = StaticFiles(app.static_directory_table(), self.handle).handle
        self.settings = settings
        self.watchdog: Optional[BlockingWatchdog] = None
        # The server streams the bodies of stream_body routes only (server/interface.py).
        self.streams_body = dispatcher.streams_body if any(r.stream_body for r in dispatcher.routes) else None
        self.access_log: Optional[access_logging.AccessLog] = None
        self.metrics: Optional[prometheus_metrics.Metrics] = None
        self.observer: Optional[Observation] = self._observation(app, dispatcher, settings)

    def background_pending(self) -> int:
        """Background tasks not finished yet: the drain at the stop waits for them."""
        runner = self.dispatcher.background
        return runner.pending() if runner is not None else 0

    def background_deadline(self) -> list[str]:
        """The drain deadline passed: cancel the background tasks left; their names are logged."""
        runner = self.dispatcher.background
        return runner.deadline_passed() if runner is not None else []

    def _observation(self, app: Robyn, dispatcher: Dispatcher, settings: ServerSettings) -> Optional[Observation]:
        """The server's observer (server/interface.py), only when something observes: with none
        the server runs its plain protocols and the hot path is untouched."""
        sinks: list[Any] = []
        if settings.access_log:
            self.access_log = access_logging.AccessLog(settings.access_log, settings.access_log_format,
                                                       settings.request_id)
            sinks.append(self.access_log)
        if app.metrics_path is not None:
            websocket = dispatcher.websocket
            labels = RouteLabels(dispatcher.router, websocket.router if websocket is not None else None,
                                 dispatcher.mounts)
            self.metrics = app.metrics = prometheus_metrics.Metrics(
                labels, app.broker_status, lambda: app.lifecycle.timings)
            sinks.append(self.metrics)
        if not sinks and not settings.request_id:
            return None
        observation = Observation(sinks, settings.request_id)
        if self.metrics is not None:
            # the server's count (server/interface.py Observer), once it serves
            def in_flight_now(current: Any = None) -> int:
                count = getattr(observation, "requests_in_flight", None)
                return count(current) if count is not None else 0
            self.metrics.in_flight_now = in_flight_now
        return observation

    def stopping(self) -> None:
        """The stop began (server/runner.py): readiness answers 503 from now on."""
        if self.app.health_state is not None:
            self.app.health_state.mark_stopping()

    def connect_peers(self, publish: Callable[[bytes], None]) -> Callable[[bytes], None]:
        """Under ``--processes N``: WebSocket broadcasts reach every worker's clients."""
        websocket = self.dispatcher.websocket
        if websocket is None:
            return lambda data: None
        return websocket.connect_peers(publish)

    async def startup(self) -> None:
        health = self.app.health_state
        if health is not None:
            health.mark_starting()
        if self.access_log is not None:
            self.access_log.start()
        await self._start_broker()  # first: startup handlers may publish
        await self.app.lifecycle.startup(self.app)
        await self._compute_const_routes()
        if self.metrics is not None:
            self.metrics.record_lifecycle()
            self.metrics.start()
        if health is not None:
            health.mark_started()
        if self.settings.blocking_warn_ms > 0 and any(not r.is_async and not r.threaded and r.cached is None
                                                      for r in self.dispatcher.routes):
            # Only a sync handler on the loop can stall it (const routes answered from their
            # cache here on): an app without one (all async, or an ASGI app mounted at "/") has
            # no thread waking up every half threshold to watch nothing.
            self.watchdog = BlockingWatchdog(self.dispatcher, self.settings.blocking_warn_ms / 1000.0)
            self.watchdog.start()

    async def _start_broker(self) -> None:
        hub = self.app.room_hub
        if hub is None:
            return
        try:
            await hub.start()
        except BrokerError as exc:
            if not self.app.broker_settings().broker_local_fallback:
                logger.error("%s", exc)
                raise
            logger.warning("%s; serving local-only (broker_local_fallback): rooms and broadcasts reach "
                           "this process's clients only", exc)
            await hub.broker.close()
            hub.use(LocalBroker())
            hub.status.error(str(exc))
            websocket = self.dispatcher.websocket
            if websocket is not None:
                for ep in websocket.endpoints.values():
                    ep.clients.relay = None
            await hub.start()

    async def _compute_const_routes(self) -> None:
        for route in self.dispatcher.routes:
            if not route.const:
                continue
            try:
                result = route.call(Request())
                if inspect.isawaitable(result):
                    result = await result
                response = route.convert(result)
            except Exception as exc:
                raise StartupError(f"const route {route.name}", exc) from exc
            opened = response.stream
            if isinstance(opened, OpenFile):  # a file: cached whole, as Robyn does
                try:
                    body = os.pread(opened.fd, opened.size, 0)
                finally:
                    opened.close()
                response = HTTPResponse(response.status, response.headers, body)
            if response.stream is not None:
                raise StartupError(f"const route {route.name}", TypeError("a const route cannot stream"))
            route.cached = response
            route.plain_async = False  # answered from the cache (_run), not by the handler

    async def shutdown(self) -> None:
        self.stopping()  # under an ASGI server, the first word of the stop
        if self.watchdog is not None:
            self.watchdog.stop()
        await self._finish_background()
        try:
            await self.app.lifecycle.shutdown(self.settings.shutdown_handler_timeout)
        finally:
            if self.metrics is not None:
                self.metrics.record_lifecycle()
                self.metrics.stop()
            if self.access_log is not None:
                self.access_log.stop()
        if self.app.room_hub is not None:
            await self.app.room_hub.close()  # last: shutdown handlers may publish
        if self.app.executor is not None:
            self.app.executor.shutdown(wait=False, cancel_futures=True)

    async def _finish_background(self) -> None:
        """Under an ASGI server (or the TestClient) nobody drained the background tasks: they get
        ``drain_timeout`` here. Under stonechat's server the drain did it already."""
        runner = self.dispatcher.background
        if runner is None:
            return
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.settings.drain_timeout
        while runner.pending() and loop.time() < deadline:
            await asyncio.sleep(0.02)
        runner.deadline_passed()

    def skip_shutdown(self) -> None:
        """The stop was forced before ``shutdown()`` began: it will not run; log what that skips."""
        self.app.lifecycle.log_skipped()


def _log_to_stderr_if_unconfigured() -> None:
    """Under an ASGI server nobody calls ``start()``'s logging setup: unless logging is configured,
    stonechat's own lines (startup failures, shutdown steps) go to stderr as they would natively."""
    if logging.getLogger().handlers or logger.handlers:
        return
    handler = logging.StreamHandler()
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)-7s [%(process)d] %(name)s: %(message)s",
                                           "%H:%M:%S"))
    logger.addHandler(handler)
    logger.setLevel(getattr(logging, os.environ.get("STONECHAT_LOG_LEVEL", "INFO").upper(), logging.INFO))
    logger.propagate = False


__all__ = ["App", "BaseRouter", "HttpMethod", "Robyn", "ServedApp", "State", "SubRouter", "SettingsError"]
