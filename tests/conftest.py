"""Shared test fixtures: the real server in a subprocess on 127.0.0.1 with a free port.

``serve(source_or_path, args=..., env=...)`` writes the app (when given source text) to a temp
file, starts ``python app.py`` with STONECHAT_PORT set, waits until the port accepts, and
returns a ``ServerProcess``. Every process still running at the end of the test is killed.
"""

from __future__ import annotations

import os
import signal as sig
import socket
import subprocess
import sys
import textwrap
import time
from pathlib import Path
from typing import Callable, Optional

import pytest

ROOT = Path(__file__).resolve().parent.parent


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def port_open(port: int, host: str = "127.0.0.1") -> bool:
    with socket.socket() as s:
        s.settimeout(0.2)
        return s.connect_ex((host, port)) == 0


class ServerProcess:
    def __init__(self, app_path: Path, port: int, args: list[str], env: dict, log_path: Path,
                 new_session: bool = False) -> None:
        self.app_path = app_path
        self.port = port
        self.log_path = log_path
        self.url = f"http://127.0.0.1:{port}"
        self.ws_url = f"ws://127.0.0.1:{port}"
        full_env = dict(os.environ)
        full_env.update({"STONECHAT_PORT": str(port), "PYTHONUNBUFFERED": "1"})
        full_env.update(env)
        self._log = open(log_path, "wb")
        self.proc = subprocess.Popen(
            [sys.executable, str(app_path), *args], cwd=str(app_path.parent), env=full_env,
            stdout=self._log, stderr=subprocess.STDOUT, start_new_session=new_session)

    @property
    def pid(self) -> int:
        return self.proc.pid

    def wait_ready(self, timeout: float = 15.0) -> "ServerProcess":
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"server exited with {self.proc.returncode}:\n{self.output()}")
            if port_open(self.port):
                return self
            time.sleep(0.05)
        raise RuntimeError(f"server did not listen on {self.port} within {timeout}s:\n{self.output()}")

    def output(self) -> str:
        self._log.flush()
        return self.log_path.read_text(errors="replace")

    def signal(self, signum: int = sig.SIGTERM) -> None:
        self.proc.send_signal(signum)

    def signal_group(self, signum: int = sig.SIGINT) -> None:
        os.killpg(os.getpgid(self.proc.pid), signum)

    def wait(self, timeout: float = 30.0) -> int:
        return self.proc.wait(timeout)

    def stop(self, timeout: float = 15.0) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(sig.SIGTERM)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.kill()
        return self.proc.returncode

    def kill(self) -> None:
        if self.proc.poll() is None:
            try:
                os.killpg(os.getpgid(self.proc.pid), sig.SIGKILL)
            except (ProcessLookupError, PermissionError):
                self.proc.kill()
            self.proc.wait(5)


@pytest.fixture
def serve(tmp_path: Path) -> Callable[..., ServerProcess]:
    started: list[ServerProcess] = []

    def start(app: str, args: Optional[list[str]] = None, env: Optional[dict] = None,
              port: Optional[int] = None, wait: bool = True, new_session: bool = True,
              name: str = "app.py") -> ServerProcess:
        if "\n" in app or not app.endswith(".py"):
            path = tmp_path / name
            path.write_text(textwrap.dedent(app))
        else:
            path = Path(app)
        server = ServerProcess(path, port or free_port(), args or [], env or {},
                               tmp_path / f"server-{len(started)}.log", new_session=new_session)
        started.append(server)
        if wait:
            server.wait_ready()
        return server

    yield start
    for server in started:
        server.kill()
        server._log.close()


@pytest.fixture(scope="module")
def serve_module(tmp_path_factory: pytest.TempPathFactory) -> Callable[..., ServerProcess]:
    """Like ``serve`` but the servers live for the whole test module (one start per module)."""
    started: list[ServerProcess] = []
    tmp = tmp_path_factory.mktemp("serve_module")

    def start(app: str, args: Optional[list[str]] = None, env: Optional[dict] = None,
              port: Optional[int] = None, wait: bool = True, name: str = "app.py") -> ServerProcess:
        if "\n" in app or not app.endswith(".py"):
            path = tmp / f"{len(started)}-{name}"
            path.write_text(textwrap.dedent(app))
        else:
            path = Path(app)
        server = ServerProcess(path, port or free_port(), args or [], env or {},
                               tmp / f"server-{len(started)}.log", new_session=True)
        started.append(server)
        if wait:
            server.wait_ready()
        return server

    yield start
    for server in started:
        server.kill()
        server._log.close()
