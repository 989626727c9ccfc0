"""What a handler returns: ``Response`` and its helpers (cookies, ``html``, ``jsonify``, files,
streaming and Server-Sent Events), with Robyn's names.

Turning a return value into bytes for the server lives in ``conversion.py``; this module only
defines the objects users build.
"""

from __future__ import annotations

import mimetypes
import os
from urllib.parse import quote
from typing import Any, AsyncIterator, Iterator, Optional, Union

import orjson

from .datastructures import Headers

_MISSING: Any = object()


def _to_bytes(body: Any) -> bytes:
    if isinstance(body, bytes):
        return body
    if isinstance(body, str):
        return body.encode()
    if isinstance(body, (bytearray, memoryview)):
        return bytes(body)
    raise ValueError("Could not convert specified body to bytes")


class Cookie:
    __slots__ = ("value", "path", "domain", "max_age", "expires", "secure", "http_only", "same_site")

    def __init__(self, value: str, path: Optional[str] = None, domain: Optional[str] = None,
                 max_age: Optional[int] = None, expires: Optional[str] = None, secure: bool = False,
                 http_only: bool = False, same_site: Optional[str] = None) -> None:
        if same_site is not None and same_site.lower() not in ("strict", "lax", "none"):
            raise ValueError(f"same_site must be Strict, Lax or None, got {same_site!r}")
        self.value = value
        self.path = path
        self.domain = domain
        self.max_age = max_age
        self.expires = expires
        self.secure = secure
        self.http_only = http_only
        self.same_site = same_site

    @classmethod
    def deleted(cls) -> "Cookie":
        return cls("", path="/", max_age=0)

    def serialize(self, name: str) -> str:
        for ch in "\r\n;":
            if ch in name or ch in self.value:
                raise ValueError(f"invalid character {ch!r} in cookie {name!r}")
        parts = [f"{name}={self.value}"]
        if self.path is not None:
            parts.append(f"Path={self.path}")
        if self.domain is not None:
            parts.append(f"Domain={self.domain}")
        if self.max_age is not None:
            parts.append(f"Max-Age={int(self.max_age)}")
        if self.expires is not None:
            parts.append(f"Expires={self.expires}")
        if self.secure:
            parts.append("Secure")
        if self.http_only:
            parts.append("HttpOnly")
        if self.same_site is not None:
            parts.append(f"SameSite={self.same_site.capitalize()}")
        return "; ".join(parts)

    def __repr__(self) -> str:
        return f"Cookie({self.value!r})"


class Cookies:
    """Cookies to set on a response: one ``Set-Cookie`` header each."""

    __slots__ = ("_cookies",)

    def __init__(self) -> None:
        self._cookies: dict[str, Cookie] = {}

    def set(self, name: str, cookie: Cookie) -> None:
        self._cookies[name] = cookie

    def get(self, name: str) -> Optional[Cookie]:
        return self._cookies.get(name)

    def remove(self, name: str) -> None:
        self._cookies.pop(name, None)

    def delete(self, name: str) -> None:
        self._cookies[name] = Cookie.deleted()

    def keys(self) -> list[str]:
        return list(self._cookies)

    def is_empty(self) -> bool:
        return not self._cookies

    def items(self) -> list[tuple[str, Cookie]]:
        return list(self._cookies.items())

    def __len__(self) -> int:
        return len(self._cookies)

    def __contains__(self, name: object) -> bool:
        return name in self._cookies

    def __iter__(self) -> Iterator[str]:
        return iter(self._cookies)

    def __getitem__(self, name: str) -> Cookie:
        return self._cookies[name]


class Response:
    """``Response(status_code, headers, description)`` or ``Response(status_code, headers, body=...)``.

    ``status_code`` is writable (read-only in Robyn), so after-request hooks can change it.
    """

    # status_code lives in the instance dict, not a slot: some Robyn apps assign
    # ``Response.status_code`` on the class, which would replace a slot's descriptor and make
    # every later ``Response(...)`` fail.
    __slots__ = ("_headers", "_body", "_cookies", "response_type", "_file_path", "__dict__")

    def __init__(self, status_code: int, headers: Union[Headers, dict, None] = None,
                 description: Any = _MISSING, *, body: Any = _MISSING) -> None:
        if description is _MISSING and body is _MISSING:
            raise TypeError("Response() needs a body (description=... or body=...)")
        if description is not _MISSING and body is not _MISSING:
            raise TypeError("Response() takes description or body, not both")
        self.status_code = int(status_code)
        self.headers = headers  # type: ignore[assignment]
        self._body = _to_bytes(body if description is _MISSING else description)
        self._cookies: Optional[Cookies] = None
        self.response_type = "text"
        self._file_path: Optional[str] = None

    @property
    def headers(self) -> Headers:
        return self._headers

    @headers.setter
    def headers(self, value: Union[Headers, dict, None]) -> None:
        if value is None:
            self._headers = Headers()
        elif isinstance(value, Headers):
            self._headers = value
        elif isinstance(value, dict):
            self._headers = Headers(value)
        else:
            raise TypeError(f"headers must be a Headers or a dict, not {type(value).__name__}")

    @property
    def description(self) -> Union[str, bytes]:
        body = self._body
        if self._file_path is not None:  # Robyn's body is the file's bytes: read only if asked
            with open(self._file_path, "rb") as f:
                body = f.read()
        try:
            return body.decode()
        except UnicodeDecodeError:
            return body

    @description.setter
    def description(self, value: Any) -> None:
        self._body = _to_bytes(value)
        self._file_path = None  # a body set after the file replaces it

    body = description

    @property
    def cookies(self) -> Cookies:
        if self._cookies is None:
            self._cookies = Cookies()
        return self._cookies

    @property
    def file_path(self) -> Optional[str]:
        return self._file_path

    @file_path.setter
    def file_path(self, path: str) -> None:
        """The body becomes the file, sent from disk as the client reads it (Robyn reads it
        into memory here); a missing file raises ``OSError`` now, as in Robyn."""
        if not os.path.isfile(path):
            raise FileNotFoundError(f"no such file: {path!r}")
        self._body = b""
        self._file_path = path
        self.response_type = "static_file"

    def set_cookie(self, key: str, value: str, path: Optional[str] = None, domain: Optional[str] = None,
                   max_age: Optional[int] = None, expires: Optional[str] = None, secure: bool = False,
                   http_only: bool = False, same_site: Optional[str] = None) -> None:
        self.cookies.set(key, Cookie(value, path, domain, max_age, expires, secure, http_only, same_site))

    def __repr__(self) -> str:
        return f"<Response {self.status_code}>"


def jsonify(obj: Any) -> str:
    return orjson.dumps(obj).decode()


def html(text: str, status_code: int = 200) -> Response:
    return Response(status_code, {"content-type": "text/html; charset=utf-8"}, text)


class FileResponse:
    """A file sent as the body (``serve_file``/``serve_html``)."""

    def __init__(self, file_path: str, status_code: Optional[int] = None,
                 headers: Union[Headers, dict, None] = None) -> None:
        self.file_path = file_path
        self.status_code = status_code or 200
        self.headers = headers if isinstance(headers, Headers) else Headers(headers or {})
        if not self.headers.contains("content-disposition"):
            self.headers.set("content-disposition", "attachment")

    def to_response(self) -> Response:
        """A ``Response`` whose body is the file, still on disk (see ``Response.file_path``)."""
        response = Response(self.status_code, self.headers, b"")
        response.file_path = self.file_path
        return response


def serve_file(file_path: str, file_name: Optional[str] = None) -> FileResponse:
    name = file_name or os.path.basename(file_path)
    content_type = mimetypes.guess_type(name)[0] or "application/octet-stream"
    return FileResponse(file_path, headers={
        "content-type": content_type,
        "content-disposition": content_disposition(name),
    })


_TOKEN = frozenset("!#$%&'*+-.^_`|~0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ")


def content_disposition(name: str, kind: str = "attachment") -> str:
    """``attachment; filename=report.csv`` as Robyn sends it when the name is a token; else the
    name quoted, and for non-ASCII names also ``filename*`` in UTF-8 (RFC 6266, RFC 8187)."""
    if name and set(name) <= _TOKEN:
        return f"{kind}; filename={name}"
    ascii_name = name.encode("ascii", "replace").decode().replace("\\", "\\\\").replace('"', '\\"')
    value = f'{kind}; filename="{ascii_name}"'
    if not name.isascii():
        value += f"; filename*=UTF-8''{quote(name, safe='')}"
    return value


def serve_html(file_path: str) -> FileResponse:
    response = FileResponse(file_path, headers={"content-type": "text/html; charset=utf-8"})
    response.headers.remove("content-disposition")
    return response


_STREAM_HEADERS = (("cache-control", "no-cache, no-store, must-revalidate"), ("pragma", "no-cache"),
                   ("expires", "0"), ("x-accel-buffering", "no"))


class StreamingResponse:
    """A body produced chunk by chunk by a sync or async generator of ``str``/``bytes``.

    Unlike Robyn, ``media_type`` always becomes the Content-Type.
    """

    def __init__(self, content: Union[Iterator, AsyncIterator], status_code: Optional[int] = None,
                 headers: Union[Headers, dict, None] = None, media_type: str = "text/event-stream") -> None:
        self.content = content
        self.status_code = status_code or 200
        self.headers = headers if isinstance(headers, Headers) else Headers(headers or {})
        self.media_type = media_type
        if media_type and not self.headers.contains("content-type"):
            self.headers.set("content-type", media_type)
        # What Robyn puts on every streamed response, so that no proxy or cache holds the
        # chunks back (the handler's own values win).
        for name, value in _STREAM_HEADERS:
            if not self.headers.contains(name):
                self.headers.set(name, value)


class SSEResponse(StreamingResponse):
    def __init__(self, content: Union[Iterator, AsyncIterator], status_code: Optional[int] = None,
                 headers: Union[Headers, dict, None] = None) -> None:
        super().__init__(content, status_code, headers, media_type="text/event-stream")


def SSEMessage(data: Any, event: Optional[str] = None, id: Optional[str] = None,
               retry: Optional[int] = None) -> str:
    """One Server-Sent Events message as text."""
    lines = []
    if event:
        lines.append(f"event: {event}")
    if id:
        lines.append(f"id: {id}")
    if retry:
        lines.append(f"retry: {retry}")
    text = str(data).replace("\r\n", "\n").replace("\r", "\n")
    for line in text.split("\n") if text else [""]:
        lines.append(f"data: {line}")
    return "\n".join(lines) + "\n\n"
