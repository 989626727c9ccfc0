#!/usr/bin/env python3
"""stonechat beside its peers: server CPU per request, throughput, tail latency.

    python3 bench/run.py [--frameworks stonechat,socketify,...] [--forms sync,async]
                         [--scenarios text,json,ws-100] [--repeat 3] [--duration 5]

Every run gets a fresh server pinned to one core (taskset -c 0) and a load generator pinned
to the other (taskset -c 1): wrk for HTTP, bench/wsload.py for WebSocket echo, and
bench/httpload.py for the fixed-rate latency phase. The server's CPU time (all threads, all
descendant processes) is read from /proc before and after the measured window, giving CPU
microseconds per request: the figure that tells which server is cheaper to run, independent
of how fast one client can push.

The peers (socketify, uvicorn+Starlette, Granian+Starlette, Sanic, Robyn, and a bare
uvloop+httptools ceiling) each run from their own venv under bench/, created on demand with
pinned versions (PEERS below). Scenarios live in a registry (SCENARIOS): a scenario names
the app role it needs, and a peer takes part in the scenarios whose role its apps implement.

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
import resource
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
PROJECT_VENV = ROOT / ".venv"

CLK_TCK = os.sysconf("SC_CLK_TCK")
ROBYN_FLAGS = ["--disable-openapi", "--log-level", "WARNING"]  # stonechat takes the same flags
MD_BEGIN = "<!-- bench/run.py:begin -->"
MD_END = "<!-- bench/run.py:end -->"

ECHO_BODY = ("stonechat-bench-" * 64)[:1024]  # 1 KiB, ASCII (so Robyn hands the handler a str)
TOKEN = "bench-token-123"

# Targets of issue 13, checked in the report (ratios within one run).
ASYNC_OVER_SYNC_MAX = 1.15      # stonechat async CPU <= 1.15 x its sync CPU (HTTP)
SYNC_OVER_CEILING_MAX = 1.6     # stonechat sync <= 1.6 x the raw ceiling on GET / and GET /json
ROBYN_RATIO_MIN = 2.0           # Robyn's CPU per request >= 2 x stonechat's (the first target)


# --- scenarios: a registry ------------------------------------------------------------------------
#
# A scenario says what load it puts on a server (kind: which measure function and load
# generator), which *app role* it needs ("http" = the five routes of apps/http_app.py, "ws" = the
# echo of apps/ws_app.py), and optionally a server *variant* (a configuration such as "access log
# on") that a peer must declare to take part. Later scenarios slot in by registering here and by
# giving the peers that implement them the role (an app file) or variant (extra flags/env):
#   - template render: role "template";
#   - an ASGI app served by uvicorn / Granian / stonechat's ASGI mount: role "asgi", which the
#     peers map to one shared ASGI app file launched by each server;
#   - access log or metrics on: the existing scenarios again with variant="access-log" /
#     "metrics", each peer declaring in PEERS how it turns that on.
# A scenario is registered only with the apps that implement it. Registered: role "static"
# (static-1k, static-1m: apps/static_app.py, serve_directory; stonechat and Robyn).

class HttpScenario:
    kind = "http"

    def __init__(self, key, label, path, method="GET", body=None, headers=None, expect=None,
                 role="http", variant=None, latency=True):
        self.key, self.label, self.path, self.method = key, label, path, method
        self.body, self.headers, self.expect = body, headers or {}, expect
        self.role, self.variant, self.latency = role, variant, latency

    def path_for(self, prefix):
        """The request path under a form's route prefix ("" for async, "/sync" for sync)."""
        if not prefix:
            return self.path
        return prefix if self.path == "/" else prefix + self.path

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


class WsScenario:
    kind = "ws"
    latency = False

    def __init__(self, key, label, connections, role="ws", variant=None):
        self.key, self.label, self.connections = key, label, connections
        self.role, self.variant = role, variant


SCENARIOS = []


def register(scenario):
    if any(s.key == scenario.key for s in SCENARIOS):
        raise ValueError(f"scenario {scenario.key!r} registered twice")
    SCENARIOS.append(scenario)
    return scenario


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


def expect_file(size):
    """apps/static_app.py's file of ``size`` bytes (the 0..255 pattern), whole."""
    want = bytes(range(256)) * (size // 256)

    def check(status, ctype, body):
        if status != 200:
            return f"status {status}"
        if body != want:
            return f"body of {len(body)} bytes, want the {size}-byte file"
        return None
    return check


register(HttpScenario("text", "GET / (text)", "/", expect=expect_text("Hello, world!")))
register(HttpScenario("json", "GET /json", "/json", expect=expect_json({"message": "Hello, world!"})))
register(HttpScenario("param", "GET /user/:id", "/user/12345", expect=expect_json({"id": "12345"})))
register(HttpScenario("query", "GET /q (query + header)", "/q?name=bench", headers={"x-token": TOKEN},
                      expect=expect_json({"name": "bench", "token": TOKEN})))
register(HttpScenario("echo", "POST /echo (1 KiB)", "/echo", method="POST", body=ECHO_BODY,
                      expect=expect_echo(ECHO_BODY)))
register(HttpScenario("static-1k", "GET /static/1k.bin (file)", "/static/1k.bin", role="static",
                      expect=expect_file(1024)))
register(HttpScenario("static-1m", "GET /static/1m.bin (file)", "/static/1m.bin", role="static",
                      expect=expect_file(1024 * 1024), latency=False))
# The price of observing (issue 12): stonechat with its access log, or its Prometheus metrics, on.
for _key, _label, _path, _expect in (("text", "GET / (text)", "/", expect_text("Hello, world!")),
                                     ("json", "GET /json", "/json", expect_json({"message": "Hello, world!"}))):
    register(HttpScenario(f"{_key}-log", f"{_label}, access log on", _path, expect=_expect,
                          variant="access-log", latency=False))
    register(HttpScenario(f"{_key}-jsonlog", f"{_label}, access log on (JSON lines)", _path, expect=_expect,
                          variant="access-log-json", latency=False))
    register(HttpScenario(f"{_key}-metrics", f"{_label}, metrics on", _path, expect=_expect,
                          variant="metrics", latency=False))
register(WsScenario("ws-1", "WS echo, 1 conn", 1))
register(WsScenario("ws-100", "WS echo, 100 conns", 100))

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


# --- peers: what runs, from which venv, with which app per role and form -----------------------
#
# apps[role][form] = (app file, route prefix for http / WebSocket path for ws). Forms are "sync"
# (plain `def` handlers, run on the event loop) and "async" (`async def`); the raw ceiling has one
# form, "raw", compared with both. A peer without a form for a role simply has no column there.

class PeerDef:
    def __init__(self, name, title, pins, probe, apps, launch, venv=None, notes="", variants=None):
        self.name, self.title, self.pins, self.probe = name, title, pins, probe
        self.apps, self.launch, self.notes = apps, launch, notes
        self.venv = venv if venv is not None else BENCH / f".venv-{name}"
        self.variants = variants or {}  # variant name -> (extra argv, extra env); none yet


def launch_script(extra=()):
    """`python app.py [flags]`: the app file starts its own server."""
    def argv(python, app_dir, app, port):
        return [python, str(app_dir / app)] + list(extra)
    return argv


def launch_uvicorn(python, app_dir, app, port):
    return [python, "-m", "uvicorn", f"{Path(app).stem}:app", "--app-dir", str(app_dir),
            "--host", "127.0.0.1", "--port", str(port), "--loop", "uvloop", "--http", "httptools",
            "--ws", "websockets-sansio", "--log-level", "warning", "--no-access-log"]


def launch_uvicorn_asgi(python, app_dir, app, port):
    """A stonechat app under uvicorn through its ASGI face: `module:app.asgi`."""
    argv = launch_uvicorn(python, app_dir, app, port)
    argv[argv.index(f"{Path(app).stem}:app")] = f"{Path(app).stem}:app.asgi"
    return argv


def launch_granian(python, app_dir, app, port):
    return [python, "-m", "granian", "--interface", "asgi", "--loop", "uvloop", "--http", "1",
            "--workers", "1", "--runtime-threads", "1", "--log-level", "warning", "--no-access-log",
            "--working-dir", str(app_dir), "--host", "127.0.0.1", "--port", str(port),
            f"{Path(app).stem}:app"]


SYNC_ASYNC_HTTP = {"sync": ("http_app.py", "/sync"), "async": ("http_app.py", "")}
STATIC = {"async": ("static_app.py", "")}  # serve_directory: no handler, so one form
STARLETTE_DEPS = ["starlette==1.10.0", "uvloop==0.23.0"]

PEERS = {p.name: p for p in [
    PeerDef("raw", "raw ceiling", ["uvloop==0.23.0", "httptools==0.9.0", "orjson==3.13.0", "websockets==17.4"],
            "httptools",
            {"http": {"raw": ("raw_server.py", "")}, "ws": {"raw": ("raw_server.py", "/ws")}},
            launch_script(),
            notes="apps/raw_server.py: bare uvloop Protocol + httptools parser, orjson, no framework"),
    PeerDef("stonechat", "stonechat", [], "stonechat",
            {"http": SYNC_ASYNC_HTTP, "static": STATIC,
             "ws": {"sync": ("ws_sync_app.py", "/sync/ws"), "async": ("ws_app.py", "/ws")}},
            launch_script(ROBYN_FLAGS), venv=PROJECT_VENV,
            notes="the project's .venv; apps/http_app.py, ws_app.py, ws_sync_app.py with `robyn` renamed",
            variants={"access-log": (["--access-log", "/tmp/stonechat-bench-access.log"], {}),
                      "access-log-json": (["--access-log", "/tmp/stonechat-bench-access.log",
                                           "--access-log-format", "json"], {}),
                      "metrics": ([], {"BENCH_METRICS": "1"})}),
    PeerDef("socketify", "socketify", ["socketify==0.0.31"], "socketify",
            {"http": {"sync": ("socketify_app.py", "/sync"), "async": ("socketify_app.py", "")},
             "ws": {"sync": ("socketify_app.py", "/sync/ws"), "async": ("socketify_app.py", "/ws")}},
            launch_script(), notes="apps/socketify_app.py (uWebSockets C++ through CFFI), App() defaults"),
    PeerDef("robyn", "Robyn", ["robyn==0.88.0"], "robyn",
            {"http": SYNC_ASYNC_HTTP, "static": STATIC, "ws": {"async": ("ws_app.py", "/ws")}},
            launch_script(ROBYN_FLAGS),
            notes="apps/http_app.py, ws_app.py; defaults (1 process, 1 worker); WS handlers async only"),
    PeerDef("sanic", "Sanic", ["sanic==25.12.1"], "sanic",
            {"http": {"sync": ("sanic_app.py", "/sync"), "async": ("sanic_app.py", "")},
             "ws": {"async": ("sanic_app.py", "/ws")}},
            launch_script(), notes="apps/sanic_app.py, single_process, no access log; WS handlers async only"),
    PeerDef("uvicorn", "uvicorn+Starlette",
            ["uvicorn==0.54.0", "httptools==0.9.0", "websockets==17.4"] + STARLETTE_DEPS, "uvicorn",
            {"http": {"async": ("starlette_app.py", "")}, "ws": {"async": ("starlette_app.py", "/ws")}},
            launch_uvicorn,
            notes="apps/starlette_app.py; uvicorn --loop uvloop --http httptools --ws websockets-sansio; async only"),
    PeerDef("granian", "Granian+Starlette", ["granian==2.8.7"] + STARLETTE_DEPS, "granian",
            {"http": {"async": ("starlette_app.py", "")}, "ws": {"async": ("starlette_app.py", "/ws")}},
            launch_granian,
            notes="apps/starlette_app.py (the same Starlette app) on Granian's ASGI interface, "
                  "--loop uvloop --http 1 --workers 1 --runtime-threads 1; async only"),
    # The price of ASGI (docs/asgi.md), opt-in with --frameworks: both run from the project's .venv.
    PeerDef("mount", "Starlette mounted in stonechat", [], "starlette",
            {"http": {"async": ("mount_app.py", "")}, "ws": {"async": ("mount_app.py", "/ws")}},
            launch_script(ROBYN_FLAGS), venv=PROJECT_VENV,
            notes="apps/mount_app.py: stonechat's server, app.mount('/', the Starlette app); async only"),
    PeerDef("asgi", "stonechat app on uvicorn", [], "uvicorn",
            {"http": SYNC_ASYNC_HTTP, "ws": {"async": ("ws_app.py", "/ws")}},
            launch_uvicorn_asgi, venv=PROJECT_VENV,
            notes="apps/http_app.py, ws_app.py as `uvicorn module:app.asgi` (uvloop, httptools, websockets-sansio)"),
]}
PEER_ORDER = ["raw", "stonechat", "socketify", "robyn", "sanic", "uvicorn", "granian", "mount", "asgi"]
DEFAULT_FRAMEWORKS = ",".join(PEER_ORDER[:-2])  # the two ASGI columns only when asked for
FORM_ORDER = {"raw": 0, "sync": 1, "async": 2}


class Target:
    """One column: a peer in one form (stonechat sync, socketify async, the raw ceiling, ...)."""

    def __init__(self, peer, form, python, app_dir, version):
        self.peer, self.form, self.python, self.app_dir, self.version = peer, form, python, app_dir, version
        self.name = peer.name
        self.key = f"{peer.name}/{form}"

    @property
    def title(self):
        if self.form == "raw":
            return self.peer.title
        if len(self.peer_forms()) == 1:
            return self.peer.title
        return f"{self.peer.title} {self.form}"

    def peer_forms(self):
        return {f for role in self.peer.apps.values() for f in role}

    def supports(self, sc):
        role = self.peer.apps.get(sc.role, {})
        if self.form not in role:
            return False
        return sc.variant is None or sc.variant in self.peer.variants

    def app(self, sc):
        return self.peer.apps[sc.role][self.form]


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


def raise_nofile():
    """Soft RLIMIT_NOFILE up to the hard limit (inherited by the servers and clients we start)."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    return resource.getrlimit(resource.RLIMIT_NOFILE)


def take_lock(name="run.py"):
    """One benchmark at a time: two at once would share the same two cores."""
    OUT.mkdir(parents=True, exist_ok=True)
    lock = open(OUT / ".lock", "a+")  # noqa: SIM115 -- held (locked) until the process exits
    try:
        fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        lock.seek(0)
        die(f"another benchmark is running ({lock.read().strip() or 'pid unknown'}); "
            "wait for it, two runs at once spoil each other's numbers")
    lock.seek(0)
    lock.truncate()
    lock.write(f"bench/{name} pid {os.getpid()}, started {dt.datetime.now():%H:%M:%S}\n")
    lock.flush()
    return lock


def pin_cpus(server_cpu, load_cpu):
    cpus = os.sched_getaffinity(0)
    if server_cpu == load_cpu or not {server_cpu, load_cpu} <= cpus:
        die(f"need two distinct usable CPUs for --server-cpu/--load-cpu; this process may use {sorted(cpus)}")
    os.sched_setaffinity(0, {load_cpu})  # keep the harness itself off the server's core



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



# --- venvs and servers --------------------------------------------------------------------------
def venv_import_ok(python, module):
    try:
        r = subprocess.run([str(python), "-c", (f"import importlib.metadata, {module}; print(getattr({module}, "
                                                f"'__version__', None) or importlib.metadata.version('{module}'))")],
                           capture_output=True, text=True, timeout=120, cwd=str(ROOT), check=False)
    except (OSError, subprocess.SubprocessError) as exc:
        return False, str(exc)
    return r.returncode == 0, (r.stdout.strip() if r.returncode == 0 else r.stderr.strip()[-2000:])


def venv_packages(python):
    """name==version of what the venv holds (recorded with each run)."""
    out = cmd_output([str(python), "-m", "pip", "list", "--format=freeze", "--disable-pip-version-check"])
    return [line for line in out.splitlines() if "==" in line]


def pins_satisfied(python, pins):
    have = {line.split("==")[0].lower().replace("_", "-"): line.split("==")[1]
            for line in venv_packages(python)}
    for pin in pins:
        name, _, version = pin.partition("==")
        if have.get(name.lower().replace("_", "-")) != version:
            return False
    return True


def ensure_peer(peer, python_override=None):
    """The interpreter for a peer: its own venv under bench/ (created on demand, pinned), the
    project's .venv for stonechat, or an interpreter given on the command line. Returns
    (python, version) or raises RuntimeError saying why not."""
    if python_override:
        python = Path(python_override)
    elif peer.venv == PROJECT_VENV:
        python = PROJECT_VENV / "bin" / "python"
        if not python.exists():
            raise RuntimeError(
                f"{python} does not exist. Create the project venv first (`make test` or `make run`, "
                f"which run `pip install -e .` into .venv), or pass --stonechat-python.")
    else:
        python = peer.venv / "bin" / "python"
        ok = python.exists() and venv_import_ok(python, peer.probe)[0] and pins_satisfied(python, peer.pins)
        if not ok:
            print(f"bench: preparing {os.path.relpath(peer.venv, ROOT)} (pip install {' '.join(peer.pins)}) ...",
                  flush=True)
            if not python.exists():
                subprocess.run([sys.executable, "-m", "venv", str(peer.venv)], check=True)
            r = subprocess.run([str(python), "-m", "pip", "install", "--quiet", "--disable-pip-version-check",
                                *peer.pins], capture_output=True, text=True, check=False)
            if r.returncode != 0:
                raise RuntimeError(f"pip install {' '.join(peer.pins)} into {peer.venv} failed:\n"
                                   + (r.stderr or r.stdout).strip()[-3000:])
    ok, info = venv_import_ok(python, peer.probe)
    if not ok:
        raise RuntimeError(f"{python} cannot import {peer.probe}:\n{info}")
    return str(python), info


def stonechat_app_dir(tmpdir):
    """The Robyn-API app files with `robyn` renamed to `stonechat` (the code is otherwise identical)."""
    app_dir = Path(tmpdir) / "stonechat_apps"
    if not app_dir.exists():
        app_dir.mkdir()
        for src in APPS.glob("*.py"):
            (app_dir / src.name).write_text(re.sub(r"\brobyn\b", "stonechat", src.read_text()))
    return app_dir


class Server:
    def __init__(self, target, app, port, log_path, cpu, extra_args=(), extra_env=None):
        self.port, self.log_path = port, log_path
        env = {k: v for k, v in os.environ.items()
               if not k.startswith(("ROBYN_", "STONECHAT_", "GRANIAN_", "SANIC_", "UVICORN_"))}
        env.update(BENCH_PORT=str(port), ROBYN_PORT=str(port), STONECHAT_PORT=str(port),
                   ROBYN_HOST="127.0.0.1", STONECHAT_HOST="127.0.0.1", PYTHONUNBUFFERED="1")
        env.update(extra_env or {})
        argv = target.peer.launch(target.python, target.app_dir, app, port) + list(extra_args)
        self.argv = ["taskset", "-c", str(cpu)] + argv
        # An access log the variant writes starts empty and is removed at stop(): a run writes
        # ~100 MB of it, and a file grown to gigabytes over a whole run (what logrotate exists
        # to prevent) adds its own disk traffic to later runs.
        extra = list(extra_args)
        self.access_log = (Path(extra[extra.index("--access-log") + 1])
                           if "--access-log" in extra[:-1] else None)
        if self.access_log is not None:
            self.access_log.unlink(missing_ok=True)
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
                raise RuntimeError(f"server exited with code {self.proc.returncode} before listening:\n"
                                   + self.log_tail(8))
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
        if self.access_log is not None:
            self.access_log.unlink(missing_ok=True)

    def pinned_flag(self, cpu):
        aff = sorted(os.sched_getaffinity(self.pid))
        return None if aff == [cpu] else f"server not pinned: affinity {aff}"


# --- load generators ---------------------------------------------------------
def http_check(port, sc, path):
    """One request through http.client: right status, content type and body?"""
    try:
        c = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
        body = sc.body.encode() if sc.body is not None else None
        headers = dict(sc.headers)
        if body is not None:
            headers["Content-Type"] = "text/plain; charset=utf-8"
        c.request(sc.method, path, body=body, headers=headers)
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
    if (res["scenario"] != "ws-1" and res.get("phase") != "latency"
            and res.get("server_cpu_pct", 100) < 90 and quiet):
        notes.append(f"server used only {res['server_cpu_pct']:.0f}% of its core: it was waiting, not "
                     "CPU-bound, so req/s understates it")
    if res.get("load_cpu_pct") is not None and res["load_cpu_pct"] > 95:
        notes.append(f"the load generator used {res['load_cpu_pct']:.0f}% of its core: it, not the server, "
                     "may have set the pace")


def new_result(target, sc, phase="max"):
    return {"framework": target.name, "form": target.form, "target": target.key, "title": target.title,
            "scenario": sc.key, "label": sc.label, "kind": sc.kind, "phase": phase,
            "flags": [], "notes": []}


def start_server(args, target, sc, logdir, suffix=""):
    app, _ = target.app(sc)
    extra_args, extra_env = target.peer.variants.get(sc.variant, ((), {})) if sc.variant else ((), {})
    if target.name in ("stonechat", "robyn"):
        extra_args = list(extra_args) + shlex.split(args.server_args)
    port = free_port()
    log = logdir / f"{target.name}-{target.form}-{sc.key}{suffix}.server.log"
    return Server(target, app, port, log, args.server_cpu, extra_args, extra_env)


def failed(res, server, exc):
    """Record a run that could not be measured, with the server's own last words if it died."""
    res["flags"].append(f"FAILED: {exc}")
    res["server_log_tail"] = server.log_tail()
    if server.proc.poll() is not None:
        last = [line for line in res["server_log_tail"].splitlines() if line.strip()]
        why = next((line for line in last if "Fatal" in line or "Error" in line), last[-1] if last else "")
        res["flags"].append(f"server died (exit {server.proc.returncode}): {why.strip()[:240]}")


def fill_cpu(res, cpu, args, requests, seconds):
    res.update(
        server_cpu_s=cpu["cpu_s"], server_cpu_pct=100 * cpu["cpu_s"] / cpu["wall_s"],
        cpu_us_per_req=1e6 * cpu["cpu_s"] / requests if requests else None,
        threads=cpu["threads_by_name"], threads_total=cpu["threads_total"],
        other_on_server_core_pct=other_load(cpu, args.server_cpu),
        load_core_busy_pct=cpu["core_busy_pct"].get(args.load_cpu),
        processes=cpu["processes"], requests=requests, seconds=seconds,
    )


def measure_http(args, target, sc, logdir):
    res = new_result(target, sc)
    tag = f"{target.name}-{target.form}-{sc.key}"
    script = logdir / f"{sc.key}.lua"
    script.write_text(sc.lua())
    server = start_server(args, target, sc, logdir)
    try:
        server.wait_ready(args.start_timeout, http_probe=True)
        flag = server.pinned_flag(args.server_cpu)
        if flag:
            res["flags"].append(flag)
        path = sc.path_for(target.app(sc)[1])
        problem = http_check(server.port, sc, path)
        if problem:
            res["flags"].append(f"WRONG RESPONSE: {problem}")
        url = f"http://127.0.0.1:{server.port}{path}"
        if args.warmup > 0:
            run_wrk(args, url, script, args.warmup)
        before = cpu_sample(server.pid)
        r, load_cpu = run_wrk(args, url, script, args.duration)
        after = cpu_sample(server.pid)
        (logdir / f"{tag}.wrk.txt").write_text("$ " + shlex.join(r.args) + "\n" + r.stdout + r.stderr)
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
        fill_cpu(res, cpu, args, requests, secs)
        res.update(rps=requests / secs if secs else 0.0, p50_ms=p50, p99_ms=p99, socket_errors=errs,
                   non_2xx=non2xx, load_cpu_pct=100 * load_cpu / secs if secs else None)
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
        failed(res, server, exc)
    finally:
        server.stop()
    return res


def run_phased(argv, marker, sample, timeout):
    """Run a load generator that prints `<marker>_PHASE measure-start/-end` and a final
    `<marker>_JSON {...}` line; call sample() at both edges. Returns (final, before, after, lines)."""
    before = after = final = None
    lines = []
    proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        for line in proc.stdout:
            lines.append(line)
            if line.startswith(f"{marker}_PHASE measure-start"):
                before = sample()
            elif line.startswith(f"{marker}_PHASE measure-end"):
                after = sample()
            elif line.startswith(f"{marker}_JSON "):
                final = json.loads(line[len(marker) + 6:])
        proc.wait(timeout=timeout)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    return final, before, after, lines


def measure_ws(args, target, sc, logdir):
    res = new_result(target, sc)
    tag = f"{target.name}-{target.form}-{sc.key}"
    server = start_server(args, target, sc, logdir)
    try:
        server.wait_ready(args.start_timeout, http_probe=False)
        flag = server.pinned_flag(args.server_cpu)
        if flag:
            res["flags"].append(flag)
        ws_path = target.app(sc)[1]
        argv = ["taskset", "-c", str(args.load_cpu), sys.executable, str(BENCH / "wsload.py"),
                f"ws://127.0.0.1:{server.port}{ws_path}", "-c", str(sc.connections), "-d", str(args.duration),
                "-w", str(args.warmup), "--json"]
        final, before, after, lines = run_phased(argv, "WSLOAD", lambda: cpu_sample(server.pid),
                                                 args.duration + args.warmup + 120)
        (logdir / f"{tag}.wsload.txt").write_text("$ " + shlex.join(argv) + "\n" + "".join(lines))
        if not final or "error" in final:
            raise RuntimeError("wsload: " + (final or {}).get("error", "".join(lines)[-500:]))
        if before is None or after is None:
            raise RuntimeError("wsload printed no measurement window markers")
        cpu = cpu_delta(before, after)
        n = final["messages"]
        fill_cpu(res, cpu, args, n, final["duration_s"])
        res.update(rps=final["messages_per_s"], p50_ms=final["latency_ms"]["p50"],
                   p99_ms=final["latency_ms"]["p99"],
                   socket_errors={"closed_by_server": final["closed_by_server"]},
                   non_2xx=final["mismatched"], load_cpu_pct=final["client_cpu_pct"])
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
        failed(res, server, exc)
    finally:
        server.stop()
    return res


MEASURE = {"http": measure_http, "ws": measure_ws}


def measure_latency(args, target, sc, rate, logdir):
    """Constant-rate load (bench/httpload.py, latency from each request's scheduled send time)."""
    res = new_result(target, sc, phase="latency")
    res["target_rate"] = rate
    tag = f"{target.name}-{target.form}-{sc.key}-latency"
    server = start_server(args, target, sc, logdir, suffix="-latency")
    try:
        server.wait_ready(args.start_timeout, http_probe=True)
        flag = server.pinned_flag(args.server_cpu)
        if flag:
            res["flags"].append(flag)
        path = sc.path_for(target.app(sc)[1])
        problem = http_check(server.port, sc, path)
        if problem:
            res["flags"].append(f"WRONG RESPONSE: {problem}")
        argv = ["taskset", "-c", str(args.load_cpu), sys.executable, str(BENCH / "httpload.py"),
                f"http://127.0.0.1:{server.port}{path}", "--rate", f"{rate:.0f}",
                "-c", str(args.connections), "-d", str(args.latency_duration), "-w", str(args.latency_warmup),
                "--method", sc.method, "--json"]
        for k, v in sc.headers.items():
            argv += ["-H", f"{k}: {v}"]
        if sc.body is not None:
            argv += ["-H", "Content-Type: text/plain; charset=utf-8", "--body", sc.body]
        final, before, after, lines = run_phased(argv, "HTTPLOAD", lambda: cpu_sample(server.pid),
                                                 args.latency_duration + args.latency_warmup + 120)
        (logdir / f"{tag}.httpload.txt").write_text("$ " + shlex.join(argv) + "\n" + "".join(lines))
        if not final or "error" in final:
            raise RuntimeError("httpload: " + (final or {}).get("error", "".join(lines)[-500:]))
        if before is None or after is None:
            raise RuntimeError("httpload printed no measurement window markers")
        cpu = cpu_delta(before, after)
        n = final["responses"]
        fill_cpu(res, cpu, args, n, final["duration_s"])
        lat = final["latency_ms"]
        res.update(rps=final["responses_per_s"], p50_ms=lat["p50"], p99_ms=lat["p99"], p999_ms=lat["p999"],
                   max_ms=lat["max"], load_cpu_pct=final["client_cpu_pct"],
                   non_2xx=final["non_2xx"], socket_errors=final["errors"],
                   late_sends=final.get("late_sends"))
        note_noise(res)
        if final["non_2xx"]:
            res["flags"].append(f"{final['non_2xx']} non-2xx responses")
        if final["mismatched"]:
            res["flags"].append(f"{final['mismatched']} response bodies differed from the first one")
        errs = {k: v for k, v in final["errors"].items() if k in ("read", "write") and v}
        if errs:
            res["flags"].append("socket errors " + ", ".join(f"{k} {v}" for k, v in errs.items()))
        if final["errors"]["timeout"] or final.get("unsent"):
            res["notes"].append(f"the server fell behind the rate: {final.get('unsent', 0):,} due requests never "
                                f"sent, {final['errors']['timeout']:,} unanswered 5 s after the window; its "
                                "latency figures are lower bounds")
        if n < 0.95 * rate * final["duration_s"]:
            res["notes"].append(f"answered {final['responses_per_s']:,.0f}/s of the {rate:,.0f}/s asked: "
                                "the server (or the client) could not keep the rate")
        if server.proc.poll() is not None:
            res["flags"].append(f"server died during the run (exit {server.proc.returncode})")
    except Exception as exc:  # noqa: BLE001 -- a failed scenario is reported, the run goes on
        failed(res, server, exc)
    finally:
        server.stop()
    return res


# --- reporting ---------------------------------------------------------------
SHORT = {"raw": "raw", "stonechat": "sc", "socketify": "sfy", "robyn": "robyn", "sanic": "sanic",
         "uvicorn": "uvicorn", "granian": "granian", "mount": "sc-mount", "asgi": "sc-on-uvicorn"}


def fmt(v, spec):
    return "—" if v is None else format(v, spec)


def order_targets(targets):
    """Columns: the ceiling, then every sync form, then every async form (peers in PEER_ORDER)."""
    return sorted(targets, key=lambda t: (FORM_ORDER[t.form], PEER_ORDER.index(t.name)))


def short(t):
    return SHORT[t.name] if len(t.peer_forms()) == 1 or t.form == "raw" else f"{SHORT[t.name]}-{t.form}"


def median_runs(runs, key="cpu_us_per_req"):
    """One result per (target, scenario, phase): the run with the median ``key`` (CPU per
    request; p99 for the fixed-rate phase) among runs without problems. Problems seen in any
    run are kept on the result, so a wrong response in one repeat still shows in the table."""
    groups = {}
    for r in runs:
        groups.setdefault((r["target"], r["scenario"], r["phase"]), []).append(r)
    chosen = []
    for group in groups.values():
        good = sorted((r for r in group if not r["flags"] and r.get(key) is not None), key=lambda r: r[key])
        pick = dict(good[(len(good) - 1) // 2] if good else group[0])
        pick["cpu_samples"] = [r.get("cpu_us_per_req") for r in group]
        pick["p99_samples"] = [r.get("p99_ms") for r in group]
        pick["flags"] = [f"[run {r['rep']}] {f}" for r in group for f in r["flags"]]
        pick["notes"] = sorted({n for r in group for n in r.get("notes", [])})
        chosen.append(pick)
    return chosen


class Table:
    """Median results indexed by (target key, scenario key) for one phase."""

    def __init__(self, results, phase="max"):
        self.by = {(r["target"], r["scenario"]): r for r in results if r["phase"] == phase}

    def get(self, target_key, sc_key, field="cpu_us_per_req"):
        r = self.by.get((target_key, sc_key))
        return None if r is None else r.get(field)

    def mark(self, target_key, sc_key):
        r = self.by.get((target_key, sc_key))
        if r is None:
            return ""
        return "!" if r["flags"] else ("*" if r.get("notes") else "")


def value_rows(table, targets, scenarios, field, spec):
    rows = []
    for sc in scenarios:
        row = [sc.label]
        for t in targets:
            if not t.supports(sc):
                row.append("n/a")
                continue
            v = table.get(t.key, sc.key, field)
            row.append(fmt(v, spec) + table.mark(t.key, sc.key))
        rows.append(row)
    return rows


def stonechat_match(targets, t, sc):
    """The stonechat column a peer column is compared with: the same form if stonechat has it."""
    for s in targets:
        if s.name == "stonechat" and s.form == t.form and s.supports(sc):
            return s
    for s in targets:
        if s.name == "stonechat" and s.form == "async" and s.supports(sc):
            return s
    return None


def ratio_columns(targets):
    """(header, short header, function(table, sc) -> ratio or None), stonechat first."""
    cols = []
    by = {t.key: t for t in targets}
    raw, sync, asy = by.get("raw/raw"), by.get("stonechat/sync"), by.get("stonechat/async")

    def div(a, b):
        return a / b if a and b else None

    if raw and sync:
        cols.append(("stonechat sync ÷ ceiling", "sc-s/raw",
                     lambda tb, sc: div(tb.get(sync.key, sc.key), tb.get(raw.key, sc.key))))
    if raw and asy:
        cols.append(("stonechat async ÷ ceiling", "sc-a/raw",
                     lambda tb, sc: div(tb.get(asy.key, sc.key), tb.get(raw.key, sc.key))))
    if sync and asy:
        cols.append(("stonechat async ÷ sync", "sc-a/sc-s",
                     lambda tb, sc: div(tb.get(asy.key, sc.key), tb.get(sync.key, sc.key))))
    for t in targets:
        if t.name in ("raw", "stonechat"):
            continue

        def f(tb, sc, t=t):
            s = stonechat_match(targets, t, sc)
            return div(tb.get(t.key, sc.key), tb.get(s.key, sc.key)) if s and t.supports(sc) else None
        sform = "sync" if t.form == "sync" else "async"
        cols.append((f"{t.title} ÷ stonechat {sform}", f"{short(t)}/sc-{sform[0]}", f))
    return cols


def ratio_rows(table, targets, scenarios):
    cols = ratio_columns(targets)
    rows = [[sc.label] + [fmt(f(table, sc), ".2f") for _, _, f in cols] for sc in scenarios]
    return [c[0] for c in cols], [c[1] for c in cols], rows


def target_checks(table, targets, scenarios):
    """Issue 13's targets, each checked on this run's medians (True / False / None = not measured)."""
    by = {t.key: t for t in targets}
    checks = []
    http = [sc for sc in scenarios if sc.kind == "http" and sc.role == "http"]

    def cpu(key, sc):
        return table.get(key, sc.key) if key in by and by[key].supports(sc) else None

    for sc in http:
        a, s = cpu("stonechat/async", sc), cpu("stonechat/sync", sc)
        if a and s:
            checks.append((f"async ≤ {ASYNC_OVER_SYNC_MAX}× sync: {sc.label}", a / s <= ASYNC_OVER_SYNC_MAX,
                           f"{a / s:.2f}×"))
    for sc in scenarios:
        for form in ("sync", "async"):
            a, b = f"stonechat/{form}", f"socketify/{form}"
            if not (a in by and b in by and by[a].supports(sc) and by[b].supports(sc)):
                continue
            mine, theirs = cpu(a, sc), cpu(b, sc)
            name = f"stonechat {form} < socketify {form}: {sc.label}"
            if mine and theirs:
                checks.append((name, mine < theirs, f"{mine:.1f} vs {theirs:.1f} µs"))
            else:
                checks.append((name, None, "not measured: " + ("stonechat" if not mine else "socketify")
                               + "'s run had no result"))
    for sc in http:
        if sc.key not in ("text", "json"):
            continue
        s, raw = cpu("stonechat/sync", sc), cpu("raw/raw", sc)
        if s and raw:
            checks.append((f"sync ≤ {SYNC_OVER_CEILING_MAX}× ceiling: {sc.label}", s / raw <= SYNC_OVER_CEILING_MAX,
                           f"{s / raw:.2f}×"))
    for sc in scenarios:
        for form in ("sync", "async"):
            mine, theirs = cpu(f"stonechat/{form}", sc), cpu(f"robyn/{form}", sc)
            if mine and theirs:
                checks.append((f"Robyn {form} ≥ {ROBYN_RATIO_MIN}× stonechat {form}: {sc.label}",
                               theirs / mine >= ROBYN_RATIO_MIN, f"{theirs / mine:.2f}×"))
    return checks


# The fixed-rate phase's one rate for every server, requests/s: at most a quarter of the slowest
# peer's maximum here (Robyn async, ~15,000/s), so every server meets a load it takes, and low
# enough that the load generator (Python, one core) stays far from its own limit: above
# ~30,000/s it is over 75 % busy and its own stalls decide the tail (bench/README.md).
DEFAULT_LATENCY_RATE = 5_000

# Issue 12: what observing may cost, CPU per request on ÷ off (the same scenario, the same form)
OBSERVING_MAX = {"log": 1.15, "jsonlog": 1.15, "metrics": 1.10}
OBSERVING_NAMES = {"log": "access log", "jsonlog": "access log (JSON lines)", "metrics": "metrics"}


def observing_checks(table, targets, scenarios):
    """Issue 12's targets: stonechat's CPU per request with the access log (or metrics) on ÷
    off, per form and scenario, each against its limit (True / False)."""
    keys = {sc.key for sc in scenarios}
    checks = []
    for t in targets:
        if t.peer.name != "stonechat":
            continue
        for base in ("text", "json"):
            for variant, limit in OBSERVING_MAX.items():
                on, off = table.get(t.key, f"{base}-{variant}"), table.get(t.key, base)
                if f"{base}-{variant}" not in keys or not on or not off:
                    continue
                what = OBSERVING_NAMES[variant]
                checks.append((f"{what} on ≤ +{limit - 1:.0%}: {t.title}, {base}", on / off <= limit,
                               f"{on:.1f} vs {off:.1f} µs, {on / off - 1:+.0%}"))
    return checks


def latency_checks(results, targets):
    """stonechat's p99 at the fixed rate no worse than any peer's: each peer column against
    stonechat's same form (a one-form peer against stonechat async), as for the CPU ratios."""
    lat = [r for r in results if r["phase"] == "latency" and not r["flags"] and r.get("p99_ms") is not None]
    forms = {t.key: len(t.peer_forms()) for t in targets}
    checks = []
    for sc_key in sorted({r["scenario"] for r in lat}):
        rows = [r for r in lat if r["scenario"] == sc_key]
        mine = {r["form"]: r for r in rows if r["framework"] == "stonechat"}
        for p in rows:
            if p["framework"] in ("stonechat", "raw"):
                continue
            m = mine.get(p["form"] if forms.get(p["target"], 1) > 1 else "async")
            if m:
                checks.append((f"p99 at the fixed rate: stonechat {m['form']} ≤ {p['title']} ({m['label']})",
                               m["p99_ms"] <= p["p99_ms"], f"{m['p99_ms']:.2f} vs {p['p99_ms']:.2f} ms"))
    return checks


def markdown_grid(header, rows, first_align="---"):
    out = ["| " + " | ".join(header) + " |", "|" + "|".join([first_align] + ["---:"] * (len(header) - 1)) + "|"]
    for r in rows:
        out.append("| " + " | ".join(c.replace("|", "\\|") for c in r) + " |")
    return "\n".join(out)


def text_grid(header, rows):
    w = [max(len(header[i]), *(len(r[i]) for r in rows)) if rows else len(header[i]) for i in range(len(header))]
    lines = ["  ".join(h.ljust(w[i]) if i == 0 else h.rjust(w[i]) for i, h in enumerate(header))]
    for r in rows:
        lines.append("  ".join(c.ljust(w[i]) if i == 0 else c.rjust(w[i]) for i, c in enumerate(r)))
    return "\n".join(lines)


def latency_rows(results, targets, md=True):
    rows = []
    order = {t.key: i for i, t in enumerate(targets)}
    lat = sorted((r for r in results if r["phase"] == "latency"),
                 key=lambda r: (r["scenario"], order.get(r["target"], 99)))
    for r in lat:
        mark = "!" if r["flags"] else ("*" if r.get("notes") else "")
        name = r["title"] if md else next((short(t) for t in targets if t.key == r["target"]), r["target"])
        rows.append([f"{r['label']}", name, fmt(r.get("target_rate"), ",.0f"), fmt(r.get("rps"), ",.0f") + mark,
                     fmt(r.get("p50_ms"), ".2f"), fmt(r.get("p99_ms"), ".2f"), fmt(r.get("p999_ms"), ".2f"),
                     fmt(r.get("max_ms"), ".2f"), fmt(r.get("cpu_us_per_req"), ".1f"),
                     fmt(r.get("load_cpu_pct"), ".0f"),
                     " / ".join(fmt(v, ".2f") for v in r.get("p99_samples") or [r.get("p99_ms")])])
    return rows


LATENCY_HEADER = ["scenario", "server", "rate asked /s", "answered /s", "p50 ms", "p99 ms", "p99.9 ms", "max ms",
                  "server CPU µs/req", "client CPU %", "p99 of each run ms"]


def print_tables(results, targets, scenarios, latency_rate=None, latency_fraction=None):
    tb = Table(results)
    print("\nServer CPU µs per request (per echoed message for WS); median run. ! = problem, * = note")
    print("columns: " + ", ".join(f"{short(t)} = {t.title}" for t in targets))
    print(text_grid(["scenario"] + [short(t) for t in targets], value_rows(tb, targets, scenarios,
                                                                           "cpu_us_per_req", ".1f")))
    _, shorts, rows = ratio_rows(tb, targets, scenarios)
    if shorts:
        print("\nRatios of CPU per request (peer ÷ stonechat > 1: stonechat cheaper; stonechat ÷ ceiling: "
              "how far above the floor)")
        print(text_grid(["scenario"] + shorts, rows))
    print("\nThroughput, requests/s (messages/s for WS), at 64 connections (wrk) / N connections (WS)")
    print(text_grid(["scenario"] + [short(t) for t in targets], value_rows(tb, targets, scenarios, "rps", ",.0f")))
    lrows = latency_rows(results, targets, md=False)
    if lrows:
        print("\nLatency at a fixed rate (the same rate for every server: --latency-rate)" if latency_rate else
              f"\nLatency at a fixed rate ({latency_fraction:.0%} of each server's own maximum above)",
              "from each request's scheduled send time")
        print(text_grid(LATENCY_HEADER, lrows))
    checks = target_checks(tb, targets, scenarios) + latency_checks(results, targets)
    if checks:
        bad = [c for c in checks if not c[1]]
        print(f"\nTargets of issue 13: {len(checks) - len(bad)} of {len(checks)} met in this run")
        for name, ok, detail in bad:
            print(f"  {'not met' if ok is False else 'not measured'}: {name} ({detail})")
    observing = observing_checks(tb, targets, scenarios)
    if observing:
        print("\nThe price of observing (issue 12), on ÷ off:")
        for name, ok, detail in observing:
            print(f"  {'met' if ok else 'NOT MET'}: {name} ({detail})")


def details_md(runs):
    out = [("| server | scenario | phase | done | seconds | server CPU % of one core | other load on server core % "
           "| load generator CPU % | load core busy % | threads (processes) | server CPU by thread (s) |"),
           "|---|---|---|---:|---:|---:|---:|---:|---:|---:|---|"]
    for r in runs:
        label = f"{r['label']} #{r['rep']}" if "rep" in r else r["label"]
        if "requests" not in r:
            out.append(f"| {r['title']} | {label} | {r['phase']} | — | — | — | — | — | — | — | "
                       f"**{'; '.join(r['flags'])}** |".replace("|**", "| **"))
            continue
        th = ", ".join(f"{k} ×{v['threads']}: {v['cpu_s']:.2f}" if v["threads"] else f"{k}: {v['cpu_s']:.2f}"
                       for k, v in list(r["threads"].items())[:6]).replace("|", "\\|")
        out.append(f"| {r['title']} | {label} | {r['phase']} | {r['requests']:,} | {r['seconds']:.2f} | "
                   f"{r['server_cpu_pct']:.0f} | {fmt(r.get('other_on_server_core_pct'), '.0f')} | "
                   f"{fmt(r['load_cpu_pct'], '.0f')} | {fmt(r.get('load_core_busy_pct'), '.0f')} | "
                   f"{r['threads_total']} ({r['processes']}) | {th} |")
    return "\n".join(out)


def machine_info(targets, args, unavailable):
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
        "peers": {}, "unavailable": unavailable,
    }
    for t in targets:
        if t.name in info["peers"]:
            continue
        pkgs = venv_packages(t.python)
        wanted = {p.split("==")[0].lower() for p in t.peer.pins} | {t.peer.probe.lower()}
        info["peers"][t.name] = {
            "title": t.peer.title, "version": t.version, "python_path": os.path.relpath(t.python, ROOT),
            "python": cmd_output([t.python, "-c", "import platform; print(platform.python_version())"]),
            "packages": [p for p in pkgs if p.split("==")[0].lower().replace("_", "-") in wanted],
            "notes": t.peer.notes,
        }
    return info


def render_markdown(results, runs, targets, scenarios, info, command, args):
    tb = Table(results)
    parts = [f"## Run {info['date']}", "",
             f"Command: `{command}`", "",
             (f"Machine: {info['nproc']} CPUs ({info['cpu']}), Linux {info['kernel']}; harness Python "
              f"{info['harness_python']}; {info['wrk']}; project commit {info['git']}."), ""]
    parts += ["Servers (each from its own venv; versions as installed):", ""]
    for name, p in info["peers"].items():
        version = "" if name == "raw" else f" {p['version']}"
        parts.append(f"- **{p['title']}**{version} on Python {p['python']} (`{p['python_path']}`; "
                     f"{', '.join(p['packages']) or 'project install'}): {p['notes']}")
    for name, why in info["unavailable"].items():
        parts.append(f"- **{PEERS[name].title}: not measured**, could not be prepared: `{why.splitlines()[-1][:300]}`")
    parts += ["", (f"Server pinned to CPU {args.server_cpu}, load generator to CPU {args.load_cpu}; "
                   f"{args.warmup:g} s warm-up, {args.duration:g} s measured per run; wrk -t{args.threads} "
                   f"-c{args.connections}; fresh server per run; {args.repeat} run(s) per scenario and server, the "
                   f"servers alternating; each cell is the median run by server CPU per request (every run is "
                   f"listed under Details). `!` = the run had a problem (see below), `*` = a note (outside load, "
                   f"or a server that was not CPU-bound); `n/a` = the server has no such form."), ""]
    head = ["scenario"] + [t.title for t in targets]
    parts += ["### Server CPU µs per request", "",
              "Per echoed message for WS. Lower is better.", "",
              markdown_grid(head, value_rows(tb, targets, scenarios, "cpu_us_per_req", ".1f")), ""]
    headers, _, rows = ratio_rows(tb, targets, scenarios)
    if headers:
        parts += ["### Ratios of CPU per request", "",
                  ("`peer ÷ stonechat`: above 1 means stonechat does the same work with less CPU (each peer "
                   "against stonechat's same form; a peer with one form against stonechat async). "
                   "`stonechat ÷ ceiling`: how many times the bare uvloop+httptools floor stonechat costs. "
                   "`async ÷ sync`: what an `async def` handler costs over a plain `def` one."), "",
                  markdown_grid(["scenario"] + headers, rows), ""]
    parts += ["### Throughput (requests/s; messages/s for WS)", "",
              markdown_grid(head, value_rows(tb, targets, scenarios, "rps", ",.0f")), "",
              "### p99 latency at full load (ms; wrk's closed loop, 64 connections)", "",
              markdown_grid(head, value_rows(tb, targets, scenarios, "p99_ms", ".2f")), ""]
    lrows = latency_rows(results, targets)
    if lrows:
        parts += ["### Latency at a fixed rate", "",
                  ("`bench/httpload.py`: constant rate of " +
                   (f"{args.latency_rate:,.0f} requests/s for every server" if args.latency_rate else
                    f"{args.latency_fraction:.0%} of each server's own maximum in the table above") +
                   f", {args.connections} keep-alive connections, "
                   f"{args.latency_warmup:g} s warm-up, {args.latency_duration:g} s measured; latency counted from "
                   "each request's scheduled send time (coordinated omission corrected, as wrk2 does). "
                   f"{args.latency_repeat} run(s) per server, in rounds over all servers; each row is the run "
                   "with the median p99 (all runs' p99 in the last column)."), "",
                  markdown_grid(LATENCY_HEADER, lrows), ""]
    checks = target_checks(tb, targets, scenarios) + latency_checks(results, targets)
    if checks:
        met = sum(1 for c in checks if c[1])
        parts += [f"### Targets of issue 13 in this run: {met} of {len(checks)} met", ""]
        parts += [f"- {'met' if ok else ('**not met**' if ok is False else '**not measured**')}: {name} ({detail})"
                  for name, ok, detail in checks]
        parts.append("")
    observing = observing_checks(tb, targets, scenarios)
    if observing:
        met = sum(1 for c in observing if c[1])
        parts += [f"### The price of observing (issue 12) in this run: {met} of {len(observing)} within limits", ""]
        parts += [f"- {'met' if ok else '**not met**'}: {name} ({detail})" for name, ok, detail in observing]
        parts.append("")
    bad = [r for r in results if r["flags"]]
    if bad:
        parts += ["### Problems in this run", ""]
        parts += [f"- **{r['title']} / {r['label']} ({r['phase']}): {'; '.join(r['flags'])}**" for r in bad]
        parts.append("")
    noisy = [r for r in results if r.get("notes")]
    if noisy:
        parts += ["### Notes (numbers kept, read with care)", ""]
        parts += [f"- {r['title']} / {r['label']} ({r['phase']}): {'; '.join(r['notes'])}" for r in noisy]
        parts.append("")
    parts += ["### Details (every run)", "", details_md(runs), "",
              "### Method", "",
              ("- Each run starts a fresh server with `taskset -c 0` (one core), waits until the port "
               "answers, checks one response for the right status, content type and body, runs a warm-up, "
               "then the measured run with the load generator on the other core (`taskset -c 1`)."),
              ("- HTTP load: `wrk --latency` with a Lua script (POST body, `x-token` header, and a `done()` hook "
               f"that prints exact request counts, error counts and latency percentiles). Keep-alive, "
               f"{args.connections} connections."),
              ("- WebSocket load: `bench/wsload.py` (closed loop, one 64-byte text message in flight per "
               "connection, masked client frames, echo verified byte for byte)."),
              ("- Server CPU = utime+stime from `/proc/PID/stat` (covers every thread, also ones that exited "
               "during the run) plus reaped children, summed over all descendant processes, read just before "
               "and just after the measured window. CPU µs per request = CPU seconds / completed requests. "
               "Resolution is one clock tick (10 ms)."),
              ("- 'other load on server core' is the busy time of the server's core (from /proc/stat) minus "
               "the server's own CPU time; 'load core busy' against 'load generator CPU' shows the same for "
               "the client's core. Above 8% outside load on either core the run gets a note; rerun on a quiet "
               "machine for numbers to keep."),
              ("- Absolute numbers drift between runs on a shared VM (up to ~25% seen with no visible "
               "outside load); compare servers within one run and repeat before trusting small changes."),
              ("- stonechat and Robyn run the same app files (`robyn` renamed to `stonechat` for stonechat) with "
               "`--disable-openapi --log-level WARNING`" +
               (f" and `{args.server_args}`" if args.server_args else "") +
               "; the other peers run their own app files in bench/apps/ (see bench/README.md).")]
    return "\n".join(parts) + "\n"


def write_results_md(section, begin=MD_BEGIN, end=MD_END):
    header = ("# Benchmark results\n\n"
              "Written by `bench/run.py` and `bench/memory.py` (see bench/README.md). The sections between "
              "their markers are replaced on every run; anything outside them is kept.\n\n")
    block = f"{begin}\n{section}{end}\n"
    if RESULTS_MD.exists():
        old = RESULTS_MD.read_text()
        if begin in old and end in old:
            pre, rest = old.split(begin, 1)
            post = rest.split(end, 1)[1].lstrip("\n")
            RESULTS_MD.write_text(pre + block + post)
            return
        RESULTS_MD.write_text(old.rstrip("\n") + "\n\n" + block)
        return
    RESULTS_MD.write_text(header + block)


def report_line(r):
    if "requests" in r:
        extra = (f"p99 {fmt(r['p99_ms'], '.2f')} ms" if r["phase"] == "max" else
                 f"p50 {fmt(r['p50_ms'], '.2f')} / p99 {fmt(r['p99_ms'], '.2f')} ms at "
                 f"{fmt(r.get('target_rate'), ',.0f')}/s asked")
        print(f"{r['rps']:,.0f}/s  CPU {fmt(r['cpu_us_per_req'], '.1f')} µs/req  {extra}  "
              f"(server {r['server_cpu_pct']:.0f}% CPU, load gen {fmt(r['load_cpu_pct'], '.0f')}%)", flush=True)
    else:
        print("FAILED", flush=True)
    for f in r["flags"]:
        print(f"    !!! {f}", flush=True)
    for n in r.get("notes", []):
        print(f"    note: {n}", flush=True)


# --- main --------------------------------------------------------------------
RUN_OVERHEAD_S = 0.8  # server start, correctness check, stop (0.4 s per run measured on the 2-core VM)


def parse_args(argv=None):
    ap = argparse.ArgumentParser(description="stonechat beside its peers (see bench/README.md)")
    ap.add_argument("--duration", type=int, default=5, help="measured seconds per run (default 5)")
    ap.add_argument("--repeat", type=int, default=3,
                    help="runs per scenario and server, interleaved; the table shows the median (default 3)")
    ap.add_argument("--warmup", type=int, default=2, help="warm-up seconds per run (default 2)")
    ap.add_argument("--only", choices=["http", "ws"], help="run only the HTTP or only the WebSocket scenarios")
    ap.add_argument("--frameworks", default=DEFAULT_FRAMEWORKS,
                    help=f"comma list of servers (default {DEFAULT_FRAMEWORKS}; add mount,asgi for the price of ASGI)")
    ap.add_argument("--forms", default="sync,async",
                    help="handler forms to measure: sync, async or both (default sync,async); the raw "
                         "ceiling is measured whenever it is selected")
    ap.add_argument("--scenarios", help="comma list of scenario keys: " + ",".join(s.key for s in SCENARIOS))
    ap.add_argument("--no-sync", action="store_true", help="same as --forms async")
    ap.add_argument("--connections", type=int, default=64, help="wrk / httpload connections (default 64)")
    ap.add_argument("--threads", type=int, default=1, help="wrk threads (default 1)")
    ap.add_argument("--server-cpu", type=int, default=0)
    ap.add_argument("--load-cpu", type=int, default=1)
    ap.add_argument("--start-timeout", type=float, default=30)
    ap.add_argument("--latency-scenarios",
                    help="HTTP scenarios measured at a fixed rate after the throughput runs (default json, "
                         "when it is among the scenarios run; 'none' to skip)")
    ap.add_argument("--no-latency", action="store_true", help="skip the fixed-rate latency phase")
    ap.add_argument("--latency-rate", type=float, default=None,
                    help=f"one fixed rate (requests/s) for every server (default {DEFAULT_LATENCY_RATE:,}): the "
                         "servers compared at the same load, and the load generator's own share of the tail "
                         "the same for all")
    ap.add_argument("--latency-fraction", type=float, default=None,
                    help="instead of one rate, this fraction of each server's own measured maximum (e.g. 0.5)")
    ap.add_argument("--latency-duration", type=int, default=10, help="measured seconds at the fixed rate (default 10)")
    ap.add_argument("--latency-warmup", type=int, default=2, help="warm-up seconds at the fixed rate (default 2)")
    ap.add_argument("--latency-repeat", type=int, default=3,
                    help="fixed-rate runs per server, in rounds; the median p99 is reported (default 3)")
    for name in PEER_ORDER:
        ap.add_argument(f"--{name}-python", help=f"use this interpreter for {PEERS[name].title} "
                        f"instead of {os.path.relpath(PEERS[name].venv, ROOT)}")
    ap.add_argument("--server-args", default="", help="extra flags for stonechat and Robyn, e.g. '--workers 2'")
    ap.add_argument("--no-write", action="store_true", help="do not update bench/RESULTS.md")
    args = ap.parse_args(argv)
    if not 0 < args.duration <= 300 or not 0 <= args.warmup <= 60 or not 1 <= args.repeat <= 20:
        ap.error("--duration must be in (0, 300], --warmup in [0, 60], --repeat in [1, 20]")
    if args.latency_rate is not None and args.latency_fraction is not None:
        ap.error("--latency-rate and --latency-fraction: give one (a rate for all, or a fraction of each maximum)")
    if args.latency_rate is not None and args.latency_rate <= 0:
        ap.error("--latency-rate: a rate above 0 requests/s")
    if args.latency_fraction is None:
        args.latency_rate = args.latency_rate or DEFAULT_LATENCY_RATE
    elif not 0 < args.latency_fraction <= 1:
        ap.error("--latency-fraction must be in (0, 1]")
    if not 0 < args.latency_duration <= 300:
        ap.error("--latency-duration must be in (0, 300]")
    if not 1 <= args.latency_repeat <= 20:
        ap.error("--latency-repeat must be in [1, 20]")
    args.framework_list = [n.strip() for n in args.frameworks.split(",") if n.strip()]
    unknown = set(args.framework_list) - set(PEERS)
    if not args.framework_list or unknown:
        ap.error(f"--frameworks takes {', '.join(PEER_ORDER)} (unknown: {', '.join(sorted(unknown))})")
    args.form_set = {f.strip() for f in args.forms.split(",") if f.strip()}
    if args.no_sync:
        args.form_set.discard("sync")
    if not args.form_set or args.form_set - {"sync", "async"}:
        ap.error("--forms takes sync and/or async")
    keys = [s.key for s in SCENARIOS]
    args.want = {s.strip() for s in args.scenarios.split(",")} if args.scenarios else None
    if args.want and args.want - set(keys):
        ap.error(f"unknown scenario(s) {', '.join(sorted(args.want - set(keys)))}; known: {', '.join(keys)}")
    explicit = args.latency_scenarios is not None
    lat = [] if args.no_latency or args.latency_scenarios == "none" else \
        [s.strip() for s in (args.latency_scenarios or "json").split(",") if s.strip()]
    if not explicit:  # the default follows --only / --scenarios
        lat = [k for k in lat if args.only in (None, "http") and (not args.want or k in args.want)]
    bad = [k for k in lat if k not in keys or not getattr(next(s for s in SCENARIOS if s.key == k), "latency")]
    if bad:
        ap.error(f"--latency-scenarios: {', '.join(bad)} is not an HTTP scenario")
    args.latency_keys = lat
    return args


def build_targets(args, tmpdir):
    targets, unavailable = [], {}
    for name in sorted(args.framework_list, key=PEER_ORDER.index):
        peer = PEERS[name]
        try:
            python, version = ensure_peer(peer, getattr(args, f"{name}_python"))
        except (RuntimeError, OSError, subprocess.SubprocessError) as exc:
            loud(f"{peer.title} cannot be measured: {exc}")
            unavailable[name] = str(exc)
            continue
        app_dir = stonechat_app_dir(tmpdir) if peer.venv == PROJECT_VENV else APPS
        forms = {f for role in peer.apps.values() for f in role}
        for form in sorted(forms, key=FORM_ORDER.get):
            if form == "raw" or form in args.form_set:
                targets.append(Target(peer, form, python, app_dir, version))
    return order_targets(targets), unavailable


def scenario_groups(scenarios):
    """The scenarios in measuring order: each plain one with the variants of it being run
    (``text`` with ``text-log`` and ``text-metrics``); a variant without its plain one alone."""
    plain = {sc.key for sc in scenarios if sc.variant is None}
    groups, placed = [], set()
    for sc in scenarios:
        if sc.key in placed:
            continue
        if sc.variant is None:
            group = [sc] + [v for v in scenarios if v.variant is not None and v.key.rsplit("-", 1)[0] == sc.key]
        elif sc.key.rsplit("-", 1)[0] in plain:
            continue  # measured with its plain scenario
        else:
            group = [sc]
        placed.update(v.key for v in group)
        groups.append(group)
    return groups


def plan(args, targets):
    scenarios = [s for s in SCENARIOS if (not args.only or s.kind == args.only)
                 and (not args.want or s.key in args.want)]
    scenarios = [s for s in scenarios if any(t.supports(s) for t in targets)]
    runs = sum(1 for s in scenarios for t in targets if t.supports(s)) * args.repeat
    lat_sc = [s for s in SCENARIOS if s.key in args.latency_keys]
    lat_runs = sum(1 for s in lat_sc for t in targets if t.supports(s)) * args.latency_repeat
    seconds = runs * (args.duration + args.warmup + RUN_OVERHEAD_S) + \
        lat_runs * (args.latency_duration + args.latency_warmup + RUN_OVERHEAD_S)
    return scenarios, lat_sc, runs, lat_runs, seconds


def main(argv=None):
    args = parse_args(argv)
    if shutil.which("wrk") is None:
        die("wrk is not installed. Install it with: apt-get install wrk")
    if shutil.which("taskset") is None:
        die("taskset is not installed (package util-linux)")
    pin_cpus(args.server_cpu, args.load_cpu)
    args.lock = take_lock("run.py")  # held until the process exits
    raise_nofile()

    tmpdir = tempfile.mkdtemp(prefix="stonechat-bench-")
    try:
        targets, unavailable = build_targets(args, tmpdir)
        if not targets:
            die("no server could be prepared")
        scenarios, lat_sc, n_runs, n_lat, seconds = plan(args, targets)
        stamp = dt.datetime.now().strftime("%Y%m%d-%H%M%S")
        logdir = OUT / stamp
        logdir.mkdir(parents=True, exist_ok=True)
        command = "python3 bench/run.py " + shlex.join(sys.argv[1:]) if sys.argv[1:] else "python3 bench/run.py"
        print(f"bench: {len(targets)} columns ({', '.join(t.title for t in targets)}), {len(scenarios)} scenarios: "
              f"{n_runs} runs + {n_lat} fixed-rate runs, about {seconds / 60:.0f} minutes; logs in "
              f"{logdir.relative_to(ROOT)}", flush=True)

        # Servers alternate within each scenario, and each round repeats: noise from the host
        # (a shared VM) then hits every column alike, and the median run shows the typical cost.
        # A variant (access log, metrics on) runs in the same rounds as its plain scenario, each
        # round plain then variants: an on ÷ off ratio then compares runs a few seconds apart,
        # not minutes (the VM's speed drifts by more than the 10-15 % being judged).
        runs = []
        for group in scenario_groups(scenarios):
            for rep in range(args.repeat):
                for sc in group:
                    for t in targets:
                        if not t.supports(sc):
                            continue
                        print(f"bench: {t.title:22s} {sc.label} [{rep + 1}/{args.repeat}] ...", end=" ", flush=True)
                        r = MEASURE[sc.kind](args, t, sc, logdir)
                        r["rep"] = rep + 1
                        runs.append(r)
                        report_line(r)
        results = median_runs(runs)

        # Latency at a fixed rate: a share of each server's own maximum, measured above (or now).
        # A p99 from one 10 s window swings by 2x between runs on a shared VM, so each server is
        # measured --latency-repeat times, in rounds over all servers (a slow minute of the
        # machine falls on every server alike), and the run with the median p99 is reported.
        tb = Table(results)
        rates = {}
        for sc in lat_sc:
            for t in targets:
                if not t.supports(sc):
                    continue
                top = tb.get(t.key, sc.key, "rps")
                if tb.by.get((t.key, sc.key), {}).get("flags"):
                    print(f"bench: {t.title:22s} {sc.label}: no fixed-rate run, its maximum had problems", flush=True)
                    continue
                if not top:
                    print(f"bench: {t.title:22s} {sc.label} (maximum, for the fixed rate) ...", end=" ", flush=True)
                    r = measure_http(args, t, sc, logdir)
                    r["rep"] = 1
                    runs.append(r)
                    report_line(r)
                    results.extend(median_runs([r]))
                    top = None if r["flags"] else r.get("rps")
                if top and args.latency_rate:
                    if top < args.latency_rate:
                        print(f"bench: {t.title:22s} {sc.label}: its maximum {top:,.0f}/s is below the fixed rate "
                              f"{args.latency_rate:,.0f}/s", flush=True)
                    rates[(sc.key, t.key)] = (sc, t, args.latency_rate)
                elif top:
                    rates[(sc.key, t.key)] = (sc, t, args.latency_fraction * top)
        latency_runs = []
        for rep in range(args.latency_repeat):
            for sc, t, rate in rates.values():
                print(f"bench: {t.title:22s} {sc.label} at {rate:,.0f}/s (round {rep + 1}) ...", end=" ", flush=True)
                r = measure_latency(args, t, sc, rate, logdir)
                r["rep"] = rep + 1
                latency_runs.append(r)
                report_line(r)
        runs.extend(latency_runs)
        results.extend(median_runs(latency_runs, key="p99_ms"))

        info = machine_info(targets, args, unavailable)
        (logdir / "results.json").write_text(json.dumps({"command": command, "machine": info,
                                                         "results": results, "runs": runs},
                                                        indent=2, default=str))
        print_tables(results, targets, scenarios, args.latency_rate, args.latency_fraction)
        section = render_markdown(results, runs, targets, scenarios, info, command, args)
        (logdir / "RESULTS.md").write_text(section)
        if not args.no_write:
            write_results_md(section)
            print(f"\nbench: wrote {RESULTS_MD.relative_to(ROOT)} (and {logdir.relative_to(ROOT)}/)")
        noted = sum(1 for r in results if r.get("notes"))
        if noted:
            print(f"bench: {noted} result(s) have notes (outside load on a core, a server that was not "
                  f"CPU-bound, or a rate not kept); see the Notes in RESULTS.md", file=sys.stderr)
        bad = [r for r in results if r["flags"]]
        if unavailable:
            loud("not measured (could not be prepared): " + ", ".join(PEERS[n].title for n in unavailable))
        if bad:
            loud(f"{len(bad)} result(s) had problems; their numbers are not trustworthy:\n" +
                 "\n".join(f"!!!   {r['title']} / {r['label']} ({r['phase']}): {'; '.join(r['flags'])}"
                           for r in bad))
        return 1 if bad or unavailable else 0
    finally:
        shutil.rmtree(tmpdir, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
