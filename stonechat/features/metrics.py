"""Prometheus metrics (``app.enable_metrics()``): requests by route template, method and
status, latency, in-flight requests, WebSockets, lifecycle step durations, broker state.

A sink of ``core/observation.py``; prometheus_client is imported only here, inside functions,
and only in the process that serves (after any fork). Under ``--processes N`` it runs in
prometheus_client's multiprocess mode: ``prepare_processes`` sets ``PROMETHEUS_MULTIPROC_DIR``
(a fresh temporary directory unless it is set, emptied at start) before the workers fork, and
a scrape answered by any worker adds up every worker's files.
"""

from __future__ import annotations

import asyncio
import importlib.util
import logging
import os
import shutil
import sys
import tempfile
from bisect import bisect_right
from typing import Any, Callable, Optional

from ..core.observation import UNMATCHED
from ..core.request import Request
from ..core.response import Response

logger = logging.getLogger("stonechat")

MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"
# Seconds between folds of the gathered durations into the metrics: what another worker's counts
# in a scrape may lag. Short, because a fold is one callback on the loop: a second's worth at
# full load (100k durations sorted at once) held the loop ~10 ms, every request's p99 then.
FLUSH_INTERVAL = 0.05
GAUGE_EVERY = 20  # folds between updates of the in-flight gauge (counting it walks the connections)
# seconds; the default buckets of prometheus_client, finer at the low end where an API lives
MAX_PATHS = 4096  # distinct request paths ``Metrics.slots`` remembers (as RouteLabels.MAX_CACHED)
BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)


def check_installed() -> None:
    """At ``enable_metrics()``: fail by name when the extra is missing (without importing it,
    which must wait for the worker processes to exist)."""
    if importlib.util.find_spec("prometheus_client") is None:
        raise RuntimeError("app.enable_metrics() needs prometheus_client: pip install 'stonechat[metrics]'")


def prepare_processes() -> str:
    """Before the workers fork: the directory their metric files share, emptied. Returns it
    when it was made here (to remove at the end), ``""`` when it is the user's."""
    directory = os.environ.get(MULTIPROC_ENV)
    made = ""
    if directory:
        os.makedirs(directory, exist_ok=True)
        for name in os.listdir(directory):
            if name.endswith(".db"):
                os.unlink(os.path.join(directory, name))
    else:
        directory = made = tempfile.mkdtemp(prefix="stonechat-metrics-")
        os.environ[MULTIPROC_ENV] = directory
    if "prometheus_client" in sys.modules:
        # imported before the directory was set (by the app file): metrics made from now on
        # must write to the shared files
        from prometheus_client import values
        values.ValueClass = values.get_value_class()
    return made


def endpoint(current: Callable[[], Optional["Metrics"]]) -> Callable[[Request], Response]:
    """The handler of the scrape route: the metrics of the app's current build."""
    def metrics_endpoint(request: Request) -> Response:
        metrics = current()
        if metrics is None:
            return Response(503, {"content-type": "text/plain"}, "metrics not ready\n")
        body, content_type = metrics.render(request._raw)
        return Response(200, {"content-type": content_type}, body)
    return metrics_endpoint


def forget_process(pid: int) -> None:
    """A worker exited: its live gauges (in flight, open WebSockets) stop counting."""
    from prometheus_client import multiprocess
    multiprocess.mark_process_dead(pid)


def forget_directory(directory: str) -> None:
    """The workers are gone: remove the directory ``prepare_processes`` made."""
    shutil.rmtree(directory, ignore_errors=True)


def _not_counted(current: Any = None) -> int:
    return 0


class Metrics:
    """One per served app (per worker process); a sink of ``core/observation.py``."""

    def __init__(self, route_label: Callable[[Any], str], broker_status: Callable[[], Any],
                 lifecycle_timings: Callable[[], list]) -> None:
        from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
        self.multiprocess = bool(os.environ.get(MULTIPROC_ENV))
        # Multiprocess: values live in the shared files; a scrape reads them all (render).
        self.registry = None if self.multiprocess else CollectorRegistry(auto_describe=True)
        reg = self.registry
        self.route_label = route_label
        self.broker_status = broker_status
        self.lifecycle_timings = lifecycle_timings
        self.requests = Counter("stonechat_http_requests", "HTTP requests answered",
                                ["route", "method", "status"], registry=reg)
        self.latency = Histogram("stonechat_http_request_duration_seconds",
                                 "Time from the first byte of a request to the last byte of its answer",
                                 ["route", "method"], buckets=BUCKETS, registry=reg)
        self.in_flight = Gauge("stonechat_http_requests_in_flight", "Requests being read or answered",
                               registry=reg, multiprocess_mode="livesum")
        self.ws_open = Gauge("stonechat_websocket_connections", "Open WebSocket connections",
                             ["endpoint"], registry=reg, multiprocess_mode="livesum")
        self.ws_messages = Counter("stonechat_websocket_messages", "WebSocket messages",
                                   ["endpoint", "direction"], registry=reg)
        self.ws_closes = Counter("stonechat_websocket_closes", "WebSocket sessions closed, by close code",
                                 ["endpoint", "code"], registry=reg)
        self.lifecycle = Gauge("stonechat_lifecycle_step_seconds",
                               "How long each startup/shutdown handler or lifespan took (the slowest worker's)",
                               ["event", "step"], registry=reg, multiprocess_mode="max")
        # Per request only a list grows: the request's duration is appended to its label set's
        # (prometheus_client takes a lock and a few calls per update, which would double what
        # metrics cost). ``flush`` counts them into the metrics, a label set at a time.
        # ``series``: (route, method, status) → the durations not counted yet. ``slots`` finds
        # the same list from what the request has: path → method → status. Three lookups whose
        # keys hash at once (the method is one of a few interned strings, the status a small
        # int) cost less than the route label's lookup plus a tuple to build, hash and compare.
        self.series: dict[tuple[str, str, int], list[float]] = {}
        self.slots: dict[bytes, dict[str, dict[int, list[float]]]] = {}
        # set by the app: the server's count; given the scrape's own request (it counts as one)
        self.in_flight_now: Callable[[Any], int] = _not_counted
        self.labels: dict[bytes, str] = getattr(route_label, "cache", {})  # its cache, read inline
        self.timer: Optional[asyncio.TimerHandle] = None
        self.ticks = 0  # folds made by the timer

    # -- the loop thread -------------------------------------------------------------------

    def answered(self, request: Any, status: int, sent: int, seconds: float) -> None:
        try:
            self.slots[request.path][request.method][status].append(seconds)
        except (KeyError, AttributeError):  # a new path, method or status; or no request (None)
            self._series_for(request, status).append(seconds)

    def _series_for(self, request: Any, status: int) -> list[float]:
        """The durations list of the request's label set, made at its first answer, and found
        from then on by ``answered``'s lookups (as many paths as the route labels cache: past
        that a path is looked up here every time, as a label is)."""
        if request is None:
            route, method = UNMATCHED, "-"
        else:
            route, method = self.labels.get(request.path) or self.route_label(request), request.method
        key = (route, method, status)
        series = self.series.get(key)
        if series is None:
            series = self.series[key] = []
        if request is not None:
            slots = self.slots
            by_method = slots.get(request.path)
            if by_method is None:
                if len(slots) >= MAX_PATHS:
                    return series
                by_method = slots[request.path] = {}
            by_method.setdefault(method, {})[status] = series
        return series

    def flush(self, current: Any = None, gauge: bool = True) -> None:
        """Count the durations gathered into the prometheus metrics: before every scrape this
        worker answers, and every ``FLUSH_INTERVAL`` (which keeps the lists short and, under
        ``--processes``, the other workers' scrapes current); the in-flight gauge with it when
        ``gauge`` (every scrape, and once a second: counting walks every connection)."""
        if gauge:
            self.in_flight.set(self.in_flight_now(current))
        for (route, method, status), waiting in self.series.items():
            if not waiting:
                continue
            seconds = waiting.copy()
            waiting.clear()  # in place: the slots hold the same list
            self.requests.labels(route, method, str(status)).inc(len(seconds))
            histogram = self.latency.labels(route, method)
            # prometheus_client's own fields: Histogram.observe() has no batch form. Sorted,
            # each bucket's count is a bisection: no Python step per request.
            seconds.sort()
            histogram._sum.inc(sum(seconds))
            below = 0
            for bucket, bound in zip(histogram._buckets, BUCKETS):
                upto = bisect_right(seconds, bound, below)  # the bucket holds seconds <= bound
                if upto > below:
                    bucket.inc(upto - below)
                below = upto
            if below < len(seconds):
                histogram._buckets[-1].inc(len(seconds) - below)  # +Inf

    def start(self) -> None:
        """At startup, on the serving loop: the flush every ``FLUSH_INTERVAL``."""
        self.timer = asyncio.get_running_loop().call_later(FLUSH_INTERVAL, self._tick)

    def _tick(self) -> None:
        self.ticks += 1
        try:
            self.flush(gauge=self.ticks % GAUGE_EVERY == 0)
        finally:
            self.timer = asyncio.get_running_loop().call_later(FLUSH_INTERVAL, self._tick)

    def stop(self) -> None:
        if self.timer is not None:
            self.timer.cancel()
            self.timer = None
        self.flush()

    def websocket_opened(self, request: Any) -> None:
        self.ws_open.labels(self.route_label(request)).inc()

    def websocket_closed(self, request: Any, code: int, by: str, received: int, sent: int, seconds: float) -> None:
        endpoint = self.route_label(request)
        self.ws_open.labels(endpoint).dec()
        if received:
            self.ws_messages.labels(endpoint, "in").inc(received)
        if sent:
            self.ws_messages.labels(endpoint, "out").inc(sent)
        self.ws_closes.labels(endpoint, str(code)).inc()

    # -- lifecycle and scrapes -------------------------------------------------------------

    def record_lifecycle(self) -> None:
        for event, step, seconds in self.lifecycle_timings():
            self.lifecycle.labels(event, step).set(seconds)

    def render(self, current: Any = None) -> tuple[bytes, str]:
        """The exposition text and its content type; ``current``: the scrape's request (the
        server's ``HTTPRequest``), in flight itself."""
        from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest
        self.flush(current)
        registry = self.registry
        if registry is None:
            from prometheus_client import multiprocess
            registry = CollectorRegistry()
            multiprocess.MultiProcessCollector(registry)
        broker = CollectorRegistry(auto_describe=False)
        broker.register(_BrokerCollector(self.broker_status))  # type: ignore[arg-type]
        body = generate_latest(registry) + generate_latest(broker)
        return body, CONTENT_TYPE_LATEST


class _BrokerCollector:
    """The broker's state at scrape time, from the worker that answers the scrape."""

    def __init__(self, status: Callable[[], Any]) -> None:
        self.status = status

    def collect(self) -> Any:
        from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
        status: Optional[Any] = self.status()
        if status is None:
            return
        connected = GaugeMetricFamily("stonechat_broker_connected", "Whether the broker is connected (1) or not (0)",
                                      labels=["engine", "listener"])
        connected.add_metric([status.engine, status.listener], 1.0 if status.connected else 0.0)
        yield connected
        queued = GaugeMetricFamily("stonechat_broker_queued_messages", "Messages waiting for the broker")
        queued.add_metric([], float(status.queued))
        yield queued
        reconnects = CounterMetricFamily("stonechat_broker_reconnects", "Reconnections to the broker")
        reconnects.add_metric([], float(status.reconnects))
        yield reconnects
