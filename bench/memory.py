#!/usr/bin/env python3
"""Memory of idle WebSockets, and stonechat's keepalive timeliness with many of them.

    python3 bench/memory.py [--frameworks stonechat,robyn,uvicorn] [--levels 3000,10000,19000]
                            [--clients 4] [--ping-interval 5] [--keepalive-window 30] [--no-write]

For each server, in one run: start it (pinned to core 0, RLIMIT_NOFILE at the hard limit),
read its idle RSS, then open idle WebSockets in steps up to each level with --clients client
processes (bench/wsidle.py, pinned to core 1, each bound to its own 127.0.0.x source address
and at its hard fd limit). Every connection does the handshake and one echo, so the server's
handler has run and is waiting in `receive_text()` again; then the server's RSS (all its
processes) is read after it settles. RSS per connection = (RSS at N - idle RSS) / N.

Then the keepalive check: stonechat again with `ws_ping_interval` set short, the top level of
connections held idle for --keepalive-window seconds, and every client recording when each of
its connections gets a ping (and answering with a pong). Reported: the gaps between
consecutive pings over all connections (p50 / p99 / max against the interval), connections
that got no ping, connections the server closed.

Writes its section of bench/RESULTS.md (own markers) and bench/out/<stamp>-memory/.
Standard library only; shares bench/run.py's venv handling and /proc helpers.
"""

import argparse
import datetime as dt
import json
import os
import shlex
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import run as bench  # noqa: E402 -- bench/run.py, the harness this one shares its pieces with

MD_BEGIN = "<!-- bench/memory.py:begin -->"
MD_END = "<!-- bench/memory.py:end -->"
MEMORY_PEERS = ["stonechat", "robyn", "uvicorn"]
WS_SCENARIO = bench.WsScenario("ws-idle", "idle WebSockets", 0)

# What a server that holds 19,000 sockets needs configured. stonechat's own limits default to
# 10,000 connections and 256 WebSockets per client IP (safe defaults for one process); the
# benchmark lifts them to the fd limit, as a deployment sized for this would.
STONECHAT_ENV = {"STONECHAT_MAX_CONNECTIONS": "20000", "STONECHAT_WS_MAX_CONNECTIONS": "20000",
                 "STONECHAT_WS_MAX_CONNECTIONS_PER_IP": "20000"}


def rss_kib(root):
    """VmRSS of root and every descendant process, in KiB."""
    total = 0
    for pid in bench.descendants(root):
        try:
            with open(f"/proc/{pid}/status") as f:
                for line in f:
                    if line.startswith("VmRSS:"):
                        total += int(line.split()[1])
                        break
        except OSError:
            continue
    return total


def open_fds(root):
    n = 0
    for pid in bench.descendants(root):
        try:
            n += len(os.listdir(f"/proc/{pid}/fd"))
        except OSError:
            pass
    return n


def thread_count(root):
    n = 0
    for pid in bench.descendants(root):
        try:
            n += len(os.listdir(f"/proc/{pid}/task"))
        except OSError:
            pass
    return n


class Clients:
    """--clients wsidle.py processes, each bound to its own 127.0.0.x."""

    def __init__(self, n, url, load_cpu, logdir, tag):
        self.procs = []
        for i in range(n):
            argv = ["taskset", "-c", str(load_cpu), sys.executable, str(bench.BENCH / "wsidle.py"), url,
                    "--source", f"127.0.0.{10 + i}"]
            err = open(logdir / f"{tag}.client{i}.log", "wb")  # noqa: SIM115 -- closed in quit()
            self.procs.append((subprocess.Popen(argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                                stderr=err, text=True, bufsize=1), err))

    def ask(self, commands, word, timeout=300):
        """Send one command to each client (a list, one per client) and collect their answers."""
        for (p, _), cmd in zip(self.procs, commands):
            p.stdin.write(cmd + "\n")
            p.stdin.flush()
        answers = []
        deadline = time.monotonic() + timeout
        for p, _ in self.procs:
            line = p.stdout.readline()  # the clients answer within their own --open-timeout
            if time.monotonic() > deadline or not line.startswith(word):
                raise RuntimeError(f"client answered {line.strip()[:300]!r} to {word}")
            rest = line[len(word):].strip()
            answers.append(json.loads(rest) if rest else None)
        return answers

    def open(self, total_more):
        n = len(self.procs)
        shares = [total_more // n + (1 if i < total_more % n else 0) for i in range(n)]
        return self.ask([f"open {s}" for s in shares], "OPENED")

    def quit(self):
        for p, err in self.procs:
            try:
                p.stdin.write("quit\n")
                p.stdin.flush()
            except OSError:
                pass
        for p, err in self.procs:
            try:
                p.wait(timeout=15)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait()
            err.close()


def settle_rss(pid, seconds):
    """RSS after the server has been idle for a moment: the largest of three samples 0.2 s apart."""
    time.sleep(seconds)
    samples = []
    for _ in range(3):
        samples.append(rss_kib(pid))
        time.sleep(0.2)
    return max(samples)


def percentile(sorted_values, p):
    k = min(len(sorted_values) - 1, max(0, round(p / 100.0 * len(sorted_values) + 0.5) - 1))
    return sorted_values[k]


def measure_memory(args, target, logdir):
    res = {"framework": target.name, "title": target.peer.title, "levels": [], "flags": []}
    sc = WS_SCENARIO
    tag = f"{target.name}-memory"
    env = STONECHAT_ENV if target.name == "stonechat" else {}
    server = bench.Server(target, target.app(sc)[0], bench.free_port(), logdir / f"{tag}.server.log",
                          args.server_cpu, extra_env=env)
    clients = None
    try:
        server.wait_ready(args.start_timeout, http_probe=False)
        res["idle_rss_kib"] = settle_rss(server.pid, 1.0)
        res["idle_threads"] = thread_count(server.pid)
        url = f"ws://127.0.0.1:{server.port}{target.app(sc)[1]}"
        clients = Clients(args.clients, url, args.load_cpu, logdir, tag)
        have = 0
        for level in args.level_list:
            t0 = time.monotonic()
            answers = clients.open(level - have)
            opened = sum(a["open"] for a in answers)
            failed = sum(a["failed"] for a in answers)
            have = opened
            rss = settle_rss(server.pid, args.settle)
            entry = {"level": level, "open": opened, "failed": failed, "rss_kib": rss,
                     "open_seconds": round(time.monotonic() - t0, 1),
                     "per_conn_kib": (rss - res["idle_rss_kib"]) / opened if opened else None,
                     "server_fds": open_fds(server.pid), "threads": thread_count(server.pid),
                     "failures": [f for a in answers for f in a["first_failures"]][:5]}
            res["levels"].append(entry)
            print(f"bench: {target.peer.title:17s} {opened:6,} idle WebSockets (of {level:,}): RSS {rss / 1024:8.1f} MiB, "
                  f"{bench.fmt(entry['per_conn_kib'], '.1f')} KiB per connection "
                  f"({entry['threads']} threads, opened in {entry['open_seconds']} s)", flush=True)
            if failed or opened < level:
                res["flags"].append(f"{level:,}: only {opened:,} opened ({failed} failed: "
                                    f"{'; '.join(entry['failures'][:2])})")
                break
            if server.proc.poll() is not None:
                res["flags"].append(f"server died (exit {server.proc.returncode})")
                break
    except Exception as exc:  # noqa: BLE001 -- reported, the run goes on
        res["flags"].append(f"FAILED: {exc}")
        res["server_log_tail"] = server.log_tail()
    finally:
        if clients:
            clients.quit()
        server.stop()
    return res


def measure_keepalive(args, target, logdir):
    level = args.level_list[-1]
    res = {"connections": level, "interval_s": args.ping_interval, "window_s": args.keepalive_window,
           "flags": []}
    env = dict(STONECHAT_ENV, STONECHAT_WS_PING_INTERVAL=str(args.ping_interval),
               STONECHAT_WS_PING_TIMEOUT=str(max(20.0, 2 * args.ping_interval)))
    server = bench.Server(target, target.app(WS_SCENARIO)[0], bench.free_port(),
                          logdir / "stonechat-keepalive.server.log", args.server_cpu, extra_env=env)
    clients = None
    try:
        server.wait_ready(args.start_timeout, http_probe=False)
        clients = Clients(args.clients, f"ws://127.0.0.1:{server.port}{target.app(WS_SCENARIO)[1]}",
                          args.load_cpu, logdir, "stonechat-keepalive")
        answers = clients.open(level)
        opened = sum(a["open"] for a in answers)
        res["open"] = opened
        if opened < level:
            res["flags"].append(f"only {opened:,} of {level:,} opened")
        clients.ask(["pings-reset"] * args.clients, "RESET")
        before = bench.cpu_sample(server.pid)
        time.sleep(args.keepalive_window)
        after = bench.cpu_sample(server.pid)
        reports = clients.ask(["pings-report"] * args.clients, "PINGS")
        gaps = sorted(g for r in reports for g in r["gaps_s"])
        cpu = bench.cpu_delta(before, after)
        res.update(
            gaps=len(gaps),
            gap_p50_s=percentile(gaps, 50) if gaps else None,
            gap_p99_s=percentile(gaps, 99) if gaps else None,
            gap_max_s=gaps[-1] if gaps else None,
            gap_min_s=gaps[0] if gaps else None,
            no_ping=sum(r["no_ping"] for r in reports),
            min_pings=min(r["min_pings"] for r in reports),
            closed_by_server=sum(r["closed_by_server"] for r in reports),
            server_cpu_pct=100 * cpu["cpu_s"] / cpu["wall_s"],
            rss_kib=rss_kib(server.pid),
        )
        if res["no_ping"]:
            res["flags"].append(f"{res['no_ping']} connections got no ping in {args.keepalive_window} s")
        if res["closed_by_server"]:
            res["flags"].append(f"{res['closed_by_server']} connections closed by the server")
        print(f"bench: keepalive, {opened:,} connections, ping every {args.ping_interval:g} s: gaps p50 "
              f"{bench.fmt(res['gap_p50_s'], '.2f')} s, p99 {bench.fmt(res['gap_p99_s'], '.2f')} s, max "
              f"{bench.fmt(res['gap_max_s'], '.2f')} s; {res['no_ping']} without a ping; server CPU "
              f"{res['server_cpu_pct']:.0f}%", flush=True)
    except Exception as exc:  # noqa: BLE001
        res["flags"].append(f"FAILED: {exc}")
        res["server_log_tail"] = server.log_tail()
    finally:
        if clients:
            clients.quit()
        server.stop()
    return res


def render(results, keepalive, info, command, args):
    parts = [f"## Idle WebSockets, {info['date']}", "", f"Command: `{command}`", "",
             (f"Machine: {info['nproc']} CPUs ({info['cpu']}), Linux {info['kernel']}; project commit "
              f"{info['git']}; fd limit {info['nofile']}. Servers pinned to CPU {args.server_cpu}, "
              f"{args.clients} client processes (bench/wsidle.py) on CPU {args.load_cpu}. Each connection did "
              "the handshake and one 64-byte echo; the handler then waits in `receive_text()`. RSS = VmRSS of "
              f"the server's processes, read {args.settle:g} s after the last connection opened."), ""]
    for name, p in info["peers"].items():
        parts.append(f"- {p['title']} {p['version']} (`{p['python_path']}`): {p['notes']}")
    parts.append("")
    levels = args.level_list
    head = ["server", "idle RSS MiB"] + [f"{n:,}: RSS MiB" for n in levels] + \
        [f"{n:,}: KiB per conn" for n in levels] + ["threads at top"]
    rows = []
    for r in results:
        by = {e["level"]: e for e in r["levels"]}
        rows.append([r["title"], bench.fmt(r.get("idle_rss_kib", 0) / 1024 if r.get("idle_rss_kib") else None, ".1f")]
                    + [bench.fmt(by[n]["rss_kib"] / 1024, ".1f") if n in by else "—" for n in levels]
                    + [bench.fmt(by[n]["per_conn_kib"], ".1f") if n in by else "—" for n in levels]
                    + [str(r["levels"][-1]["threads"]) if r["levels"] else "—"])
    parts += ["### RSS per idle WebSocket", "", bench.markdown_grid(head, rows), ""]
    proj = projection(results)
    if proj:
        parts += ["### What 100,000 would need (extrapolated)", "",
                  "Idle RSS + 100,000 × the per-connection figure at the top level; and 100,000 descriptors "
                  f"(here the hard limit is {info['nofile']}, so that many need more processes or a higher limit).", ""]
        parts += [f"- {t}: ≈ {v:,.0f} MiB" for t, v in proj]
        parts.append("")
    if keepalive:
        k = keepalive
        parts += ["### Keepalive timeliness (stonechat)", "",
                  (f"{k.get('open', 0):,} idle connections, `ws_ping_interval` = {k['interval_s']:g} s, observed for "
                   f"{k['window_s']:g} s; each client records when every connection gets a ping and answers it. "
                   "A ping is due when a connection has received nothing for the interval (a pong counts), checked "
                   "by the server's once-a-second tick, so gaps of interval + up to ~1 s are on time."), "",
                  bench.markdown_grid(["gaps", "p50 s", "p99 s", "max s", "max − interval s", "min s", "no ping",
                                       "closed by server", "server CPU %"],
                                      [[f"{k.get('gaps', 0):,}", bench.fmt(k.get("gap_p50_s"), ".2f"),
                                        bench.fmt(k.get("gap_p99_s"), ".2f"), bench.fmt(k.get("gap_max_s"), ".2f"),
                                        bench.fmt(k["gap_max_s"] - k["interval_s"] if k.get("gap_max_s") else None,
                                                  "+.2f"),
                                        bench.fmt(k.get("gap_min_s"), ".2f"), str(k.get("no_ping", "—")),
                                        str(k.get("closed_by_server", "—")),
                                        bench.fmt(k.get("server_cpu_pct"), ".0f")]]), ""]
    bad = [(r["title"], f) for r in results for f in r["flags"]] + [("keepalive", f) for f in (keepalive or {}).get("flags", [])]
    if bad:
        parts += ["### Problems in this run", ""] + [f"- **{t}: {f}**" for t, f in bad] + [""]
    return "\n".join(parts) + "\n"


def projection(results):
    out = []
    for r in results:
        if r["levels"] and r["levels"][-1]["per_conn_kib"]:
            top = r["levels"][-1]
            out.append((f"{r['title']} (from {top['open']:,})",
                        (r["idle_rss_kib"] + 100_000 * top["per_conn_kib"]) / 1024))
    return out


def main(argv=None):
    ap = argparse.ArgumentParser(description="idle WebSocket memory and keepalive (see bench/README.md)")
    ap.add_argument("--frameworks", default=",".join(MEMORY_PEERS))
    ap.add_argument("--levels", default="3000,10000,19000", help="connection counts, ascending")
    ap.add_argument("--clients", type=int, default=4, help="client processes (default 4)")
    ap.add_argument("--settle", type=float, default=3.0, help="seconds before reading RSS at a level")
    ap.add_argument("--ping-interval", type=float, default=5.0, help="stonechat ws_ping_interval for the check")
    ap.add_argument("--keepalive-window", type=float, default=30.0, help="seconds the pings are watched")
    ap.add_argument("--no-keepalive", action="store_true")
    ap.add_argument("--server-cpu", type=int, default=0)
    ap.add_argument("--load-cpu", type=int, default=1)
    ap.add_argument("--start-timeout", type=float, default=30)
    for name in MEMORY_PEERS:
        ap.add_argument(f"--{name}-python")
    ap.add_argument("--no-write", action="store_true")
    args = ap.parse_args(argv)
    args.level_list = [int(x) for x in args.levels.split(",") if x.strip()]
    names = [n.strip() for n in args.frameworks.split(",") if n.strip()]
    if not names or set(names) - set(MEMORY_PEERS) or args.level_list != sorted(args.level_list):
        ap.error(f"--frameworks takes {', '.join(MEMORY_PEERS)}; --levels must ascend")
    if not 1 <= args.clients <= 16:
        ap.error("--clients must be 1..16")
    if not 0 < args.ping_interval <= 60 or not 0 < args.keepalive_window <= 600 or not 0 <= args.settle <= 60:
        ap.error("--ping-interval must be in (0, 60], --keepalive-window in (0, 600], --settle in [0, 60]")
    bench.pin_cpus(args.server_cpu, args.load_cpu)
    args.lock = bench.take_lock("memory.py")
    soft, hard = bench.raise_nofile()
    top = args.level_list[-1]
    if top + 64 > hard:
        bench.die(f"{top:,} connections need more descriptors than the hard limit ({hard:,}) allows in one server")
    if -(-top // args.clients) + 64 > hard:
        bench.die("too few --clients for the top level under the fd limit")

    tmpdir = tempfile.mkdtemp(prefix="stonechat-memory-")
    targets, unavailable = [], {}
    for name in names:
        peer = bench.PEERS[name]
        try:
            python, version = bench.ensure_peer(peer, getattr(args, f"{name}_python"))
        except (RuntimeError, OSError, subprocess.SubprocessError) as exc:
            bench.loud(f"{peer.title} cannot be measured: {exc}")
            unavailable[name] = str(exc)
            continue
        app_dir = bench.stonechat_app_dir(tmpdir) if name == "stonechat" else bench.APPS
        targets.append(bench.Target(peer, "async", python, app_dir, version))
    logdir = bench.OUT / (dt.datetime.now().strftime("%Y%m%d-%H%M%S") + "-memory")
    logdir.mkdir(parents=True, exist_ok=True)
    command = "python3 bench/memory.py " + shlex.join(sys.argv[1:]) if sys.argv[1:] else "python3 bench/memory.py"
    results = [measure_memory(args, t, logdir) for t in targets]
    keepalive = None
    sc_target = next((t for t in targets if t.name == "stonechat"), None)
    if sc_target and not args.no_keepalive:
        keepalive = measure_keepalive(args, sc_target, logdir)
    info = bench.machine_info(targets, args, unavailable)
    info["nofile"] = hard
    (logdir / "results.json").write_text(json.dumps({"command": command, "machine": info, "results": results,
                                                     "keepalive": keepalive}, indent=2, default=str))
    section = render(results, keepalive, info, command, args)
    print("\n" + section)
    for t, v in projection(results):
        print(f"bench: 100,000 idle WebSockets on {t}: ≈ {v:,.0f} MiB")
    if not args.no_write:
        bench.write_results_md(section, MD_BEGIN, MD_END)
        print(f"bench: wrote {bench.RESULTS_MD.relative_to(bench.ROOT)} (and {logdir.relative_to(bench.ROOT)}/)")
    bad = any(r["flags"] for r in results) or (keepalive and keepalive["flags"]) or unavailable
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
