"""Streamed forms: ``request.stream_form()`` on a ``stream_body=True`` route parses a multipart
body as it arrives and writes each file to a temporary file, so an upload larger than memory
costs a few buffers, not its size.

Multipart parsing is python-multipart's streaming parser (the same as ``forms.py`` uses for
whole bodies). A file part goes into a ``SpooledTemporaryFile``: in memory up to
``spool_max_size`` bytes, then on disk (an unnamed temporary file, gone when closed), as
Starlette's ``UploadFile`` does; once on disk, writes happen on a thread so the loop never waits
for the disk. Each part is yielded when it is complete: a ``FormField`` (text) or an
``UploadFile`` (rewound, ready to read). It knows the body only as an async iterator of bytes.
"""

from __future__ import annotations

import asyncio
import shutil
from tempfile import SpooledTemporaryFile
from typing import IO, Any, AsyncIterator, NamedTuple, Optional, Union

from python_multipart.exceptions import MultipartParseError
from python_multipart.multipart import MultipartParser, parse_options_header

from .datastructures import parse_query
from .errors import FormError

SPOOL_MAX_SIZE = 1024 * 1024   # bytes of a file kept in memory before it moves to disk
MAX_FIELD_SIZE = 1024 * 1024   # bytes of one text field (they stay in memory): 400 past it
_WRITE_BATCH = 1024 * 1024     # bytes gathered before one write on a thread (once on disk)


class FormField(NamedTuple):
    """A text part of a streamed form."""

    name: str
    value: str


class UploadFile:
    """A file part of a streamed form: ``field`` (the form field's name), ``filename``,
    ``content_type``, ``headers`` (the part's, lower-case names), ``size`` (bytes) and ``file``,
    the spooled temporary file (rewound when the part is yielded). The async methods keep disk
    I/O off the event loop."""

    def __init__(self, field: str, filename: str, content_type: str, headers: dict[str, str],
                 spool_max_size: int = SPOOL_MAX_SIZE) -> None:
        self.field = field
        self.filename = filename
        self.content_type = content_type
        self.headers = headers
        self.size = 0
        self.file: IO[bytes] = SpooledTemporaryFile(max_size=spool_max_size)  # type: ignore[assignment]

    @property
    def in_memory(self) -> bool:
        """True while the file is still held in memory (not past ``spool_max_size``)."""
        return not getattr(self.file, "_rolled", True)

    async def write(self, data: bytes) -> None:
        self.size += len(data)
        if self.in_memory and self.size <= getattr(self.file, "_max_size", 0):
            self.file.write(data)
        else:
            await asyncio.to_thread(self.file.write, data)

    async def read(self, size: int = -1) -> bytes:
        if self.in_memory:
            return self.file.read(size)
        return await asyncio.to_thread(self.file.read, size)

    async def seek(self, offset: int) -> None:
        self.file.seek(offset)

    async def save(self, path: str) -> None:
        """Copy the upload to ``path`` (on a thread), e.g. to keep it after the request."""
        def copy() -> None:
            self.file.seek(0)
            with open(path, "wb") as out:
                shutil.copyfileobj(self.file, out, 1024 * 1024)
            self.file.seek(0)
        await asyncio.to_thread(copy)

    async def close(self) -> None:
        self.file.close()

    def __repr__(self) -> str:
        where = "memory" if self.in_memory else "disk"
        return f"UploadFile(field={self.field!r}, filename={self.filename!r}, size={self.size}, in {where})"


Part = Union[FormField, UploadFile]


async def stream_form(chunks: AsyncIterator[bytes], content_type: str,
                      spool_max_size: int = SPOOL_MAX_SIZE) -> AsyncIterator[Part]:
    """The parts of a form body read from ``chunks``, each yielded once complete."""
    media_type, options = parse_options_header(content_type)
    if media_type == b"application/x-www-form-urlencoded":
        body = b"".join([chunk async for chunk in chunks])  # bounded by max_body_size
        for name, values in parse_query(body).items():
            yield FormField(name, values[-1])
        return
    if media_type != b"multipart/form-data":
        raise FormError(f"expected a multipart/form-data or urlencoded body, got {content_type or 'none'!r}")
    boundary = options.get(b"boundary")
    if not boundary:
        raise FormError("multipart body without a boundary")
    async for part in _multipart(chunks, boundary, spool_max_size):
        yield part


class _Part:
    __slots__ = ("header_field", "header_value", "headers", "upload", "text", "text_size")

    def __init__(self) -> None:
        self.header_field = b""
        self.header_value = b""
        self.headers: dict[bytes, bytes] = {}
        self.upload: Optional[UploadFile] = None
        self.text: list[bytes] = []
        self.text_size = 0


async def _multipart(chunks: AsyncIterator[bytes], boundary: bytes, spool_max_size: int) -> AsyncIterator[Part]:
    # The parser's callbacks are synchronous: they record events, written and yielded after
    # each chunk (file data in order, so one chunk holding the end of one part and the start
    # of the next is handled).
    events: list[tuple[str, Any]] = []
    current: list[_Part] = []

    def on_part_begin() -> None:
        current[:] = [_Part()]

    def on_header_field(data: bytes, start: int, end: int) -> None:
        current[0].header_field += data[start:end]

    def on_header_value(data: bytes, start: int, end: int) -> None:
        current[0].header_value += data[start:end]

    def on_header_end() -> None:
        part = current[0]
        part.headers[part.header_field.lower()] = part.header_value
        part.header_field = part.header_value = b""

    def on_headers_finished() -> None:
        part = current[0]
        _, params = parse_options_header(part.headers.get(b"content-disposition", b""))
        if b"filename" in params:
            part.upload = UploadFile(
                params.get(b"name", b"").decode("utf-8", "replace"),
                params[b"filename"].decode("utf-8", "replace"),
                part.headers.get(b"content-type", b"application/octet-stream").decode("latin-1"),
                {k.decode("latin-1"): v.decode("latin-1") for k, v in part.headers.items()},
                spool_max_size)
        part.text = [params.get(b"name", b"")]  # the field name first; its value follows

    def on_part_data(data: bytes, start: int, end: int) -> None:
        part = current[0]
        if part.upload is not None:
            events.append(("data", (part.upload, data[start:end])))
            return
        part.text_size += end - start
        if part.text_size > MAX_FIELD_SIZE:
            raise FormError(f"form field larger than {MAX_FIELD_SIZE} bytes (send it as a file)")
        part.text.append(data[start:end])

    def on_part_end() -> None:
        part = current[0]
        if part.upload is not None:
            events.append(("file", part.upload))
        else:
            name, *value = part.text
            events.append(("field", FormField(name.decode("utf-8", "replace"),
                                              b"".join(value).decode("utf-8", "replace"))))

    parser = MultipartParser(boundary, {
        "on_part_begin": on_part_begin, "on_header_field": on_header_field,
        "on_header_value": on_header_value, "on_header_end": on_header_end,
        "on_headers_finished": on_headers_finished, "on_part_data": on_part_data,
        "on_part_end": on_part_end,
    })
    pending: dict[UploadFile, list[bytes]] = {}  # data not written yet, batched for the thread

    async def flush(upload: UploadFile) -> None:
        parts = pending.pop(upload, None)
        if parts:
            await upload.write(parts[0] if len(parts) == 1 else b"".join(parts))

    async def run_events() -> AsyncIterator[Part]:
        for kind, value in events:
            if kind == "data":
                upload, data = value
                batch = pending.setdefault(upload, [])
                batch.append(data)
                if upload.in_memory or sum(map(len, batch)) >= _WRITE_BATCH:
                    await flush(upload)
            elif kind == "file":
                await flush(value)
                await value.seek(0)
                yield value
            else:
                yield value
        events.clear()

    try:
        async for chunk in chunks:
            parser.write(chunk)
            async for part in run_events():
                yield part
        parser.finalize()
        async for part in run_events():
            yield part
    except MultipartParseError as exc:
        raise FormError(f"invalid multipart body: {exc}") from None


__all__ = ["FormField", "MAX_FIELD_SIZE", "SPOOL_MAX_SIZE", "UploadFile", "stream_form"]
