"""Shared test fixtures: the real server in a subprocess on 127.0.0.1 with a free port.

``serve(source_or_path, args=..., env=...)`` writes the app (when given source text) to a temp
file, starts ``python app.py`` with STONECHAT_PORT set, waits until the port accepts, and
returns a ``ServerProcess``. Every process still running at the end of the test is killed.
"""

from __future__ import annotations

import os
import random
import signal as sig
import socket
import subprocess
import sys
import textwrap
import time
from pathlib import Path
from typing import Iterator, Optional

import httpx

import pytest

ROOT = Path(__file__).resolve().parent.parent


def _ephemeral_low() -> int:
    try:
        return int(Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return 32768


_PORTS = random.Random()  # its own generator: tests that seed the global one change nothing here


def free_port() -> int:
    """A port nothing listens on, chosen *below* the kernel's ephemeral range. A port from
    ``bind(0)`` comes from that range, where any outgoing connection of any process (this
    suite's clients, a helper's Redis client...) may take it between our check and the
    server's bind: a flaky "Address already in use". Below the range only explicit binds
    compete, and a random choice among some 20,000 ports makes those collisions negligible."""
    high = _ephemeral_low() - 1
    for _ in range(200):
        port = _PORTS.randint(10000, high)
        with socket.socket() as s:
            try:
                s.bind(("127.0.0.1", port))
            except OSError:
                continue
        if not port_open(port):
            return port
    raise RuntimeError("no free port found below the ephemeral range")


def rss_kib(pid: int) -> int:
    """A process's resident memory now, in KiB (``VmRSS`` of /proc/<pid>/status)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise AssertionError(f"no VmRSS for pid {pid}")


def port_open(port: int, host: str = "127.0.0.1") -> bool:
    with socket.socket() as s:
        s.settimeout(0.2)
        return s.connect_ex((host, port)) == 0


class ServerProcess:
    """A server subprocess: by default ``python app.py``; ``command`` replaces ``python app.py``
    (e.g. ``[python, "-m", "stonechat"]`` with the app path in ``args``)."""

    def __init__(self, app_path: Path, port: int, args: list[str], env: dict, log_path: Path,
                 new_session: bool = False, command: Optional[list[str]] = None) -> None:
        self.app_path = app_path
        self.port = port
        self.log_path = log_path
        self.url = f"http://127.0.0.1:{port}"
        self.ws_url = f"ws://127.0.0.1:{port}"
        full_env = dict(os.environ)
        full_env.update({"STONECHAT_PORT": str(port), "PYTHONUNBUFFERED": "1"})
        full_env.update(env)
        self._log = open(log_path, "wb")
        argv = [*(command or [sys.executable, str(app_path)]), *args]
        self.proc = subprocess.Popen(
            argv, cwd=str(app_path.parent), env=full_env,
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

    def wait_for_output(self, text: str, timeout: float = 10.0, count: int = 1,
                        while_alive: bool = True) -> str:
        """Wait until ``text`` appears ``count`` times in the log; fail with the log if not."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            out = self.output()
            if out.count(text) >= count:
                return out
            if while_alive and self.proc.poll() is not None:
                break
            time.sleep(0.02)
        out = self.output()
        assert out.count(text) >= count, f"{text!r} x{count} not in output:\n{out}"
        return out

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


class Launcher:
    """Starts servers for one fixture scope and kills whatever is left at its end."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self.started: list[ServerProcess] = []

    def __call__(self, app: str, args: Optional[list[str]] = None, env: Optional[dict] = None,
                 port: Optional[int] = None, wait: bool = True, new_session: bool = True,
                 name: str = "app.py", command: Optional[list[str]] = None) -> ServerProcess:
        n = len(self.started)
        if "\n" in app or not app.endswith(".py"):
            path = self.directory / (name if n == 0 else f"{n}-{name}")
            path.write_text(textwrap.dedent(app))
        else:
            path = Path(app)
        server = ServerProcess(path, port or free_port(), args or [], env or {},
                               self.directory / f"server-{n}.log", new_session=new_session,
                               command=command)
        self.started.append(server)
        if wait:
            server.wait_ready()
        return server

    def close(self) -> None:
        for server in self.started:
            server.kill()
            server._log.close()


@pytest.fixture
def serve(tmp_path: Path) -> Iterator[Launcher]:
    """Start servers that live for one test."""
    launcher = Launcher(tmp_path)
    yield launcher
    launcher.close()


@pytest.fixture(scope="module")
def serve_module(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Launcher]:
    """Start servers that live for the whole test module (one start per module)."""
    launcher = Launcher(tmp_path_factory.mktemp("serve_module"))
    yield launcher
    launcher.close()


@pytest.fixture
def client(server: ServerProcess) -> Iterator[httpx.Client]:
    """An httpx client for the module's ``server`` fixture."""
    with httpx.Client(base_url=server.url, timeout=10) as c:
        yield c
