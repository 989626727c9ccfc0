"""Ecosystem ASGI middleware around a whole stonechat app (``app.add_asgi_middleware``), on
stonechat's own server (which then hosts the ASGI chain) and under uvicorn (``app.asgi`` is the
chain): OpenTelemetry's ASGI middleware records a span per request and WebSocket, a
lifespan-aware middleware sees the lifespan events pass and adds a header to every answer, and
``prometheus_client``'s ASGI app is mounted at ``/metrics``.
"""

from __future__ import annotations

import asyncio
import signal

import httpx
import pytest
import websockets

from asgi_servers import read_lines, start, wait_until
from stonechat import Robyn

APP = r'''
import os

from opentelemetry import trace
from opentelemetry.instrumentation.asgi import OpenTelemetryMiddleware
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from prometheus_client import Counter, make_asgi_app

from stonechat import Robyn

EVENTS = os.environ["EVENTS_FILE"]
exporter = InMemorySpanExporter()
provider = TracerProvider()
provider.add_span_processor(SimpleSpanProcessor(exporter))
trace.set_tracer_provider(provider)
hellos = Counter("hello_requests", "GET /hello answered")


def note(what):
    with open(EVENTS, "a") as f:
        f.write(what + "\n")


class Stamp:
    """Adds a header to every HTTP answer; notes the lifespan events it passes on."""

    def __init__(self, app, header, value):
        self.app = app
        self.header = header.encode()
        self.value = value.encode()

    async def __call__(self, scope, receive, send):
        if scope["type"] == "lifespan":
            async def noted():
                message = await receive()
                note(f"middleware saw {message['type']}")
                return message
            return await self.app(scope, noted, send)
        if scope["type"] != "http":
            return await self.app(scope, receive, send)

        async def stamped(message):
            if message["type"] == "http.response.start":
                message["headers"] = list(message.get("headers", [])) + [(self.header, self.value)]
            await send(message)
        await self.app(scope, receive, stamped)


app = Robyn(__file__)
app.add_asgi_middleware(Stamp, header="x-stamp", value="stamped")
app.add_asgi_middleware(OpenTelemetryMiddleware)  # the last added is outermost


@app.startup_handler
def started():
    note("app startup")


@app.shutdown_handler
def stopped():
    note("app shutdown")


@app.get("/hello/:name")
def hello(name: str):
    hellos.inc()
    return f"hello {name}"


@app.get("/spans")
def spans():
    return [{"name": s.name, "kind": s.kind.name,
             "attributes": {k: v for k, v in s.attributes.items() if isinstance(v, (str, int))}}
            for s in exporter.get_finished_spans()]


@app.websocket("/ws")
async def ws(socket):
    await socket.send_text("traced " + await socket.receive_text())


app.mount("/metrics", make_asgi_app())

if __name__ == "__main__":
    app.start()
'''

SERVERS = ["stonechat", "uvicorn"]


def targets_of(spans: list) -> list[str]:
    return [str(v) for s in spans for k, v in s["attributes"].items() if k in ("http.target", "url.path")]


@pytest.mark.parametrize("which", SERVERS)
def test_ecosystem_middleware_around_the_app(which, serve, tmp_path):
    events = tmp_path / "events.txt"
    proc = start(serve, which, APP, env={"EVENTS_FILE": str(events)})
    assert read_lines(events) == ["middleware saw lifespan.startup", "app startup"]
    with httpx.Client(base_url=proc.url, timeout=10) as c:
        r = c.get("/hello/ada")
        assert r.text == "hello ada" and r.headers["x-stamp"] == "stamped"
        assert c.get("/hello/bob").headers["x-stamp"] == "stamped"
        assert c.get("/nowhere").status_code == 404
        metrics = c.get("/metrics/")
        assert metrics.status_code == 200 and "hello_requests_total 2.0" in metrics.text

        async def talk():
            async with websockets.connect(proc.ws_url + "/ws") as socket:
                await socket.send("hi")
                return await socket.recv()
        assert asyncio.run(talk()) == "traced hi"

        def server_spans():  # the WebSocket's span ends once its call returned, after the close
            found = [s for s in c.get("/spans").json() if s["kind"] == "SERVER"]
            return found if "/ws" in targets_of(found) else None
        servers = wait_until(server_spans, what="the WebSocket's span")
    targets = targets_of(servers)
    assert targets.count("/hello/ada") == 1 and targets.count("/hello/bob") == 1 and "/ws" in targets
    statuses = [v for s in servers for k, v in s["attributes"].items()
                if k in ("http.status_code", "http.response.status_code")]
    assert 404 in statuses and statuses.count(200) >= 2
    proc.signal(signal.SIGTERM)
    code = proc.wait(20)
    assert code == 0 or (which == "uvicorn" and code == -signal.SIGTERM), proc.output()
    assert read_lines(events)[2:] == ["middleware saw lifespan.shutdown", "app shutdown"]


def test_middleware_options_are_checked_at_registration():
    class NeedsHeader:
        def __init__(self, app, header):
            self.app = app

    app = Robyn(__file__)
    with pytest.raises(TypeError, match="NeedsHeader"):
        app.add_asgi_middleware(NeedsHeader, colour="red")
    with pytest.raises(TypeError):
        app.add_asgi_middleware("not a middleware")
    app.add_asgi_middleware(NeedsHeader, header="x")
    assert len(app.asgi_middlewares) == 1
