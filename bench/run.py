#!/usr/bin/env python3
"""stonechat vs Robyn: throughput, tail latency and server CPU per request.

    python3 bench/run.py [--duration 10] [--only http|ws] [--frameworks stonechat,robyn]

Every scenario gets a fresh server pinned to one core (taskset -c 0) and a load
generator pinned to the other (taskset -c 1): wrk for HTTP, bench/wsload.py for
WebSocket echo. The server's CPU time (all threads, all descendant processes) is
read from /proc before and after the measured window, giving CPU microseconds
per request: the figure that decides whether stonechat is cheaper to run than
Robyn, independent of how fast one client can push.

Standard library only. See bench/README.md.
"""

import argparse
import datetime as dt
import fcntl
import http.client
import json
import os
import platform
import re
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
BENCH = ROOT / "bench"
APPS = BENCH / "apps"
OUT = BENCH / "out"
RESULTS_MD = BENCH / "RESULTS.md"
ROBYN_VENV = BENCH / ".venv-robyn"
PROJECT_VENV = ROOT / ".venv"

CLK_TCK = os.sysconf("SC_CLK_TCK")
SERVER_FLAGS = ["--disable-openapi", "--log-level", "WARNING"]
MD_BEGIN = "<!-- bench/run.py:begin -->"
MD_END = "<!-- bench/run.py:end -->"
CPU_TARGET = 2.0

ECHO_BODY = ("stonechat-bench-" * 64)[:1024]  # 1 KiB, ASCII (so Robyn hands the handler a str)
TOKEN = "bench-token-123"


# --- scenarios ---------------------------------------------------------------
class HttpScenario:
    def __init__(self, key, label, path, method="GET", body=None, headers=None, expect=None):
        self.key, self.label, self.path, self.method = key, label, path, method
        self.body, self.headers, self.expect = body, headers or {}, expect

    def sync_variant(self):
        """The same scenario against the /sync/... routes (plain `def` handlers)."""
        path = "/sync" if self.path == "/" else "/sync" + self.path
        return HttpScenario("sync-" + self.key, "sync " + self.label, path, self.method,
                            self.body, self.headers, self.expect)

    def lua(self):
        lines = []
        if self.method != "GET":
            lines.append(f'wrk.method = "{self.method}"')
        if self.body is not None:
            lines.append(f'wrk.body = "{self.body}"')
            lines.append('wrk.headers["Content-Type"] = "text/plain; charset=utf-8"')
        for k, v in self.headers.items():
            lines.append(f'wrk.headers["{k}"] = "{v}"')
        return "\n".join(lines) + "\n" + WRK_DONE_LUA


def expect_text(text):
    def check(status, ctype, body):
        if status != 200:
            return f"status {status}"
        if not ctype.startswith("text/plain"):
            return f"content-type {ctype!r}"
        if body != text.encode():
            return f"body {body[:80]!r}"
        return None
    return check


def expect_echo(text):
    """The echoed body, byte for byte. The Content-Type may differ by design: Robyn's
    ``request.body`` is ``str`` for a UTF-8 body (so ``return request.body`` is text/plain),
    stonechat's is always ``bytes`` (application/octet-stream); see the README."""
    def check(status, ctype, body):
        if status != 200:
            return f"status {status}"
        if not ctype.startswith(("text/plain", "application/octet-stream")):
            return f"content-type {ctype!r}"
        if body != text.encode():
            return f"body {body[:80]!r}"
        return None
    return check


def expect_json(value):
    def check(status, ctype, body):
        if status != 200:
            return f"status {status}"
        if not ctype.startswith("application/json"):
            return f"content-type {ctype!r}"
        try:
            got = json.loads(body)
        except ValueError:
            return f"not JSON: {body[:80]!r}"
        if got != value:
            return f"body {got!r}, want {value!r}"
        return None
    return check


HTTP_SCENARIOS = [
    HttpScenario("text", "GET / (text)", "/", expect=expect_text("Hello, world!")),
    HttpScenario("json", "GET /json", "/json", expect=expect_json({"message": "Hello, world!"})),
    HttpScenario("param", "GET /user/:id", "/user/12345", expect=expect_json({"id": "12345"})),
    HttpScenario("query", "GET /q (query + header)", "/q?name=bench", headers={"x-token": TOKEN},
                 expect=expect_json({"name": "bench", "token": TOKEN})),
    HttpScenario("echo", "POST /echo (1 KiB)", "/echo", method="POST", body=ECHO_BODY,
                 expect=expect_echo(ECHO_BODY)),
]
WS_SCENARIOS = [("ws-1", "WS echo, 1 conn", 1), ("ws-100", "WS echo, 100 conns", 100)]

# wrk calls done() once at the end; print exact numbers so nothing is lost to
# wrk's rounded text output (which is parsed too, as a cross-check).
WRK_DONE_LUA = r"""
done = function(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    'BENCH_JSON {"requests": %.0f, "duration_us": %.0f, "bytes": %.0f, ' ..
    '"err_connect": %.0f, "err_read": %.0f, "err_write": %.0f, "err_status": %.0f, "err_timeout": %.0f, ' ..
    '"p50_us": %.1f, "p90_us": %.1f, "p99_us": %.1f, "p999_us": %.1f, "max_us": %.1f, "mean_us": %.1f}\n',
    summary.requests, summary.duration, summary.bytes,
    e.connect, e.read, e.write, e.status, e.timeout,
    latency:percentile(50), latency:percentile(90), latency:percentile(99),
    latency:percentile(99.9), latency.max, latency.mean))
end
"""


# --- helpers -----------------------------------------------------------------
def die(msg):
    print(f"bench: error: {msg}", file=sys.stderr)
    sys.exit(2)


def loud(msg):
    sys.stdout.flush()
    bar = "!" * 78
    print(f"\n{bar}\n!!! {msg}\n{bar}\n", file=sys.stderr, flush=True)


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def port_open(port):
    with socket.socket() as s:
        s.settimeout(0.2)
        return s.connect_ex(("127.0.0.1", port)) == 0


def cmd_output(argv, **kw):
    try:
        return subprocess.run(argv, capture_output=True, text=True, timeout=60, check=False, **kw).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return ""


# --- /proc accounting --------------------------------------------------------
def _stat_fields(path):
    """Fields of a /proc stat file after the ')' that ends the command name."""
    with open(path) as f:
        data = f.read()
    return data[data.rindex(")") + 2:].split()


def descendants(root):
    """root plus every live process below it (found through /proc/*/stat ppid)."""
    children = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            ppid = int(_stat_fields(f"/proc/{entry}/stat")[1])
        except (OSError, ValueError, IndexError):
            continue
        children.setdefault(ppid, []).append(int(entry))
    out, todo = [], [root]
    while todo:
        pid = todo.pop()
        out.append(pid)
        todo.extend(children.get(pid, []))
    return out


def core_busy():
    """Busy ticks per CPU from /proc/stat: everything but idle and iowait.

    irq/softirq ticks are kept: the kernel charges a softirq tick to the task it interrupted
    (as stime) as well as to the core's softirq column, so leaving them out would make a
    process look busier than its core. Softirq work done in ksoftirqd or in the idle task
    (loopback packets of the benchmark itself, partly) shows up as outside load: a few %."""
    busy = {}
    with open("/proc/stat") as f:
        for line in f:
            if line.startswith("cpu") and line[3].isdigit():
                name, *vals = line.split()
                vals = [int(v) for v in vals[:8]]
                busy[int(name[3:])] = sum(vals) - vals[3] - vals[4]  # guest is inside user
    return busy


def cpu_sample(root):
    """CPU seconds of root's process tree, with a per-thread view.

    /proc/PID/stat utime+stime already covers every thread of the process,
    including threads that have exited; cutime+cstime adds children it reaped.
    """
    total = 0
    threads = {}
    pids = descendants(root)
    for pid in pids:
        try:
            f = _stat_fields(f"/proc/{pid}/stat")
        except OSError:
            continue
        total += int(f[11]) + int(f[12]) + int(f[13]) + int(f[14])
        try:
            tids = os.listdir(f"/proc/{pid}/task")
        except OSError:
            continue
        for tid in tids:
            try:
                with open(f"/proc/{pid}/task/{tid}/comm") as fh:
                    comm = fh.read().strip()
                tf = _stat_fields(f"/proc/{pid}/task/{tid}/stat")
            except OSError:
                continue
            threads[(pid, int(tid))] = (comm, int(tf[11]) + int(tf[12]))
    return {"t": time.perf_counter(), "ticks": total, "threads": threads, "pids": pids, "cores": core_busy()}


def cpu_delta(before, after):
    ticks = after["ticks"] - before["ticks"]
    groups = {}
    live = 0
    for key, (comm, t) in after["threads"].items():
        d = t - before["threads"].get(key, (comm, 0))[1]
        live += d
        name = f"{comm} (pid {key[0]})" if len(after["pids"]) > 1 else comm
        g = groups.setdefault(name, [0, 0])
        g[0] += d
        g[1] += 1
    # Per-thread and per-process tick counts round separately; a few ticks of
    # difference is noise, more is CPU of threads that ended during the window.
    if ticks - live >= 5:
        groups["(threads that exited)"] = [ticks - live, 0]
    wall = after["t"] - before["t"]
    cores = {c: (after["cores"][c] - before["cores"].get(c, 0)) / CLK_TCK for c in after["cores"]}
    return {
        "cpu_s": ticks / CLK_TCK,
        "wall_s": wall,
        "core_busy_pct": {c: 100 * v / wall for c, v in cores.items()} if wall > 0 else {},
        "threads_by_name": {k: {"cpu_s": v[0] / CLK_TCK, "threads": v[1]}
                            for k, v in sorted(groups.items(), key=lambda kv: -kv[1][0]) if v[0] > 0},
        "threads_total": len(after["threads"]),
        "processes": len(after["pids"]),
    }


def other_load(cpu, server_core):
    """% of the server's core used by anything but the server during the window."""
    busy = cpu["core_busy_pct"].get(server_core)
    if busy is None or not cpu["wall_s"]:
        return None
    return max(0.0, busy - 100 * cpu["cpu_s"] / cpu["wall_s"])


def listening_pid_ok(port, pids):
    """Is the socket listening on 127.0.0.1:port owned by one of pids (not someone else)?"""
    inodes = set()
    try:
        with open("/proc/net/tcp") as f:
            for line in f.readlines()[1:]:
                parts = line.split()
                local, state, inode = parts[1], parts[3], parts[9]
                if state == "0A" and int(local.split(":")[1], 16) == port:
                    inodes.add(inode)
    except OSError:
        return True  # cannot tell; do not block the run on it
    for pid in pids:
        try:
            for fd in os.listdir(f"/proc/{pid}/fd"):
                try:
                    link = os.readlink(f"/proc/{pid}/fd/{fd}")
                except OSError:
                    continue
                if link.startswith("socket:[") and link[8:-1] in inodes:
                    return True
        except OSError:
            continue
    return False


# --- frameworks and servers --------------------------------------------------
class Framework:
    def __init__(self, name, python, app_dir):
        self.name, self.python, self.app_dir = name, python, app_dir
        self.version = "?"


def venv_import_ok(python, module):
    try:
        r = subprocess.run([str(python), "-c", (f"import {module}, sys; "
                                                f"print(getattr({module}, '__version__', '?'))")],
                           capture_output=True, text=True, timeout=120, cwd=str(ROOT), check=False)
    except (OSError, subprocess.SubprocessError) as exc:
        return False, str(exc)
    return r.returncode == 0, (r.stdout.strip() if r.returncode == 0 else r.stderr.strip()[-2000:])


def ensure_robyn(args):
    if args.robyn_python:
        python = Path(args.robyn_python)
    else:
        python = ROBYN_VENV / "bin" / "python"
        ok, _ = venv_import_ok(python, "robyn") if python.exists() else (False, "")
        if not ok:
            print(f"bench: creating {ROBYN_VENV.relative_to(ROOT)} (pip install {args.robyn_spec}) ...",
                  flush=True)
            if not python.exists():
                subprocess.run([sys.executable, "-m", "venv", str(ROBYN_VENV)], check=True)
            r = subprocess.run([str(python), "-m", "pip", "install", "--quiet", args.robyn_spec], check=False)
            if r.returncode != 0:
                die(f"pip install {args.robyn_spec} into {ROBYN_VENV} failed")
    ok, info = venv_import_ok(python, "robyn")
    if not ok:
        die(f"{python} cannot import robyn:\n{info}")
    fw = Framework("robyn", str(python), APPS)
    fw.version = info
    return fw


def ensure_stonechat(args, tmpdir):
    python = Path(args.stonechat_python) if args.stonechat_python else PROJECT_VENV / "bin" / "python"
    if not python.exists():
        die(f"{python} does not exist. Create the project venv first (`make test` or `make run`, "
            f"which run `pip install -e .` into .venv), pass --stonechat-python, "
            f"or run Robyn alone with --frameworks robyn.")
    ok, info = venv_import_ok(python, "stonechat")
    if not ok:
        die(f"{python} cannot import stonechat:\n{info}\n"
            f"(run `make test` to install the project into .venv, or use --frameworks robyn)")
    # Same app code, module name rewritten: `from robyn import ...` -> `from stonechat import ...`.
    app_dir = Path(tmpdir) / "stonechat_apps"
    app_dir.mkdir()
    for src in APPS.glob("*.py"):
        text = re.sub(r"\brobyn\b", "stonechat", src.read_text())
        (app_dir / src.name).write_text(text)
    fw = Framework("stonechat", str(python), app_dir)
    fw.version = info
    return fw


class Server:
    def __init__(self, fw, app, port, log_path, cpu, extra_args=()):
        self.fw, self.port, self.log_path = fw, port, log_path
        env = {k: v for k, v in os.environ.items()
               if not k.startswith(("ROBYN_", "STONECHAT_"))}
        env.update(BENCH_PORT=str(port), ROBYN_PORT=str(port), STONECHAT_PORT=str(port),
                   ROBYN_HOST="127.0.0.1", STONECHAT_HOST="127.0.0.1")
        self.argv = ["taskset", "-c", str(cpu), fw.python, str(fw.app_dir / app)] + SERVER_FLAGS + list(extra_args)
        self.log = open(log_path, "wb")  # noqa: SIM115 -- lives as long as the server; closed in stop()
        # stdin is /dev/null so Robyn's "port in use, enter another" prompt cannot hang us.
        self.proc = subprocess.Popen(self.argv, cwd=str(ROOT), env=env, stdin=subprocess.DEVNULL,
                                     stdout=self.log, stderr=subprocess.STDOUT, start_new_session=True)
        self.pid = self.proc.pid  # taskset execs the interpreter: same pid

    def log_tail(self, n=25):
        try:
            lines = Path(self.log_path).read_text(errors="replace").splitlines()
        except OSError:
            return ""
        return "\n".join(lines[-n:])

    def wait_ready(self, timeout, http_probe):
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"server exited with code {self.proc.returncode} before listening")
            if port_open(self.port):
                if not listening_pid_ok(self.port, descendants(self.pid)):
                    raise RuntimeError(f"port {self.port} is answered by a process that is not ours")
                if not http_probe:
                    return
                try:
                    c = http.client.HTTPConnection("127.0.0.1", self.port, timeout=2)
                    c.request("GET", "/")
                    c.getresponse().read()
                    c.close()
                    return
                except (OSError, http.client.HTTPException):
                    pass
            time.sleep(0.05)
        raise RuntimeError(f"server did not answer on port {self.port} within {timeout:.0f} s")

    def stop(self):
        # Robyn (actix) swallows SIGTERM: actix stops serving but the Python loop
        # keeps the process alive. SIGINT ends it; SIGKILL the group as a backstop.
        if self.proc.poll() is None:
            try:
                os.kill(self.pid, signal.SIGINT)
                self.proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                try:
                    os.killpg(self.pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
                self.proc.wait(timeout=5)
            except ProcessLookupError:
                pass
        try:  # leader gone; anything it left behind in its (our) process group goes too
            os.killpg(self.pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass
        self.log.close()


# --- load generators ---------------------------------------------------------
def http_check(port, sc):
    """One request through http.client: right status, content type and body?"""
    try:
        c = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
        body = sc.body.encode() if sc.body is not None else None
        headers = dict(sc.headers)
        if body is not None:
            headers["Content-Type"] = "text/plain; charset=utf-8"
        c.request(sc.method, sc.path, body=body, headers=headers)
        r = c.getresponse()
        data = r.read()
        c.close()
    except (OSError, http.client.HTTPException) as exc:
        return f"request failed: {exc}"
    return sc.expect(r.status, r.getheader("content-type", ""), data)


def parse_wrk_text(out):
    """Fallback / cross-check: numbers from wrk's own --latency text."""
    res = {}
    unit = {"us": 1e-3, "ms": 1.0, "s": 1e3, "m": 6e4}
    m = re.search(r"^\s*99%\s+([\d.]+)(us|ms|s|m)\s*$", out, re.MULTILINE)
    if m:
        res["p99_ms"] = float(m.group(1)) * unit[m.group(2)]
    m = re.search(r"^\s*(\d+) requests in ([\d.]+)(us|ms|s|m)", out, re.MULTILINE)
    if m:
        res["requests"] = int(m.group(1))
    m = re.search(r"^Requests/sec:\s+([\d.]+)", out, re.MULTILINE)
    if m:
        res["rps"] = float(m.group(1))
    m = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", out)
    res["socket_errors"] = {k: int(v) for k, v in zip(("connect", "read", "write", "timeout"),
                                                      m.groups())} if m else {}
    m = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    res["non_2xx"] = int(m.group(1)) if m else 0
    return res


def run_wrk(args, url, script, seconds):
    argv = ["taskset", "-c", str(args.load_cpu), "wrk", f"-t{args.threads}", f"-c{args.connections}",
            f"-d{seconds}s", "--latency", "-s", str(script), url]
    before = os.times()
    r = subprocess.run(argv, capture_output=True, text=True, timeout=seconds + 60, check=False)
    after = os.times()
    load_cpu = (after.children_user + after.children_system) - (before.children_user + before.children_system)
    return r, load_cpu


NOISE_PCT = 8.0  # quiet runs show up to ~5% on the load core (softirq outside wrk's context)


def note_noise(res):
    notes = res.setdefault("notes", [])
    other = res.get("other_on_server_core_pct")
    if other is not None and other > NOISE_PCT:
        notes.append(f"other processes used {other:.0f}% of the server's core during the run")
    busy, own = res.get("load_core_busy_pct"), res.get("load_cpu_pct")
    if busy is not None and own is not None and busy - own > NOISE_PCT:
        notes.append(f"other processes used {busy - own:.0f}% of the load generator's core")
    quiet = not notes  # no outside load on either core that would explain it
    if res["scenario"] != "ws-1" and res.get("server_cpu_pct", 100) < 90 and quiet:
        notes.append(f"server used only {res['server_cpu_pct']:.0f}% of its core: it was waiting, not "
                     "CPU-bound, so req/s understates it")


def measure_http(args, fw, sc, logdir):
    port = free_port()
    res = {"framework": fw.name, "scenario": sc.key, "label": sc.label, "kind": "http", "flags": [],
           "notes": []}
    script = logdir / f"{sc.key}.lua"
    script.write_text(sc.lua())
    server = Server(fw, "http_app.py", port, logdir / f"{fw.name}-{sc.key}.server.log", args.server_cpu,
                    shlex.split(args.server_args))
    try:
        server.wait_ready(args.start_timeout, http_probe=True)
        res["server_affinity"] = sorted(os.sched_getaffinity(server.pid))
        if res["server_affinity"] != [args.server_cpu]:
            res["flags"].append(f"server not pinned: affinity {res['server_affinity']}")
        problem = http_check(port, sc)
        if problem:
            res["flags"].append(f"WRONG RESPONSE: {problem}")
        url = f"http://127.0.0.1:{port}{sc.path}"
        if args.warmup > 0:
            run_wrk(args, url, script, args.warmup)
        before = cpu_sample(server.pid)
        r, load_cpu = run_wrk(args, url, script, args.duration)
        after = cpu_sample(server.pid)
        (logdir / f"{fw.name}-{sc.key}.wrk.txt").write_text(
            "$ " + shlex.join(r.args) + "\n" + r.stdout + r.stderr)
        if r.returncode != 0:
            raise RuntimeError(f"wrk exited {r.returncode}: {(r.stderr or r.stdout).strip()[-500:]}")
        text = parse_wrk_text(r.stdout)
        m = re.search(r"^BENCH_JSON (\{.*\})$", r.stdout, re.MULTILINE)
        w = json.loads(m.group(1)) if m else None
        cpu = cpu_delta(before, after)
        if w:
            requests = int(w["requests"])
            secs = w["duration_us"] / 1e6
            errs = {k[4:]: int(w[k]) for k in ("err_connect", "err_read", "err_write", "err_timeout")}
            non2xx = int(w["err_status"])
            p50, p99 = w["p50_us"] / 1000, w["p99_us"] / 1000
        else:
            res["flags"].append("wrk summary script output missing; used wrk's text")
            requests, secs = text.get("requests", 0), args.duration
            errs, non2xx = text["socket_errors"], text["non_2xx"]
            p50, p99 = None, text.get("p99_ms")
        # wrk's own text is the cross-check: an error either source reports counts.
        for k, v in text["socket_errors"].items():
            errs[k] = max(errs.get(k, 0), v)
        non2xx = max(non2xx, text["non_2xx"])
        res.update(
            requests=requests, seconds=secs, rps=requests / secs if secs else 0.0,
            p50_ms=p50, p99_ms=p99, socket_errors=errs, non_2xx=non2xx,
            server_cpu_s=cpu["cpu_s"], server_cpu_pct=100 * cpu["cpu_s"] / cpu["wall_s"],
            cpu_us_per_req=1e6 * cpu["cpu_s"] / requests if requests else None,
            load_cpu_pct=100 * load_cpu / secs if secs else None,
            threads=cpu["threads_by_name"], threads_total=cpu["threads_total"],
            other_on_server_core_pct=other_load(cpu, args.server_cpu),
            load_core_busy_pct=cpu["core_busy_pct"].get(args.load_cpu),
            processes=cpu["processes"],
        )
        note_noise(res)
        if non2xx:
            res["flags"].append(f"{non2xx} non-2xx/3xx responses")
        if any(errs.values()):
            res["flags"].append("socket errors " + ", ".join(f"{k} {v}" for k, v in errs.items() if v))
        if requests == 0:
            res["flags"].append("no requests completed")
        if server.proc.poll() is not None:
            res["flags"].append(f"server died during the run (exit {server.proc.returncode})")
    except Exception as exc:  # noqa: BLE001 -- a failed scenario is reported, the run goes on
        res["flags"].append(f"FAILED: {exc}")
        res["server_log_tail"] = server.log_tail()
    finally:
        server.stop()
    return res


def measure_ws(args, fw, key, label, conns, logdir):
    port = free_port()
    res = {"framework": fw.name, "scenario": key, "label": label, "kind": "ws", "flags": [],
           "notes": []}
    server = Server(fw, "ws_app.py", port, logdir / f"{fw.name}-{key}.server.log", args.server_cpu,
                    shlex.split(args.server_args))
    try:
        server.wait_ready(args.start_timeout, http_probe=False)
        res["server_affinity"] = sorted(os.sched_getaffinity(server.pid))
        if res["server_affinity"] != [args.server_cpu]:
            res["flags"].append(f"server not pinned: affinity {res['server_affinity']}")
        argv = ["taskset", "-c", str(args.load_cpu), sys.executable, str(BENCH / "wsload.py"),
                f"ws://127.0.0.1:{port}/ws", "-c", str(conns), "-d", str(args.duration),
                "-w", str(args.warmup), "--json"]
        before = after = None
        final = None
        lines = []
        proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        try:
            for line in proc.stdout:
                lines.append(line)
                if line.startswith("WSLOAD_PHASE measure-start"):
                    before = cpu_sample(server.pid)
                elif line.startswith("WSLOAD_PHASE measure-end"):
                    after = cpu_sample(server.pid)
                elif line.startswith("WSLOAD_JSON "):
                    final = json.loads(line[len("WSLOAD_JSON "):])
            proc.wait(timeout=args.duration + args.warmup + 120)
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
        (logdir / f"{fw.name}-{key}.wsload.txt").write_text("$ " + shlex.join(argv) + "\n" + "".join(lines))
        if not final or "error" in final:
            raise RuntimeError("wsload: " + (final or {}).get("error", "".join(lines)[-500:]))
        if before is None or after is None:
            raise RuntimeError("wsload printed no measurement window markers")
        cpu = cpu_delta(before, after)
        n = final["messages"]
        res.update(
            requests=n, seconds=final["duration_s"], rps=final["messages_per_s"],
            p50_ms=final["latency_ms"]["p50"], p99_ms=final["latency_ms"]["p99"],
            socket_errors={"closed_by_server": final["closed_by_server"]},
            non_2xx=final["mismatched"],
            server_cpu_s=cpu["cpu_s"], server_cpu_pct=100 * cpu["cpu_s"] / cpu["wall_s"],
            cpu_us_per_req=1e6 * cpu["cpu_s"] / n if n else None,
            load_cpu_pct=final["client_cpu_pct"],
            threads=cpu["threads_by_name"], threads_total=cpu["threads_total"],
            other_on_server_core_pct=other_load(cpu, args.server_cpu),
            load_core_busy_pct=cpu["core_busy_pct"].get(args.load_cpu),
            processes=cpu["processes"],
        )
        note_noise(res)
        if final["mismatched"]:
            res["flags"].append(f"{final['mismatched']} echoes did not match what was sent")
        if final["closed_by_server"]:
            res["flags"].append(f"{final['closed_by_server']} connections closed by the server")
        if n == 0:
            res["flags"].append("no messages completed")
        if server.proc.poll() is not None:
            res["flags"].append(f"server died during the run (exit {server.proc.returncode})")
    except Exception as exc:  # noqa: BLE001 -- a failed scenario is reported, the run goes on
        res["flags"].append(f"FAILED: {exc}")
        res["server_log_tail"] = server.log_tail()
    finally:
        server.stop()
    return res


# --- reporting ---------------------------------------------------------------
def fmt(v, spec):
    return "—" if v is None else format(v, spec)


def table_rows(results, frameworks, keys):
    by = {(r["framework"], r["scenario"]): r for r in results}
    rows = []
    for key, label in keys:
        s = by.get(("stonechat", key))
        rb = by.get(("robyn", key))
        if s is None and rb is None:
            continue
        def get(r, f):
            return None if r is None else r.get(f)
        sc_cpu, rb_cpu = get(s, "cpu_us_per_req"), get(rb, "cpu_us_per_req")
        ratio = rb_cpu / sc_cpu if sc_cpu and rb_cpu else None
        flags = []
        for r in (s, rb):
            if r and r["flags"]:
                flags.append(f"{r['framework']}: " + "; ".join(r["flags"]))
        notes = [f"{r['framework']}: " + "; ".join(r["notes"]) for r in (s, rb) if r and r.get("notes")]
        unit = "msg/s" if key.startswith("ws") else "req/s"
        rows.append([
            label,
            fmt(get(s, "rps"), ",.0f"), fmt(get(rb, "rps"), ",.0f"),
            fmt(sc_cpu, ".1f"), fmt(rb_cpu, ".1f"),
            (fmt(ratio, ".2f") + ("" if ratio is None else (" ok" if ratio >= CPU_TARGET else " below")))
            if ratio is not None else "—",
            fmt(get(s, "p99_ms"), ".2f"), fmt(get(rb, "p99_ms"), ".2f"),
            " | ".join(flags) if flags else "",
            unit,
            ("note: " + " | ".join(notes)) if notes else "",
        ])
    return rows


HEADERS = ["scenario", "stonechat /s", "robyn /s", "stonechat CPU µs", "robyn CPU µs",
           f"CPU ratio (robyn/stonechat, target ≥ {CPU_TARGET})", "stonechat p99 ms", "robyn p99 ms", "flags"]


def markdown_table(rows):
    out = ["| " + " | ".join(HEADERS) + " |", "|" + "|".join(["---"] + ["---:"] * 7 + ["---"]) + "|"]
    for r in rows:
        cells = r[:9]
        cells = [c.replace("|", "\\|") for c in cells]
        if cells[8]:
            cells[8] = "**" + cells[8] + "**"
        if r[10]:
            cells[8] = (cells[8] + " " if cells[8] else "") + r[10].replace("|", "\\|")
        out.append("| " + " | ".join(cells) + " |")
    return "\n".join(out)


def text_table(rows):
    hdr = ["scenario", "sc /s", "robyn /s", "sc µs/req", "robyn µs/req", "ratio", "sc p99ms", "rb p99ms"]
    w = [max(len(hdr[i]), *(len(r[i]) for r in rows)) if rows else len(hdr[i]) for i in range(8)]
    lines = ["  ".join(h.ljust(w[i]) if i == 0 else h.rjust(w[i]) for i, h in enumerate(hdr))]
    for r in rows:
        lines.append("  ".join(r[i].ljust(w[i]) if i == 0 else r[i].rjust(w[i]) for i in range(8)))
        if r[8]:
            lines.append("    !!! " + r[8])
        if r[10]:
            lines.append("    " + r[10])
    return "\n".join(lines)


def details_md(results):
    out = [("| framework | scenario | done | seconds | server CPU % of one core | other load on server core % "
           "| load generator CPU % | load core busy % | threads (processes) | server CPU by thread (s) |"),
           "|---|---|---:|---:|---:|---:|---:|---:|---:|---|"]
    for r in results:
        if "requests" not in r:
            out.append(f"| {r['framework']} | {r['label']} | — | — | — | — | — | — | — | "
                       f"**{'; '.join(r['flags'])}** |".replace("|**", "| **"))
            continue
        th = ", ".join(f"{k} ×{v['threads']}: {v['cpu_s']:.2f}" if v["threads"] else f"{k}: {v['cpu_s']:.2f}"
                       for k, v in list(r["threads"].items())[:6]).replace("|", "\\|")
        label = f"{r['label']} #{r['rep']}" if "rep" in r else r["label"]
        out.append(f"| {r['framework']} | {label} | {r['requests']:,} | {r['seconds']:.2f} | "
                   f"{r['server_cpu_pct']:.0f} | {fmt(r.get('other_on_server_core_pct'), '.0f')} | "
                   f"{fmt(r['load_cpu_pct'], '.0f')} | {fmt(r.get('load_core_busy_pct'), '.0f')} | "
                   f"{r['threads_total']} ({r['processes']}) | {th} |")
    return "\n".join(out)


def machine_info(frameworks, args):
    cpu_model = ""
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    cpu_model = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    wrk_version = cmd_output(["wrk", "-v"]).splitlines()
    info = {
        "date": dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        "nproc": os.cpu_count(),
        "cpu": cpu_model,
        "kernel": platform.release(),
        "harness_python": platform.python_version(),
        "wrk": wrk_version[0].split(" [")[0].split(" Copyright")[0] if wrk_version else "?",
        "git": cmd_output(["git", "-C", str(ROOT), "rev-parse", "--short", "HEAD"]) or "(no commit)",
    }
    for fw in frameworks:
        info[f"{fw.name}_python"] = cmd_output([fw.python, "-c", "import platform; print(platform.python_version())"])
        info[f"{fw.name}_version"] = fw.version
    return info


def render_markdown(results, frameworks, info, command, args, runs=None):
    fw_names = [f.name for f in frameworks]
    http_keys = [(s.key, s.label) for s in HTTP_SCENARIOS]
    sync_keys = [(s.sync_variant().key, s.sync_variant().label) for s in HTTP_SCENARIOS]
    ws_keys = [(k, label) for k, label, _ in WS_SCENARIOS]
    parts = [f"## Run {info['date']}", "",
             f"Command: `{command}`", "",
             (f"Machine: {info['nproc']} CPUs ({info['cpu']}), Linux {info['kernel']}; harness Python "
             f"{info['harness_python']}; {info['wrk']}; project commit {info['git']}.")]
    for fw in frameworks:
        parts.append(f"- {fw.name} {info.get(fw.name + '_version', '?')} on Python "
                     f"{info.get(fw.name + '_python', '?')} (`{os.path.relpath(fw.python, ROOT)}`)")
    parts += ["", (f"Frameworks measured: {', '.join(fw_names)}. Server pinned to CPU {args.server_cpu}, "
              f"load generator to CPU {args.load_cpu}; {args.warmup:g} s warm-up, {args.duration:g} s "
              f"measured per run; wrk -t{args.threads} -c{args.connections}; fresh server per run; "
              f"{args.repeat} run(s) per scenario and framework, the frameworks alternating; each cell is "
              f"the median run by server CPU per request (every run is listed under Details)."),
              ""]
    head_rows = table_rows(results, fw_names, http_keys + ws_keys)
    if head_rows:
        parts += ["### Headline: async handlers and WebSocket echo", "",
                  ("Throughput in requests/s (messages/s for WS); CPU in server CPU µs per request "
                  "(per echoed message for WS); ratio > 1 means stonechat uses less CPU."), "",
                  markdown_table(head_rows), ""]
    sync_rows = table_rows(results, fw_names, sync_keys)
    if sync_rows:
        parts += ["### Sync handlers (/sync/...)", "", markdown_table(sync_rows), ""]
    bad = [r for r in results if r["flags"]]
    if bad:
        parts += ["### Problems in this run", ""]
        parts += [f"- **{r['framework']} / {r['label']}: {'; '.join(r['flags'])}**" for r in bad]
        parts.append("")
    noisy = [r for r in results if r.get("notes")]
    if noisy:
        parts += ["### Notes (numbers kept, read with care)", ""]
        parts += [f"- {r['framework']} / {r['label']}: {'; '.join(r['notes'])}" for r in noisy]
        parts.append("")
    parts += ["### Details (every run)", "", details_md(runs or results), "",
              "### Method", "",
              ("- Each scenario starts a fresh server with `taskset -c 0` (one core), waits until the port "
              "answers, checks one response for the right status, content type and body, runs a warm-up, "
              "then the measured run with the load generator on the other core (`taskset -c 1`)."),
              ("- HTTP load: `wrk --latency` with a Lua script (POST body, `x-token` header, and a `done()` hook "
              "that prints exact request counts, error counts and latency percentiles). Keep-alive, "
              f"{args.connections} connections."),
              ("- WebSocket load: `bench/wsload.py` (closed loop, one 64-byte text message in flight per "
              "connection, masked client frames, echo verified byte for byte)."),
              ("- Server CPU = utime+stime from `/proc/PID/stat` (covers every thread, also ones that exited "
              "during the run) plus reaped children, summed over all descendant processes, read just before "
              "and just after the measured window. CPU µs per request = CPU seconds / completed requests. "
              "Resolution is one clock tick (10 ms) on a ~10 s window."),
              ("- 'other load on server core' is the busy time of the server's core (from /proc/stat) minus "
              "the server's own CPU time: anything else that ran there (another build or test suite on the "
              "same machine); 'load core busy' against 'load generator CPU' shows the same for the client's core. "
              "Above 8% outside load on either core the run gets a note; rerun on a quiet machine for numbers "
              "to keep. CPU µs per request holds up better under such noise than requests/s and p99, but not fully "
              "(cache and scheduling effects)."),
              ("- Absolute numbers drift between runs on a shared VM (up to ~25% seen with no visible "
               "outside load); compare the frameworks within one run and repeat before trusting small changes."),
              ("- A result is only meaningful if the server is the bottleneck: compare 'server CPU %' with "
              "'load generator CPU %' in Details. For the 1-connection WS case the server is latency-bound, "
              "so CPU µs per message includes idle-wake overhead, by design."),
              "- Robyn is run with its defaults (`--processes 1 --workers 1`) plus `--disable-openapi "
              "--log-level WARNING`; stonechat runs the same app file with `robyn` renamed to `stonechat` "
              "and the same flags." + (f" Extra server flags: `{args.server_args}`." if args.server_args else "")]
    return "\n".join(parts) + "\n"


def write_results_md(section):
    header = ("# Benchmark results\n\n"
              "Written by `bench/run.py` (see bench/README.md). The section between the markers is "
              "replaced on every run; anything outside them is kept.\n\n")
    block = f"{MD_BEGIN}\n{section}{MD_END}\n"
    if RESULTS_MD.exists():
        old = RESULTS_MD.read_text()
        if MD_BEGIN in old and MD_END in old:
            pre, rest = old.split(MD_BEGIN, 1)
            post = rest.split(MD_END, 1)[1].lstrip("\n")
            RESULTS_MD.write_text(pre + block + post)
            return
        RESULTS_MD.write_text(old.rstrip("\n") + "\n\n" + block)
        return
    RESULTS_MD.write_text(header + block)


# --- main --------------------------------------------------------------------
def main():
    ap = argparse.ArgumentParser(description="stonechat vs Robyn benchmark (see bench/README.md)")
    ap.add_argument("--duration", type=int, default=6, help="measured seconds per scenario run (default 6)")
    ap.add_argument("--repeat", type=int, default=3,
                    help="runs per scenario and framework, interleaved; the table shows the median (default 3)")
    ap.add_argument("--warmup", type=int, default=2, help="warm-up seconds per scenario (default 2)")
    ap.add_argument("--only", choices=["http", "ws"], help="run only the HTTP or only the WebSocket scenarios")
    ap.add_argument("--frameworks", default="stonechat,robyn", help="comma list (default stonechat,robyn)")
    ap.add_argument("--scenarios", help="comma list of scenario keys to run, e.g. text,json,ws-100 "
                    "(sync ones are sync-text, ...)")
    ap.add_argument("--no-sync", action="store_true", help="skip the /sync/... handler variants")
    ap.add_argument("--connections", type=int, default=64, help="wrk connections (default 64)")
    ap.add_argument("--threads", type=int, default=1, help="wrk threads (default 1)")
    ap.add_argument("--server-cpu", type=int, default=0)
    ap.add_argument("--load-cpu", type=int, default=1)
    ap.add_argument("--start-timeout", type=float, default=30)
    ap.add_argument("--robyn-python", help="use this interpreter for Robyn instead of bench/.venv-robyn")
    ap.add_argument("--robyn-spec", default="robyn", help="what to pip install into bench/.venv-robyn")
    ap.add_argument("--stonechat-python", help="interpreter with stonechat installed (default .venv/bin/python)")
    ap.add_argument("--server-args", default="", help="extra flags for both servers, e.g. '--workers 2'")
    ap.add_argument("--no-write", action="store_true", help="do not update bench/RESULTS.md")
    args = ap.parse_args()

    if not 0 < args.duration <= 300 or not 0 <= args.warmup <= 60:
        die("--duration must be in (0, 300] and --warmup in [0, 60]")
    names = [n.strip() for n in args.frameworks.split(",") if n.strip()]
    if not names or set(names) - {"stonechat", "robyn"}:
        die("--frameworks takes stonechat and/or robyn")
    if shutil.which("wrk") is None:
        die("wrk is not installed. Install it with: apt-get install wrk")
    if shutil.which("taskset") is None:
        die("taskset is not installed (package util-linux)")
    cpus = os.sched_getaffinity(0)
    if args.server_cpu == args.load_cpu or not {args.server_cpu, args.load_cpu} <= cpus:
        die(f"need two distinct usable CPUs for --server-cpu/--load-cpu; this process may use {sorted(cpus)}")
    os.sched_setaffinity(0, {args.load_cpu})  # keep the harness itself off the server's core

    # Two benchmark runs at once would share the same two cores and spoil each other's numbers.
    OUT.mkdir(parents=True, exist_ok=True)
    lock = open(OUT / ".lock", "a+")  # noqa: SIM115 -- held (locked) until the process exits
    try:
        fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        lock.seek(0)
        die(f"another bench/run.py is running ({lock.read().strip() or 'pid unknown'}); "
            "wait for it, two runs at once spoil each other's numbers")
    lock.seek(0)
    lock.truncate()
    lock.write(f"pid {os.getpid()}, started {dt.datetime.now():%H:%M:%S}\n")
    lock.flush()

    want = {s.strip() for s in args.scenarios.split(",")} if args.scenarios else None
    known = [s.key for s in HTTP_SCENARIOS] + [s.sync_variant().key for s in HTTP_SCENARIOS] + \
        [w[0] for w in WS_SCENARIOS]
    if want and want - set(known):
        die(f"unknown scenario(s) {', '.join(sorted(want - set(known)))}; known: {', '.join(known)}")
    tmpdir = tempfile.mkdtemp(prefix="stonechat-bench-")
    try:
        frameworks = []
        for n in names:  # in the order given; each framework runs all its scenarios in turn
            frameworks.append(ensure_robyn(args) if n == "robyn" else ensure_stonechat(args, tmpdir))
        stamp = dt.datetime.now().strftime("%Y%m%d-%H%M%S")
        logdir = OUT / stamp
        logdir.mkdir(parents=True, exist_ok=True)
        command = "python3 bench/run.py " + shlex.join(sys.argv[1:]) if sys.argv[1:] else "python3 bench/run.py"
        print(f"bench: logs in {logdir.relative_to(ROOT)}", flush=True)

        http_list = [] if args.only == "ws" else list(HTTP_SCENARIOS)
        if http_list and not args.no_sync:
            http_list += [s.sync_variant() for s in HTTP_SCENARIOS]
        ws_list = [] if args.only == "http" else list(WS_SCENARIOS)
        if want:
            http_list = [s for s in http_list if s.key in want]
            ws_list = [w for w in ws_list if w[0] in want]
        # Frameworks alternate within each scenario, and each pair repeats: noise from the host
        # (a shared VM) then hits both sides alike, and the median run shows the typical cost.
        runs = []
        for sc in http_list:
            for rep in range(args.repeat):
                for fw in frameworks:
                    print(f"bench: {fw.name:9s} {sc.label} [{rep + 1}/{args.repeat}] ...", end=" ", flush=True)
                    r = measure_http(args, fw, sc, logdir)
                    r["rep"] = rep + 1
                    runs.append(r)
                    report_line(r)
        for key, label, conns in ws_list:
            for rep in range(args.repeat):
                for fw in frameworks:
                    print(f"bench: {fw.name:9s} {label} [{rep + 1}/{args.repeat}] ...", end=" ", flush=True)
                    r = measure_ws(args, fw, key, label, conns, logdir)
                    r["rep"] = rep + 1
                    runs.append(r)
                    report_line(r)
        results = median_runs(runs)

        info = machine_info(frameworks, args)
        (logdir / "results.json").write_text(json.dumps({"command": command, "machine": info,
                                                         "results": results, "runs": runs},
                                                        indent=2, default=str))
        fw_names = [f.name for f in frameworks]
        keys = [(s.key, s.label) for s in http_list] + [(k, label) for k, label, _ in ws_list]
        print("\n" + text_table(table_rows(results, fw_names, keys)))
        section = render_markdown(results, frameworks, info, command, args, runs)
        (logdir / "RESULTS.md").write_text(section)
        if not args.no_write:
            write_results_md(section)
            print(f"\nbench: wrote {RESULTS_MD.relative_to(ROOT)} (and {logdir.relative_to(ROOT)}/)")
        noted = sum(1 for r in results if r.get("notes"))
        if noted:
            print(f"bench: {noted} run(s) have notes (outside load on a core, or a server that was not "
                  f"CPU-bound); see the table above and the Details in RESULTS.md", file=sys.stderr)
        bad = [r for r in results if r["flags"]]
        if bad:
            loud(f"{len(bad)} run(s) had problems; their numbers are not trustworthy:\n" +
                 "\n".join(f"!!!   {r['framework']} / {r['label']}: {'; '.join(r['flags'])}" for r in bad))
            return 1
        return 0
    finally:
        shutil.rmtree(tmpdir, ignore_errors=True)


def median_runs(runs):
    """One result per (framework, scenario): the run with the median CPU per request among
    runs without problems. Problems seen in any run are kept on the result, so a wrong
    response in one repeat still shows in the table."""
    groups = {}
    for r in runs:
        groups.setdefault((r["framework"], r["scenario"]), []).append(r)
    chosen = []
    for group in groups.values():
        good = sorted((r for r in group if not r["flags"] and r.get("cpu_us_per_req")),
                      key=lambda r: r["cpu_us_per_req"])
        pick = dict(good[(len(good) - 1) // 2] if good else group[0])
        pick["cpu_samples"] = [r.get("cpu_us_per_req") for r in group]
        pick["flags"] = [f"[run {r['rep']}] {f}" for r in group for f in r["flags"]]
        chosen.append(pick)
    return chosen


def report_line(r):
    if "requests" in r:
        print(f"{r['rps']:,.0f}/s  CPU {fmt(r['cpu_us_per_req'], '.1f')} µs/req  "
              f"p99 {fmt(r['p99_ms'], '.2f')} ms  (server {r['server_cpu_pct']:.0f}% CPU, "
              f"load gen {fmt(r['load_cpu_pct'], '.0f')}%)", flush=True)
    else:
        print("FAILED", flush=True)
    for f in r["flags"]:
        print(f"    !!! {f}", flush=True)
    for n in r.get("notes", []):
        print(f"    note: {n}", flush=True)


if __name__ == "__main__":
    sys.exit(main())
