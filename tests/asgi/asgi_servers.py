"""One app file, served by stonechat's own server (``python app.py``) or by an ASGI server serving
``app.asgi`` (uvicorn, Granian, Hypercorn), each a real subprocess on a free port of 127.0.0.1.

``start(serve, server, source)`` writes ``source`` as ``<stem>.py`` in the launcher's directory
(an importable module name, which ASGI servers need) and starts it; the returned
``ServerProcess`` is the one of ``tests/conftest.py``.
"""

from __future__ import annotations

import sys
import textwrap
import time
from pathlib import Path
from typing import Callable, Optional

import httpx

from conftest import Launcher, ServerProcess, free_port

PYTHON = sys.executable


def command(server: str, port: int, target: str) -> Optional[list[str]]:
    if server == "stonechat":
        return None  # python app.py: the app calls app.start()
    if server == "uvicorn":
        return [PYTHON, "-m", "uvicorn", target, "--host", "127.0.0.1", "--port", str(port),
                "--lifespan", "on", "--no-access-log", "--timeout-graceful-shutdown", "5"]
    if server == "granian":
        return [PYTHON, "-m", "granian", "--interface", "asgi", "--host", "127.0.0.1", "--port", str(port),
                target]
    if server == "hypercorn":
        return [PYTHON, "-m", "hypercorn", "--bind", f"127.0.0.1:{port}", target]
    raise ValueError(server)


def start(launcher: Launcher, server: str, source: str, stem: str = "", env: Optional[dict] = None,
          wait: bool = True, attr: str = "app.asgi") -> ServerProcess:
    stem = stem or f"app_{server}_{len(launcher.started)}"
    path = launcher.directory / f"{stem}.py"
    path.write_text(textwrap.dedent(source))
    port = free_port()
    proc = launcher(str(path), port=port, env=env, wait=wait, command=command(server, port, f"{stem}:{attr}"))
    if wait:
        # A listening socket is not a started app (stonechat binds before its startup handlers
        # run, and queues connections meanwhile): one answered request is.
        httpx.get(proc.url + "/__started__", timeout=20)
    return proc


def wait_until(predicate: Callable[[], object], timeout: float = 10.0, what: str = "condition") -> object:
    """Poll ``predicate`` until it is truthy (a state the test waits for, never a fixed sleep)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.02)
    raise AssertionError(f"timed out after {timeout} s waiting for {what}")


def read_lines(path: Path) -> list[str]:
    return path.read_text().splitlines() if path.exists() else []
