"""``--open-browser`` / ``ROBYN_BROWSER_OPEN`` (browser.py, serving.py): the served URL is opened
once the app is ready — once per run, whatever the number of processes or dev restarts — and
no browser is only a log line. No real browser: ``BROWSER`` names a script that fetches the
URL it is given (so it proves the app answered) and records it."""

from __future__ import annotations

import sys
import time
from pathlib import Path

import httpx
import pytest

from stonechat.browser import browser_url
from stonechat.config import Config

APP = '''
import asyncio
from stonechat import Robyn

app = Robyn(__file__)

@app.startup_handler
async def slow_start():
    await asyncio.sleep(0.3)  # the browser must not come before this is done

@app.get("/")
def index():
    return "{version}"

if __name__ == "__main__":
    app.start(drain_timeout=1)
'''

BROWSER = '''#!{python}
import sys, urllib.request
url = sys.argv[1]
with urllib.request.urlopen(url, timeout=10) as r:
    line = f"{{url}} {{r.status}} {{r.read().decode()}}"
with open({record!r}, "a") as f:
    f.write(line + "\\n")
'''


@pytest.fixture
def browser(tmp_path: Path) -> tuple[Path, Path]:
    record = tmp_path / "opened.txt"
    script = tmp_path / "fake-browser"
    script.write_text(BROWSER.format(python=sys.executable, record=str(record)))
    script.chmod(0o755)
    return script, record


def opened(record: Path, count: int = 1, timeout: float = 15.0) -> list[str]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if record.exists() and len(lines := record.read_text().splitlines()) >= count:
            return lines
        time.sleep(0.05)
    raise AssertionError(f"the browser was not opened {count} time(s) within {timeout} s")


def test_the_url_is_opened_once_the_app_answers(serve, browser):
    script, record = browser
    server = serve(APP.format(version="v1"), args=["--open-browser"], env={"BROWSER": str(script)})
    assert opened(record) == [f"http://127.0.0.1:{server.port}/ 200 v1"]
    assert server.output().count("--open-browser: opening") == 1


def test_robyn_browser_open_in_the_environment_does_the_same(serve, browser):
    script, record = browser
    server = serve(APP.format(version="v1"), env={"BROWSER": str(script), "ROBYN_BROWSER_OPEN": "True"})
    assert opened(record) == [f"http://127.0.0.1:{server.port}/ 200 v1"]


def test_several_processes_open_it_once(serve, browser):
    script, record = browser
    server = serve(APP.format(version="v1"), args=["--open-browser", "--processes", "2"],
                   env={"BROWSER": str(script)})
    # Each worker decides before it says ready; the supervisor's banner comes after both.
    out = server.wait_for_output("(2 processes)")
    assert out.count("worker 1 started") == 1 and out.count("--open-browser: opening") == 1, out
    assert opened(record) == [f"http://127.0.0.1:{server.port}/ 200 v1"]


def test_dev_restarts_do_not_open_it_again(serve, browser):
    script, record = browser
    server = serve(APP.format(version="v1"), args=["--dev", "--open-browser"], env={"BROWSER": str(script)})
    assert opened(record) == [f"http://127.0.0.1:{server.port}/ 200 v1"]
    server.app_path.write_text(APP.format(version="v2"))
    server.wait_for_output("changed; restarting")
    out = server.wait_for_output("serving http", count=2)
    deadline = time.monotonic() + 10
    while httpx.get(server.url, timeout=5).text != "v2" and time.monotonic() < deadline:
        time.sleep(0.05)
    assert out.count("--open-browser: opening") == 1, out  # the restarted app did not open it
    assert opened(record) == [f"http://127.0.0.1:{server.port}/ 200 v1"]


def test_the_stonechat_command_in_dev_mode_opens_it_once_too(serve, browser, tmp_path):
    script, record = browser
    app = tmp_path / "cli_app.py"
    app.write_text(APP.format(version="v1"))
    server = serve(str(app), args=[str(app), "--dev", "--open-browser"], env={"BROWSER": str(script)},
                   command=[sys.executable, "-m", "stonechat"])
    assert opened(record) == [f"http://127.0.0.1:{server.port}/ 200 v1"]
    server.app_path.write_text(APP.format(version="v2"))
    out = server.wait_for_output("serving http", count=2)
    assert out.count("--open-browser: opening") == 1, out


def test_no_browser_is_a_log_line_and_the_app_serves_on(serve):
    server = serve(APP.format(version="v1"), args=["--open-browser"],
                   env={"BROWSER": "", "PATH": "/nonexistent", "DISPLAY": "", "WAYLAND_DISPLAY": ""})
    server.wait_for_output(f"--open-browser: no browser found to open http://127.0.0.1:{server.port}/")
    assert httpx.get(server.url).text == "v1"


@pytest.mark.parametrize("value, on", [("1", True), ("True", True), ("yes", True), ("anything", True),
                                       ("", False), ("0", False), ("false", False), ("False", False),
                                       ("no", False), ("off", False)])
def test_which_environment_values_turn_it_on(monkeypatch, value, on):
    monkeypatch.setenv("ROBYN_BROWSER_OPEN", value)
    monkeypatch.delenv("STONECHAT_OPEN_BROWSER", raising=False)
    assert Config([]).open_browser is on
    assert Config(["--open-browser"]).open_browser is True


def test_a_wildcard_address_is_opened_on_loopback():
    assert browser_url("0.0.0.0", 8080) == "http://127.0.0.1:8080/"
    assert browser_url("::", 8080) == "http://[::1]:8080/"
    assert browser_url("127.0.0.1", 81) == "http://127.0.0.1:81/"
    assert browser_url("::1", 81) == "http://[::1]:81/"
