"""Prometheus metrics on the real server (docs/production.md): known traffic, then /metrics
scraped and parsed with prometheus_client's own parser; exact counts by route template,
method and status, in one process and under ``--processes 2`` (every scrape, whichever worker
answers it, adds up both workers).
"""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import httpx
import websockets
from prometheus_client.parser import text_string_to_metric_families

APP = """
import asyncio, os
from stonechat import Robyn, Request

app = Robyn(__file__)
app.enable_metrics()

@app.startup_handler
async def warm_up():
    await asyncio.sleep(0.05)

@app.get("/")
def index():
    return str(os.getpid())

@app.get("/user/:id")
async def user(request: Request):
    return request.path_params["id"]

@app.post("/fail")
def fail():
    raise RuntimeError("boom")

released = asyncio.Event()

@app.get("/slow")
async def slow():
    await released.wait()  # in flight until /release
    released.clear()
    return "slow"

@app.get("/release")
def release():
    released.set()
    return "released"

@app.websocket("/ws/:room")
async def ws(websocket):
    if websocket.path_params.get("room") == "pid":
        await websocket.send_text(str(os.getpid()))
    while True:
        msg = await websocket.receive_text()
        await websocket.send_text(msg)
        if msg == "bye":
            await websocket.close(4001, "done")

app.start()
"""


def scrape(url: str) -> dict[tuple[str, tuple], float]:
    """Every sample as (name, sorted labels) → value."""
    r = httpx.get(url + "/metrics", timeout=10)
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/plain")
    samples = {}
    for family in text_string_to_metric_families(r.text):
        for s in family.samples:
            samples[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return samples


def requests_total(samples: dict, route: str, method: str, status: str) -> float:
    return samples.get(("stonechat_http_requests_total",
                        (("method", method), ("route", route), ("status", status))), 0.0)


def send_known_traffic(url: str, ws_url: str) -> None:
    with httpx.Client(base_url=url, timeout=10) as c:
        for _ in range(3):
            assert c.get("/").status_code == 200
        for n in range(5):
            assert c.get(f"/user/{n}").status_code == 200  # one label: the template
        for path in ("/nope", "/nope/deeper", "/x%20y"):
            assert c.get(path).status_code == 404  # one label for every unmatched path
        assert c.post("/fail").status_code == 500
        assert c.delete("/").status_code == 405

    async def sessions() -> None:
        async with websockets.connect(ws_url + "/ws/lobby") as ws:
            for word in ("a", "b", "bye"):
                await ws.send(word)
                assert await ws.recv() == word
            await ws.wait_closed()
            assert ws.close_code == 4001
        async with websockets.connect(ws_url + "/ws/other") as ws:
            await ws.send("x")
            assert await ws.recv() == "x"
            await ws.close(1000)
    asyncio.run(sessions())


def check_known_traffic(samples: dict, workers: int = 1) -> None:
    assert requests_total(samples, "/", "GET", "200") == 3
    assert requests_total(samples, "/user/:id", "GET", "200") == 5
    assert requests_total(samples, "<unmatched>", "GET", "404") == 3
    assert requests_total(samples, "/fail", "POST", "500") == 1
    assert requests_total(samples, "/", "DELETE", "405") == 1
    assert not any(name == "stonechat_http_requests_total" and ("route", "/user/3") in labels
                   for name, labels in samples)  # never a raw path
    count = samples[("stonechat_http_request_duration_seconds_count", (("method", "GET"), ("route", "/user/:id")))]
    assert count == 5
    inf = samples[("stonechat_http_request_duration_seconds_bucket",
                   (("le", "+Inf"), ("method", "GET"), ("route", "/user/:id")))]
    assert inf == 5
    assert samples[("stonechat_http_requests_in_flight", ())] == 1  # the scrape itself
    ws = "/ws/:room"
    assert samples[("stonechat_websocket_messages_total", (("direction", "in"), ("endpoint", ws)))] == 4
    assert samples[("stonechat_websocket_messages_total", (("direction", "out"), ("endpoint", ws)))] == 4
    assert samples[("stonechat_websocket_closes_total", (("code", "4001"), ("endpoint", ws)))] == 1
    assert samples[("stonechat_websocket_closes_total", (("code", "1000"), ("endpoint", ws)))] == 1
    assert samples[("stonechat_websocket_connections", (("endpoint", ws),))] == 0
    step = samples[("stonechat_lifecycle_step_seconds", (("event", "startup"), ("step", "warm_up")))]
    assert 0.05 <= step < 5
    broker = {dict(labels)["engine"]: value for (name, labels), value in samples.items()
              if name == "stonechat_broker_connected"}
    # in-process, or the worker mesh between --processes
    assert broker == ({"local": 1.0} if workers == 1 else {"workers": 1.0}), broker


CLOSED_1000 = ("stonechat_websocket_closes_total", (("code", "1000"), ("endpoint", "/ws/:room")))


def scrape_when(url: str, key: tuple, timeout: float = 15.0) -> dict:
    """Scrape until ``key`` is there (the last WebSocket close is counted once the server
    has read the client's close frame, which may come after the client returned)."""
    deadline = time.monotonic() + timeout
    while True:
        samples = scrape(url)
        if key in samples:
            return samples
        assert time.monotonic() < deadline, f"{key} never appeared"
        time.sleep(0.05)


def test_counts_after_known_traffic(serve):
    server = serve(APP)
    send_known_traffic(server.url, server.ws_url)
    samples = scrape_when(server.url, CLOSED_1000)
    check_known_traffic(samples)
    again = scrape(server.url)
    assert requests_total(again, "/metrics", "GET", "200") == requests_total(samples, "/metrics", "GET", "200") + 1


IN_FLIGHT = ("stonechat_http_requests_in_flight", ())


def test_in_flight_counts_a_waiting_request_and_the_scrape(serve):
    """Counted when scraped, from the live connections: a request its handler keeps waiting
    is in flight until answered, and the scrape itself always is."""
    import threading
    server = serve(APP)
    assert scrape(server.url)[IN_FLIGHT] == 1
    answers: list[str] = []
    waiting = threading.Thread(target=lambda: answers.append(httpx.get(server.url + "/slow", timeout=30).text))
    waiting.start()
    deadline = time.monotonic() + 15
    while scrape(server.url)[IN_FLIGHT] != 2:
        assert time.monotonic() < deadline, "the waiting request never counted"
        time.sleep(0.05)
    assert httpx.get(server.url + "/release", timeout=10).status_code == 200
    waiting.join(30)
    assert answers == ["slow"]
    assert scrape(server.url)[IN_FLIGHT] == 1


def test_counts_are_summed_over_processes(serve, tmp_path: Path):
    metrics_dir = tmp_path / "multiproc"
    metrics_dir.mkdir()
    (metrics_dir / "counter_999999.db").write_bytes(b"stale")  # left by an earlier run: cleaned at start
    server = serve(APP, args=["--processes", "2"], env={"PROMETHEUS_MULTIPROC_DIR": str(metrics_dir)})
    server.wait_for_output("serving", count=1)
    # both workers answer: new connections until two pids have been seen
    pids = set()
    sent = 0
    deadline = time.monotonic() + 30
    while len(pids) < 2 and time.monotonic() < deadline:
        pids.add(httpx.get(server.url + "/", headers={"connection": "close"}, timeout=10).text)
        sent += 1
    assert len(pids) == 2, "one worker answered everything"
    send_known_traffic(server.url, server.ws_url)
    assert not (metrics_dir / "counter_999999.db").exists()
    # each worker moves its counts into the shared files every 50 ms (and before a scrape
    # it answers itself): the totals are exact within a moment
    deadline = time.monotonic() + 15
    while True:
        samples = scrape_when(server.url, CLOSED_1000)
        samples[("stonechat_http_requests_total", (("method", "GET"), ("route", "/"), ("status", "200")))] -= sent
        samples[("stonechat_http_request_duration_seconds_count", (("method", "GET"), ("route", "/")))] -= sent
        try:
            check_known_traffic(samples, workers=2)
            break
        except (AssertionError, KeyError):
            if time.monotonic() > deadline:
                raise
            time.sleep(0.1)
    # the same totals from whichever worker answers the next scrapes
    for _ in range(4):
        again = httpx.get(server.url + "/metrics", headers={"connection": "close"}, timeout=10)
        parsed = {(s.name, tuple(sorted(s.labels.items()))): s.value
                  for f in text_string_to_metric_families(again.text) for s in f.samples}
        assert requests_total(parsed, "/user/:id", "GET", "200") == 5
    assert server.stop() == 0


def test_a_dead_workers_live_gauges_stop_counting(serve):
    """A worker killed with a WebSocket open: once the supervisor has reaped it, the open
    WebSocket it held no longer counts (its gauge files are dropped)."""
    import os
    import signal
    server = serve(APP, args=["--processes", "2"])
    key = ("stonechat_websocket_connections", (("endpoint", "/ws/:room"),))

    async def hold_and_kill() -> None:
        async with websockets.connect(server.ws_url + "/ws/pid") as ws:
            pid = int(await ws.recv())
            assert scrape_when(server.url, key)[key] == 1
            os.kill(pid, signal.SIGKILL)
            try:
                await asyncio.wait_for(ws.recv(), 15)
            except websockets.ConnectionClosed:
                pass
    asyncio.run(hold_and_kill())
    server.wait_for_output("died unexpectedly", timeout=15)
    deadline = time.monotonic() + 15
    while scrape(server.url).get(key, 0) != 0:
        assert time.monotonic() < deadline, "the dead worker's WebSocket still counts"
        time.sleep(0.05)
