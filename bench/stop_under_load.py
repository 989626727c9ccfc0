"""Stop under load: what a server answers, refuses and loses when SIGTERM arrives while
keep-alive clients hammer it.

    python3 bench/stop_under_load.py                         # stonechat and uvicorn, both modes
    python3 bench/stop_under_load.py --servers stonechat --modes pipelined --runs 3
    python3 bench/stop_under_load.py --url http://127.0.0.1:8080 --pid 1234   # any running server

64 connections (``--connections``) each loop ``GET /`` with no pause: in ``keep-alive`` mode one
request at a time, in ``pipelined`` mode ``--window`` (8) requests in flight, a new one written
as each answer arrives. After ``--before`` seconds (1.5) the server gets SIGTERM. A connection
that gets ``Connection: close`` stops sending, reads what it is still owed and opens a new one;
the run ends when new connections are refused.

Counted by the client (``Counts``), exactly:
  sent      requests written to a connection the server had not closed or told us to close
  answered  2xx answers;  503: answered 503;  other: any other status
  lost      sent and never answered: the connection ended (end-of-file or reset) first
  refused   connection attempts refused once the stop began
and the server's exit code. ``tests/e2e/test_stop_under_load.py`` runs this client against
stonechat and asserts lost == 0.

Servers: stonechat from the project's ``.venv`` (the hello app below); uvicorn 0.54.0 (uvloop,
httptools) from ``bench/.venv-uvicorn``, created on demand, serving a bare ASGI hello
(``apps/asgi_hello.py``): the server alone, no framework. Both print from their shutdown
handler / lifespan shutdown, so the table also says whether that ran. Standard library only.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional

ROOT = Path(__file__).resolve().parent.parent
BENCH = ROOT / "bench"
UVICORN_VENV = BENCH / ".venv-uvicorn"
UVICORN_PINS = ["uvicorn==0.54.0", "httptools==0.9.0", "uvloop==0.23.0"]

STONECHAT_APP = """
from stonechat import Robyn

app = Robyn(__file__)

@app.get("/")
async def index():
    return "Hello, world!"

@app.shutdown_handler
async def bye():
    print("shutdown handler ran", flush=True)

app.start(host="127.0.0.1")
"""


@dataclass
class Counts:
    sent: int = 0
    answered: int = 0
    unavailable: int = 0   # 503
    other: int = 0
    lost: int = 0
    refused: int = 0
    connections: int = 0
    statuses: dict = field(default_factory=dict)
    signalled_at: float = 0.0  # time.monotonic() when the stop signal was sent

    def summary(self) -> str:
        return (f"sent {self.sent}, answered {self.answered}, 503 {self.unavailable}, "
                f"other {self.other}, lost {self.lost} (connections {self.connections}, "
                f"refused after the stop {self.refused})")


REQUEST = b"GET / HTTP/1.1\r\nHost: bench\r\n\r\n"


async def _read_answer(reader: asyncio.StreamReader) -> tuple[int, bool]:
    """One response: (status, whether it said Connection: close). Raises on a cut connection."""
    head = await reader.readuntil(b"\r\n\r\n")
    lines = head.split(b"\r\n")
    status = int(lines[0].split(b" ", 2)[1])
    length = 0
    close = False
    chunked = False
    for line in lines[1:]:
        name, _, value = line.partition(b":")
        name = name.strip().lower()
        value = value.strip().lower()
        if name == b"content-length":
            length = int(value)
        elif name == b"connection":
            close = b"close" in value
        elif name == b"transfer-encoding":
            chunked = b"chunked" in value
    if chunked:
        while True:
            size = int((await reader.readuntil(b"\r\n")).strip().split(b";")[0], 16)
            await reader.readexactly(size + 2)
            if size == 0:
                break
    elif length:
        await reader.readexactly(length)
    return status, close


async def _client(host: str, port: int, counts: Counts, window: int, give_up_at: float) -> None:
    """One client slot: a connection at a time, reconnecting after each close, until refused."""
    while time.monotonic() < give_up_at:
        try:
            reader, writer = await asyncio.open_connection(host, port)
        except OSError:
            counts.refused += 1
            return
        counts.connections += 1
        outstanding = 0
        told_close = False
        try:
            for _ in range(window):
                writer.write(REQUEST)
                counts.sent += 1
                outstanding += 1
            while outstanding:
                status, close = await _read_answer(reader)
                outstanding -= 1
                counts.statuses[status] = counts.statuses.get(status, 0) + 1
                if 200 <= status < 300:
                    counts.answered += 1
                elif status == 503:
                    counts.unavailable += 1
                else:
                    counts.other += 1
                told_close = told_close or close
                if not told_close:
                    writer.write(REQUEST)
                    counts.sent += 1
                    outstanding += 1
        except (asyncio.IncompleteReadError, ConnectionError, OSError, ValueError, IndexError):
            counts.lost += outstanding  # sent, and the connection ended before their answers
        finally:
            writer.close()
            try:
                await writer.wait_closed()
            except (ConnectionError, OSError):
                pass


async def load_and_stop(host: str, port: int, pid: int, connections: int = 64, window: int = 1,
                        before: float = 1.5, give_up: float = 60.0,
                        stop_signal: int = signal.SIGTERM) -> Counts:
    """Run ``connections`` client slots, send ``stop_signal`` to ``pid`` after ``before``
    seconds, and return the counts once every slot was refused (or ``give_up`` passed)."""
    counts = Counts()
    give_up_at = time.monotonic() + give_up
    tasks = [asyncio.ensure_future(_client(host, port, counts, window, give_up_at))
             for _ in range(connections)]
    await asyncio.sleep(before)
    counts.signalled_at = time.monotonic()
    os.kill(pid, stop_signal)
    await asyncio.wait(tasks, timeout=give_up)
    for task in tasks:
        task.cancel()
    return counts


# -- servers ------------------------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_port(port: int, proc: subprocess.Popen, timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"server exited with {proc.returncode} before listening")
        with socket.socket() as s:
            s.settimeout(0.2)
            if s.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.05)
    raise RuntimeError(f"server did not listen on {port} within {timeout} s")


def uvicorn_python() -> Path:
    python = UVICORN_VENV / "bin" / "python"
    probe = [str(python), "-c", "import uvicorn, httptools, uvloop; print(uvicorn.__version__)"]
    if python.exists() and subprocess.run(probe, capture_output=True).stdout.strip() == b"0.54.0":
        return python
    print(f"preparing {UVICORN_VENV.relative_to(ROOT)} (pip install {' '.join(UVICORN_PINS)}) ...",
          file=sys.stderr)
    subprocess.run([sys.executable, "-m", "venv", str(UVICORN_VENV)], check=True)
    subprocess.run([str(python), "-m", "pip", "install", "-q", *UVICORN_PINS], check=True)
    return python


def start_server(name: str, port: int, workdir: Path, log) -> subprocess.Popen:
    env = dict(os.environ, PYTHONUNBUFFERED="1", STONECHAT_PORT=str(port))
    if name == "stonechat":
        python = ROOT / ".venv" / "bin" / "python"
        if not python.exists():
            raise SystemExit("no .venv: run `make test` (or `make run`) first")
        app = workdir / "hello_app.py"
        app.write_text(STONECHAT_APP)
        argv = [str(python), str(app), "--log-level", "WARNING"]
    elif name == "uvicorn":
        argv = [str(uvicorn_python()), "-m", "uvicorn", "asgi_hello:app", "--app-dir", str(BENCH / "apps"),
                "--host", "127.0.0.1", "--port", str(port), "--loop", "uvloop", "--http", "httptools",
                "--log-level", "warning", "--no-access-log"]
    else:
        raise SystemExit(f"unknown server {name!r}: stonechat or uvicorn")
    return subprocess.Popen(argv, env=env, stdout=log, stderr=subprocess.STDOUT, cwd=str(workdir))


def one_run(name: str, mode: str, args: argparse.Namespace) -> tuple[Counts, Optional[int], bool, float]:
    """(counts, exit code, shutdown handler ran, seconds from SIGTERM to exit)."""
    window = args.window if mode == "pipelined" else 1
    with tempfile.TemporaryDirectory() as tmp:
        workdir = Path(tmp)
        port = free_port()
        log_path = workdir / "server.log"
        with open(log_path, "wb") as log:
            proc = start_server(name, port, workdir, log)
            try:
                wait_port(port, proc)
                counts = asyncio.run(load_and_stop("127.0.0.1", port, proc.pid, args.connections,
                                                   window, args.before))
                code: Optional[int] = proc.wait(30)
                took = time.monotonic() - counts.signalled_at
            except subprocess.TimeoutExpired:
                code, took = None, float("nan")
            finally:
                if proc.poll() is None:
                    proc.kill()
                    proc.wait()
        out = log_path.read_text(errors="replace")
        if args.verbose:
            print(out, file=sys.stderr)
        return counts, code, "shutdown handler ran" in out, took


def main(argv: Optional[list[str]] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--servers", default="stonechat,uvicorn")
    parser.add_argument("--modes", default="keep-alive,pipelined")
    parser.add_argument("--connections", type=int, default=64)
    parser.add_argument("--window", type=int, default=8, help="requests in flight per connection when pipelined")
    parser.add_argument("--before", type=float, default=1.5, help="seconds of load before SIGTERM")
    parser.add_argument("--runs", type=int, default=1)
    parser.add_argument("--url", help="measure a server already running (with --pid)")
    parser.add_argument("--pid", type=int)
    parser.add_argument("--verbose", action="store_true", help="print each server's log")
    args = parser.parse_args(argv)

    if args.url:
        from urllib.parse import urlsplit
        if args.pid is None:
            parser.error("--url needs --pid (the process to send SIGTERM to)")
        parts = urlsplit(args.url)
        window = args.window if args.modes == "pipelined" else 1
        counts = asyncio.run(load_and_stop(parts.hostname or "127.0.0.1", parts.port or 80, args.pid,
                                           args.connections, window, args.before))
        print(counts.summary())
        return 0 if counts.lost == 0 else 1

    print(f"{'server':<10} {'mode':<10} {'sent':>7} {'answered':>8} {'503':>5} {'other':>5} "
          f"{'lost':>5} {'refused':>7}  exit  shutdown  stop took")
    for mode in args.modes.split(","):
        for _ in range(args.runs):
            for name in args.servers.split(","):  # alternating, so load from elsewhere hits both
                counts, code, ran, took = one_run(name, mode, args)
                print(f"{name:<10} {mode:<10} {counts.sent:>7} {counts.answered:>8} {counts.unavailable:>5} "
                      f"{counts.other:>5} {counts.lost:>5} {counts.refused:>7}  {code!s:>4}  "
                      f"{'ran' if ran else 'NOT RUN':<8}  {took:.2f} s", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
