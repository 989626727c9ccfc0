"""The access log: one line per request and one per WebSocket session, in Apache's combined
format (plus duration and request id) or as JSON lines, to stdout or a file.

It is a sink of ``core/observation.py`` and knows nothing of the server. The loop thread
formats each line (bytes: no request, nor its body, is kept alive after its answer) and
appends it to a deque; a writer thread writes what gathered every ``FLUSH_INTERVAL`` seconds,
one write per batch, so the loop makes no system call per request and never waits for a disk.
"""

from __future__ import annotations

import functools
import logging
import os
import re
import sys
import threading
import time
from collections import deque
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
        self.entries: deque[bytes] = deque()  # formatted lines
        self.thread: Optional[threading.Thread] = None
        self.stop_event = threading.Event()
        self.out: Optional[BinaryIO] = None
        self.owns_out = False
        self._line = self._combined if fmt == "combined" else self._json
        self._second = -1
        self._stamp = b""
        self._iso_second = -1
        self._iso = ""

    # -- the loop thread (sink of core/observation.py) -------------------------------------

    def answered(self, request: Any, status: int, sent: int, seconds: float) -> None:
        self.entries.append(self._line(request, status, sent, seconds, time.time(), None))

    def websocket_closed(self, request: Any, code: int, by: str, received: int, sent: int, seconds: float) -> None:
        self.entries.append(self._line(request, 101, 0, seconds, time.time(), (code, by, received, sent)))

    # -- the writer thread -----------------------------------------------------------------

    def start(self) -> None:
        if self.thread is not None:
            return
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
        if not entries or out is None:
            return
        lines = []
        pop = entries.popleft
        while entries:
            lines.append(pop())
        out.write(b"".join(lines))
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
