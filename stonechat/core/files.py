"""A file as an HTTP answer: opening it, its validators (ETag, Last-Modified) and what a request's
conditional and range headers make of it (200, 206, 304, 416). Used by ``FileResponse`` and by
``serve_directory`` (``features/static.py``); it knows neither routes nor which paths are allowed.

The answer carries the open file, not its bytes: the server reads it as the client takes it
(``server/interface.FileBody``). Only a small selection (``SMALL_FILE`` bytes at most) is read
here, so that the server can write it at once without a task.
"""

from __future__ import annotations

import mimetypes
import os
import stat
import time
from email.utils import formatdate, parsedate_tz, mktime_tz
from typing import Optional

from ..server.interface import FileBody, HTTPResponse

SMALL_FILE = 64 * 1024

# Robyn's static files (actix-files) name UTF-8 for text; so do we.
_UTF8_TYPES = frozenset({"application/javascript", "application/json", "image/svg+xml"})


def content_type_for(name: str) -> str:
    """The Content-Type for a file name: from ``mimetypes``, ``application/octet-stream`` when
    unknown, with ``charset=utf-8`` for text."""
    kind = mimetypes.guess_type(name)[0] or "application/octet-stream"
    if kind.startswith("text/") or kind in _UTF8_TYPES:
        return kind + "; charset=utf-8"
    return kind


class OpenFile(FileBody):
    """A whole regular file, open, with its validators: what ``select`` narrows to the request."""

    __slots__ = ("size", "mtime", "etag", "last_modified", "identity")

    def __init__(self, fd: int, info: os.stat_result) -> None:
        super().__init__(fd, 0, info.st_size)
        self.size = info.st_size
        self.identity = file_identity(info)
        self.mtime = mtime = int(info.st_mtime)
        # mtime (ns) and size: nginx's validator. Strong, so that If-Range can use it; two
        # writes of the same size within one timestamp tick would share it.
        self.etag = b'"%x-%x"' % (info.st_mtime_ns, info.st_size)
        last_modified = _DATES.get(mtime)
        if last_modified is None:
            if len(_DATES) > 4096:
                _DATES.clear()
            last_modified = _DATES[mtime] = formatdate(mtime, usegmt=True).encode()
        self.last_modified = last_modified

    def validator_lines(self) -> bytes:
        return b"etag: %s\r\nlast-modified: %s\r\naccept-ranges: bytes\r\n" % (self.etag, self.last_modified)


def file_identity(info: os.stat_result) -> tuple[int, int, int, int, int]:
    """Which file, in which state: device, inode, size, mtime and ctime (ns). A write changes
    mtime and ctime; a rename or a swapped link changes the inode. Two same-size writes within
    one timestamp tick look alike (as they do to the ETag)."""
    return (info.st_dev, info.st_ino, info.st_size, info.st_mtime_ns, info.st_ctime_ns)


def plain_request(headers: list[tuple[bytes, bytes]]) -> bool:
    """No If-None-Match, If-Modified-Since, Range or If-Range: the whole file is the answer."""
    for name, _ in headers:
        if name in _CONDITIONAL:
            return False
    return True


_CONDITIONAL = frozenset((b"if-none-match", b"if-modified-since", b"range", b"if-range"))
_DATES: dict[int, bytes] = {}  # Last-Modified values by mtime: formatdate costs more than the rest
_OPEN_FLAGS = os.O_RDONLY | getattr(os, "O_CLOEXEC", 0) | getattr(os, "O_NONBLOCK", 0)


def open_regular(path: str) -> Optional[OpenFile]:
    """The file at ``path`` opened for reading, or ``None`` when it is missing or not a regular
    file (a directory, a device, a FIFO: reading those could block or never end)."""
    try:
        fd = os.open(path, _OPEN_FLAGS)
    except (OSError, ValueError):  # ValueError: a NUL byte in the path
        return None
    try:
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode):
            os.close(fd)
            return None
        return OpenFile(fd, info)
    except BaseException:
        os.close(fd)
        raise


def _header_values(headers: list[tuple[bytes, bytes]]) -> tuple[Optional[bytes], Optional[bytes],
                                                                  Optional[bytes], Optional[bytes]]:
    inm = ims = rng = if_range = None
    for name, value in headers:
        if name == b"if-none-match":
            inm = value if inm is None else inm + b"," + value
        elif name == b"if-modified-since":
            ims = value
        elif name == b"range":
            rng = value
        elif name == b"if-range":
            if_range = value
    return inm, ims, rng, if_range


def _etag_listed(field: bytes, etag: bytes) -> bool:
    """If-None-Match's weak comparison: ``*`` or any listed tag equal to ours, ``W/`` ignored."""
    for tag in field.split(b","):
        tag = tag.strip()
        if tag == b"*" or (tag[2:] if tag[:2] == b"W/" else tag) == etag:
            return True
    return False


def _http_date(value: bytes) -> Optional[int]:
    try:
        parsed = parsedate_tz(value.decode("latin-1"))
        return None if parsed is None else int(mktime_tz(parsed))
    except (ValueError, OverflowError, TypeError):
        return None


def parse_range(value: bytes, size: int) -> Optional[list[tuple[int, int]]]:
    """``Range: bytes=...`` as a list of satisfiable ``(first, last)`` pairs (inclusive); an
    empty list when none is satisfiable (416); ``None`` when the header is not a valid byte
    range set (then it is ignored, RFC 9110 14.2, and the whole file is the answer)."""
    unit, eq, ranges = value.partition(b"=")
    if not eq or unit.strip().lower() != b"bytes":
        return None
    found = []
    for spec in ranges.split(b","):
        spec = spec.strip()
        if not spec:
            continue
        first, dash, last = spec.partition(b"-")
        first, last = first.strip(), last.strip()
        if not dash or (first and not first.isdigit()) or (last and not last.isdigit()) or not (first or last):
            return None
        if not first:  # a suffix: the last N bytes
            n = int(last)
            if n > 0 and size > 0:
                found.append((max(size - n, 0), size - 1))
            continue
        start = int(first)
        end = int(last) if last else size - 1
        if last and end < start:
            return None
        if start < size:
            found.append((start, min(end, size - 1)))
    if not found and not any(s.strip() for s in ranges.split(b",")):
        return None
    return found


def select(method: str, headers: list[tuple[bytes, bytes]], status: int, block: bytes,
           file: OpenFile) -> HTTPResponse:
    """The answer for this request: 304 when its validators match (If-None-Match, else
    If-Modified-Since; GET and HEAD), 206 for one satisfiable range (If-Range permitting; GET
    only), 416 when none is, else the whole file with ``status``. Several ranges get the whole
    file (200): RFC 9110 lets a server ignore Range, and one body is cheaper than a multipart
    one for client and server. ``block`` holds the response's header lines."""
    if status != 200 or method not in ("GET", "HEAD"):
        return _body(status, block, file, 0, file.size, method)
    inm, ims, rng, if_range = _header_values(headers)
    if inm is not None:
        if _etag_listed(inm, file.etag):
            return _not_modified(block, file)
    elif ims is not None:
        since = _http_date(ims)
        # a date in the future is not a date the client got from us (RFC 9110 13.1.3): ignored
        if since is not None and file.mtime <= since <= time.time():
            return _not_modified(block, file)
    if rng is not None and method == "GET" and (if_range is None or _if_range_holds(if_range, file)):
        ranges = parse_range(rng, file.size)
        if ranges is not None:
            if not ranges:
                file.close()
                return HTTPResponse(416, b"%scontent-range: bytes */%d\r\ncontent-type: text/plain; charset=utf-8\r\n"
                                    % (_without(block, _REPRESENTATION), file.size),
                                    b"Range not satisfiable: the file has %d bytes\n" % file.size)
            if len(ranges) == 1:
                first, last = ranges[0]
                return _body(206, block + b"content-range: bytes %d-%d/%d\r\n" % (first, last, file.size),
                             file, first, last - first + 1, method)
    return _body(status, block, file, 0, file.size, method)


def _if_range_holds(value: bytes, file: OpenFile) -> bool:
    """If-Range: the range applies only if the file is still the one the client has: its
    strong ETag, or exactly its Last-Modified date."""
    value = value.strip()
    if value[:1] == b'"' or value[:2] == b"W/":
        return value == file.etag
    return value == file.last_modified


def _body(status: int, block: bytes, file: OpenFile, offset: int, length: int, method: str) -> HTTPResponse:
    if length > SMALL_FILE:  # the server reads it (and a HEAD answer only needs the length)
        fd, file.fd = file.fd, -1  # the descriptor is the body's now
        return HTTPResponse(status, block, stream=FileBody(fd, offset, length))
    try:
        data = os.pread(file.fd, length, offset) if length else b""
    finally:
        file.close()
    if len(data) != length:
        raise OSError("the file was truncated while being served")
    return HTTPResponse(status, block, data)


# What a 304 keeps (RFC 9110 15.4.5) and what a 416 drops.
_VALIDATORS = (b"etag", b"last-modified", b"cache-control", b"expires", b"vary", b"content-location",
               b"set-cookie", b"accept-ranges")
_REPRESENTATION = (b"content-type", b"content-disposition", b"etag", b"last-modified")


def _without(block: bytes, names: tuple[bytes, ...]) -> bytes:
    return b"".join(line + b"\r\n" for line in block.split(b"\r\n")
                    if line and line.partition(b":")[0].lower() not in names)


def _not_modified(block: bytes, file: OpenFile) -> HTTPResponse:
    file.close()
    kept = b"".join(line + b"\r\n" for line in block.split(b"\r\n")
                    if line and line.partition(b":")[0].lower() in _VALIDATORS)
    return HTTPResponse(304, kept)
