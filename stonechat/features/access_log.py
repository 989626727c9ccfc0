"""The access log: one line per request and one per WebSocket session, in Apache's combined
format (plus duration and request id) or as JSON lines, to stdout or a file.

It is a sink of ``core/observation.py`` and knows nothing of the server. Per request the loop
thread appends a line's pieces, ready bytes, to one list, and a writer thread joins and
writes what gathered every ``FLUSH_INTERVAL`` seconds in one call, straight to the file's
descriptor: the loop makes no system call per request and never waits for a disk.

Most of a line's text depends on its connection, not on the request: the client, and the
headers a keep-alive client sends the same every time (User-Agent, Referer, its request id).
So each connection has its own reporter (``connection_answered``: the observer asks for one
per connection, server/observed.py calls it for that connection's answers), a closure whose
cells hold those texts, escaped, with the header block they came from; nothing is looked up by
client per request. A request whose read begins with it (``request.first_read``) and holds
the same block, from its HTTP version on, right after its target, and nothing else (one slice
and one comparison of bytes, whatever the number of headers; why that is sound:
``_head_block``) takes them as they are; any other (pipelined, a body in the same read, new
headers) compares its header list, or reads its headers as a dict and keeps the new texts. A
combined line is four pieces: the line's head with the method (kept per connection and
method), the target as it came, the text from there to the duration (version, status, body
size, Referer, User-Agent: kept per connection, size and status), the duration in whole
microseconds with the line's end (a table); a JSON line five (its time to the millisecond
first: a table of the current second's). The last answer's method, size and status are kept
with their texts, which most answers repeat. Nothing is formatted per request, and nothing is
cached on the request line itself: a log is only as cheap here as it is for every request, not
just for a benchmark's repeated one. The combined line's head carries the time's second: it is
remade when the second changes. The targets are escaped by the writer thread, a batch at a
time (``_write_batch``).

The list holds only bytes (shared ones, nearly all, and the targets), nothing else of the
request; so the join can wait for the writer: one C call per batch, not a call scheduled on
the loop every iteration. It holds the GIL for that one call and the targets' probe (a few
hundred microseconds for a 0.1 s batch at tens of thousands of lines a second), never for
Python work per line (except to escape the targets of a batch that has one to escape),
which once made the loop wait whole 5 ms switch intervals.
"""

from __future__ import annotations

import functools
import logging
import os
import re
import select
import sys
import threading
import time
from math import floor
from time import perf_counter
from typing import Any, BinaryIO, Callable, Optional

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
# A target needs escaping only for a quote (34) or a backslash (92): the parser (llhttp)
# refuses control bytes and bytes above 0x7f in a request target (400, before any line is
# made; tests/features/test_access_log.py), and isascii() keeps the log safe should it ever
# let one through. Two int membership tests and isascii() cost a fraction of bytes.translate's
# probe, which builds its 256-entry table on every call. (``b'"' in target`` would first try
# the operand as an int and raise inside: dearer still.)
_QUOTE, _BACKSLASH = 34, 92
# Durations below this many microseconds take their text from a table made once (the format's
# own, when the log starts: about 0.6 MB), longer ones are formatted (they are the slow requests).
_TABLED_MICROS = 10_000
# The JSON time's milliseconds and the next field's name; 1000 is there for a float that rounds
# up to the next second, and the last entry, also read as [-1], for one a hair below its second.
_JSON_MILLIS = [b'%03dZ",' % min(n, 999) for n in range(1001)] + [b'000Z",']
# (A JSON line's time is the current second's text with one of these: ``AccessLog.stamps``.)
_CONNECTIONS_KEPT = 4096  # reporters kept by ``AccessLog.answered``, at most (then they are all forgotten)
_SIZES_KEPT = 64  # body sizes' texts kept per connection, at most


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


@functools.lru_cache(maxsize=2)
def _duration_table(fmt: str) -> list[bytes]:
    """The duration's piece for each number of microseconds below ``_TABLED_MICROS``: combined,
    ``608 -\n`` (Apache's %D, then no request id: the line's end; with an id the last two bytes
    are cut); JSON, the seconds and the next field's name."""
    if fmt == "combined":
        return [b"%d -\n" % n for n in range(_TABLED_MICROS)]
    return [b'0.%06d}\n' % n for n in range(_TABLED_MICROS)]


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
    rid = getattr(request, "observed", None)  # (set only with request ids on)
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


    def __init__(self, destination: str, fmt: str = "combined", request_ids: bool = False) -> None:
        if fmt not in FORMATS:
            raise ValueError(f"access_log_format: expected one of {', '.join(FORMATS)}, got {fmt!r}")
        self.destination = destination
        self.format = fmt
        # With request ids on, each line has the app's id (``request.observed``, which is set
        # only then: core/observation.py); without, the client's valid one
        self.request_ids = request_ids
        self.parts: list[bytes] = []  # the lines' pieces since the last write
        self.thread: Optional[threading.Thread] = None
        self.stopping = False  # set by stop(): the writer thread ends after its next sleep
        self.fd: Optional[int] = None  # where batches are written (a file's, or stdout's)
        self.out: Optional[BinaryIO] = None  # instead, for a stdout without a descriptor
        self.owns_out = False
        self._line = self._combined if fmt == "combined" else self._json
        self._second = -1
        self._stamp = b""
        self._iso_second = -1
        self._iso = ""
        # The current wall-clock second on the perf_counter clock (answers are timed on it):
        # the time text changes when an answer's moment reaches next_second.
        self.second_started = 0.0
        self.next_second = -1.0
        self.time_text = b""
        self.stamps: list[bytes] = []  # JSON: the time text with each of _JSON_MILLIS, this second
        # request.client -> that connection's reporter, for ``answered`` (see there)
        self.reporters: dict[Any, Callable[[Any, int, int, float], None]] = {}
        self.hosts = _Texts(lambda host: _DASH if host is None else _client_bytes(host))
        self.methods = _Texts(lambda m: (_METHODS.get(m) or m.encode()) + (b" " if fmt == "combined" else b'","path":"'), 64)
        self.durations = _duration_table(fmt)
        # Every line is ``stride`` pieces with its target (as it came) at ``target_at``, a line
        # formatted whole (a WebSocket's, a refused request's) followed by empty ones: the writer
        # probes all of a batch's targets in one join (see _write_batch)
        self.stride, self.target_at = (4, 1) if fmt == "combined" else (5, 2)
        self.padding = (b"",) * (self.stride - 1)
        self.escape = _escape if fmt == "combined" else _json_escape

    # -- the loop thread (sink of core/observation.py) -------------------------------------

    def connection_answered(self) -> Callable[[Any, int, int, float], None]:
        """A new connection's own ``answered``: the observer's ``connection_reporter`` (core/
        observation.py) asks for one per connection, and the server calls it for each of that
        connection's answers. The connection's texts live in the function's cells, not in a
        log-wide table looked up by client each request."""
        return self._reporter()

    def answered(self, request: Any, status: int, sent: int, seconds: float) -> None:
        """The sink's per-answer call for an observer that has one function for all
        connections: the connection's reporter is found by ``request.client`` (one tuple per
        connection; a bounded table)."""
        client = None if request is None else request.client
        try:
            report = self.reporters[client]
        except KeyError:
            if len(self.reporters) >= _CONNECTIONS_KEPT:
                self.reporters.clear()
            report = self.reporters[client] = self.connection_answered()
        report(request, status, sent, seconds)

    def _refused(self, status: int, sent: int, seconds: float) -> tuple[bytes, ...]:
        """A refused request's line (413, 431...: answered while it arrived; rare), formatted at once."""
        return (self._line(None, status, sent, seconds, time.time(), None),) + self.padding

    def _reporter(self) -> Callable[[Any, int, int, float], None]:
        """``connection_answered``: the connection's texts in the cells of the closures below,
        the common answer in ``answered`` (one per format), the rest in ``settle`` and ``pick``."""
        log = self
        parts = self.parts  # (only ever changed in place: the writer deletes what it took)
        durations = self.durations
        methods = self.methods
        refused = self._refused
        combined = self.format == "combined"
        request_ids = self.request_ids
        escape = _escape if combined else _json_escape
        # The connection's texts: the header block they are of, from the version on (see
        # _head_block), and its header list, HTTP version, the client's valid id or None, the
        # client's text; the second they are of (the end of it on the perf_counter clock, its
        # text; for JSON lines the texts by millisecond, from when the second began); the
        # line's opening (combined: the client and time; JSON: the fields from the client to
        # the request id's opening quote, and ``with_id``, the same with the client's id and
        # the method's name after it); combined, the texts from the version to the status and
        # after the body size (Referer, User-Agent); the line to the target by method, and the
        # text from the target to the duration by body size, then status.
        block: Any = ()
        headers: Any = None
        version: Any = None
        rid: Optional[bytes] = None
        host = stamp = opening = with_id = version_text = fields = b""
        stamps: list[bytes] = []
        until = started = -1.0
        heads: dict[str, bytes] = {}
        rests: dict[int, dict[int, bytes]] = {}
        # The last answer's method, its head and where its block begins after the target, its
        # body size and status and their text: what the next answer most likely repeats.
        method: Optional[str] = None
        head = rest = b""
        offset = 0
        last_sent = last_status = -1

        def remake(request: Any) -> None:
            nonlocal block, headers, version, rid, host, opening, with_id, version_text, fields, heads, rests
            nonlocal last_sent
            headers = _sent_headers(request)
            referer, ua, rid = _header_fields(headers, escape)
            client = request.client
            host = log.hosts[client[0] if client.__class__ is tuple else None]
            block = _head_block(request)
            version = request.http_version
            if combined:
                opening = b"".join((host, b" - - [", stamp, b'] "'))
                version_text = b"".join((b" HTTP/", version.encode(), b'" '))
                fields = b"".join((b' "', referer, b'" "', ua, b'" '))
            else:
                opening = b"".join((b'"client":"', host, b'","user_agent":"', ua, b'","referer":"', referer,
                                    b'","request_id":"'))
                with_id = opening + (rid or _DASH) + b'","method":"'
            heads, rests = {}, {}
            last_sent = -1

        def settle(request: Any, at: float) -> None:
            """The texts for an answer that is not the common one: in a new second, to another
            method than the last, or whose read does not show the same header block (other
            headers or version, pipelined, a body after the head, a new connection)."""
            nonlocal until, stamp, stamps, started, opening, heads, block, method, head, offset
            if at >= until:
                if at >= log.next_second:
                    log._new_second(at)
                until, stamp, stamps, started = log.next_second, log.time_text, log.stamps, log.second_started
                if combined:  # the time is in the line's opening
                    opening = b"".join((host, b" - - [", stamp, b'] "'))
                    heads = {}
            name = request.method
            if request.first_read[len(name) + len(request.target) + 2:] != block:
                if request.http_version is not version or headers != _sent_headers(request):
                    remake(request)
                elif block == ():  # its first request's read did not begin with it
                    block = _head_block(request)
            try:
                head = heads[name]
            except KeyError:
                head = heads[name] = (opening if combined else with_id) + methods[name]
            method, offset = name, len(name) + 2

        def pick(sent: int, status: int) -> None:
            nonlocal rest, last_sent, last_status
            try:
                rest = rests[sent][status]
            except KeyError:
                text = (b"%s%d %d%s" % (version_text, status, sent, fields) if combined else
                        b'","http_version":"%s","status":%d,"bytes":%d,"duration":' % (version.encode(), status, sent))
                rest = _kept_rest(rests, sent, status, text)
            last_sent, last_status = sent, status

        # The common answer: the method of the last, in the same second, and the same header
        # block (with the version before it) right after the request line, which one comparison
        # of bytes shows (see _head_block); the same body size and status as the last.

        def answered_combined(request: Any, status: int, sent: int, seconds: float) -> None:
            nonlocal parts
            if request is None:
                parts += refused(status, sent, seconds)
                return
            if (request.method is not method or request.started + seconds >= until
                    or request.first_read[len(request.target) + offset:] != block):
                settle(request, request.started + seconds)
            if sent != last_sent or status != last_status:
                pick(sent, status)
            # Apache's %D (whole microseconds), then the app's id (request ids on), else the
            # client's valid one, else none; the target is escaped by the writer.
            if request_ids:
                parts += (head, request.target, rest,
                          b"%d %s\n" % (floor(seconds * 1e6), request.observed or rid or _DASH))
            elif rid is None:
                try:
                    parts += (head, request.target, rest, durations[floor(seconds * 1e6)])
                except IndexError:  # a slow answer
                    parts += (head, request.target, rest, b"%d -\n" % floor(seconds * 1e6))
            else:
                parts += (head, request.target, rest, b"%d %s\n" % (floor(seconds * 1e6), rid))

        def answered_json(request: Any, status: int, sent: int, seconds: float) -> None:
            nonlocal parts
            if request is None:
                parts += refused(status, sent, seconds)
                return
            at = request.started + seconds
            if (request.method is not method or at >= until
                    or request.first_read[len(request.target) + offset:] != block):
                settle(request, at)
            if sent != last_sent or status != last_status:
                pick(sent, status)
            # The time to the millisecond; the line to the method's name, with the app's id
            # (request ids on) in it, else the client's valid one (in ``head``).
            try:
                parts += (stamps[floor((at - started) * 1000.0)],
                          b"".join((opening, request.observed, b'","method":"', methods[method]))
                          if request_ids and request.observed is not None else head,
                          request.target, rest, durations[floor(seconds * 1e6)])
            except IndexError:  # a slow answer (its duration is not in the table)
                parts += (stamps[floor((at - started) * 1000.0)],
                          b"".join((opening, request.observed, b'","method":"', methods[method]))
                          if request_ids and request.observed is not None else head,
                          request.target, rest, b'%d.%06d}\n' % divmod(floor(seconds * 1e6), 1_000_000))

        return answered_combined if combined else answered_json

    def websocket_closed(self, request: Any, code: int, by: str, received: int, sent: int, seconds: float) -> None:
        self.parts += (self._line(request, 101, 0, seconds, time.time(), (code, by, received, sent)),) + self.padding

    def _new_second(self, at: float) -> None:
        """``at`` (perf_counter) is in a new wall-clock second: its time text."""
        offset = time.time() - perf_counter()
        second = int(at + offset)
        self.second_started = second - offset
        self.next_second = self.second_started + 1.0
        if self.format == "combined":
            self.time_text = time.strftime("%d/%b/%Y:%H:%M:%S +0000", time.gmtime(second)).encode()
        else:
            self.time_text = text = time.strftime('{"time":"%Y-%m-%dT%H:%M:%S.', time.gmtime(second)).encode()
            self.stamps = [text + millis for millis in _JSON_MILLIS]  # 1,002 texts a second, ~90 µs

    # -- the writer thread -----------------------------------------------------------------

    def start(self) -> None:
        if self.thread is not None:
            return
        # A batch is written straight to the descriptor: through a buffered file it would be
        # copied once more, every byte of the log (its buffer is smaller than a busy batch).
        if self.destination in STDOUT:
            sys.stdout.flush()
            try:
                self.fd, self.owns_out = sys.stdout.fileno(), False
            except (AttributeError, OSError, ValueError):  # a stdout that is not a file (replaced)
                self.fd, self.out, self.owns_out = None, sys.stdout.buffer, False
        else:
            # appended, one write per batch: O_APPEND keeps the lines of several worker
            # processes whole in one shared file
            self.fd = os.open(self.destination, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC, 0o644)
            self.owns_out = True
        self.stopping = False
        self.thread = threading.Thread(target=self._write_loop, name="stonechat-access-log", daemon=True)
        self.thread.start()

    def stop(self) -> None:
        """Write what is left and close the file (at shutdown, after the drain)."""
        thread, self.thread = self.thread, None
        if thread is not None:
            self.stopping = True
            thread.join(5.0)
        self._write_batch()
        if self.owns_out and self.fd is not None:
            os.close(self.fd)
        self.fd = self.out = None

    def _write_loop(self) -> None:
        # A plain sleep, not an Event's wait (a Condition's Python code, at every wake-up): the
        # stop waits for the current one to end, at most FLUSH_INTERVAL.
        while not self.stopping:
            time.sleep(FLUSH_INTERVAL)
            try:
                self._write_batch()
            except Exception:
                logger.exception("access log: writing to %s failed", self.destination)

    def _write_batch(self) -> None:
        """Join and write the lines gathered since the last write, in one call (whole lines:
        a line's pieces are appended by one call on the loop thread).

        The targets are escaped here, not per request on the loop: one join of the batch's
        targets and three probes of it find whether any needs escaping (a quote or a backslash;
        a byte above 0x7f too, should the parser ever let one through: see ``_QUOTE``), which
        is rare, and only then is each probed (Python work on this thread, holding the GIL a
        few microseconds a line)."""
        parts = self.parts
        fd, out = self.fd, self.out
        count = len(parts)
        if not count or (fd is None and out is None):
            return
        # a slice, then deleting it: what the loop appends in between is kept for the next
        pieces = parts[:count]
        del parts[:count]
        targets = b"".join(pieces[self.target_at::self.stride])
        if _QUOTE in targets or _BACKSLASH in targets or not targets.isascii():
            escape = self.escape
            for at in range(self.target_at, count, self.stride):
                target = pieces[at]
                if _QUOTE in target or _BACKSLASH in target or not target.isascii():
                    pieces[at] = escape(target)
        if fd is not None:
            _write_all(fd, b"".join(pieces))
        else:
            assert out is not None
            out.write(b"".join(pieces))
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
        rid = getattr(request, "observed", None)  # (set only with request ids on)
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


def _write_all(fd: int, data: bytes) -> None:
    """All of ``data`` to ``fd``: one system call for a file, more only where a pipe or a
    terminal takes part of it (or a descriptor left non-blocking is full: then it waits)."""
    view = memoryview(data)
    while view:
        try:
            view = view[os.write(fd, view):]
        except BlockingIOError:
            select.select([], [fd], [])


def _kept_rest(sizes: dict[int, dict[int, bytes]], sent: int, status: int, text: bytes) -> bytes:
    """Keep ``text``, a connection's text from the target to the duration, by body size, then
    status (few of either: the dicts are emptied past a bound)."""
    statuses = sizes.get(sent)
    if statuses is None:
        if len(sizes) >= _SIZES_KEPT:
            sizes.clear()
        statuses = sizes[sent] = {}
    elif len(statuses) >= 64:
        statuses.clear()
    statuses[status] = text
    return text


def _sent_headers(request: Any) -> list[tuple[bytes, bytes]]:
    """A request's headers as its client sent them: without the id the app added (request ids on)."""
    headers = request.headers
    rid = getattr(request, "observed", None)  # (set only with request ids on)
    if rid is not None and headers and headers[-1][1] is rid:
        return headers[:-1]
    return headers


def _head_block(request: Any) -> Any:
    """The request's header block as it arrived, with the HTTP version before it: its read's
    bytes from the version in its request line (``HTTP/1.1``) to the empty line, when the read
    it began in began with it (``first_read``), its request line is the one the parser read,
    spelled the one way (single spaces), and nothing but the block follows the line in that
    read; else ``()``, which equals no bytes.

    A later request whose read holds these bytes from just after its own target
    (``len(method) + len(target) + 2`` bytes in) to its end has this version and these
    headers: the bytes begin ``HTTP/`` and end their first line ten bytes in, which only a
    request line spelled the one way with nothing before it has there (an empty line before
    it puts a CR or LF where ``H`` would be; more spaces, or a shorter version, move the line's
    end; the parser takes no other version than x.y, tests/server/test_parser_assumptions.py),
    and they hold their only empty line at their end: the request's head is these bytes, and
    nothing follows it. A read that carries a body, or a second request, after the head does
    not match: its header list is compared."""
    read = request.first_read
    line = b"%s %s HTTP/%s" % (request.method.encode(), request.target, request.http_version.encode())
    if not read.startswith(line) or not read.startswith(b"\r\n", len(line)):
        return ()
    block = read[len(line) - 5 - len(request.http_version):]
    return block if block.find(b"\r\n\r\n") == len(block) - 4 else ()


def _clients_id(headers: list[tuple[bytes, bytes]]) -> bytes:
    """The client's X-Request-ID (the first), when valid; ``-`` when not (never logged then)."""
    for name, value in headers:
        if name == REQUEST_ID_HEADER:
            return value if valid_request_id(value) else b"-"
    return b"-"


def _header_fields(headers: list[tuple[bytes, bytes]], escape: Any) -> tuple[bytes, bytes, Optional[bytes]]:
    """(Referer, User-Agent, the client's request id or None) of a request's headers, the two
    escaped with ``escape`` when they need it (``-`` for one absent; an invalid id is None)."""
    fields = dict(headers)  # one call in C, whatever the number of headers
    referer = fields.get(b"referer", _DASH)
    ua = fields.get(b"user-agent", _DASH)
    if (referer + ua).translate(None, _SAFE_BYTES):  # rare: bytes to escape
        referer, ua = escape(referer), escape(ua)
    rid = _clients_id(headers) if REQUEST_ID_HEADER in fields else None
    return referer, ua, None if rid is None or rid == _DASH else rid


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
