"""The request a handler sees: ``Request`` and its parts (``Headers``, ``QueryParams``, ``Url``,
``Identity``), with Robyn's names and behaviour minus its defects.

Parsing is lazy: a request is built from the server's raw ``HTTPRequest`` in a few attribute
stores, and headers, the query string, the URL and forms are decoded on first access only,
so a handler that never reads them never pays for them.
"""

from __future__ import annotations

from typing import Any, AsyncIterator, Optional, Union
from urllib.parse import unquote

import orjson

from .datastructures import Headers, Identity, QueryParams, Url
from .forms import Upload, parse_form
from .uploads import SPOOL_MAX_SIZE, Part, stream_form

_UNSET: Any = object()


class Request:
    """One HTTP request. Attribute names follow Robyn's ``Request``.

    ``body`` is Robyn's: a ``str`` when the body is valid UTF-8 (``""`` when empty), else
    ``bytes`` — real Robyn apps parse it as text. ``body_bytes`` is always the bytes as received;
    ``text()`` and ``json()`` decode. The text is decoded on first read of ``body`` only.
    """

    __slots__ = ("_raw", "method", "path_params", "_body", "_body_text", "identity", "session", "_headers",
                 "_query_params", "_url", "_form_data", "_files", "_upload_list", "_ip_addr", "extra_headers",
                 "__dict__")

    def __init__(self, query_params: Optional[QueryParams] = None, headers: Optional[Headers] = None,
                 path_params: Optional[dict] = None, body: Union[str, bytes] = b"", method: str = "GET",
                 url: Optional[Url] = None, form_data: Optional[dict] = None, files: Optional[dict] = None,
                 identity: Optional[Identity] = None, ip_addr: Optional[str] = None,
                 session: Any = None) -> None:
        self._raw: Any = None  # the server's HTTPRequest; a Request built by hand has its parts already
        self.method = method
        self.path_params = path_params if path_params is not None else {}
        self._body_text: Any = _UNSET
        self.body = body
        self.identity = identity
        self.session = session
        # None until first read on a request from the server (parsed lazily, see the properties)
        self._headers: Optional[Headers] = headers if headers is not None else Headers()
        self._query_params: Optional[QueryParams] = query_params if query_params is not None else QueryParams()
        self._url: Optional[Url] = url if url is not None else Url("http", "", "/")
        self._form_data: Optional[dict] = form_data
        self._files: Optional[dict] = files
        self._upload_list: Optional[list[Upload]] = None if files is None else []
        self._ip_addr = ip_addr
        # (appended, defaults) from the app, merged into ``headers`` on first read
        self.extra_headers: Optional[tuple[dict, dict]] = None

    @staticmethod
    def _from_server(raw: Any, path_params: dict) -> "Request":
        """The per-request constructor: no parsing here, only references. (A static method:
        called on the class, it is the plain function, with no bound method made per call.)"""
        request = _ServerRequest()
        request._raw = raw
        request.method = raw.method
        request.path_params = path_params
        request._body = raw.body
        request._body_text = _UNSET
        request.identity = None
        request.session = None
        request._headers = None
        request._query_params = None
        request._url = None
        request._form_data = None
        request._files = None
        request._upload_list = None
        request._ip_addr = _UNSET
        request.extra_headers = None
        return request

    @property
    def body(self) -> Union[str, bytes]:
        text = self._body_text
        if text is _UNSET:
            raw = self._body
            try:
                text = raw.decode()
            except UnicodeDecodeError:
                text = raw
            self._body_text = text
        return text

    @body.setter
    def body(self, value: Union[str, bytes]) -> None:
        if isinstance(value, str):
            self._body, self._body_text = value.encode(), value
        elif isinstance(value, (bytes, bytearray, memoryview)):
            self._body, self._body_text = bytes(value), _UNSET
        else:
            raise ValueError(f"request.body must be str or bytes, not {type(value).__name__}")

    @property
    def body_bytes(self) -> bytes:
        """The body exactly as received (``body`` is text when it decodes)."""
        return self._body

    @property
    def headers(self) -> Headers:
        headers = self._headers
        if headers is None:
            headers = self._headers = Headers._from_raw(self._raw.headers)
            extra = self.extra_headers
            if extra:
                added, defaults = extra
                if added:
                    headers.populate_from_dict(added)
                own = headers._map
                for name, values in defaults.items():
                    if name not in own:
                        own[name] = list(values)
        return headers

    @headers.setter
    def headers(self, value: Headers) -> None:
        self._headers = value

    @property
    def query_params(self) -> QueryParams:
        qp = self._query_params
        if qp is None:
            qp = self._query_params = QueryParams._parsed(self._raw.query)
        return qp

    @query_params.setter
    def query_params(self, value: QueryParams) -> None:
        self._query_params = value

    @property
    def url(self) -> Url:
        url = self._url
        if url is None:
            raw = self._raw
            path = raw.path.decode("latin-1")
            if "%" in path:
                path = unquote(path)
            if len(path) > 1 and path.endswith("/"):
                path = path[:-1]
            host = raw.host.decode("latin-1") if raw.host else ""
            if not host and raw.server:
                host = f"{raw.server[0]}:{raw.server[1]}"
            url = self._url = Url(raw.scheme, host, path)
        return url

    @property
    def ip_addr(self) -> Optional[str]:
        ip = self._ip_addr
        if ip is _UNSET:
            client = self._raw.client if self._raw is not None else None
            ip = self._ip_addr = client[0] if client else None
        return ip

    @property
    def form_data(self) -> dict[str, str]:
        """Fields of an ``application/x-www-form-urlencoded`` or ``multipart/form-data`` body."""
        if self._form_data is None:
            self._parse_form()
        return self._form_data  # type: ignore[return-value]

    @form_data.setter
    def form_data(self, value: dict) -> None:
        self._form_data = value

    @property
    def files(self) -> dict[str, bytes]:
        """Uploaded files by file name (Robyn's keying; see ``files_by_field``)."""
        if self._files is None:
            self._files = {u.filename: u.data for u in self._uploads()}
        return self._files

    @files.setter
    def files(self, value: dict) -> None:
        self._files = value

    @property
    def files_by_field(self) -> dict[str, list[Upload]]:
        """Uploaded files by form field name, each an ``Upload(field, filename, content_type,
        data)`` — every file, even when two share a file name."""
        by_field: dict[str, list[Upload]] = {}
        for upload in self._uploads():
            by_field.setdefault(upload.field, []).append(upload)
        return by_field

    def _uploads(self) -> list[Upload]:
        if self._upload_list is None:
            self._parse_form()
        return self._upload_list  # type: ignore[return-value]

    def _parse_form(self) -> None:
        content_type = self.headers.get("content-type", "")
        form_data, self._upload_list = parse_form(content_type, self._body)
        if self._form_data is None:
            self._form_data = form_data

    def stream(self) -> AsyncIterator[bytes]:
        """The body as it arrives: ``async for chunk in request.stream()``. On a route with
        ``stream_body=True`` the chunks come from the socket (the client is slowed down while
        the handler is slower; past ``max_body_size`` it raises, and an uncaught error answers
        413); elsewhere the whole body, already read, comes as one chunk."""
        raw = self._raw
        if raw is not None:
            try:
                return raw.body_stream  # type: ignore[no-any-return]
            except AttributeError:
                pass
        return _whole(self._body)

    def stream_form(self, spool_max_size: int = SPOOL_MAX_SIZE) -> AsyncIterator[Part]:
        """A form body part by part, each yielded once complete: ``FormField(name, value)`` or an
        ``UploadFile`` whose data went to a temporary file as it arrived (in memory up to
        ``spool_max_size`` bytes, then on disk). See docs/uploads-and-tasks.md."""
        return stream_form(self.stream(), self.headers.get("content-type", ""), spool_max_size)

    def text(self, encoding: str = "utf-8") -> str:
        return self._body.decode(encoding, "replace")

    def json(self) -> Any:
        try:
            return orjson.loads(self._body)
        except orjson.JSONDecodeError as exc:
            raise ValueError(f"Invalid JSON: {exc}") from None

    def __repr__(self) -> str:
        return f"<Request {self.method} {self.url.path}>"


class _ServerRequest(Request):
    """The class of the requests ``_from_server`` makes: a ``Request`` in every way, with
    ``object.__init__`` in place of the keyword constructor, so that it is made in C (with no
    Python call and no argument parsing) and ``_from_server`` sets each field once."""

    __slots__ = ()
    __init__ = object.__init__  # type: ignore[assignment]


async def _whole(body: bytes) -> AsyncIterator[bytes]:
    if body:
        yield body
