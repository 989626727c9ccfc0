"""``app.serve_directory``: files under a URL prefix, from one directory, with Robyn's three modes
(an index file for directory URLs, an HTML listing, or plain files only). Owns which request
paths map to which files and that nothing outside the directory is ever readable; what a file
answer looks like (validators, 304, ranges) is ``core/files.py``'s. Knows nothing of routes:
a request it has no file for goes on to the app.

Safety: the path is percent-decoded once; a NUL byte, a backslash or a ``..`` segment is a 404
at once; the file is opened and the path the kernel actually opened (``/proc/self/fd``, else
``realpath``) must lie under the directory, so a symbolic link to elsewhere is a 404 too.
A small file's whole answer to a plain GET is kept while ``stat()`` finds the same file
(``core/files.file_identity``): a changed or swapped file is a different identity and goes the
checked way again.
"""

from __future__ import annotations

import html
import os
import stat
from typing import Any, Callable, Optional
from urllib.parse import quote, unquote_to_bytes

from ..core.files import SMALL_FILE, content_type_for, file_identity, open_regular, plain_request, select
from ..server.interface import TEXT_PLAIN, HTTPRequest, HTTPResponse

_NOT_FOUND = HTTPResponse(404, TEXT_PLAIN, b"Not found")
_READ_FAILED = HTTPResponse(500, TEXT_PLAIN, b"Internal Server Error: the file could not be read\n")
_OUTSIDE = object()  # a path not under the prefix
# Request paths resolved per directory: decoding, checking and the Content-Type cost more than
# the system calls; what is on disk is still looked at on every request.
_RESOLVED_MAX = 4096
_RESOLVED_PATH_MAX = 512
_PROC_FD = "/proc/self/fd/" if os.path.isdir("/proc/self/fd") else None
# Whole answers to plain GETs of small files, kept while the file is the same one (one stat()
# a request instead of open, fstat, readlink, pread and close); bounded per directory.
_KEPT_MAX = 4096
_KEPT_BYTES_MAX = 32 * 1024 * 1024


_INLINE_APPLICATION = frozenset({"application/javascript", "application/json", "application/wasm",
                                 "application/xhtml+xml"})


def file_type_lines(name: str) -> bytes:
    """Content-Type and Content-Disposition for a file name, as Robyn's static files (actix-files)
    send them: ``inline`` for text, images, audio, video, scripts and JSON, else ``attachment``;
    the name quoted, and in UTF-8 as ``filename*`` when it is not ASCII (RFC 6266)."""
    kind = content_type_for(name)
    bare = kind.partition(";")[0]
    inline = bare.partition("/")[0] in ("text", "image", "audio", "video") or bare in _INLINE_APPLICATION
    ascii_name = name.encode("ascii", "replace").decode().replace("\\", "\\\\").replace('"', '\\"')
    disposition = f'{"inline" if inline else "attachment"}; filename="{ascii_name}"'
    if not name.isascii():
        disposition += f"; filename*=UTF-8''{quote(name, safe='', errors='surrogateescape')}"
    return b"content-type: %s\r\ncontent-disposition: %s\r\n" % (kind.encode(), disposition.encode("latin-1", "replace"))


class StaticDirectory:
    """One ``serve_directory`` call, checked and resolved when the app is built."""

    __slots__ = ("route", "prefix", "root", "root_slash", "index_file", "listing", "resolved", "kept", "kept_bytes")

    def __init__(self, route: str, directory_path: str, index_file: Optional[str] = None,
                 show_files_listing: bool = False) -> None:
        route = "/" + route.strip().strip("/")
        self.route = route
        # compared with the raw (still percent-encoded) request path
        self.prefix = b"" if route == "/" else quote(route, safe="/!$&'()*+,;=:@-._~").encode()
        root = os.path.realpath(directory_path)
        if not os.path.isdir(root):
            raise ValueError(f"serve_directory({route!r}, ...): directory_path {directory_path!r} is not a directory")
        self.root = root
        self.root_slash = root.rstrip(os.sep) + os.sep
        if index_file is not None and (not index_file or "/" in index_file or index_file in (".", "..")):
            raise ValueError(f"serve_directory({route!r}, ...): index_file {index_file!r} must be a file name")
        self.index_file = index_file
        self.listing = bool(show_files_listing)
        self.resolved: dict[bytes, Any] = {}
        self.kept: dict[str, tuple[tuple[int, int, int, int, int], HTTPResponse]] = {}
        self.kept_bytes = 0

    def answer(self, raw: HTTPRequest) -> Optional[HTTPResponse]:
        """The file's answer, a redirect or a listing; ``None`` when this directory has nothing
        for the path (the app answers it)."""
        path = raw.path
        if not path.startswith(self.prefix):
            return None
        where = self.resolved.get(path)
        if where is None:
            where = self._resolve(path)
            if len(path) <= _RESOLVED_PATH_MAX:
                if len(self.resolved) >= _RESOLVED_MAX:
                    self.resolved.clear()
                self.resolved[path] = where
        if where.__class__ is not tuple:
            return where if where is not _OUTSIDE else None  # type: ignore[return-value]
        full, type_line = where  # type: ignore[misc]
        plain_get = raw.method == "GET" and plain_request(raw.headers)
        if plain_get:
            kept = self.kept.get(full)
            if kept is not None:
                try:
                    same = file_identity(os.stat(full)) == kept[0]
                except (OSError, ValueError):
                    same = False
                if same:
                    return kept[1]
                self._forget(full)
        opened = open_regular(full)
        if opened is not None:
            if not self._inside(self._opened_path(opened.fd, full)):
                opened.close()
                return _NOT_FOUND
            identity = opened.identity
            try:
                answer = select(raw.method, raw.headers, 200, type_line + opened.validator_lines(), opened)
            except OSError:
                return _READ_FAILED
            if plain_get and answer.stream is None and answer.status == 200 and len(answer.body) <= SMALL_FILE:
                self._keep(full, identity, answer)
            return answer
        if self.index_file or self.listing:
            return self._directory(raw, full)
        return None

    def _resolve(self, path: bytes) -> Any:
        """What a request path names, from the path alone (so it can be remembered): the file's
        path and Content-Type line, ``_NOT_FOUND`` for a path that tries to leave the root,
        ``_OUTSIDE`` for one not under the prefix."""
        rest = path[len(self.prefix):]
        if rest[:1] != b"/" and (rest or not (self.index_file or self.listing)):
            return _OUTSIDE  # "/staticx" is not under "/static"
        decoded = unquote_to_bytes(rest) if 37 in rest else rest  # 37: "%" (an int is tested at once)
        if 0 in decoded or 92 in decoded:  # NUL or "\\"
            return _NOT_FOUND
        segments = [s for s in os.fsdecode(decoded).split("/") if s and s != "."]
        if ".." in segments:
            return _NOT_FOUND
        name = segments[-1] if segments else ""
        return (os.path.join(self.root, *segments), file_type_lines(name))

    def _keep(self, full: str, identity: tuple[int, int, int, int, int], answer: HTTPResponse) -> None:
        if len(self.kept) >= _KEPT_MAX or self.kept_bytes + len(answer.body) > _KEPT_BYTES_MAX:
            self.kept.clear()
            self.kept_bytes = 0
        self.kept[full] = (identity, answer)
        self.kept_bytes += len(answer.body)

    def _forget(self, full: str) -> None:
        kept = self.kept.pop(full, None)
        if kept is not None:
            self.kept_bytes -= len(kept[1].body)

    def _directory(self, raw: HTTPRequest, full: str) -> Optional[HTTPResponse]:
        """A directory URL in index or listing mode: its index file, its listing, or the
        redirect to the URL with a slash."""
        try:
            if not stat.S_ISDIR(os.stat(full).st_mode):
                return None  # nothing there (the common case under a mount at "/"): the routes'
        except (OSError, ValueError):
            return None
        real = os.path.realpath(full)
        if not self._inside(real):
            return _NOT_FOUND
        path = raw.path
        if not path.endswith(b"/"):  # relative links in the page need the slash (actix does the same)
            location = path + b"/" + (b"?" + raw.query if raw.query else b"")
            return HTTPResponse(302, b"location: " + location + b"\r\n" + TEXT_PLAIN, b"")
        if self.index_file:
            index = os.path.join(real, self.index_file)
            opened = open_regular(index)
            if opened is None:
                return None
            if not self._inside(self._opened_path(opened.fd, index)):
                opened.close()
                return _NOT_FOUND
            block = file_type_lines(self.index_file) + opened.validator_lines()
            try:
                return select(raw.method, raw.headers, 200, block, opened)
            except OSError:
                return _READ_FAILED
        return self._listing(raw, real)

    def _inside(self, real: str) -> bool:
        return real == self.root or real.startswith(self.root_slash)

    @staticmethod
    def _opened_path(fd: int, path: str) -> str:
        """Where the open file really is: the kernel's own name for it (no race with a link
        swapped after the check), else the resolved path."""
        if _PROC_FD is not None:
            try:
                return os.readlink(_PROC_FD + str(fd))
            except OSError:
                pass
        return os.path.realpath(path)

    def _listing(self, raw: HTTPRequest, real: str) -> HTTPResponse:
        shown = os.fsdecode(unquote_to_bytes(raw.path))
        rows = []
        if real != self.root:
            rows.append('<li><a href="../">../</a></li>')
        try:
            entries = sorted(os.scandir(real), key=lambda e: e.name)
        except OSError:
            return _NOT_FOUND
        for entry in entries:
            try:
                target = os.path.realpath(entry.path) if entry.is_symlink() else entry.path
                if not self._inside(target):
                    continue  # a link out of the directory: not served, so not listed
                is_dir = entry.is_dir()
            except OSError:
                continue
            name = entry.name + ("/" if is_dir else "")
            href = quote(entry.name, errors="surrogateescape") + ("/" if is_dir else "")
            rows.append(f'<li><a href="{html.escape(href)}">{html.escape(name, quote=False)}</a></li>')
        title = html.escape(f"Index of {shown}", quote=False)
        page = (f"<!DOCTYPE html>\n<html><head><meta charset=\"utf-8\"><title>{title}</title></head>\n"
                f"<body><h1>{title}</h1>\n<ul>\n" + "\n".join(rows) + "\n</ul></body></html>\n")
        return HTTPResponse(200, b"content-type: text/html; charset=utf-8\r\n",
                            page.encode("utf-8", "surrogateescape"))


class StaticFiles:
    """The app's directories in front of its routes: a GET or HEAD for a file under one of them
    gets the file (first registered first, as in Robyn); anything else goes to ``app_handle``.
    Robyn's static answers skip middlewares and default headers; so do these."""

    def __init__(self, directories: list[StaticDirectory], app_handle: Callable[[HTTPRequest], Any]) -> None:
        self.directories = directories
        self.app_handle = app_handle

    def handle(self, raw: HTTPRequest) -> Any:
        method = raw.method
        if (method == "GET" or method == "HEAD") and not raw.websocket:
            for directory in self.directories:
                answer = directory.answer(raw)
                if answer is not None:
                    return answer
        return self.app_handle(raw)
