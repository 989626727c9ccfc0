"""The access log: one line per request and one per WebSocket session, in Apache's combined
format (plus duration and request id) or as JSON lines, to stdout or a file.

It is a sink of ``core/observation.py`` and knows nothing of the server. Per request the loop
thread only appends a tuple of the request's raw fields (not the request: neither it nor its
body is kept alive after its answer); once per loop iteration the tuples gathered in it are
formatted in one pass (the time formatted once a second, one probe of the batch for bytes that
need escaping), and a writer thread writes what gathered every ``FLUSH_INTERVAL`` seconds in one
call. So the loop makes no system call per request and never waits for a disk, and it never
waits for the writer either: formatting on the writer thread would make the loop wait for the
GIL (up to its 5 ms switch interval) whenever a large batch is formatted.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import os
import re
import sys
import threading
import time
from collections import deque
from time import perf_counter
from typing import Any, BinaryIO, Optional

import orjson

from ..core.observation import REQUEST_ID_HEADER, valid_request_id

logger = logging.getLogger("stonechat.access")

FORMATS = ("combined", "json")
FLUSH_INTERVAL = 0.1  # seconds between writes: what a crash may lose, what a tail -f lags
STDOUT = ("-", "stdout")
# What a quoted field must escape: '"', '\\' and every byte that is not printable ASCII.
_UNSAFE = re.compile(rb'[^\x20\x21\x23-\x5b\x5d-\x7e]')
_NUMBERS = [b"%d" % n for n in range(1024)]  # statuses and small bodies, formatted once
_METHODS = {m: m.encode() for m in ("GET", "POST", "PUT", "DELETE", "PATCH", "HEAD", "OPTIONS", "CONNECT", "TRACE")}
# The batch path's pieces, each with the separator that follows it (fewer pieces to join).
_PADDED3 = [b"%03d" % n for n in range(1000)]
_SENT_TEXTS = [b'%d "' % n for n in range(1024)]  # body bytes, then the Referer's opening quote
_SPACED = [b"%d " % n for n in range(1000)]  # microseconds, then the space before the request id
_SAFE_BYTES = bytes(b for b in range(0x20, 0x7F) if b not in (0x22, 0x5C))  # need no escaping, in either format
_WANTED = frozenset((b"user-agent", b"referer", REQUEST_ID_HEADER))


class _Texts(dict):  # type: ignore[type-arg]
    """A value's bytes, made once by ``make`` (methods, versions, statuses, clients: few)."""

    def __init__(self, make: Any, limit: int = 4096) -> None:
        super().__init__()
        self.make = make
        self.limit = limit

    def __missing__(self, key: Any) -> bytes:
        if len(self) >= self.limit:
            self.clear()
        value = self[key] = self.make(key)
        return value


def _micros(us: int) -> bytes:
    """A whole number of microseconds, from tables for the usual sizes (``%d`` costs more)."""
    if us < 1000:
        return _NUMBERS[us] if us >= 0 else b"0"
    if us < 1_000_000:
        return _NUMBERS[us // 1000] + _PADDED3[us % 1000]
    return b"%d" % us


@functools.lru_cache(maxsize=1024)
def _client_bytes(host: Any) -> bytes:
    return str(host).encode()


def _escape(raw: bytes) -> bytes:
    """Apache's escaping in quoted fields: ``"`` and ``\\`` escaped, control and non-ASCII
    bytes as ``\\xhh``, so a client cannot forge a line or break the quoting."""
    out = bytearray()
    for b in raw:
        if b == 0x22 or b == 0x5C:
            out += b"\\%c" % b
        elif 0x20 <= b < 0x7F:
            out.append(b)
        else:
            out += b"\\x%02x" % b
    return bytes(out)


def _fields(request: Any) -> tuple[bytes, bytes, bytes, bytes]:
    """(client, User-Agent, Referer, request id) of a request, as bytes (``-`` when absent).
    The id is the one the app assigned (``request_id`` on), else the client's X-Request-ID
    when it is valid, never an invalid one."""
    ua = referer = b"-"
    rid = request.observed
    for name, value in request.headers:
        if name == b"user-agent":
            ua = value
        elif name == b"referer":
            referer = value
        elif name == REQUEST_ID_HEADER and rid is None:
            rid = value if valid_request_id(value) else b"-"
    client = request.client
    return (str(client[0]).encode() if client.__class__ is tuple else b"-"), ua, referer, rid or b"-"


class AccessLog:
    """One per served app (per worker process); ``start()`` at startup, ``stop()`` at shutdown."""

    def __init__(self, destination: str, fmt: str = "combined") -> None:
        if fmt not in FORMATS:
            raise ValueError(f"access_log_format: expected one of {', '.join(FORMATS)}, got {fmt!r}")
        self.destination = destination
        self.format = fmt
        self.entries: deque[bytes] = deque()  # formatted batches, for the writer thread
        self.pending: list[Any] = []  # this loop iteration's answered() tuples and lines
        self.loop: Optional[asyncio.AbstractEventLoop] = None
        self.thread: Optional[threading.Thread] = None
        self.stop_event = threading.Event()
        self.out: Optional[BinaryIO] = None
        self.owns_out = False
        self._line = self._combined if fmt == "combined" else self._json
        self._second = -1
        self._stamp = b""
        self._iso_second = -1
        self._batch_stamp: tuple[float, bytes] = (-1, b"")  # the batch path's second and its text
        self._iso = ""
        # the batch path's texts: few distinct values each (clients: one per connection)
        self._clients = _Texts(lambda c: _client_bytes(c[0]) if c.__class__ is tuple else b"-")
        self._method_texts = _Texts(lambda m: (_METHODS.get(m) or m.encode()) + b" ", 64)
        self._version_texts = _Texts(lambda v: b' HTTP/' + v.encode() + b'" ', 16)
        self._status_texts = _Texts(lambda st: b"%d " % st, 1024)
        self._json_methods = _Texts(lambda m: _METHODS.get(m) or m.encode(), 64)
        self._json_versions = _Texts(lambda v: v.encode(), 16)

    # -- the loop thread (sink of core/observation.py) -------------------------------------

    def answered(self, request: Any, status: int, sent: int, seconds: float) -> None:
        pending = self.pending
        if not pending:
            self._schedule()
        if request is None:  # refused while arriving (413, 431...): rare, formatted at once
            pending.append(self._line(None, status, sent, seconds, time.time(), None))
            return
        # The raw fields, formatted at the end of this loop iteration (_format_batch): the
        # answer's moment is ``started + seconds`` on the perf_counter clock, made a wall time there.
        pending.append((request.started + seconds, status, sent, seconds, request.method, request.target,
                        request.http_version, request.client, request.headers, request.observed))

    def websocket_closed(self, request: Any, code: int, by: str, received: int, sent: int, seconds: float) -> None:
        if not self.pending:
            self._schedule()
        self.pending.append(self._line(request, 101, 0, seconds, time.time(), (code, by, received, sent)))

    def _schedule(self) -> None:
        if self.loop is not None:
            self.loop.call_soon(self.format_pending)

    def format_pending(self) -> None:
        """Format the tuples gathered in this loop iteration, for the writer thread."""
        pending = self.pending
        count = len(pending)
        if count:
            # a slice, then deleting it: an append from another thread in between is kept
            items = pending[:count]
            del pending[:count]
            self.entries.append(self._format_batch(items))

    # -- the writer thread -----------------------------------------------------------------

    def start(self) -> None:
        if self.thread is not None:
            return
        try:
            self.loop = asyncio.get_running_loop()
        except RuntimeError:  # not started on a loop: each line is formatted when written
            self.loop = None
        if self.destination in STDOUT:
            sys.stdout.flush()
            self.out, self.owns_out = sys.stdout.buffer, False
        else:
            # appended, one write per batch: O_APPEND keeps the lines of several worker
            # processes whole in one shared file
            self.out = open(self.destination, "ab", buffering=1 << 20)
            self.owns_out = True
        self.stop_event.clear()
        self.thread = threading.Thread(target=self._write_loop, name="stonechat-access-log", daemon=True)
        self.thread.start()

    def stop(self) -> None:
        """Write what is left and close the file (at shutdown, after the drain)."""
        thread, self.thread = self.thread, None
        if thread is not None:
            self.stop_event.set()
            thread.join(5.0)
        self.format_pending()
        self._write_batch()
        if self.owns_out and self.out is not None:
            self.out.close()
        self.out = None

    def _write_loop(self) -> None:
        while not self.stop_event.wait(FLUSH_INTERVAL):
            try:
                self._write_batch()
            except Exception:
                logger.exception("access log: writing to %s failed", self.destination)

    def _write_batch(self) -> None:
        entries = self.entries
        out = self.out
        if self.loop is None and self.pending:  # no loop to format them: here, then
            self.format_pending()
        if not entries or out is None:
            return
        batches = []
        pop = entries.popleft
        while entries:
            batches.append(pop())
        out.write(b"".join(batches))
        out.flush()

    def _format_batch(self, items: list) -> bytes:
        """Lines already formatted (bytes) pass as they are; the raw tuples of ``answered`` are
        formatted here. If a batch's target, User-Agent or Referer has a byte that needs escaping
        (rare), the batch is formatted again line by line, escaping."""
        fast = self._combined_batch if self.format == "combined" else self._json_batch
        wall = time.time() - perf_counter()  # perf_counter moments -> wall time, now
        try:
            return fast(items, wall)
        except _NeedsEscaping:
            pass
        lines = []
        for item in items:
            if item.__class__ is bytes:
                lines.append(item)
            else:
                lines.append(self._line(_Fields(item), item[1], item[2], item[3], item[0] + wall, None))
        return b"".join(lines)

    def _combined_batch(self, items: list, wall: float) -> bytes:
        out: list[bytes] = []
        extend = out.extend
        probe: list[bytes] = []
        add_probe = probe.extend
        clients = self._clients
        methods = self._method_texts
        versions = self._version_texts
        statuses = self._status_texts
        wanted = _WANTED
        sent_texts = _SENT_TEXTS
        spaced = _SPACED
        dash = b"-"
        second, stamp = self._batch_stamp  # kept from the last batch: batches are small
        for item in items:
            if item.__class__ is bytes:
                out.append(item)
                continue
            at, status, sent, seconds, method, target, version, client, headers, rid = item
            ua = referer = dash
            for name, value in headers:
                if name in wanted:
                    if name == b"user-agent":
                        ua = value
                    elif name == b"referer":
                        referer = value
                    elif rid is None:
                        rid = value if valid_request_id(value) else b"-"
            at += wall
            if at - second >= 1.0 or at < second:
                second = int(at)
                stamp = time.strftime(' - - [%d/%b/%Y:%H:%M:%S +0000] "', time.gmtime(second)).encode()
            us = int(seconds * 1e6)
            extend((clients[client], stamp, methods[method], target, versions[version], statuses[status],
                    sent_texts[sent] if sent < 1024 else b'%d "' % sent, b'-" "' if referer is dash else referer + b'" "',
                    ua, b'" ', spaced[us] if us < 1000 else _micros(us) + b" ", rid or b"-", b"\n"))
            add_probe((target, ua, referer))
        if b"".join(probe).translate(None, _SAFE_BYTES):
            raise _NeedsEscaping
        self._batch_stamp = (second, stamp)
        return b"".join(out)

    def _json_batch(self, items: list, wall: float) -> bytes:
        out: list[bytes] = []
        extend = out.extend
        probe: list[bytes] = []
        add_probe = probe.extend
        clients = self._clients
        methods = self._json_methods
        versions = self._json_versions
        wanted = _WANTED
        numbers = _NUMBERS
        padded = _PADDED3
        second, stamp = self._batch_stamp  # kept from the last batch: batches are small
        for item in items:
            if item.__class__ is bytes:
                out.append(item)
                continue
            at, status, sent, seconds, method, target, version, client, headers, rid = item
            ua = referer = b"-"
            for name, value in headers:
                if name in wanted:
                    if name == b"user-agent":
                        ua = value
                    elif name == b"referer":
                        referer = value
                    elif rid is None:
                        rid = value if valid_request_id(value) else b"-"
            at += wall
            if at - second >= 1.0 or at < second:
                second = int(at)
                stamp = time.strftime('{"time":"%Y-%m-%dT%H:%M:%S.', time.gmtime(second)).encode()
            us = int(seconds * 1e6)
            extend((stamp, padded[int((at - second) * 1000) % 1000], b'Z","status":', numbers[status] if status < 1024
                    else b"%d" % status, b',"bytes":', numbers[sent] if sent < 1024 else b"%d" % sent,
                    b',"duration":', _micros(us // 1_000_000), b".", padded[us // 1000 % 1000], padded[us % 1000],
                    b',"client":"', clients[client], b'","method":"', methods[method], b'","path":"', target,
                    b'","http_version":"', versions[version], b'","user_agent":"', ua, b'","referer":"', referer,
                    b'","request_id":"', rid or b"-", b'"}\n'))
            add_probe((target, ua, referer))
        if b"".join(probe).translate(None, _SAFE_BYTES):
            raise _NeedsEscaping
        self._batch_stamp = (second, stamp)
        return b"".join(out)

    def _combined(self, request: Any, status: int, sent: int, seconds: float, at: float, ws: Any) -> bytes:
        """One line, built by joining pieces: per request this is the log's main cost, and a
        join costs a fraction of one ``%`` with eleven fields (or of ``bytes.translate``)."""
        second = int(at)
        if second != self._second:
            self._stamp = time.strftime("[%d/%b/%Y:%H:%M:%S +0000] ", time.gmtime(second)).encode()
            self._second = second
        sent_text = _NUMBERS[sent] if sent < 1024 else b"%d" % sent
        if request is None:
            return b"".join((b"- - - ", self._stamp, b'"-" ', _NUMBERS[status], b" ", sent_text, b' "-" "-" ',
                             b"%d" % (seconds * 1e6), b" -\n"))
        ua = referer = b"-"
        rid = request.observed
        for name, value in request.headers:
            if name == b"user-agent":
                ua = value
            elif name == b"referer":
                referer = value
            elif name == REQUEST_ID_HEADER and rid is None:
                rid = value if valid_request_id(value) else b"-"
        target = request.target
        if _UNSAFE.search(target) or _UNSAFE.search(ua) or _UNSAFE.search(referer):  # rare
            target, ua, referer = _escape(target), _escape(ua), _escape(referer)
        client = request.client
        text = b"".join((
            _client_bytes(client[0]) if client.__class__ is tuple else b"-", b" - - ", self._stamp, b'"',
            _METHODS.get(request.method) or request.method.encode(), b" ", target, b" HTTP/",
            request.http_version.encode(), b'" ', _NUMBERS[status], b" ", sent_text, b' "', referer, b'" "', ua,
            b'" ', b"%d" % (seconds * 1e6), b" ", rid or b"-"))  # the duration in microseconds (Apache's %D)
        if ws is not None:
            code, by, received, sent_messages = ws
            text += b" ws_close=%d ws_closed_by=%s ws_in=%d ws_out=%d" % (code, (by or "-").encode(), received,
                                                                         sent_messages)
        return text + b"\n"

    def _json(self, request: Any, status: int, sent: int, seconds: float, at: float, ws: Any) -> bytes:
        second = int(at)
        if second != self._iso_second:
            self._iso = time.strftime("%Y-%m-%dT%H:%M:%S.", time.gmtime(second))
            self._iso_second = second
        record: dict[str, Any] = {
            "time": "%s%03dZ" % (self._iso, (at - second) * 1000),
            "status": status, "bytes": sent, "duration": seconds,
        }
        if request is None:
            record.update(client="-", method="-", path="-", http_version="-", user_agent="-", referer="-",
                          request_id="-")
        else:
            client, ua, referer, rid = _fields(request)
            record.update(client=client.decode(), method=request.method, path=request.target.decode("latin-1"),
                          http_version=request.http_version, user_agent=ua.decode("latin-1"),
                          referer=referer.decode("latin-1"), request_id=rid.decode())
        if ws is not None:
            code, by, received, sent_messages = ws
            record["websocket"] = {"close_code": code, "closed_by": by, "messages_in": received,
                                   "messages_out": sent_messages}
        return orjson.dumps(record) + b"\n"


class _NeedsEscaping(Exception):
    """A batch holds a byte the fast path cannot write as it is."""


class _Fields:
    """``answered``'s tuple read as the request the per-line formatters take."""

    __slots__ = ("method", "target", "http_version", "client", "headers", "observed")

    def __init__(self, item: tuple) -> None:
        (_, _, _, _, self.method, self.target, self.http_version, self.client, self.headers,
         self.observed) = item


def check_destination(destination: str) -> None:
    """Fail at startup, naming the option, when the log file cannot be opened for appending."""
    if destination in STDOUT:
        return
    directory = os.path.dirname(os.path.abspath(destination))
    if not os.path.isdir(directory):
        raise ValueError(f"access_log: no such directory {directory!r} for {destination!r}")
    try:
        with open(destination, "a", encoding="utf-8"):
            pass
    except OSError as exc:
        raise ValueError(f"access_log: cannot write {destination!r}: {exc.strerror or exc}") from None
