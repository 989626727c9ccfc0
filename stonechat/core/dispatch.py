"""One request through the framework: route match → before hooks → handler → after hooks →
``HTTPResponse``. This is the only module that runs handlers for HTTP requests.

Every route is compiled into a ``Route`` when the app starts (``App._build``): its call shape,
middleware chain and converter are fixed then. Per request, ``Dispatcher.handle``:

* answers a route with no middleware and a sync handler *synchronously*: no task, no
  coroutine, the server writes the bytes at once (Robyn runs sync handlers the same way);
* returns a coroutine for everything else (hooks, ``threaded=True``), which the server awaits
  in order (its first step at once: most never suspend); an async handler without hooks is
  answered with the handler's own coroutine and what finishes it (a finishing quadruple,
  ``server/interface.py``), no coroutine of ours around it;
* hands a request no route matches to the mounted ASGI app whose prefix holds it
  (``app.mount``; ``asgi/mount.py``), so stonechat's own routes pay nothing for mounts.

Errors go through ``error_response.py`` (the same path as WebSocket handshakes): a parameter
error → 400 (422 for a Pydantic body), the app's exception handler, ``HTTPException`` → its
status, else 500. Nothing a handler does can escape to the server.
"""

from __future__ import annotations

import asyncio
import logging
from time import perf_counter
from typing import Any, Callable, Optional

from ..server.interface import HTTPRequest, HTTPResponse
from .conversion import TEXT, Converter, DefaultHeaders, decode_header_block
from .error_response import ErrorResponder
from .request import Request
from .files import OpenFile, select
from .response import FileResponse, Response, StreamingResponse
from .routing import Router, param_names

logger = logging.getLogger("stonechat")

# Robyn's bodies for the answers dispatch makes itself (its suite and apps compare them).
NOT_FOUND = "Not found"


class Route:
    """A route compiled for dispatch from its registration record (``spec``)."""

    __slots__ = ("spec", "method", "endpoint", "call", "is_async", "threaded", "const", "convert",
                 "before", "after", "param_names", "cached", "fast", "plain_async", "name", "background",
                 "stream_body", "to_wire", "done", "failed")

    def __init__(self, spec: Any, call: Callable, is_async: bool, threaded: bool, convert: Converter) -> None:
        self.spec = spec  # a core/registry.RouteSpec (or a stand-in for the 404/405 routes)
        self.method: str = spec.method
        self.endpoint: str = spec.endpoint
        self.call = call
        self.is_async = is_async
        self.threaded = threaded
        self.const: bool = spec.const
        self.convert = convert
        self.to_wire = convert.__call__  # what the fast path calls: a bound method costs less than an instance call
        self.param_names = param_names(spec.endpoint)
        self.before: list[tuple[Callable, bool, int]] = []
        self.after: list[tuple[Callable, bool, int]] = []
        self.cached: Optional[HTTPResponse] = None
        self.fast = False  # a sync handler, no hooks: answered without a coroutine
        # An async handler (a native coroutine function), no hooks, not const: answered with its
        # own coroutine, ``done`` and ``failed`` (Dispatcher._finishers), no coroutine of ours.
        self.plain_async = False
        self.done: Any = None
        self.failed: Any = None
        self.name: str = spec.name
        self.background = False  # has a BackgroundTasks parameter (never fast: see handle)
        self.stream_body: bool = getattr(spec, "stream_body", False)


class _Fallback:
    """The spec of the routes dispatch makes itself (404, 405), so that global hooks run on them."""

    method = endpoint = "*"
    const = False
    name = "no route"


class Dispatcher:
    """Holds the compiled route table and answers requests; built by ``App._build``."""

    def __init__(self, router: Router[Route], routes: list[Route], *, defaults: DefaultHeaders, errors: ErrorResponder,
                 global_before: list, global_after: list, request_headers: Optional[tuple[dict, dict]],
                 excluded_paths: frozenset, blocking_warn_s: float, executor: Any,
                 websocket: Any = None, mounts: Any = None, background: Any = None) -> None:
        self.router = router
        self.static_routes = router.static  # (the router fills this same dict)
        self.routes = routes
        self.defaults = defaults
        self.errors = errors
        self.global_before = global_before
        self.global_after = global_after
        self.request_headers = request_headers
        self.excluded_paths = excluded_paths
        self.blocking_warn_s = blocking_warn_s
        self.executor = executor
        self.websocket = websocket
        self.mounts = mounts  # mounted ASGI apps (asgi/mount.py MountTable), asked after the routes
        self.background = background  # core/background.BackgroundRunner, when a route takes tasks
        self.running: Optional[Route] = None  # the sync handler on the loop now (see watchdog.py)
        self.running_since = 0.0
        self.error_convert = Converter(None, defaults)
        not_found = Converter(404, defaults)
        self.not_found = not_found(NOT_FOUND)
        self.not_found_route = Route(_Fallback, _not_found, False, False, not_found)
        self.not_found_route.before = global_before
        self.not_found_route.after = global_after
        self.not_allowed_routes: dict[int, Route] = {}
        for route in routes:
            if route.plain_async:
                route.done, route.failed = self._finishers(route)

    # -- entry point (called by the server for every request) ------------------------------

    def handle(self, raw: HTTPRequest) -> Any:
        if raw.websocket and self.websocket is not None:
            answer = self.websocket.handle(raw)
            if answer is not None:
                return answer
        # A static path is one dict lookup, made here: the router's own match is a Python
        # call more (it tries a trailing "/", percent-decoding and the trie after this).
        methods = self.static_routes.get(raw.path)
        if methods is not None:
            values: Any = None
        else:
            methods, values = self.router.match(raw.path)
        if methods is None:
            if self.websocket is not None and self.websocket.has_path(raw.path):
                return HTTPResponse(426, TEXT + b"upgrade: websocket\r\nsec-websocket-version: 13\r\n",
                                    b"Upgrade Required: this path only speaks WebSocket\n")
            if self.mounts is not None:
                mount = self.mounts.find(raw.path)
                if mount is not None:
                    return mount.handle(raw)
            if self.global_before or self.global_after:
                return self._run(self.not_found_route, self._request(raw, (), ()))
            return self.not_found
        method = raw.method
        route = methods.get(method)
        if route is None:
            if method == "HEAD":
                route = methods.get("GET")
            if route is None:
                if self.global_before or self.global_after:  # global hooks see every request
                    return self._run(self._not_allowed_route(methods), self._request(raw, (), ()))
                return self._method_not_allowed(methods)
        # (_request, inline: once per request)
        request = Request._from_server(raw, dict(zip(route.param_names, values)) if values else {})
        if self.request_headers:
            request.extra_headers = self.request_headers
        if route.fast:
            cached = route.cached
            if cached is not None:
                return cached
            # (_call_sync, inline: once per request)
            self.running_since = started = perf_counter()
            self.running = route
            try:
                try:
                    result = route.call(request)
                finally:
                    self.running = None
                    elapsed = perf_counter() - started
                    if elapsed > self.blocking_warn_s:
                        self._warn_blocking(route, elapsed)
                response = route.to_wire(result)
                return response if response.stream is None else self._file_answer(raw, response)
            except Exception as exc:
                return self._error(route, exc)
        if route.plain_async:
            # A finishing quadruple (server/interface.py): the server runs the handler's own
            # coroutine and then ``done`` (or ``failed``), where _run would await it.
            try:
                return route.call(request), route.done, route.failed, raw
            except Exception as exc:  # the getters of its parameters run in the call: a ParamError
                return self._error(route, exc)
        if route.background:
            return self._run_then_tasks(route, request)
        return self._run(route, request)

    def streams_body(self, raw: HTTPRequest) -> bool:
        """Whether the route for ``raw`` reads its body as a stream (``stream_body=True``); the
        server asks once the head is parsed (``server/interface.py``)."""
        methods, _ = self.router.match(raw.path)
        if methods is None:
            return False
        route = methods.get(raw.method)
        return route is not None and route.stream_body

    @staticmethod
    def _file_answer(raw: HTTPRequest, response: HTTPResponse) -> HTTPResponse:
        """A returned file narrowed to what the request asks (304, 206, 416: ``files.select``)."""
        opened = response.stream
        if opened.__class__ is not OpenFile:
            return response
        assert isinstance(opened, OpenFile)
        return select(raw.method, raw.headers, response.status, response.headers, opened)

    def _request(self, raw: HTTPRequest, names: Any, values: Any) -> Request:
        params = dict(zip(names, values)) if values else {}
        request = Request._from_server(raw, params)
        if self.request_headers:
            request.extra_headers = self.request_headers
        return request

    # -- the full pipeline -----------------------------------------------------------------

    async def _run_then_tasks(self, route: Route, request: Request) -> HTTPResponse:
        """A route with a ``BackgroundTasks`` parameter: its answer carries the tasks, which the
        server starts once the answer is written."""
        response = await self._run(route, request)
        return self.background.response_then(request, response)

    async def _run(self, route: Route, request: Request) -> HTTPResponse:
        """Before hooks → handler → after hooks. An error answer (the exception handler's, a
        400, the plain 500) goes through the after hooks too, as in Robyn; an error in an after
        hook is answered without running them again."""
        convert = route.convert
        raw = request._raw
        try:
            response: Any = None
            for hook, is_async, _ in route.before:
                result = hook(request)
                if is_async:
                    result = await result
                if result is None or isinstance(result, Request):
                    request = result or request
                    continue
                response = result  # a before hook answered: skip the handler
                break
            if response is None:
                if route.cached is not None and not route.after:
                    return route.cached
                response = await self._call(route, request)
        except Exception as exc:
            response = self._error(route, exc)
            if not isinstance(response, HTTPResponse):
                response = await response
        try:
            if not route.after:
                wire = response if response.__class__ is HTTPResponse else convert(response)
            else:
                wire = convert(await self._after(route, request, response))
            return wire if wire.stream is None else self._file_answer(raw, wire)
        except Exception as exc:
            answer = self._error(route, exc)
            return answer if isinstance(answer, HTTPResponse) else await answer

    def _finishers(self, route: Route) -> tuple[Callable[[HTTPRequest, Any], HTTPResponse],
                                               Callable[[HTTPRequest, Exception], Any]]:
        """``done(raw, value)`` and ``failed(raw, exc)`` for an async handler with no hooks: what
        ``_run`` does after the handler (its value to the wire; an error, the handler's or the
        conversion's, to its answer), which the server runs after the handler's own coroutine
        (the finishing quadruple of ``server/interface.py``).

        Why not a coroutine of ours around the handler's, awaiting it (as ``_run`` is): that
        costs a coroutine object made and freed, and a frame more to step, per request (issue
        13: an async handler that never suspends should cost about what a sync one does). Made
        once per route, what they read bound (closure cells are the cheapest reads)."""
        to_wire = route.to_wire  # the bound method: cheaper than calling the Converter
        convert = route.convert
        name = route.name
        errors = self.errors
        file_answer = self._file_answer

        def done(raw: HTTPRequest, value: Any) -> HTTPResponse:
            # (the Converter passes an HTTPResponse through; what it raises goes to ``failed``)
            wire = to_wire(value)
            return wire if wire.stream is None else file_answer(raw, wire)

        def failed(raw: HTTPRequest, exc: Exception) -> Any:
            return errors(exc, convert, name)  # an HTTPResponse, or a coroutine (async exception handler)
        return done, failed

    async def _after(self, route: Route, request: Request, response: Any) -> Any:
        response = self._as_response(route.convert, response)
        if not isinstance(response, Response):
            return response  # a stream: after hooks cannot change what is already flowing
        for hook, is_async, n_args in route.after:
            result = hook(request, response) if n_args >= 2 else (hook(response) if n_args == 1 else hook())
            if is_async:
                result = await result
            if not isinstance(result, Response):
                raise TypeError(f"after_request hook {getattr(hook, '__qualname__', hook)} "
                                f"returned {type(result).__name__}, expected Response")
            response = result
        return response

    async def _call(self, route: Route, request: Request) -> Any:
        if route.cached is not None:
            return route.cached
        if route.is_async:
            return await route.call(request)
        if route.threaded:
            loop = asyncio.get_running_loop()
            return await loop.run_in_executor(self.executor, route.call, request)
        return self._call_sync(route, request)

    def _call_sync(self, route: Route, request: Request) -> Any:
        """A sync handler on the loop thread, timed; ``running`` is what the watchdog reads."""
        self.running_since = started = perf_counter()
        self.running = route
        try:
            return route.call(request)
        finally:
            self.running = None
            elapsed = perf_counter() - started
            if elapsed > self.blocking_warn_s:
                self._warn_blocking(route, elapsed)

    @staticmethod
    def _as_response(convert: Converter, value: Any) -> Any:
        """A ``Response`` object for after hooks (streams pass through untouched)."""
        if isinstance(value, (Response, StreamingResponse)):
            return value
        if isinstance(value, FileResponse):
            return value.to_response()  # the hooks see a Response; its body stays on disk
        if isinstance(value, HTTPResponse):
            wire = value
        else:
            wire = convert(value)
        if wire.stream is not None:
            return value
        return Response(wire.status, decode_header_block(wire.headers), wire.body)

    # -- errors ----------------------------------------------------------------------------

    def _error(self, route: Route, exc: Exception) -> Any:
        return self.errors(exc, route.convert, route.name)

    def _not_allowed_route(self, methods: dict) -> Route:
        """The 405 for this path as a route, so that global hooks run on it (one per path)."""
        route = self.not_allowed_routes.get(id(methods))
        if route is None:
            route = Route(_Fallback, _not_found, False, False, self.error_convert)
            route.cached = self._method_not_allowed(methods)
            route.before = self.global_before
            route.after = self.global_after
            self.not_allowed_routes[id(methods)] = route
        return route

    def _method_not_allowed(self, methods: dict) -> HTTPResponse:
        allowed = set(methods)
        if "GET" in allowed:
            allowed.add("HEAD")
        allow = ", ".join(sorted(allowed))
        return HTTPResponse(405, TEXT + b"allow: " + allow.encode() + b"\r\n" + self.defaults.block_without(["content-type"]),
                            b"Method not allowed")

    def _warn_blocking(self, route: Route, elapsed: float) -> None:
        logger.warning("%s blocked the event loop for %.0f ms in all (threshold %.0f ms); "
                       "make it async, or pass threaded=True to run it on the thread pool",
                       route.name, elapsed * 1000, self.blocking_warn_s * 1000)


def _not_found(*_: Any) -> str:
    return NOT_FOUND
