"""Background tasks (``tasks: BackgroundTasks``) on the real server: they run after the client
has the response, a failing one is logged by name and harms nobody, and the stop finishes them
within the drain deadline or names those it had to cancel. Side effects are files the tasks
write, polled with deadlines."""

from __future__ import annotations

import signal
import time
from pathlib import Path

import httpx
import pytest

from stonechat import BackgroundTasks, Robyn, TestClient

APP = r'''
import asyncio, os, time
from pathlib import Path
from stonechat import BackgroundTasks, Robyn, StreamingResponse

app = Robyn(__file__)
OUT = Path(os.environ["OUT_DIR"])

def write_later(name, delay):
    started = time.time()
    time.sleep(delay)
    (OUT / name).write_text(f"{started}")

async def write_later_async(name, delay=0.0):
    started = time.time()
    await asyncio.sleep(delay)
    (OUT / name).write_text(f"{started}")

def explode():
    raise RuntimeError("the task failed on purpose")

async def very_slow_task(name):
    await asyncio.sleep(60)
    (OUT / name).write_text("never")

@app.get("/sync")
def sync_handler(request, tasks: BackgroundTasks):
    tasks.add_task(write_later, request.query_params.get("name"), 1.0)
    return "queued"

@app.get("/async")
async def async_handler(request, tasks: BackgroundTasks):
    tasks.add_task(write_later_async, request.query_params.get("name"), delay=1.0)
    return {"queued": True}

@app.get("/stream")
def stream_handler(request, tasks: BackgroundTasks):
    tasks.add_task(write_later_async, request.query_params.get("name"))
    async def body():
        yield "first "
        await asyncio.sleep(1.0)
        yield "last"
    return StreamingResponse(body(), media_type="text/plain")

@app.get("/explode")
def explode_handler(request, tasks: BackgroundTasks):
    tasks.add_task(explode)
    tasks.add_task(write_later, request.query_params.get("name"), 0.0)  # still runs after it
    return "fine"

@app.get("/raises")
def raising_handler(request, tasks: BackgroundTasks):
    tasks.add_task(write_later, request.query_params.get("name"), 0.0)
    raise RuntimeError("handler failed")

@app.get("/slow-task")
async def slow_task_handler(request, tasks: BackgroundTasks):
    tasks.add_task(very_slow_task, request.query_params.get("name"))
    return "queued"

@app.get("/plain")
def plain():
    return "plain"

app.start()
'''


def wait_for_file(path: Path, timeout: float = 15.0) -> str:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if path.exists() and path.read_text():
            return path.read_text()
        time.sleep(0.02)
    raise AssertionError(f"{path} never appeared")


@pytest.fixture(scope="module")
def out_dir(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("bg_out")


@pytest.fixture(scope="module")
def server(serve_module, out_dir):
    return serve_module(APP, name="bg.py", env={"OUT_DIR": str(out_dir)})


@pytest.mark.parametrize("kind", ["sync", "async"])
def test_task_runs_after_the_client_has_the_response(server, out_dir, kind):
    name = f"after-{kind}"
    sent = time.time()
    started = time.monotonic()
    r = httpx.get(f"{server.url}/{kind}", params={"name": name}, timeout=10)
    elapsed = time.monotonic() - started
    assert r.status_code == 200
    assert elapsed < 0.7, f"the response waited for the task ({elapsed:.2f} s)"
    assert not (out_dir / name).exists()  # the task sleeps 1 s before writing
    task_started = float(wait_for_file(out_dir / name))
    assert task_started >= sent
    assert time.time() - sent >= 1.0


def test_task_starts_only_after_the_last_byte_of_a_streamed_response(server, out_dir):
    name = "after-stream"
    with httpx.stream("GET", f"{server.url}/stream", params={"name": name}, timeout=10) as r:
        chunks = r.iter_text()
        assert next(chunks).startswith("first")
        assert not (out_dir / name).exists(), "the task started before the response was written"
        rest = "".join(chunks)
        received = time.time()
    assert rest.endswith("last")
    task_started = float(wait_for_file(out_dir / name))
    assert task_started >= received - 0.05  # the clocks are the same machine's


def test_a_failing_task_is_logged_by_name_and_harms_nobody(server, out_dir):
    r = httpx.get(f"{server.url}/explode", params={"name": "after-explode"}, timeout=10)
    assert r.status_code == 200 and r.text == "fine"
    log = server.wait_for_output("background task explode failed")
    assert "the task failed on purpose" in log
    wait_for_file(out_dir / "after-explode")  # the next task of that response still ran
    assert httpx.get(f"{server.url}/plain", timeout=10).text == "plain"
    assert httpx.get(f"{server.url}/sync", params={"name": "after-explode-next"}, timeout=10).status_code == 200
    wait_for_file(out_dir / "after-explode-next")


def test_tasks_of_a_handler_that_raised_never_run(server, out_dir):
    r = httpx.get(f"{server.url}/raises", params={"name": "from-raiser"}, timeout=10)
    assert r.status_code == 500
    # a later task of another request ran, so this one had its chance and did not run
    httpx.get(f"{server.url}/explode", params={"name": "after-raiser"}, timeout=10)
    wait_for_file(out_dir / "after-raiser")
    assert not (out_dir / "from-raiser").exists()


def test_sigterm_finishes_a_pending_task(serve, tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    proc = serve(APP, env={"OUT_DIR": str(out)})
    assert httpx.get(f"{proc.url}/sync", params={"name": "finished-at-stop"}, timeout=10).status_code == 200
    proc.signal(signal.SIGTERM)
    assert proc.wait(30) == 0
    assert (out / "finished-at-stop").exists(), proc.output()
    log = proc.output()
    assert "1 background task(s)" in log
    assert "cancelled" not in log


def test_sigterm_names_the_task_left_past_the_drain_deadline(serve, tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    proc = serve(APP, env={"OUT_DIR": str(out), "STONECHAT_DRAIN_TIMEOUT": "1"})
    assert httpx.get(f"{proc.url}/slow-task", params={"name": "never"}, timeout=10).status_code == 200
    started = time.monotonic()
    proc.signal(signal.SIGTERM)
    assert proc.wait(30) == 0
    assert time.monotonic() - started < 10
    log = proc.output()
    assert "background task(s) unfinished, cancelled: very_slow_task" in log, log
    assert not (out / "never").exists()


def test_testclient_runs_the_tasks_too():
    # module-level imports: the handler's string annotation resolves in this module's globals
    app = Robyn()
    seen: list[str] = []

    @app.post("/note")
    def note(request, tasks: BackgroundTasks):
        tasks.add_task(seen.append, request.text())
        return "noted"

    with TestClient(app) as client:
        assert client.post("/note", body="hello").text == "noted"
    assert seen == ["hello"]


def test_a_const_route_cannot_take_background_tasks():
    app = Robyn(__file__)

    @app.get("/c", const=True)
    def cached(tasks: BackgroundTasks):
        tasks.add_task(print, "never")
        return "x"

    with pytest.raises(ValueError, match="const route cannot take BackgroundTasks"):
        TestClient(app).get("/c")


def test_sync_tasks_use_a_bounded_number_of_threads():
    """100 responses with a sync task each: never more than the runner's 32 threads at once."""
    import asyncio
    import threading

    from stonechat.core.background import BackgroundRunner
    lock = threading.Lock()
    now = peak = 0
    done = threading.Event()
    finished = 0

    def work():
        nonlocal now, peak, finished
        with lock:
            now += 1
            peak = max(peak, now)
        time.sleep(0.05)
        with lock:
            now -= 1
            finished += 1
            if finished == 100:
                done.set()

    async def main():
        runner = BackgroundRunner()
        for _ in range(100):
            t = BackgroundTasks()
            t.add_task(work)
            runner.start(t)
        while runner.pending():
            await asyncio.sleep(0.01)

    asyncio.run(main())
    assert done.is_set() and finished == 100
    assert 1 < peak <= 32, peak
