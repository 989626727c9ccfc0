"""The access log: one line per request and one per WebSocket session, in Apache's combined
format (plus duration and request id) or as JSON lines, to stdout or a file.

It is a sink of ``core/observation.py`` and knows nothing of the server. Per request the loop
thread appends the line's pieces to one list (most from small tables: the client's head of the
line, made once a second, method, version, status, size), keeping nothing of the request alive
after its answer; once per loop iteration the pieces gathered in it are joined (call_soon) and
probed once for bytes that need escaping (rare: then only the raw fields are escaped, in place).
A writer thread writes what gathered every ``FLUSH_INTERVAL`` seconds in one call. So the loop
makes no system call per request and never waits for a disk, and it never waits for the writer
either: formatting on the writer thread would make the loop wait for the GIL (up to its 5 ms
switch interval) whenever a large batch is formatted.
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
_SAFE_BYTES = bytes(b for b in range(0x20, 0x7F) if b not in (0x22, 0x5C))  # need no escaping, in either format
_DASH = b"-"

# A line is STRIDE pieces in AccessLog.parts; RAW are the places of the fields as the client sent
# them (target, then Referer and User-Agent), the only ones that may need escaping.
_COMBINED_STRIDE, _COMBINED_RAW = 11, (2, 6, 8)
_JSON_STRIDE, _JSON_RAW = 14, (7, 9, 11)
# The pieces' tables, each with the separator that follows it (fewer pieces per line).
_SENT_TEXTS = [b'%d "' % n for n in range(1024)]  # body bytes, then the Referer's opening quote
_JSON_SENT = [b'%d,"duration":' % n for n in range(1024)]
# milliseconds of the JSON time; 1000 is there for a float that rounds up to the next second
_JSON_MILLIS = [b'%03dZ","status":' % min(n, 999) for n in range(1001)]


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
        self.entries: deque[bytes] = deque()  # joined batches, for the writer thread
        self.parts: list[bytes] = []  # this loop iteration's lines, STRIDE pieces each
        self.loop: Optional[asyncio.AbstractEventLoop] = None
        self.thread: Optional[threading.Thread] = None
        self.stop_event = threading.Event()
        self.out: Optional[BinaryIO] = None
        self.owns_out = False
        self._line = self._combined if fmt == "combined" else self._json
        self._second = -1
        self._stamp = b""
        self._iso_second = -1
        self._iso = ""
        # The current wall-clock second on the perf_counter clock (answers are timed on it):
        # the batch path's time text changes when an answer's moment reaches next_second.
        self.second_started = 0.0
        self.next_second = -1.0
        self.time_text = b""
        if fmt == "combined":
            self.answered = self._answered_combined  # type: ignore[method-assign]
            self.stride, self.raw_places = _COMBINED_STRIDE, _COMBINED_RAW
        else:
            self.answered = self._answered_json  # type: ignore[method-assign]
            self.stride, self.raw_places = _JSON_STRIDE, _JSON_RAW
        # the pieces' tables: few distinct values each (clients: one per connection); the
        # combined format's line head (client and time) is remade every second
        self.heads: dict[Any, bytes] = {}
        self.methods = _Texts(lambda m: (_METHODS.get(m) or m.encode()) + b" ", 64)
        self.versions = _Texts(lambda v: b' HTTP/' + v.encode() + b'" ', 16)
        self.statuses = _Texts(lambda st: b"%d " % st, 1024)
        self.json_clients = _Texts(lambda c: (_client_bytes(c[0]) if c.__class__ is tuple else b"-")
                                   + b'","method":"')
        self.json_methods = _Texts(lambda m: (_METHODS.get(m) or m.encode()) + b'","path":"', 64)
        self.json_versions = _Texts(lambda v: b'","http_version":"' + v.encode() + b'","user_agent":"', 16)
        self.json_statuses = _Texts(lambda st: b'%d,"bytes":' % st, 1024)

    # -- the loop thread (sink of core/observation.py) -------------------------------------

    def answered(self, request: Any, status: int, sent: int, seconds: float) -> None:
        """Replaced in ``__init__`` by the format's own (below)."""

    def _answered_combined(self, request: Any, status: int, sent: int, seconds: float) -> None:
        parts = self.parts
        if not parts:
            self._schedule()
        if request is None:  # refused while arriving (413, 431...): rare, formatted at once
            self._add_line(self._line(None, status, sent, seconds, time.time(), None))
            return
        at = request.started + seconds  # the answer's moment, on the perf_counter clock
        if at >= self.next_second:
            self._new_second(at)
        fields = dict(request.headers)  # one call in C, whatever the number of headers
        rid = request.observed
        if rid is None and REQUEST_ID_HEADER in fields:
            rid = _clients_id(request.headers)
        client = request.client
        parts.extend((self.heads.get(client) or self._head(client), self.methods[request.method], request.target,
                      self.versions[request.http_version], self.statuses[status],
                      _SENT_TEXTS[sent] if sent < 1024 else b'%d "' % sent, fields.get(b"referer", _DASH), b'" "',
                      fields.get(b"user-agent", _DASH), b'" %d ' % (seconds * 1e6),  # microseconds: Apache's %D
                      b"-\n" if rid is None else rid + b"\n"))

    def _answered_json(self, request: Any, status: int, sent: int, seconds: float) -> None:
        parts = self.parts
        if not parts:
            self._schedule()
        if request is None:
            self._add_line(self._line(None, status, sent, seconds, time.time(), None))
            return
        at = request.started + seconds
        if at >= self.next_second:
            self._new_second(at)
        fields = dict(request.headers)
        rid = request.observed
        if rid is None and REQUEST_ID_HEADER in fields:
            rid = _clients_id(request.headers)
        parts.extend((self.time_text, _JSON_MILLIS[int((at - self.second_started) * 1000)],
                      self.json_statuses[status], _JSON_SENT[sent] if sent < 1024 else b'%d,"duration":' % sent,
                      b'%.6f,"client":"' % seconds, self.json_clients[request.client],
                      self.json_methods[request.method], request.target, self.json_versions[request.http_version],
                      fields.get(b"user-agent", _DASH), b'","referer":"', fields.get(b"referer", _DASH),
                      b'","request_id":"', b'-"}\n' if rid is None else rid + b'"}\n'))

    def websocket_closed(self, request: Any, code: int, by: str, received: int, sent: int, seconds: float) -> None:
        if not self.parts:
            self._schedule()
        self._add_line(self._line(request, 101, 0, seconds, time.time(), (code, by, received, sent)))

    def _add_line(self, line: bytes) -> None:
        """A line formatted already, as one line's pieces (its own raw fields escaped)."""
        self.parts.extend((line,) + (b"",) * (self.stride - 1))

    def _new_second(self, at: float) -> None:
        """``at`` (perf_counter) is in a new wall-clock second: its time text, its line heads."""
        offset = time.time() - perf_counter()
        second = int(at + offset)
        self.second_started = second - offset
        self.next_second = self.second_started + 1.0
        if self.format == "combined":
            self.time_text = time.strftime("%d/%b/%Y:%H:%M:%S +0000", time.gmtime(second)).encode()
            self.heads.clear()
        else:
            self.time_text = time.strftime('{"time":"%Y-%m-%dT%H:%M:%S.', time.gmtime(second)).encode()

    def _head(self, client: Any) -> bytes:
        """The combined line up to the request line: client, identity, user, time."""
        if len(self.heads) >= 4096:
            self.heads.clear()
        head = self.heads[client] = b'%s - - [%s] "' % (
            _client_bytes(client[0]) if client.__class__ is tuple else b"-", self.time_text)
        return head

    def _schedule(self) -> None:
        if self.loop is not None:
            self.loop.call_soon(self.format_pending)

    def format_pending(self) -> None:
        """Join the lines gathered in this loop iteration, for the writer thread."""
        parts = self.parts
        count = len(parts)
        if count:
            # a slice, then deleting it: an append from another thread in between is kept
            pieces = parts[:count]
            del parts[:count]
            # One probe for the batch: the raw fields, each line's at the same places among
            # its pieces, need no escaping when all their bytes are printable ASCII but the
            # quote and the backslash. Else (rare) they are escaped, where they need it.
            stride = self.stride
            raw = b"".join([b"".join(pieces[place::stride]) for place in self.raw_places])
            text = self._escaped(pieces) if raw.translate(None, _SAFE_BYTES) else b"".join(pieces)
            self.entries.append(text)

    def _escaped(self, pieces: list[bytes]) -> bytes:
        """The batch again, each raw field that needs it escaped (Apache's way, or JSON's)."""
        escape = _escape if self.format == "combined" else _json_escape
        for start in range(0, len(pieces), self.stride):
            for place in self.raw_places:
                value = pieces[start + place]
                if value.translate(None, _SAFE_BYTES):
                    pieces[start + place] = escape(value)
        return b"".join(pieces)

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
        if self.loop is None and self.parts:  # no loop to join them: here, then
            self.format_pending()
        if not entries or out is None:
            return
        batches = []
        pop = entries.popleft
        while entries:
            batches.append(pop())
        out.write(b"".join(batches))
        out.flush()

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


def _clients_id(headers: list[tuple[bytes, bytes]]) -> bytes:
    """The client's X-Request-ID (the first), when valid; ``-`` when not (never logged then)."""
    for name, value in headers:
        if name == REQUEST_ID_HEADER:
            return value if valid_request_id(value) else b"-"
    return b"-"


def _json_escape(raw: bytes) -> bytes:
    """A raw field as the inside of a JSON string (bytes read as latin-1, as ``_json`` does)."""
    return orjson.dumps(raw.decode("latin-1"))[1:-1]


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
