#!/usr/bin/env python3
"""Closed-loop WebSocket echo load generator (standard library only).

Opens N connections to ws://127.0.0.1:PORT/PATH (handshake written by hand),
then every connection keeps exactly one message in flight: send one masked
text frame, wait for its echo, record the round trip, send the next. After a
warm-up it measures for D seconds and prints messages/s and latency
percentiles. One epoll loop on raw non-blocking sockets keeps the client's own
cost per message low, since it gets a single core.

Bounded: at most MAX_CONNECTIONS connections and MAX_SECONDS of load; it
stops by itself, and gives up if no echo arrives for --stall seconds.
Only 127.0.0.1 is accepted as a target.

With --json, the last line is `WSLOAD_JSON {...}`; `WSLOAD_PHASE measure-start`
and `WSLOAD_PHASE measure-end` lines are printed (and flushed) at the edges of
the measured window so a supervisor can sample the server's CPU time there.
"""

import argparse
import base64
import hashlib
import json
import os
import select
import socket
import sys
import time
from urllib.parse import urlsplit

MAX_CONNECTIONS = 10_000
MAX_SECONDS = 600
WS_GUID = b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11"

OP_CONT, OP_TEXT, OP_BIN, OP_CLOSE, OP_PING, OP_PONG = 0x0, 0x1, 0x2, 0x8, 0x9, 0xA


def masked_frame(opcode, payload, mask=None):
    """A client frame (FIN set, masked as RFC 6455 requires of clients)."""
    mask = mask if mask is not None else os.urandom(4)
    n = len(payload)
    head = bytearray([0x80 | opcode])
    if n < 126:
        head.append(0x80 | n)
    elif n < 65536:
        head.append(0x80 | 126)
        head += n.to_bytes(2, "big")
    else:
        head.append(0x80 | 127)
        head += n.to_bytes(8, "big")
    body = bytes(b ^ mask[i & 3] for i, b in enumerate(payload))
    return bytes(head) + mask + body


def server_frame(opcode, payload):
    """The exact bytes an unmasked, unfragmented server frame carrying payload has."""
    n = len(payload)
    if n < 126:
        head = bytes([0x80 | opcode, n])
    elif n < 65536:
        head = bytes([0x80 | opcode, 126]) + n.to_bytes(2, "big")
    else:
        head = bytes([0x80 | opcode, 127]) + n.to_bytes(8, "big")
    return head + payload


def parse_frames(buf):
    """Split complete frames off the front of buf.

    Returns (frames, rest) with frames as (fin, opcode, payload). A frame cut
    anywhere (header, extended length, mask, payload) stays in rest.
    """
    frames = []
    pos = 0
    end = len(buf)
    while end - pos >= 2:
        b0 = buf[pos]
        b1 = buf[pos + 1]
        n = b1 & 0x7F
        i = pos + 2
        if n == 126:
            if end - i < 2:
                break
            n = int.from_bytes(buf[i:i + 2], "big")
            i += 2
        elif n == 127:
            if end - i < 8:
                break
            n = int.from_bytes(buf[i:i + 8], "big")
            i += 8
        mask = None
        if b1 & 0x80:  # servers must not mask, but tolerate it
            if end - i < 4:
                break
            mask = buf[i:i + 4]
            i += 4
        if end - i < n:
            break
        payload = bytes(buf[i:i + n])
        if mask:
            payload = bytes(b ^ mask[k & 3] for k, b in enumerate(payload))
        frames.append((bool(b0 & 0x80), b0 & 0x0F, payload))
        pos = i + n
    return frames, buf[pos:]


class LoadError(Exception):
    pass


def handshake(host, port, path, timeout):
    """Open one connection and upgrade it; return (socket, bytes read past the headers)."""
    sock = socket.create_connection((host, port), timeout=timeout)
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    key = base64.b64encode(os.urandom(16))
    req = (
        b"GET " + path.encode() + b" HTTP/1.1\r\n"
        b"Host: " + f"{host}:{port}".encode() + b"\r\n"
        b"Upgrade: websocket\r\n"
        b"Connection: Upgrade\r\n"
        b"Sec-WebSocket-Key: " + key + b"\r\n"
        b"Sec-WebSocket-Version: 13\r\n\r\n"
    )
    sock.sendall(req)
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = sock.recv(4096)
        if not chunk:
            raise LoadError(f"handshake: connection closed after {data[:200]!r}")
        data += chunk
        if len(data) > 65536:
            raise LoadError("handshake: response headers too large")
    head, rest = data.split(b"\r\n\r\n", 1)
    lines = head.split(b"\r\n")
    status = lines[0].split(b" ", 2)
    if len(status) < 2 or status[1] != b"101":
        raise LoadError(f"handshake: expected 101, got {lines[0]!r}")
    headers = {}
    for line in lines[1:]:
        k, _, v = line.partition(b":")
        headers[k.strip().lower()] = v.strip()
    want = base64.b64encode(hashlib.sha1(key + WS_GUID).digest())
    if headers.get(b"sec-websocket-accept") != want:
        raise LoadError("handshake: wrong or missing Sec-WebSocket-Accept")
    sock.settimeout(None)
    sock.setblocking(False)
    return sock, rest


def percentile(sorted_values, p):
    if not sorted_values:
        return None
    k = min(len(sorted_values) - 1, max(0, round(p / 100.0 * len(sorted_values) + 0.5) - 1))
    return sorted_values[k]


def run(url, connections, duration, warmup, size, stall, max_samples, emit_phase):
    parts = urlsplit(url)
    if parts.scheme != "ws":
        raise LoadError("only ws:// URLs are supported")
    host = parts.hostname
    if host != "127.0.0.1":
        raise LoadError("refusing to connect anywhere but 127.0.0.1")
    port = parts.port or 80
    path = parts.path or "/"
    if parts.query:
        path += "?" + parts.query

    payload = (b"stonechat-bench-" * (size // 16 + 1))[:size]
    expected = server_frame(OP_TEXT, payload)
    exp_len = len(expected)

    socks = []
    try:
        for _ in range(connections):
            socks.append(handshake(host, port, path, timeout=10.0))
    except (OSError, LoadError) as exc:
        for s, _ in socks:
            s.close()
        raise LoadError(f"could not open connection {len(socks) + 1}/{connections}: {exc}") from None

    ep = select.epoll()
    by_fd = {}
    frame_out = {}
    sent_at = {}
    bufs = {}
    pending_out = {}
    for s, rest in socks:
        fd = s.fileno()
        by_fd[fd] = s
        frame_out[fd] = masked_frame(OP_TEXT, payload)  # one mask key per connection, precomputed
        bufs[fd] = rest
        ep.register(fd, select.EPOLLIN)

    perf = time.perf_counter
    lat = []
    lat_append = lat.append
    stats = {"messages": 0, "mismatched": 0, "closed_by_server": 0, "pings": 0}
    measured = 0
    measuring = False

    def send(fd, data):
        try:
            n = by_fd[fd].send(data)
        except BlockingIOError:
            n = 0
        if n < len(data):
            pending_out[fd] = data[n:]
            ep.modify(fd, select.EPOLLIN | select.EPOLLOUT)

    t0 = perf()
    for fd in by_fd:
        sent_at[fd] = t0
        send(fd, frame_out[fd])

    warm_end = t0 + warmup
    measure_end = warm_end + duration
    last_progress = t0
    live = len(by_fd)
    measure_start = None
    cpu_start = None

    while True:
        now = perf()
        if not measuring and now >= warm_end:
            measuring = True
            measure_start = now
            cpu_start = time.process_time()
            measured = 0
            if emit_phase:
                print("WSLOAD_PHASE measure-start", flush=True)
        if now >= measure_end:
            break
        if now - last_progress > stall:
            raise LoadError(f"stalled: no echo for {stall:.0f} s ({live} connections open)")
        if live == 0:
            raise LoadError("every connection was closed by the server")
        timeout = min(measure_end, warm_end if not measuring else measure_end) - now
        events = ep.poll(max(0.0, min(timeout, 0.5)))
        for fd, ev in events:
            if ev & select.EPOLLOUT and fd in pending_out:
                data = pending_out.pop(fd)
                ep.modify(fd, select.EPOLLIN)
                send(fd, data)
            if not ev & (select.EPOLLIN | select.EPOLLHUP | select.EPOLLERR):
                continue
            try:
                data = by_fd[fd].recv(65536)
            except BlockingIOError:
                continue
            except ConnectionError:
                data = b""
            if not data:
                stats["closed_by_server"] += 1
                ep.unregister(fd)
                by_fd[fd].close()
                live -= 1
                continue
            buf = bufs[fd]
            if not buf and len(data) == exp_len and data == expected:
                complete = 1  # fast path: exactly one whole echo
            else:
                buf = buf + data if buf else data
                frames, bufs[fd] = parse_frames(buf)
                complete = 0
                for fin, opcode, body in frames:
                    if opcode == OP_PING:
                        stats["pings"] += 1
                        send(fd, masked_frame(OP_PONG, body))
                    elif opcode == OP_CLOSE:
                        stats["closed_by_server"] += 1
                    elif opcode in (OP_TEXT, OP_BIN, OP_CONT) and fin:
                        # Fragmented echoes are not reassembled: only a whole
                        # single-frame echo counts as matching.
                        if body != payload:
                            stats["mismatched"] += 1
                        complete += 1
            if complete:
                now = perf()
                last_progress = now
                stats["messages"] += complete
                if measuring:
                    measured += complete
                    if len(lat) < max_samples:
                        lat_append(now - sent_at[fd])
                sent_at[fd] = now
                send(fd, frame_out[fd])

    t_end = perf()
    cpu_end = time.process_time()
    if emit_phase:
        print("WSLOAD_PHASE measure-end", flush=True)

    close_frame = masked_frame(OP_CLOSE, (1000).to_bytes(2, "big"))
    for fd, s in by_fd.items():
        try:
            s.send(close_frame)
        except OSError:
            pass
    time.sleep(0.05)
    for s in by_fd.values():
        s.close()
    ep.close()

    elapsed = t_end - measure_start if measure_start else 0.0
    lat.sort()

    def ms(v):
        return None if v is None else round(v * 1000.0, 3)

    return {
        "url": url,
        "connections": connections,
        "message_bytes": size,
        "warmup_s": warmup,
        "duration_s": round(elapsed, 3),
        "messages": measured,
        "messages_per_s": round(measured / elapsed, 1) if elapsed > 0 else 0.0,
        "latency_ms": {
            "p50": ms(percentile(lat, 50)),
            "p90": ms(percentile(lat, 90)),
            "p99": ms(percentile(lat, 99)),
            "p999": ms(percentile(lat, 99.9)),
            "max": ms(lat[-1] if lat else None),
            "samples": len(lat),
        },
        "client_cpu_pct": round(100.0 * (cpu_end - cpu_start) / elapsed, 1) if elapsed > 0 else None,
        "mismatched": stats["mismatched"],
        "closed_by_server": stats["closed_by_server"],
        "pings": stats["pings"],
    }


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("url", help="ws://127.0.0.1:PORT/PATH")
    ap.add_argument("-c", "--connections", type=int, default=1)
    ap.add_argument("-d", "--duration", type=float, default=10.0, help="measured seconds")
    ap.add_argument("-w", "--warmup", type=float, default=2.0, help="seconds of load before measuring")
    ap.add_argument("-s", "--size", type=int, default=64, help="message size in bytes")
    ap.add_argument("--stall", type=float, default=5.0, help="give up after this long without an echo")
    ap.add_argument("--max-samples", type=int, default=5_000_000, help="cap on stored latency samples")
    ap.add_argument("--json", action="store_true", help="machine-readable output (and phase markers)")
    args = ap.parse_args(argv)

    if not 1 <= args.connections <= MAX_CONNECTIONS:
        ap.error(f"--connections must be 1..{MAX_CONNECTIONS}")
    if not (0 < args.duration and 0 <= args.warmup and args.duration + args.warmup <= MAX_SECONDS):
        ap.error(f"duration + warmup must be within {MAX_SECONDS} s")
    if not 1 <= args.size <= 1 << 20:
        ap.error("--size must be 1..1048576")

    try:
        res = run(args.url, args.connections, args.duration, args.warmup, args.size,
                  args.stall, args.max_samples, emit_phase=args.json)
    except LoadError as exc:
        if args.json:
            print("WSLOAD_JSON " + json.dumps({"error": str(exc)}), flush=True)
        print(f"wsload: error: {exc}", file=sys.stderr)
        return 2
    if args.json:
        print("WSLOAD_JSON " + json.dumps(res), flush=True)
    else:
        lat = res["latency_ms"]
        print(f"{res['connections']} connections, {res['message_bytes']} B messages, "
              f"{res['duration_s']} s measured")
        print(f"  {res['messages']} messages, {res['messages_per_s']:.1f} msg/s")
        print(f"  latency ms: p50 {lat['p50']}  p90 {lat['p90']}  p99 {lat['p99']}  "
              f"p99.9 {lat['p999']}  max {lat['max']}")
        print(f"  client CPU {res['client_cpu_pct']}%  mismatched {res['mismatched']}  "
              f"closed by server {res['closed_by_server']}")
    return 1 if res["mismatched"] or res["closed_by_server"] else 0


if __name__ == "__main__":
    sys.exit(main())
