"""What the app tells its observers (access log, metrics) about each request and WebSocket:
the server's ``Observer`` (``server/interface.py``) for this app, request ids, route labels.

It fans out to *sinks* made by ``features/`` (it does not know what they do with it), and it
exists only when one is on: with none, the app has no observer and the server runs its
plain protocols. Request ids: a client's ``X-Request-ID`` is kept when it is 1-128 characters
of ``[A-Za-z0-9._-]``; anything else is replaced by a new one (32 hex digits), never echoed.
The handler reads it as ``request.headers["x-request-id"]``; the response carries it.
"""

from __future__ import annotations

import itertools
import os
import re
from typing import Any, Callable, Optional, Protocol

from ..server.interface import HTTPRequest

REQUEST_ID_HEADER = b"x-request-id"
_VALID_ID = re.compile(rb"[A-Za-z0-9._-]{1,128}\Z")
UNMATCHED = "<unmatched>"  # the route label of every request no route answers


def valid_request_id(value: bytes) -> bool:
    return _VALID_ID.match(value) is not None


class RequestIds:
    """New ids: 32 hex digits, a random half drawn once per process (after any fork: one per
    ``served()``) and a counter. Unique without a system call or a uuid4 per request, which
    would cost more than the rest of the access log together."""

    def __init__(self) -> None:
        start = int.from_bytes(os.urandom(8), "big") << 64  # the random half, then the counter
        self.counter = itertools.count(start | 1)

    def __call__(self) -> bytes:
        return b"%032x" % next(self.counter)


class Sink(Protocol):
    """What a feature implements to be told; ``received``, ``websocket_opened``,
    ``websocket_closed`` and ``connection_answered`` (a new connection's own ``answered``,
    called for that connection's answers instead) are optional. ``request`` is ``None`` for
    an answer the server gave while the request was still arriving (413, 431...).
    ``request.started`` is when it began (``perf_counter``); with request ids on,
    ``request.observed`` holds its id (bytes, from when its head has been read), without
    them it is not set."""

    def answered(self, request: Optional[HTTPRequest], status: int, sent: int, seconds: float) -> None: ...


class Observation:
    """The app's ``observer``: assigns request ids (when ``request_ids``), times answers, tells
    every sink."""

    def __init__(self, sinks: list[Any], request_ids: bool) -> None:
        self.sinks = sinks
        self.new_id = RequestIds()
        self._received = [s.received for s in sinks if hasattr(s, "received")]
        # server/interface.Observer.request_received: None when there is nothing to do per
        # request before it is answered (the server then skips the call)
        self.request_received: Optional[Callable[[HTTPRequest], None]] = (
            self._assign_id if request_ids else self._tell_received if self._received else None)
        # requests_in_flight(current=None) is set by the server when it begins serving
        # (interface.Observer): the metrics read it at a scrape
        self._answer_sinks: list[Callable[..., None]] = [s.answered for s in sinks]
        if len(self._answer_sinks) == 1:  # the sink itself: one call less per request
            self.response_sent = self._answer_sinks[0]  # type: ignore[method-assign]
        self._per_connection = any(hasattr(s, "connection_answered") for s in sinks)
        self._opened = [s.websocket_opened for s in sinks if hasattr(s, "websocket_opened")]
        self._closed = [s.websocket_closed for s in sinks if hasattr(s, "websocket_closed")]

    # -- server/interface.Observer ---------------------------------------------------------

    def _assign_id(self, request: HTTPRequest) -> None:
        """``request_received`` with request ids (see the module docstring), then the sinks."""
        headers = request.headers
        found: Optional[bytes] = None
        for name, value in headers:
            if name == REQUEST_ID_HEADER:
                found = b"" if found is not None else value  # a second one: neither is kept
        if found is None:
            found = self.new_id()
            headers.append((REQUEST_ID_HEADER, found))
        elif not valid_request_id(found):
            # malformed or repeated: the handler sees one new id, never the client's
            found = self.new_id()
            headers[:] = [h for h in headers if h[0] != REQUEST_ID_HEADER]
            headers.append((REQUEST_ID_HEADER, found))
        request.reply_headers = b"x-request-id: " + found + b"\r\n"
        request.observed = found
        for fn in self._received:
            fn(request)

    def _tell_received(self, request: HTTPRequest) -> None:
        """``request_received`` without request ids: no id, no header; the sinks only."""
        request.reply_headers = b""
        request.observed = None
        for fn in self._received:
            fn(request)

    def connection_reporter(self) -> Callable[[Optional[HTTPRequest], int, int, float], None]:
        """A new connection's ``response_sent`` (``interface.Observer``): a sink with
        ``connection_answered`` (the access log) gives one of its own per connection, which
        keeps that connection's state in hand instead of looking it up each answer."""
        if not self._per_connection:
            return self.response_sent
        answers = [s.connection_answered() if hasattr(s, "connection_answered") else s.answered for s in self.sinks]
        if len(answers) == 1:
            return answers[0]  # type: ignore[no-any-return]

        def report(request: Optional[HTTPRequest], status: int, sent: int, seconds: float) -> None:
            for fn in answers:
                try:
                    fn(request, status, sent, seconds)
                except Exception:  # a sink's failure must not break the connection
                    pass

        return report

    def response_sent(self, request: Optional[HTTPRequest], status: int, sent: int, seconds: float) -> None:
        for fn in self._answer_sinks:
            try:
                fn(request, status, sent, seconds)
            except Exception:  # a sink's failure must not break the connection
                pass

    def websocket_opened(self, request: HTTPRequest) -> None:
        for fn in self._opened:
            fn(request)

    def websocket_closed(self, request: HTTPRequest, code: int, by: str, received: int, sent: int,
                         seconds: float) -> None:
        for fn in self._closed:
            try:
                fn(request, code, by, received, sent, seconds)
            except Exception:
                pass


class RouteLabels:
    """A request's route *template* (``/user/:id``), never its raw path, so that a metric's
    label values stay as few as the routes: every request no route answers is ``<unmatched>``,
    one under a mounted app is its prefix followed by ``/*``. Looked up once per distinct path
    (a bounded cache)."""

    MAX_CACHED = 4096

    def __init__(self, http_router: Any, websocket_router: Any = None, mounts: Any = None) -> None:
        self.http_router = http_router
        self.websocket_router = websocket_router
        self.mounts = mounts
        self.cache: dict[bytes, str] = {}

    def __call__(self, request: HTTPRequest) -> str:
        path = request.path
        label = self.cache.get(path)
        if label is None:
            label = self._find(request)
            if len(self.cache) < self.MAX_CACHED:
                self.cache[path] = label
        return label

    def _find(self, request: HTTPRequest) -> str:
        path = request.path
        if request.websocket and self.websocket_router is not None:
            methods, _ = self.websocket_router.match(path)
            if methods:
                return str(next(iter(methods.values())).endpoint)
        methods, _ = self.http_router.match(path)
        if methods:
            return str(next(iter(methods.values())).endpoint)
        if self.mounts is not None:
            mount = self.mounts.find(path)
            if mount is not None:
                return (mount.prefix or "") + "/*"
        return UNMATCHED


LabelFunction = Callable[[HTTPRequest], str]
