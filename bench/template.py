"""Template rendering and sessions: server CPU per request, stonechat beside Robyn 0.88.0, in
one run (a short smoke by default). The same app file (bench/apps/template_app.py) runs under
both; for stonechat a copy with ``robyn`` renamed.

    python3 bench/template.py [--duration 3] [--repeat 1] [--scenarios template,session]

Each run: a fresh server pinned to core 0 (taskset), wrk -t1 -c64 pinned to core 1, 1 s of
warm-up, then ``--duration`` measured seconds; CPU is the server's utime+stime over the window
(/proc), divided by the requests wrk completed. Robyn runs from bench/.venv-robyn-templating
(robyn==0.88.0 + Jinja2, created on first use); stonechat from the project's .venv.
Standard library only. Not part of bench/run.py's table.
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

BENCH = Path(__file__).resolve().parent
ROOT = BENCH.parent
APPS = BENCH / "apps"
ROBYN_VENV = BENCH / ".venv-robyn-templating"
ROBYN_PINS = ["robyn==0.88.0", "jinja2>=3.1"]
FLAGS = ["--disable-openapi", "--log-level", "WARNING"]
TICK = os.sysconf("SC_CLK_TCK")
SCENARIOS = {
    # name: (path, env, cookie needed, what the body must hold)
    "template": ("/template", {}, False, "item &lt;19&gt;: 28.5"),
    "session": ("/session", {"BENCH_SESSIONS": "1"}, True, None),
}


def die(msg: str) -> None:
    print(f"template.py: {msg}", file=sys.stderr)
    sys.exit(1)


def robyn_python() -> str:
    python = ROBYN_VENV / "bin" / "python"
    probe = [str(python), "-c", "import importlib.metadata as m, robyn, jinja2; print(m.version('robyn'))"]
    if python.exists() and subprocess.run(probe, capture_output=True, text=True).stdout.strip() == "0.88.0":
        return str(python)
    print(f"creating {ROBYN_VENV.name} ({', '.join(ROBYN_PINS)})...", flush=True)
    for step in ([sys.executable, "-m", "venv", "--clear", str(ROBYN_VENV)],
                 [str(python), "-m", "pip", "install", "-q", *ROBYN_PINS]):
        done = subprocess.run(step, capture_output=True, text=True)
        if done.returncode != 0:
            die(f"{' '.join(step)} failed:\n{done.stdout}{done.stderr}")
    return str(python)


def stonechat_python() -> str:
    python = ROOT / ".venv" / "bin" / "python"
    if not python.exists():
        die("the project's .venv is missing (make test or make run creates it)")
    return str(python)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def cpu_ticks(root: int) -> int:
    """utime+stime (+ reaped children) of root and every live process below it."""
    children: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/stat") as f:
                    fields = f.read().rsplit(")", 1)[1].split()
                children.setdefault(int(fields[1]), []).append(int(entry))
            except (OSError, IndexError, ValueError):
                pass
    total, todo = 0, [root]
    while todo:
        pid = todo.pop()
        todo.extend(children.get(pid, []))
        try:
            with open(f"/proc/{pid}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
            total += sum(int(x) for x in fields[11:15])
        except (OSError, IndexError, ValueError):
            pass
    return total


class Server:
    def __init__(self, python: str, app: Path, env: dict, log: Path) -> None:
        self.port = free_port()
        full = dict(os.environ, BENCH_PORT=str(self.port), ROBYN_PORT=str(self.port),
                    STONECHAT_PORT=str(self.port), **env)
        self.log = open(log, "wb")
        self.proc = subprocess.Popen(["taskset", "-c", "0", python, str(app), *FLAGS], cwd=str(app.parent),
                                     env=full, stdout=self.log, stderr=subprocess.STDOUT, start_new_session=True)
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                die(f"{app} exited {self.proc.returncode}; see {log}")
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=0.2):
                    return
            except OSError:
                time.sleep(0.05)
        self.stop()
        die(f"{app} did not listen within 60 s; see {log}")

    def stop(self) -> None:
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait(5)
        self.log.close()


def wrk(url: str, seconds: int, header: str | None) -> tuple[int, str]:
    argv = ["taskset", "-c", "1", "wrk", "-t1", "-c64", f"-d{seconds}s", url]
    if header:
        argv[5:5] = ["-H", header]
    out = subprocess.run(argv, capture_output=True, text=True).stdout
    m = re.search(r"(\d+) requests in", out)
    if not m:
        die(f"wrk gave no request count:\n{out}")
    if "Non-2xx" in out or "Socket errors" in out:
        die(f"errors under load ({url}):\n{out}")
    return int(m.group(1)), out


def measure(name: str, python: str, app: Path, scenario: str, seconds: int, out_dir: Path) -> dict:
    path, env, needs_cookie, marker = SCENARIOS[scenario]
    server = Server(python, app, env, out_dir / f"{name}-{scenario}.log")
    try:
        url = f"http://127.0.0.1:{server.port}{path}"
        with urllib.request.urlopen(url, timeout=10) as r:
            body = r.read().decode()
            cookie = r.headers.get("set-cookie")
        if marker is not None and marker not in body:
            die(f"{name} {path}: unexpected body {body[:200]!r}")
        header = None
        if needs_cookie:
            if not cookie:
                die(f"{name} {path}: no Set-Cookie")
            header = "Cookie: " + cookie.split(";", 1)[0]
        wrk(url, 1, header)  # warm-up
        before = cpu_ticks(server.proc.pid)
        requests, _ = wrk(url, seconds, header)
        cpu = (cpu_ticks(server.proc.pid) - before) / TICK
    finally:
        server.stop()
    return {"requests": requests, "rps": requests / seconds, "us_per_request": cpu / requests * 1e6}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--duration", type=int, default=3)
    parser.add_argument("--repeat", type=int, default=1)
    parser.add_argument("--scenarios", default=",".join(SCENARIOS))
    args = parser.parse_args()
    scenarios = [s for s in args.scenarios.split(",") if s]
    for s in scenarios:
        if s not in SCENARIOS:
            die(f"unknown scenario {s!r}; pick from {', '.join(SCENARIOS)}")
    for tool in ("wrk", "taskset"):
        if shutil.which(tool) is None:
            die(f"{tool} is needed")
    work = Path(tempfile.mkdtemp(prefix="stonechat-template-bench-"))
    shutil.copytree(APPS / "templates", work / "templates")
    source = (APPS / "template_app.py").read_text()
    (work / "robyn_app.py").write_text(source)
    (work / "stonechat_app.py").write_text(re.sub(r"\brobyn\b", "stonechat", source))
    peers = [("stonechat", stonechat_python(), work / "stonechat_app.py"),
             ("robyn", robyn_python(), work / "robyn_app.py")]
    results: dict[tuple[str, str], list[dict]] = {}
    for scenario in scenarios:
        for _ in range(args.repeat):
            for name, python, app in peers:  # alternate within the scenario
                results.setdefault((scenario, name), []).append(
                    measure(name, python, app, scenario, args.duration, work))
    print(f"\nserver CPU per request (µs, median of {args.repeat}), wrk -t1 -c64, {args.duration:g} s; logs in {work}")
    print(f"{'scenario':<10} {'stonechat':>10} {'Robyn':>10} {'ratio':>7}   {'stonechat rps':>13} {'Robyn rps':>10}")
    for scenario in scenarios:
        row = {}
        for name, _, _ in peers:
            runs = sorted(results[(scenario, name)], key=lambda r: r["us_per_request"])
            row[name] = runs[len(runs) // 2]
        ours, theirs = row["stonechat"], row["robyn"]
        print(f"{scenario:<10} {ours['us_per_request']:>10.1f} {theirs['us_per_request']:>10.1f} "
              f"{theirs['us_per_request'] / ours['us_per_request']:>6.2f}x   {ours['rps']:>13.0f} {theirs['rps']:>10.0f}")


if __name__ == "__main__":
    main()
