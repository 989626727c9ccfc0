"""The access log: one line per request and one per WebSocket session, in Apache's combined
format (plus duration and request id) or as JSON lines, to stdout or a file.

It is a sink of ``core/observation.py`` and knows nothing of the server. The loop thread only
appends a tuple to a deque; a writer thread formats and writes what gathered every
``FLUSH_INTERVAL`` seconds, so the loop makes no system call per request.
"""

from __future__ import annotations

import logging
import os
import sys
import threading
import time
from collections import deque
from typing import Any, Optional, TextIO

import orjson

from ..core.observation import Exchange, Session

logger = logging.getLogger("stonechat.access")

FORMATS = ("combined", "json")
FLUSH_INTERVAL = 0.1  # seconds between writes: what a crash may lose, what a tail -f lags
STDOUT = ("-", "stdout")


def _escape(text: str) -> str:
    """Apache's escaping in quoted fields: ``"`` and ``\\`` escaped, control and non-ASCII
    characters as ``\\xhh``, so a client cannot forge a line or break the quoting."""
    if text.isascii() and text.isprintable() and '"' not in text and "\\" not in text:
        return text
    out = []
    for ch in text:
        if ch == '"' or ch == "\\":
            out.append("\\" + ch)
        elif " " <= ch <= "~":
            out.append(ch)
        else:
            out.extend(f"\\x{b:02x}" for b in ch.encode("utf-8", "surrogateescape"))
    return "".join(out)


# (kind, at, client, method, target, version, status, sent, seconds, user agent, referer,
#  request id, websocket fields or None): what the loop thread hands the writer
_Entry = tuple


def _request_fields(request: Any) -> tuple[str, str, str, str, str, str]:
    client = request.client[0] if request.client else "-"
    ua = referer = "-"
    for name, value in request.headers:
        if name == b"user-agent":
            ua = value.decode("latin-1")
        elif name == b"referer":
            referer = value.decode("latin-1")
    return (str(client), request.method, request.target.decode("latin-1"), request.http_version, ua, referer)


class AccessLog:
    """One per served app (per worker process); ``start()`` at startup, ``stop()`` at shutdown."""

    def __init__(self, destination: str, fmt: str = "combined") -> None:
        if fmt not in FORMATS:
            raise ValueError(f"access_log_format: expected one of {', '.join(FORMATS)}, got {fmt!r}")
        self.destination = destination
        self.format = fmt
        self.entries: deque[_Entry] = deque()
        self.thread: Optional[threading.Thread] = None
        self.stop_event = threading.Event()
        self.out: Optional[TextIO] = None
        self.owns_out = False

    # -- the loop thread (sink of core/observation.py) -------------------------------------

    def answered(self, exchange: Exchange) -> None:
        request = exchange.request
        if request is None:
            fields: tuple[str, ...] = ("-", "-", "-", "-", "-", "-")
        else:
            fields = _request_fields(request)
        self.entries.append((exchange.at, fields, exchange.status, exchange.sent, exchange.seconds,
                             exchange.request_id, None))

    def websocket_closed(self, session: Session) -> None:
        self.entries.append((session.at, _request_fields(session.request), 101, 0, session.seconds,
                             session.request_id, (session.code, session.by, session.received, session.sent)))

    # -- the writer thread -----------------------------------------------------------------

    def start(self) -> None:
        if self.thread is not None:
            return
        if self.destination in STDOUT:
            self.out, self.owns_out = sys.stdout, False
        else:
            # append, line-buffering off: one write per batch (O_APPEND keeps the lines of
            # several worker processes whole in one shared file)
            self.out = open(self.destination, "a", encoding="utf-8", buffering=1 << 20)
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
        line = self._combined if self.format == "combined" else self._json
        while True:
            try:
                entry = entries.popleft()
            except IndexError:
                break
            lines.append(line(entry))
        out.write("".join(lines))
        out.flush()

    _last_second = -1
    _last_stamp = ""

    def _stamp(self, at: float) -> str:
        second = int(at)
        if second != self._last_second:
            self._last_stamp = time.strftime("%d/%b/%Y:%H:%M:%S +0000", time.gmtime(second))
            self._last_second = second
        return self._last_stamp

    def _combined(self, entry: _Entry) -> str:
        at, (client, method, target, version, ua, referer), status, sent, seconds, rid, ws = entry
        request_line = "-" if method == "-" else f"{method} {_escape(target)} HTTP/{version}"
        line = (f'{client} - - [{self._stamp(at)}] "{request_line}" {status} {sent if sent else "-"} '
                f'"{_escape(referer)}" "{_escape(ua)}" {seconds:.6f} {rid}')
        if ws is not None:
            code, by, received, sent_messages = ws
            line += f" ws_close={code} ws_closed_by={by or '-'} ws_in={received} ws_out={sent_messages}"
        return line + "\n"

    def _json(self, entry: _Entry) -> str:
        at, (client, method, target, version, ua, referer), status, sent, seconds, rid, ws = entry
        record: dict[str, Any] = {
            "time": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(at)) + f".{int(at % 1 * 1000):03d}Z",
            "client": client, "method": method, "path": target, "http_version": version,
            "status": status, "bytes": sent, "duration": round(seconds, 6),
            "user_agent": ua, "referer": referer, "request_id": rid,
        }
        if ws is not None:
            code, by, received, sent_messages = ws
            record["websocket"] = {"close_code": code, "closed_by": by, "messages_in": received,
                                   "messages_out": sent_messages}
        return orjson.dumps(record).decode() + "\n"


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
