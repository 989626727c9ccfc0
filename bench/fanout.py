#!/usr/bin/env python3
"""Fan-out across machines: two servers on one Redis, one publisher, N subscribers split over
both servers, 64-byte messages. Measures delivered messages/s, publish-to-receive latency
(p50/p99) and the servers' CPU time per delivered message, for

* ``stonechat-room``      room messages (Lua numbering + capped stream + PUBLISH), plain clients
* ``stonechat-recovery``  the same on a ``recovery=True`` endpoint (envelopes with positions)
* ``stonechat-endpoint``  an endpoint broadcast (a plain PUBLISH: no numbering, no history)
* ``socketio``            python-socketio 5, AsyncRedisManager, under uvicorn, same Redis

The recovery bookkeeping's cost is ``stonechat-recovery`` / ``stonechat-room`` vs
``stonechat-endpoint``. Run:

    python3 bench/fanout.py                          # 100 and 1000 subscribers, every scenario
    python3 bench/fanout.py --subscribers 100 --duration 3 --scenarios stonechat-room   # a smoke run

Needs ``redis-server`` on PATH; starts its own on a free port. stonechat runs from the project's
``.venv``; python-socketio from ``bench/.venv-socketio`` (created on first use: pip install
python-socketio "uvicorn[standard]" redis). Bounded: at most 5,000 subscribers, 120 s per run, loopback only.
The subscriber client and the publisher are this file, run as subprocesses (``--role``).
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import json
import os
import selectors
import signal
import socket
import statistics
import subprocess
import sys
import time
from pathlib import Path

BENCH = Path(__file__).resolve().parent
ROOT = BENCH.parent
SIO_VENV = BENCH / ".venv-socketio"
MAX_SUBSCRIBERS = 5000
MAX_SECONDS = 120
SCENARIOS = ("stonechat-room", "stonechat-recovery", "stonechat-endpoint", "socketio")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def cpu_seconds(pid: int) -> float:
    """utime + stime of ``pid`` and its children that are still alive (uvicorn has none here)."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def wait_port(port: int, timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with socket.socket() as s:
            if s.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.05)
    raise RuntimeError(f"nothing listening on {port}")


# -- the subscriber client (its own process): raw sockets, one selector loop -------------------

def _handshake(port: int, path: str) -> tuple:
    sock = socket.create_connection(("127.0.0.1", port))
    key = base64.b64encode(os.urandom(16)).decode()
    sock.sendall((f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nUpgrade: websocket\r\n"
                  f"Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n\r\n").encode())
    head = b""
    while b"\r\n\r\n" not in head:
        chunk = sock.recv(4096)
        if not chunk:
            raise RuntimeError("handshake refused")
        head += chunk
    if b" 101 " not in head.split(b"\r\n", 1)[0]:
        raise RuntimeError(head.split(b"\r\n", 1)[0].decode())
    sock.setblocking(False)
    return sock, head.split(b"\r\n\r\n", 1)[1]


def _text_frame(text: str) -> bytes:
    data = text.encode()
    mask = os.urandom(4)
    masked = bytes(b ^ mask[i % 4] for i, b in enumerate(data))
    return bytes((0x81, 0x80 | len(data))) + mask + masked  # short frames only (< 126 bytes)


def _frames(buf: bytearray):
    """Complete server frames (unmasked) at the start of ``buf``: (opcode, payload); consumed."""
    out = []
    pos = 0
    while len(buf) - pos >= 2:
        b1 = buf[pos + 1] & 0x7F
        head = 2
        if b1 == 126:
            if len(buf) - pos < 4:
                break
            b1 = int.from_bytes(buf[pos + 2:pos + 4], "big")
            head = 4
        elif b1 == 127:
            if len(buf) - pos < 10:
                break
            b1 = int.from_bytes(buf[pos + 2:pos + 10], "big")
            head = 10
        if len(buf) - pos < head + b1:
            break
        out.append((buf[pos] & 0x0F, bytes(buf[pos + head:pos + head + b1])))
        pos += head + b1
    del buf[:pos]
    return out


def subscriber_main(args: argparse.Namespace) -> None:
    ports = [int(p) for p in args.ports.split(",")]
    socketio = args.kind == "socketio"
    path = "/socket.io/?EIO=4&transport=websocket" if socketio else args.path
    sel = selectors.DefaultSelector()
    bufs: dict = {}
    socks = []
    for i in range(args.n):
        sock, rest = _handshake(ports[i % len(ports)], path)
        bufs[sock] = bytearray(rest)
        socks.append(sock)
        sel.register(sock, selectors.EVENT_READ)
    joined = 0
    ready = set()
    latencies: list = []
    received = 0
    deadline = time.monotonic() + MAX_SECONDS
    measuring = False
    stop_at = None
    print("SUB connected", flush=True)
    while time.monotonic() < deadline:
        if stop_at is not None and time.monotonic() > stop_at:
            break
        for key, _ in sel.select(0.5):
            sock = key.fileobj
            try:
                data = sock.recv(1 << 16)
            except BlockingIOError:
                continue
            if not data:
                sel.unregister(sock)
                continue
            buf = bufs[sock]
            buf += data
            now = time.monotonic_ns()
            for opcode, payload in _frames(buf):
                if opcode != 1:
                    continue
                text = payload.decode()
                if socketio:
                    if text.startswith("0"):
                        sock.send(_text_frame("40"))
                        continue
                    if text.startswith("40"):
                        ready.add(sock)
                        continue
                    if text == "2":
                        sock.send(_text_frame("3"))
                        continue
                    if not text.startswith("42"):
                        continue
                    text = json.loads(text[2:])[1]
                elif text.startswith("{"):
                    message = json.loads(text)
                    if message.get("type") == "joined":
                        ready.add(sock)
                        continue
                    text = message["data"]
                if text.startswith("ready"):
                    ready.add(sock)
                    continue
                if text.startswith("stop"):
                    stop_at = time.monotonic() + 0.5
                    continue
                if text.startswith("go"):
                    measuring = True
                    continue
                if measuring:
                    received += 1
                    if received % args.sample == 0:
                        latencies.append((now - int(text[:20])) / 1e6)
        if len(ready) == args.n and joined == 0:
            joined = 1
            print("SUB ready", flush=True)
    latencies.sort()
    result = {"received": received, "samples": len(latencies),
              "p50_ms": latencies[len(latencies) // 2] if latencies else None,
              "p99_ms": latencies[int(len(latencies) * 0.99)] if latencies else None}
    print("SUB_JSON " + json.dumps(result), flush=True)


# -- the publisher (its own process) ----------------------------------------------------------

async def publisher_main(args: argparse.Namespace) -> None:
    pad = "x" * 44

    def message(kind: str = "") -> str:
        return kind or f"{time.monotonic_ns():020d}{pad}"  # 64 bytes

    if args.kind == "socketio":
        import socketio
        mgr = socketio.AsyncRedisManager(args.redis, write_only=True)

        async def send(text: str) -> None:
            await mgr.emit("m", text, room="fan", namespace="/")
    else:
        import stonechat
        pub = await stonechat.Publisher(args.redis).__aenter__()

        async def send(text: str) -> None:
            if args.kind == "stonechat-endpoint":
                pub.broadcast_nowait(args.path, text)
            else:
                pub.send_nowait("fan", text)  # not awaited: queued and pipelined

    print("PUB ready", flush=True)
    sys.stdin.readline()  # the orchestrator says when
    await send("go")
    interval = 1.0 / args.rate
    sent = 0
    started = time.monotonic()
    end = started + args.duration
    while True:
        now = time.monotonic()
        if now >= end:
            break
        due = started + sent * interval
        if due > now:
            await asyncio.sleep(due - now)
        await send(message())
        sent += 1
    await asyncio.sleep(0.3)
    await send("stop")
    await asyncio.sleep(0.2)
    print("PUB_JSON " + json.dumps({"sent": sent, "seconds": time.monotonic() - started}), flush=True)


# -- orchestration ------------------------------------------------------------------------------

def ensure_socketio_venv() -> Path:
    python = SIO_VENV / "bin" / "python"
    check = [str(python), "-c", "import socketio, uvicorn, redis, websockets, uvloop, httptools"]
    if not python.exists() or subprocess.run(check, capture_output=True).returncode != 0:
        print("creating bench/.venv-socketio (python-socketio 5, uvicorn[standard], redis)", flush=True)
        subprocess.run([sys.executable, "-m", "venv", str(SIO_VENV)], check=True)
        subprocess.run([str(python), "-m", "pip", "install", "-q", "python-socketio>=5,<6", "uvicorn[standard]",
                        "redis"], check=True)
    return python


def start_servers(kind: str, redis_url: str, python_st: str) -> tuple[list, list]:
    procs, ports = [], []
    for _ in range(2):
        port = free_port()
        env = dict(os.environ, PORT=str(port), REDIS_URL=redis_url, STONECHAT_BROKER=redis_url,
                   STONECHAT_LOG_LEVEL="WARNING", STONECHAT_WS_MAX_CONNECTIONS_PER_IP=str(MAX_SUBSCRIBERS))
        if kind == "socketio":
            python = str(ensure_socketio_venv())
            cmd = [python, "-m", "uvicorn", "fanout_socketio:app", "--host", "127.0.0.1", "--port", str(port),
                   "--log-level", "warning", "--ws", "auto", "--no-access-log"]
        else:
            cmd = [python_st, str(BENCH / "apps" / "fanout_stonechat.py")]
        procs.append(subprocess.Popen(cmd, cwd=str(BENCH / "apps"), env=env))
        ports.append(port)
    for port in ports:
        wait_port(port)
    return procs, ports


def run_one(kind: str, n: int, args: argparse.Namespace, redis_url: str, redis_pid: int) -> dict:
    python_st = args.stonechat_python
    procs, ports = start_servers(kind, redis_url, python_st)
    path = "/subrec" if kind == "stonechat-recovery" else "/sub"
    rate = args.rate or max(10, int(args.deliveries / n))
    sub_python = python_st
    try:
        sub = subprocess.Popen([sub_python, __file__, "--role", "subscriber", "--kind", kind, "--n", str(n),
                                "--ports", ",".join(map(str, ports)), "--path", path,
                                "--sample", str(max(1, n // 50))],
                               stdout=subprocess.PIPE, text=True)
        pub_python = str(ensure_socketio_venv()) if kind == "socketio" else python_st
        pub = subprocess.Popen([pub_python, __file__, "--role", "publisher", "--kind", kind, "--redis", redis_url,
                                "--rate", str(rate), "--duration", str(args.duration), "--path", path],
                               stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
        assert sub.stdout is not None and pub.stdout is not None and pub.stdin is not None
        assert sub.stdout.readline().strip() == "SUB connected"
        assert pub.stdout.readline().strip() == "PUB ready"
        helper = None
        if kind in ("stonechat-room", "stonechat-endpoint"):
            # plain clients get no "joined" notice: "ready" messages through the path under test
            helper = subprocess.Popen([pub_python, __file__, "--role", "ready", "--kind", kind, "--redis",
                                       redis_url, "--path", path])
        line = sub.stdout.readline().strip()
        if helper is not None:
            helper.terminate()
            helper.wait(10)
        if line != "SUB ready":
            raise RuntimeError(f"subscribers not ready: {line!r}")
        cpu0 = [cpu_seconds(p.pid) for p in procs]
        redis0 = cpu_seconds(redis_pid)
        t0 = time.monotonic()
        pub.stdin.write("go\n")
        pub.stdin.flush()
        pub_out = pub.stdout.read()
        sub_out, _ = sub.communicate(timeout=MAX_SECONDS)
        elapsed = time.monotonic() - t0
        cpu1 = [cpu_seconds(p.pid) for p in procs]
        redis1 = cpu_seconds(redis_pid)
        pub.wait(10)
    finally:
        for p in procs:
            p.send_signal(signal.SIGINT)
        for p in procs:
            try:
                p.wait(15)
            except subprocess.TimeoutExpired:
                p.kill()
    pub_json = json.loads(pub_out.split("PUB_JSON ", 1)[1])
    sub_json = json.loads(sub_out.split("SUB_JSON ", 1)[1])
    server_cpu = sum(b - a for a, b in zip(cpu0, cpu1))
    delivered = sub_json["received"]
    expected = pub_json["sent"] * n
    return {"scenario": kind, "subscribers": n, "rate": rate, "sent": pub_json["sent"], "delivered": delivered,
            "expected": expected, "delivered_per_s": delivered / min(pub_json["seconds"], args.duration),
            "p50_ms": sub_json["p50_ms"], "p99_ms": sub_json["p99_ms"],
            "server_cpu_us_per_delivered": 1e6 * server_cpu / delivered if delivered else None,
            "redis_cpu_s": redis1 - redis0, "elapsed_s": elapsed}


async def ready_main(args: argparse.Namespace) -> None:
    """Tell every subscriber "ready" through the path under test, until the orchestrator stops us."""
    if args.kind == "socketio":
        import socketio
        mgr = socketio.AsyncRedisManager(args.redis, write_only=True)
        for _ in range(120):
            await mgr.emit("m", "ready", room="fan", namespace="/")
            await asyncio.sleep(0.25)
        return
    import stonechat
    async with stonechat.Publisher(args.redis) as pub:
        for _ in range(120):
            if args.kind == "stonechat-endpoint":
                await pub.broadcast(args.path, "ready")
            else:
                await pub.send("fan", "ready")
            await asyncio.sleep(0.25)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--role", default="orchestrator", choices=("orchestrator", "subscriber", "publisher", "ready"))
    ap.add_argument("--kind", default="stonechat-room")
    ap.add_argument("--n", type=int, default=100)
    ap.add_argument("--ports", default="")
    ap.add_argument("--path", default="/sub")
    ap.add_argument("--sample", type=int, default=1)
    ap.add_argument("--redis", default="")
    ap.add_argument("--rate", type=int, default=0, help="messages/s published (default: deliveries / subscribers)")
    ap.add_argument("--deliveries", type=int, default=20000, help="target deliveries/s when --rate is not given")
    ap.add_argument("--duration", type=float, default=10.0)
    ap.add_argument("--subscribers", default="100,1000")
    ap.add_argument("--scenarios", default=",".join(SCENARIOS))
    ap.add_argument("--stonechat-python", default=str(ROOT / ".venv" / "bin" / "python"))
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()
    if args.role == "subscriber":
        subscriber_main(args)
        return
    if args.role == "publisher":
        asyncio.run(publisher_main(args))
        return
    if args.role == "ready":
        asyncio.run(ready_main(args))
        return
    counts = [int(x) for x in args.subscribers.split(",")]
    if any(c > MAX_SUBSCRIBERS or c < 1 for c in counts) or args.duration > MAX_SECONDS:
        sys.exit(f"at most {MAX_SUBSCRIBERS} subscribers and {MAX_SECONDS} s")
    scenarios = [s for s in args.scenarios.split(",") if s]
    unknown = set(scenarios) - set(SCENARIOS)
    if unknown:
        sys.exit(f"unknown scenario(s) {sorted(unknown)}; use {', '.join(SCENARIOS)}")
    port = free_port()
    redis = subprocess.Popen(["redis-server", "--port", str(port), "--bind", "127.0.0.1", "--save", "",
                              "--appendonly", "no"], stdout=subprocess.DEVNULL)
    wait_port(port)
    redis_url = f"redis://127.0.0.1:{port}/0"
    results = []
    try:
        for n in counts:
            for kind in scenarios:
                result = run_one(kind, n, args, redis_url, redis.pid)
                results.append(result)
                print(f"{kind:20} subs={n:5} rate={result['rate']:5}/s  delivered={result['delivered']:8} "
                      f"of {result['expected']:8}  {result['delivered_per_s']:9.0f} msg/s  "
                      f"p50={result['p50_ms'] or 0:7.2f} ms  p99={result['p99_ms'] or 0:7.2f} ms  "
                      f"server CPU={result['server_cpu_us_per_delivered'] or 0:6.2f} us/msg  "
                      f"redis CPU={result['redis_cpu_s']:.2f} s", flush=True)
    finally:
        redis.terminate()
        redis.wait(10)
    if args.json:
        print("FANOUT_JSON " + json.dumps(results))


if __name__ == "__main__":
    main()
