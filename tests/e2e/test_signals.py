"""Stop signals as they really arrive, on real processes (docs/lifecycle.md, "Signals").

A repeated SIGTERM — two 0 ms apart, five, from a process-group kill plus a parent that
forwards it — is one graceful stop at every phase: while the app file imports, at
``app.start()`` (before the socket is bound), during startup handlers, between startup and
serving, while serving, while draining, while shutdown handlers run; in one process and under
``--processes 2`` (signals to the whole group); and behind ``timeout … make run``,
``sh -c 'exec …'`` and ``sh -c '…'``. Every time: the shutdown handler ran once per serving
process (a marker file says so), exit 0. A second Ctrl+C, or SIGQUIT, still forces, and the
log names every handler that did not run; one already running gets a last chance. A startup
race: SIGTERM×2 at offsets 0–200 ms after the startup handler begins, never lost.

Cases that do not depend on each other run side by side (each its own server process), so the
file stays within a few seconds per group even on a loaded machine.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import pytest

from conftest import ServerProcess, free_port, port_open

TERM = signal.SIGTERM

APP = """
import asyncio, os, time
from stonechat import Robyn

app = Robyn(__file__)
MARKERS = os.environ["MARKERS"]
PHASE = os.environ.get("PHASE", "")

def mark(what):
    with open(MARKERS, "a") as f:
        f.write(f"{what} {os.getpid()}\\n")

@app.startup_handler
async def opens():
    print(f"startup began {os.getpid()}", flush=True)
    if PHASE == "startup":
        await asyncio.sleep(1.0)
    mark("startup")

@app.startup_handler
def last_startup():
    if PHASE == "after-startup":
        print(f"startup ending {os.getpid()}", flush=True)
        time.sleep(0.3)  # holds the loop: the signals are handled once startup has returned

@app.shutdown_handler
async def closes():
    print(f"shutdown began {os.getpid()}", flush=True)
    if PHASE == "shutdown":
        await asyncio.sleep(0.6)
    mark("shutdown")

@app.get("/slow")
async def slow():
    await asyncio.sleep(0.8)
    return "slow done"

@app.get("/")
def index():
    return "ok"

print(f"importing {os.getpid()}", flush=True)
if PHASE == "import":
    time.sleep(0.8)  # a slow import, before app.start()
if PHASE == "bind":  # a slow bind: the signals arrive inside app.start(), before the socket exists
    import stonechat.serving as serving
    real_bind = serving.bind_socket
    def slow_bind(*args, **kwargs):
        print("binding", flush=True)
        time.sleep(0.5)
        return real_bind(*args, **kwargs)
    serving.bind_socket = slow_bind
app.start(drain_timeout=5)
print("app.start returned", flush=True)
"""


class Case:
    """One server process and the signals it gets; ``run()`` returns what happened."""

    def __init__(self, directory: Path, name: str, args: list[str], env: dict,
                 command: list[str] | None = None, app: str = APP) -> None:
        directory.mkdir(parents=True, exist_ok=True)
        self.name = name
        self.app_path = directory / "app.py"
        self.app_path.write_text(app)
        self.markers = directory / "markers"
        env = {"MARKERS": str(self.markers), **env}
        self.server = ServerProcess(self.app_path, free_port(), args, env, directory / "server.log",
                                    new_session=True, command=command)

    def signal_all(self, signum: int = TERM, times: int = 2) -> None:
        """``times`` signals 0 ms apart to the whole process group (a wrapper's kill)."""
        group = os.getpgid(self.server.pid)
        for _ in range(times):
            os.killpg(group, signum)

    def marks(self, what: str) -> list[str]:
        if not self.markers.exists():
            return []
        return [line.split()[1] for line in self.markers.read_text().splitlines() if line.startswith(what)]

    def finish(self, timeout: float = 20.0) -> tuple[int, str]:
        try:
            code = self.server.wait(timeout)
        except subprocess.TimeoutExpired:
            self.server.kill()
            code = -999
        return code, self.server.output()

    def close(self) -> None:
        self.server.kill()
        self.server._log.close()


def run_side_by_side(cases: dict, drive) -> dict:
    """Run ``drive(case)`` for every case at once; return {name: result}."""
    with ThreadPoolExecutor(len(cases)) as pool:
        futures = {name: pool.submit(drive, case) for name, case in cases.items()}
        try:
            return {name: f.result() for name, f in futures.items()}
        finally:
            for case in cases.values():
                case.close()


def assert_one_graceful_stop(name: str, code: int, out: str, case: Case, processes: int) -> None:
    what = f"[{name}]\n{out}"
    assert code == 0, what
    shutdowns = case.marks("shutdown")
    assert len(shutdowns) == processes and len(set(shutdowns)) == processes, f"{shutdowns} {what}"
    assert "second stop request" not in out and "forced stop" not in out, what
    assert "skipped" not in out and "Traceback" not in out, what


# -- every phase, SIGTERM twice 0 ms apart (and five times) -----------------------------------

def phase_driver(phase: str, processes: int):
    def drive(case: Case):
        server = case.server
        if phase == "during imports":
            server.wait_for_output("importing")
            case.signal_all()
        elif phase == "in app.start(), before bind":
            server.wait_for_output("binding")
            case.signal_all()
        elif phase == "during startup handlers":
            server.wait_for_output("startup began")
            case.signal_all()
        elif phase == "between startup and serving":
            server.wait_for_output("startup ending")
            case.signal_all()
        elif phase == "while serving, x5":
            server.wait_for_output("serving http://127.0.0.1", timeout=20)
            case.signal_all(times=5)
        elif phase == "while draining":
            server.wait_for_output("serving http://127.0.0.1", timeout=20)
            results = {}
            getter = threading.Thread(target=lambda: results.update(
                r=httpx.get(server.url + "/slow", timeout=10).text))
            getter.start()
            time.sleep(0.3)  # the request is in the handler
            case.signal_all(times=1)
            server.wait_for_output("draining 1 requests")
            case.signal_all()
            getter.join(10)
            assert results.get("r") == "slow done", results
        elif phase == "while shutdown handlers run":
            server.wait_for_output("serving http://127.0.0.1", timeout=20)
            case.signal_all(times=1)
            server.wait_for_output("shutdown began", count=processes)
            case.signal_all(times=5)
        return case.finish()
    return drive


PHASE_ENV = {
    "during imports": "import",
    "in app.start(), before bind": "bind",
    "during startup handlers": "startup",
    "between startup and serving": "after-startup",
    "while serving, x5": "",
    "while draining": "",
    "while shutdown handlers run": "shutdown",
}


@pytest.mark.parametrize("processes", [1, 2])
def test_repeated_sigterm_at_every_phase_is_one_graceful_stop(tmp_path, processes):
    args = ["--processes", "2"] if processes == 2 else []
    cases = {}
    for index, (phase, env_phase) in enumerate(PHASE_ENV.items()):
        directory = tmp_path / f"case{index}"
        # the app file's own imports are held only by the stonechat command (python -m stonechat)
        command = [sys.executable, "-m", "stonechat", str(directory / "app.py")] \
            if phase == "during imports" else None
        cases[phase] = Case(directory, phase, args, {"PHASE": env_phase}, command=command)
    drivers = {phase: phase_driver(phase, processes) for phase in cases}
    results = run_side_by_side(cases, lambda case: drivers[case.name](case))
    for phase, (code, out) in results.items():
        assert_one_graceful_stop(phase, code, out, cases[phase], processes)
        assert "app.start returned" in out, out
    # a repeat that came once the stop was under way was seen, and said to change nothing
    # (0 ms apart, the kernel may merge two SIGTERMs into one delivery)
    for phase in ("while draining", "while shutdown handlers run"):
        assert "SIGTERM again while stopping: nothing changes" in results[phase][1], results[phase][1]


# -- wrappers that deliver SIGTERM twice -------------------------------------------------------

def test_wrappers_killed_by_process_group_run_the_shutdown_handler(tmp_path):
    python = sys.executable
    cases = {}

    # `timeout 30 make run`: SIGTERM to timeout, as when its time is up: it signals make and the
    # whole group; make forwards SIGTERM to the app, which so gets it twice
    directory = tmp_path / "make"
    directory.mkdir()  # the Makefile exists before make starts (Case starts the command at once)
    (directory / "Makefile").write_text(f"run:\n\t{python} app.py\n")
    cases["timeout make run"] = Case(directory, "timeout make run", [], {},
                                     command=["timeout", "30", "make", "-s", "run"])

    directory = tmp_path / "exec"
    cases["sh -c 'exec ...'"] = Case(directory, "exec", [], {},
                                     command=["sh", "-c", f"exec {python} {directory / 'app.py'}"])
    directory = tmp_path / "sh"
    cases["sh -c '...'"] = Case(directory, "sh", [], {},
                                command=["sh", "-c", f"{python} {directory / 'app.py'}; echo sh done"])
    directory = tmp_path / "sh2"
    cases["sh -c '...' --processes 2"] = Case(
        directory, "sh2", [], {}, command=["sh", "-c", f"{python} {directory / 'app.py'} --processes 2; echo sh done"])

    def drive(case: Case):
        out = case.server.wait_for_output("serving http://127.0.0.1", timeout=20)
        app_pid = int(re.search(r"importing (\d+)", out).group(1))
        if case.name == "timeout make run":
            case.server.signal(TERM)  # timeout passes it on to make and to the group
        else:
            case.signal_all(times=1)  # the group: sh (which dies) and the app
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline and _alive(app_pid):
            time.sleep(0.05)
        return case.finish()

    results = run_side_by_side(cases, drive)
    for name, (code, out) in results.items():
        processes = 2 if "--processes" in name else 1
        what = f"[{name}]\n{out}"
        assert len(case_marks := cases[name].marks("shutdown")) == processes, f"{case_marks} {what}"
        assert "app.start returned" in out, what  # the app itself exited 0
        assert "second stop request" not in out and "skipped" not in out, what
        assert "Traceback" not in out, what


def _alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().split(") ")[1][0] != "Z"
    except FileNotFoundError:
        return False


# -- the startup race ---------------------------------------------------------------------------

RACE_APP = APP.replace('if PHASE == "startup":\n        await asyncio.sleep(1.0)',
                       'await asyncio.sleep(0.1)  # a startup handler that does some I/O')


def test_sigterm_at_any_moment_around_startup_is_never_lost(tmp_path):
    # offsets after the startup handler began: inside it (0-100 ms), at its end, and serving
    offsets = [0.0, 0.005, 0.02, 0.04, 0.06, 0.08, 0.095, 0.1, 0.105, 0.12, 0.15, 0.2]
    cases = {f"{o * 1000:.0f} ms": Case(tmp_path / f"race{i}", f"{o}", [], {}, app=RACE_APP)
             for i, o in enumerate(offsets)}

    def drive(case: Case):
        # the log file is polled, so react to the line as soon as it is written
        server = case.server
        deadline = time.monotonic() + 20
        while "startup began" not in server.output():
            if time.monotonic() > deadline or server.proc.poll() is not None:
                break
            time.sleep(0.002)
        time.sleep(float(case.name))
        case.signal_all()
        return case.finish()

    results = run_side_by_side(cases, drive)
    for name, (code, out) in results.items():
        assert_one_graceful_stop(name, code, out, cases[name], 1)


# -- forcing: a second Ctrl+C, SIGQUIT ----------------------------------------------------------

FORCE_APP = """
import asyncio, os
from stonechat import Robyn
app = Robyn(__file__)

@app.shutdown_handler
async def never_reached():
    print(f"never reached ran {os.getpid()}", flush=True)

@app.shutdown_handler
async def quick_cleanup():
    print(f"quick cleanup started {os.getpid()}", flush=True)
    await asyncio.sleep(float(os.environ.get("CLEANUP_SECS", "0.3")))
    print(f"quick cleanup finished {os.getpid()}", flush=True)

@app.get("/slow")
async def slow():
    await asyncio.sleep(30)
    return "never"

app.start(shutdown_handler_timeout=30, drain_timeout=30)
"""


def test_ctrl_c_twice_forces_in_every_worker_naming_what_was_skipped(serve):
    server = serve(FORCE_APP, args=["--processes", "2"], env={"CLEANUP_SECS": "30"})
    server.wait_for_output("serving http://127.0.0.1")
    server.signal_group(signal.SIGINT)
    server.wait_for_output("quick cleanup started", count=2)
    started = time.monotonic()
    server.signal_group(signal.SIGINT)
    assert server.wait(10) == 1
    assert time.monotonic() - started < 4.0  # a 1 s last chance, not 30 s
    out = server.output()
    # each worker forced once, by its own second SIGINT or the supervisor's word, whichever came first
    assert out.count("skipping what is left of phase 'shutdown handlers'") == 2, out
    assert "exiting at once" not in out, out  # the one Ctrl+C reaching a worker twice is no third
    assert out.count("shutdown handler quick_cleanup did not finish in its last 1.0 s") == 2, out
    assert out.count("skipped: never_reached") == 2, out
    assert "never reached ran" not in out, out


def test_a_running_shutdown_handler_gets_its_last_chance(serve):
    server = serve(FORCE_APP, env={"CLEANUP_SECS": "0.4"})
    server.signal(signal.SIGINT)
    server.wait_for_output("quick cleanup started")
    server.signal(signal.SIGINT)
    assert server.wait(10) == 1
    out = server.output()
    assert "quick cleanup finished" in out, out  # it was not cut off
    assert "skipped: never_reached" in out and "never reached ran" not in out, out
    assert "(it did not finish)" not in out, out


@pytest.mark.parametrize("how", ["SIGQUIT while draining", "SIGTERM then Ctrl+C twice"])
def test_forced_before_shutdown_names_every_handler_skipped(serve, how):
    server = serve(FORCE_APP)
    results = {}
    getter = threading.Thread(target=lambda: results.update(r=_get_or_error(server.url + "/slow")))
    getter.start()
    time.sleep(0.3)
    if how == "SIGQUIT while draining":
        server.signal(signal.SIGTERM)
        server.wait_for_output("draining 1 requests")
        server.signal(signal.SIGQUIT)
    else:
        server.signal(signal.SIGTERM)
        server.wait_for_output("draining 1 requests")
        server.signal(signal.SIGINT)  # the first Ctrl+C: still graceful
        server.wait_for_output("SIGINT while already stopping")
        assert server.proc.poll() is None
        server.signal(signal.SIGINT)
    assert server.wait(10) == 1
    getter.join(10)
    out = server.output()
    assert "forced stop before shutdown; skipped: quick_cleanup, never_reached" in out, out
    assert "quick cleanup started" not in out and "never reached ran" not in out, out
    assert not port_open(server.port)


def _get_or_error(url: str) -> str:
    try:
        return httpx.get(url, timeout=15).text
    except httpx.HTTPError as exc:
        return repr(exc)


# -- --dev ---------------------------------------------------------------------------------------

def test_dev_repeated_sigterm_to_the_group_is_one_graceful_stop(tmp_path):
    case = Case(tmp_path / "dev", "dev", ["--dev"], {})
    try:
        case.server.wait_for_output("serving http://127.0.0.1", timeout=20)
        case.signal_all(times=2)
        code, out = case.finish()
    finally:
        case.close()
    assert code == 0, out
    assert len(case.marks("shutdown")) == 1, out
    assert "second stop request" not in out and "skipped" not in out and "Traceback" not in out, out


def test_dev_ctrl_c_twice_still_forces(tmp_path):
    case = Case(tmp_path / "dev", "dev", ["--dev"], {"CLEANUP_SECS": "30"}, app=FORCE_APP)
    try:
        case.server.wait_for_output("serving http://127.0.0.1", timeout=20)
        case.signal_all(signal.SIGINT, times=1)
        case.server.wait_for_output("quick cleanup started")
        case.signal_all(signal.SIGINT, times=1)
        code, out = case.finish()
    finally:
        case.close()
    assert code == 1, out
    assert "skipping what is left of phase 'shutdown handlers'" in out, out
    assert "skipped: never_reached" in out and "never reached ran" not in out, out


LINGER_APP = APP.replace('print("app.start returned", flush=True)\n',
                         'print("app.start returned", flush=True)\n'
                         'time.sleep(float(os.environ.get("LINGER", "0")))\n'
                         'print("script ended", flush=True)\n')


@pytest.mark.parametrize("late", ["within the repeat window", "after it"])
def test_a_sigterm_after_start_returned(tmp_path, late):
    """A wrapper's second SIGTERM can come after a fast stop has finished: for 2 s it is the
    repeat of the first (logged, exit 0); later it has its usual meaning again (killed)."""
    linger = 1.0 if late == "within the repeat window" else 4.0
    case = Case(tmp_path / "linger", "linger", [], {"LINGER": str(linger)}, app=LINGER_APP)
    try:
        case.server.wait_for_output("serving http://127.0.0.1", timeout=20)
        case.server.signal(TERM)
        case.server.wait_for_output("app.start returned", timeout=20)
        if late == "after it":
            time.sleep(2.5)
        case.server.signal(TERM)
        code, out = case.finish()
    finally:
        case.close()
    if late == "within the repeat window":
        assert code == 0, out
        assert "SIGTERM again after the stop had finished" in out and "script ended" in out, out
    else:
        assert code == -TERM, out
        assert "script ended" not in out, out
