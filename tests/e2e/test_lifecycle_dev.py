"""``--dev`` reloading and the ``stonechat`` command, on real processes and real file edits.

Editing the app restarts it, and the old instance's shutdown handler output appears before the
new instance's startup; a syntax error keeps the reloader watching until the file is fixed;
Ctrl+C stops the reloader and the app cleanly. The CLI runs an app file and prints its version.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time

import httpx

from conftest import ROOT, free_port

DEV_APP = """
from stonechat import Robyn

app = Robyn(__file__)
VERSION = "{version}"

@app.startup_handler
async def startup():
    print(f"startup {{VERSION}}", flush=True)

@app.shutdown_handler
async def shutdown():
    print(f"shutdown {{VERSION}}", flush=True)

@app.get("/")
def index():
    return VERSION

app.start(drain_timeout=1, shutdown_handler_timeout=2)
"""



def get_text(url: str, timeout: float = 15.0) -> str:
    deadline = time.monotonic() + timeout
    while True:
        try:
            return httpx.get(url, timeout=2).text
        except httpx.HTTPError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.05)


def write(path, text: str) -> None:
    path.write_text(textwrap.dedent(text))


def test_dev_restarts_on_edit_after_graceful_stop(serve):
    server = serve(DEV_APP.format(version="v1"), args=["--dev"])
    server.wait_for_output("startup v1")
    assert get_text(server.url + "/") == "v1"
    write(server.app_path, DEV_APP.format(version="v2"))
    out = server.wait_for_output("startup v2")
    assert out.index("shutdown v1") < out.index("startup v2"), out
    assert "changed; restarting" in out
    assert get_text(server.url + "/") == "v2"
    # Ctrl+C in the terminal: reloader and app stop cleanly, the app's handler runs once
    server.signal_group(signal.SIGINT)
    assert server.wait(10) == 0
    out = server.output()
    assert out.count("shutdown v2") == 1 and out.count("shutdown v1") == 1, out
    assert "second stop request" not in out


def test_dev_keeps_watching_after_a_syntax_error(serve):
    server = serve(DEV_APP.format(version="v1"), args=["--dev"])
    server.wait_for_output("startup v1")
    server.app_path.write_text("from stonechat import Robyn\nthis is not python(\n")
    out = server.wait_for_output("fix it and save a .py file to restart")
    assert "SyntaxError" in out and "shutdown v1" in out
    assert server.proc.poll() is None, "the reloader died with the app"
    write(server.app_path, DEV_APP.format(version="v3"))
    server.wait_for_output("startup v3")
    assert get_text(server.url + "/") == "v3"
    server.signal(signal.SIGTERM)
    assert server.wait(10) == 0
    assert "shutdown v3" in server.output()


def test_cli_dev_watches_even_if_the_app_never_imported(serve, tmp_path):
    app = tmp_path / "cli_app.py"
    app.write_text("this is not python(\n")
    server = serve(str(app), command=[sys.executable, "-m", "stonechat"], args=[str(app), "--dev"],
                   wait=False)
    server.wait_for_output("fix it and save a .py file to restart")
    write(app, DEV_APP.format(version="cli"))
    server.wait_for_output("startup cli")
    assert get_text(f"{server.url}/") == "cli"
    server.signal(signal.SIGTERM)
    assert server.wait(10) == 0
    assert "shutdown cli" in server.output()


def test_cli_runs_an_app_file_and_prints_version(tmp_path):
    out = subprocess.run([sys.executable, "-m", "stonechat", "--version"], capture_output=True, text=True,
                         timeout=30)
    assert out.returncode == 0 and out.stdout.strip() == "stonechat 0.1.0"
    script = ROOT / ".venv" / "bin" / "stonechat"
    assert script.exists(), "the stonechat console script is not installed"
    app = tmp_path / "app.py"
    write(app, DEV_APP.format(version="plain"))
    port = free_port()
    env = dict(os.environ, STONECHAT_PORT=str(port), PYTHONUNBUFFERED="1")
    proc = subprocess.Popen([str(script), str(app)], env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True)
    try:
        assert get_text(f"http://127.0.0.1:{port}/") == "plain"
        proc.send_signal(signal.SIGTERM)
        output, _ = proc.communicate(timeout=10)
        assert proc.returncode == 0
        assert "startup plain" in output and "shutdown plain" in output
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    missing = subprocess.run([sys.executable, "-m", "stonechat", str(tmp_path / "nope.py")],
                             capture_output=True, text=True, timeout=30)
    assert missing.returncode == 2 and "no such file" in missing.stderr
