"""Issue #2, starting the app: host/port from start() and from STONECHAT_*/ROBYN_* variables,
the banner, settings per app (keyword, start(), environment), bad settings and a taken port
(clear error, non-zero exit, no prompt), the blocking-handler warning and threaded=True."""

from __future__ import annotations

import socket
import subprocess
import sys
import textwrap
import threading
import time

import httpx
import pytest

from conftest import free_port

APP = r'''
import time
from stonechat import Robyn

app = Robyn(__file__{ctor})

@app.get("/")
def index():
    return "hi"

@app.post("/echo")
def echo(body):
    return body

@app.get("/block")
def block():
    time.sleep(0.25)
    return "blocked"

@app.get("/quick")
def quick():
    return "quick"

@app.get("/threads")
async def threads():
    import threading
    return ",".join(sorted(t.name for t in threading.enumerate()))

@app.get("/hang")
def hang():
    time.sleep(1.2)
    return "finally"

import threading
BOTH_RUNNING = threading.Barrier(2, timeout=5)

@app.get("/threaded", threaded=True)
def threaded():
    # Returns only once a second call is running at the same time: two threaded handlers run
    # side by side on the pool (one after the other, the barrier would break after 5 s).
    time.sleep(0.3)  # long enough to block the loop's watchdog threshold if it ran on the loop
    try:
        BOTH_RUNNING.wait()
    except threading.BrokenBarrierError:
        return "ran alone"
    return "threaded"

if __name__ == "__main__":
    app.start({start})
'''


def app_source(ctor: str = "", start: str = "") -> str:
    return APP.replace("{ctor}", ctor).replace("{start}", start)


def run_to_exit(tmp_path, source: str, env: dict, timeout: float = 15) -> subprocess.CompletedProcess:
    path = tmp_path / "app.py"
    path.write_text(textwrap.dedent(source))
    import os
    full_env = {**os.environ, "PYTHONUNBUFFERED": "1", **env}
    # stdin stays an open pipe: a prompt for another port would hang until the timeout
    return subprocess.run([sys.executable, str(path)], env=full_env, cwd=str(tmp_path),
                          stdin=subprocess.PIPE, capture_output=True, text=True, timeout=timeout)


def test_banner_with_url(serve):
    server = serve(app_source())
    assert httpx.get(server.url + "/").text == "hi"
    deadline = time.monotonic() + 5
    while f"http://127.0.0.1:{server.port}" not in server.output() and time.monotonic() < deadline:
        time.sleep(0.05)
    assert f"serving http://127.0.0.1:{server.port}" in server.output()


def test_start_host_and_port_arguments(serve):
    port = free_port()
    server = serve(app_source(start=f'host="127.0.0.1", port={port}'), port=port,
                   env={"STONECHAT_PORT": ""})
    assert httpx.get(f"http://127.0.0.1:{port}/").text == "hi"
    assert server.proc.poll() is None


@pytest.mark.parametrize("host_var,port_var", [("ROBYN_HOST", "ROBYN_PORT"),
                                               ("STONECHAT_HOST", "STONECHAT_PORT")])
def test_env_host_and_port_win(serve, host_var, port_var):
    port = free_port()
    # start() asks for an address this machine cannot bind: the variables must win
    server = serve(app_source(start='host="192.0.2.1", port=1'), port=port,
                   env={"STONECHAT_PORT": "", host_var: "127.0.0.1", port_var: str(port)})
    assert httpx.get(server.url + "/").text == "hi"


def test_port_in_use(tmp_path):
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen(1)
        port = taken.getsockname()[1]
        started = time.monotonic()
        result = run_to_exit(tmp_path, app_source(), {"STONECHAT_PORT": str(port)})
    assert result.returncode != 0
    assert time.monotonic() - started < 10
    output = result.stdout + result.stderr
    assert f"127.0.0.1:{port}" in output and "in use" in output
    assert "Traceback" not in output


@pytest.mark.parametrize("env,name", [
    ({"STONECHAT_MAX_BODY_SIZE": "abc"}, "STONECHAT_MAX_BODY_SIZE"),
    ({"STONECHAT_HEADER_TIMEOUT": "-1"}, "STONECHAT_HEADER_TIMEOUT"),
    ({"STONECHAT_PORT": "http"}, "STONECHAT_PORT"),
    ({"STONECHAT_PORT": "", "ROBYN_PORT": "99999"}, "ROBYN_PORT"),
])
def test_bad_env_setting(tmp_path, env, name):
    result = run_to_exit(tmp_path, app_source(), {"STONECHAT_PORT": str(free_port()), **env})
    assert result.returncode != 0
    output = result.stdout + result.stderr
    assert name in output
    assert "Traceback" not in output


def test_bad_start_keyword(tmp_path):
    result = run_to_exit(tmp_path, app_source(start="max_body_size='lots'"),
                         {"STONECHAT_PORT": str(free_port())})
    assert result.returncode != 0
    assert "max_body_size" in result.stdout + result.stderr


def test_bad_and_unknown_constructor_keyword():
    from stonechat import Robyn
    from stonechat.server.settings import SettingsError
    with pytest.raises(SettingsError, match="max_body_size"):
        Robyn(__file__, max_body_size="big")
    with pytest.raises(SettingsError, match="max_bodysize"):
        Robyn(__file__, max_bodysize=10)


@pytest.mark.parametrize("how", ["ctor", "start", "env"])
def test_settings_per_app(serve, how):
    source = app_source(ctor=", max_body_size=10" if how == "ctor" else "",
                        start="max_body_size=10" if how == "start" else "")
    env = {"STONECHAT_MAX_BODY_SIZE": "10"} if how == "env" else {}
    server = serve(source, env=env)
    assert httpx.post(server.url + "/echo", content=b"0123456789").content == b"0123456789"
    r = httpx.post(server.url + "/echo", content=b"0123456789X")
    assert r.status_code == 413
    assert httpx.get(server.url + "/").status_code == 200


def test_blocking_warning_and_threaded(serve):
    server = serve(app_source())
    with httpx.Client(base_url=server.url, timeout=10) as c:
        assert c.get("/quick").text == "quick"
        assert c.get("/block").text == "blocked"
    deadline = time.monotonic() + 5
    while "blocked the event loop" not in server.output() and time.monotonic() < deadline:
        time.sleep(0.05)
    warnings = [line for line in server.output().splitlines() if "blocked the event loop" in line]
    assert len(warnings) == 1, server.output()
    assert "GET /block" in warnings[0] and "WARNING" in warnings[0]

    results: list = []

    def fetch():
        results.append(httpx.get(server.url + "/threaded", timeout=10).text)

    httpx.get(server.url + "/").raise_for_status()  # warm up
    threads = [threading.Thread(target=fetch) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert results == ["threaded", "threaded"]  # both were running at once
    # a threaded handler does not block the loop, so no warning for it
    assert "GET /threaded" not in server.output()


def test_watchdog_names_the_route_while_it_still_blocks(serve):
    server = serve(app_source())
    results: list = []
    request = threading.Thread(target=lambda: results.append(httpx.get(server.url + "/hang", timeout=10).text))
    request.start()
    out = server.wait_for_output("is blocking the event loop", timeout=5)
    assert request.is_alive() and not results  # named while the handler is still running
    live = [line for line in out.splitlines() if "is blocking the event loop" in line]
    assert len(live) == 1 and "GET /hang" in live[0] and "WARNING" in live[0]
    request.join()
    assert results == ["finally"]
    final = server.wait_for_output("blocked the event loop for")
    assert "GET /hang" in final.split("blocked the event loop for")[0].splitlines()[-1]
    assert final.count("is blocking the event loop") == 1  # once per stall, not once per look


ASYNC_ONLY = r'''
import threading
from stonechat import Robyn

app = Robyn(__file__)

@app.get("/threads")
async def threads():
    return ",".join(sorted(t.name for t in threading.enumerate()))

if __name__ == "__main__":
    app.start()
'''


def test_watchdog_thread_only_when_a_sync_handler_runs_on_the_loop(serve):
    with_sync = serve(app_source())
    assert "stonechat-watchdog" in httpx.get(with_sync.url + "/threads", timeout=10).text.split(",")
    async_only = serve(ASYNC_ONLY)
    # nothing to watch: no thread waking up twice per threshold beside the loop
    assert "stonechat-watchdog" not in httpx.get(async_only.url + "/threads", timeout=10).text.split(",")


def test_blocking_warn_threshold_setting(serve):
    server = serve(app_source(), env={"STONECHAT_BLOCKING_WARN_MS": "1000"})
    assert httpx.get(server.url + "/block", timeout=10).text == "blocked"
    time.sleep(0.3)
    assert "blocked the event loop" not in server.output()
