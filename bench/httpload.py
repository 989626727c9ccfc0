#!/usr/bin/env python3
"""Constant-rate HTTP/1.1 load generator, coordinated-omission aware (standard library only).

Sends requests at a fixed overall rate R over N keep-alive connections (one request in flight
per connection, no pipelining) and measures each request's latency from the time it was
*scheduled* to be sent, as wrk2 does: request k is due at t0 + k/R; it goes out on the first
idle connection at or after that time, and if every connection is still waiting for a slow
server, it waits in the client and that wait counts in its latency. A server that stalls for
100 ms therefore shows 100 ms of latency on every request due in that time, instead of the
one slow sample a closed-loop client (wrk) would record.

One epoll loop on raw non-blocking sockets, so the client's cost per request stays low (it
gets one core). `epoll_wait` takes whole milliseconds (Python rounds a timeout up), which would
send due requests up to ~1 ms late and in bursts; so the loop waits in `select()` on the epoll
descriptor itself, whose timeout is in microseconds (at least 50 µs, so that at high rates the
client does not make a system call per request), with the thread's timer slack set to 1 ns
(Linux's default 50 µs would be added to every wake), and then takes the ready events with a
zero-timeout `epoll_wait`. Each send's lag behind its due time is reported (`send_lag_ms`):
the client's own share of every latency. Responses are parsed
(Content-Length or chunked), their status checked, and their body compared with the first
response's body.

After the window it waits up to 5 s for the answers to requests due in it; requests that were
still unanswered, or never sent because the server fell that far behind, are counted (`timeout`,
`unsent`): the latency percentiles are then lower bounds.

Bounded: rate <= 500,000/s, <= 1,000 connections, <= 600 s in all; only 127.0.0.1.
With --json it prints `HTTPLOAD_PHASE measure-start` / `measure-end` at the edges of the
measured window and a final `HTTPLOAD_JSON {...}` line (bench/run.py reads them).

    python3 bench/httpload.py http://127.0.0.1:8080/json --rate 20000 -c 64 -d 10
"""

import argparse
import collections
import ctypes
import json
import select
import socket
import sys
import time
from urllib.parse import urlsplit

MAX_RATE = 500_000
MAX_CONNECTIONS = 1_000
MAX_SECONDS = 600
WAIT_QUANTUM = 50e-6  # the shortest wait, s: sends go out at most this late (plus the wake-up's own delay)


class LoadError(Exception):
    pass


def tighten_timer_slack():
    """Ask Linux to wake this thread at its timeouts, not up to 50 µs after (PR_SET_TIMERSLACK).

    Best effort: where prctl is missing the waits are only that much less exact."""
    try:
        ctypes.CDLL(None, use_errno=True).prctl(29, 1, 0, 0, 0)  # PR_SET_TIMERSLACK, 1 ns
    except (OSError, AttributeError):
        pass


def parse_response(buf):
    """(bytes consumed, status, body) for one complete response at the front of buf, else None."""
    i = buf.find(b"\r\n\r\n")
    if i < 0:
        return None
    head = buf[:i].lower()
    try:
        status = int(head[9:12])
    except ValueError:
        raise LoadError(f"not an HTTP response: {bytes(buf[:80])!r}") from None
    start = i + 4
    j = head.find(b"\r\ncontent-length:")
    if j >= 0:
        k = head.find(b"\r\n", j + 17)
        n = int(head[j + 17:k if k >= 0 else len(head)])
        if len(buf) < start + n:
            return None
        return start + n, status, bytes(buf[start:start + n]), b"\r\nconnection: close" in head
    if b"\r\ntransfer-encoding: chunked" in head:
        pos, body = start, []
        while True:
            e = buf.find(b"\r\n", pos)
            if e < 0:
                return None
            size = int(buf[pos:e].split(b";")[0], 16)
            if size == 0:
                t = buf.find(b"\r\n\r\n", e)  # trailers (usually none) end with an empty line
                if buf[e:e + 4] == b"\r\n\r\n":
                    return e + 4, status, b"".join(body), b"\r\nconnection: close" in head
                if t < 0:
                    return None
                return t + 4, status, b"".join(body), b"\r\nconnection: close" in head
            if len(buf) < e + 2 + size + 2:
                return None
            body.append(bytes(buf[e + 2:e + 2 + size]))
            pos = e + 2 + size + 2
    if status in (204, 304) or 100 <= status < 200:
        return start, status, b"", b"\r\nconnection: close" in head
    raise LoadError("response without Content-Length or chunked encoding (close-delimited bodies "
                    "are not supported on a keep-alive benchmark)")


def percentile(sorted_values, p):
    if not sorted_values:
        return None
    k = min(len(sorted_values) - 1, max(0, round(p / 100.0 * len(sorted_values) + 0.5) - 1))
    return sorted_values[k]


def run(url, rate, connections, duration, warmup, method, headers, body, emit_phase):
    parts = urlsplit(url)
    if parts.scheme != "http":
        raise LoadError("only http:// URLs are supported")
    if parts.hostname != "127.0.0.1":
        raise LoadError("refusing to connect anywhere but 127.0.0.1")
    port = parts.port or 80
    path = (parts.path or "/") + ("?" + parts.query if parts.query else "")
    payload = body.encode() if body is not None else b""
    head = [f"{method} {path} HTTP/1.1", f"Host: 127.0.0.1:{port}"] + list(headers)
    if body is not None or method in ("POST", "PUT", "PATCH"):
        head.append(f"Content-Length: {len(payload)}")
    request = ("\r\n".join(head) + "\r\n\r\n").encode() + payload
    tighten_timer_slack()

    ep = select.epoll()
    epfd = ep.fileno()
    socks, bufs = {}, {}

    def connect():
        s = socket.create_connection(("127.0.0.1", port), timeout=10)
        s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        s.setblocking(False)
        fd = s.fileno()
        socks[fd] = s
        bufs[fd] = b""
        ep.register(fd, select.EPOLLIN)
        return fd

    def drop(fd):
        ep.unregister(fd)
        socks.pop(fd).close()
        bufs.pop(fd, None)

    try:
        idle = collections.deque(connect() for _ in range(connections))  # FIFO: every connection takes turns
    except OSError as exc:
        raise LoadError(f"could not open {connections} connections: {exc}") from None

    perf = time.perf_counter
    interval = 1.0 / rate
    inflight = {}  # fd -> scheduled time of its request
    lat = []
    stats = {"non_2xx": 0, "mismatched": 0, "reconnects": 0, "read": 0, "write": 0, "timeout": 0}
    first_body = None
    late_sends = 0
    lags = []  # now - due at each send, for requests due in the measured window
    scheduled = 0  # requests due inside the measured window (sent)
    unsent = 0  # requests due inside the window that never went out (the server never caught up)
    done_in_window = 0

    t0 = perf() + 0.05
    warm_end = t0 + warmup
    measure_end = warm_end + duration
    k = 0
    measuring = ended = False
    cpu_start = cpu_end = None
    t_start = t_end = None
    drain_deadline = None

    while True:
        now = perf()
        if not measuring and now >= warm_end:
            measuring = True
            t_start, cpu_start = now, time.process_time()
            if emit_phase:
                print("HTTPLOAD_PHASE measure-start", flush=True)
        if measuring and not ended and now >= measure_end:
            ended = True
            t_end, cpu_end = now, time.process_time()
            if emit_phase:
                print("HTTPLOAD_PHASE measure-end", flush=True)
            drain_deadline = now + 5.0
        if ended:
            backlog = t0 + k * interval < measure_end  # requests due in the window, not sent yet
            if not inflight and not backlog:
                break
            if now >= drain_deadline:
                stats["timeout"] += len(inflight)
                if backlog:
                    unsent = int((measure_end - (t0 + k * interval)) / interval) + 1
                break
        # Release every request that is due, on idle connections.
        due = t0 + k * interval
        while idle and due <= now and due < measure_end:
            fd = idle.popleft()
            try:
                socks[fd].send(request)  # small: fits the socket buffer of an idle connection
            except OSError:
                stats["write"] += 1
                drop(fd)
                idle.append(connect())
                stats["reconnects"] += 1
                continue
            if now - due > 0.001:
                late_sends += 1
            if due >= warm_end:
                scheduled += 1
                lags.append(now - due)
            inflight[fd] = due
            k += 1
            due = t0 + k * interval
        if idle and due < measure_end:
            timeout = max(0.0, due - now)
        else:
            timeout = 0.05
        if not ended:
            timeout = min(timeout, max(0.0, (warm_end if not measuring else measure_end) - now))
        if timeout > 0:
            # Readable when epoll has events; the timeout in µs, but at least WAIT_QUANTUM: at
            # high rates the next request is due within microseconds, and a system call per
            # request would cost the client more CPU than the lateness it saves.
            select.select((epfd,), (), (), max(timeout, WAIT_QUANTUM))
        for fd, ev in ep.poll(0):
            s = socks.get(fd)
            if s is None:
                continue
            try:
                data = s.recv(65536)
            except BlockingIOError:
                continue
            except OSError:
                data = b""
            if not data:
                stats["read"] += 1
                inflight.pop(fd, None)
                drop(fd)
                idle.append(connect())
                stats["reconnects"] += 1
                continue
            buf = bufs[fd] + data if bufs[fd] else data
            got = parse_response(buf)
            if got is None:
                bufs[fd] = buf
                continue
            used, status, rbody, close = got
            bufs[fd] = buf[used:]
            t = perf()
            due_at = inflight.pop(fd, None)
            if due_at is None:
                raise LoadError("a response arrived with no request in flight")
            if not 200 <= status < 300:
                stats["non_2xx"] += 1
            if first_body is None:
                first_body = rbody
            elif rbody != first_body:
                stats["mismatched"] += 1
            if warm_end <= due_at < measure_end:
                lat.append(t - due_at)
            if measuring and not ended:
                done_in_window += 1
            if close:
                drop(fd)
                idle.append(connect())
                stats["reconnects"] += 1
            else:
                idle.append(fd)

    for fd in list(socks):
        drop(fd)
    ep.close()
    elapsed = t_end - t_start
    lat.sort()
    lags.sort()

    def ms(v):
        return None if v is None else round(v * 1000.0, 3)

    return {
        "url": url, "rate": rate, "connections": connections, "warmup_s": warmup,
        "duration_s": round(elapsed, 3),
        "scheduled": scheduled,
        "responses": done_in_window,
        "responses_per_s": round(done_in_window / elapsed, 1) if elapsed > 0 else 0.0,
        "latency_ms": {"p50": ms(percentile(lat, 50)), "p90": ms(percentile(lat, 90)),
                       "p99": ms(percentile(lat, 99)), "p999": ms(percentile(lat, 99.9)),
                       "max": ms(lat[-1] if lat else None), "samples": len(lat)},
        "late_sends": late_sends,
        "send_lag_ms": {"p50": ms(percentile(lags, 50)), "p99": ms(percentile(lags, 99)),
                        "max": ms(lags[-1] if lags else None)},
        "unsent": unsent,
        "client_cpu_pct": round(100.0 * (cpu_end - cpu_start) / elapsed, 1) if elapsed > 0 else None,
        "non_2xx": stats["non_2xx"],
        "mismatched": stats["mismatched"],
        "errors": {"read": stats["read"], "write": stats["write"], "timeout": stats["timeout"],
                   "reconnects": stats["reconnects"]},
    }


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("url", help="http://127.0.0.1:PORT/PATH")
    ap.add_argument("--rate", type=float, required=True, help="requests per second, all connections together")
    ap.add_argument("-c", "--connections", type=int, default=64)
    ap.add_argument("-d", "--duration", type=float, default=10.0, help="measured seconds")
    ap.add_argument("-w", "--warmup", type=float, default=2.0, help="seconds at the rate before measuring")
    ap.add_argument("--method", default="GET")
    ap.add_argument("-H", "--header", action="append", default=[], help="'Name: value' (repeatable)")
    ap.add_argument("--body", help="request body (text)")
    ap.add_argument("--json", action="store_true", help="machine-readable output (and phase markers)")
    args = ap.parse_args(argv)
    if not 0 < args.rate <= MAX_RATE:
        ap.error(f"--rate must be in (0, {MAX_RATE}]")
    if not 1 <= args.connections <= MAX_CONNECTIONS:
        ap.error(f"--connections must be 1..{MAX_CONNECTIONS}")
    if not (0 < args.duration and 0 <= args.warmup and args.duration + args.warmup <= MAX_SECONDS):
        ap.error(f"duration + warmup must be within {MAX_SECONDS} s")
    try:
        res = run(args.url, args.rate, args.connections, args.duration, args.warmup, args.method.upper(),
                  args.header, args.body, emit_phase=args.json)
    except LoadError as exc:
        if args.json:
            print("HTTPLOAD_JSON " + json.dumps({"error": str(exc)}), flush=True)
        print(f"httpload: error: {exc}", file=sys.stderr)
        return 2
    if args.json:
        print("HTTPLOAD_JSON " + json.dumps(res), flush=True)
    else:
        lat = res["latency_ms"]
        print(f"{res['connections']} connections, {res['rate']:,.0f}/s asked, {res['duration_s']} s measured")
        print(f"  {res['responses']} responses, {res['responses_per_s']:,.1f}/s; {res['late_sends']} sends "
              f"more than 1 ms after their due time")
        print(f"  latency ms (from scheduled send): p50 {lat['p50']}  p90 {lat['p90']}  p99 {lat['p99']}  "
              f"p99.9 {lat['p999']}  max {lat['max']}")
        print(f"  client CPU {res['client_cpu_pct']}%  non-2xx {res['non_2xx']}  mismatched {res['mismatched']}  "
              f"errors {res['errors']}")
        if res["unsent"] or res["errors"]["timeout"]:
            print(f"  the server fell behind: {res['unsent']} due requests never sent and "
                  f"{res['errors']['timeout']} unanswered 5 s after the window; the latencies above are lower bounds")
    bad = res["non_2xx"] or res["mismatched"] or res["errors"]["read"] or res["errors"]["write"]
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
