"""Form bodies: ``application/x-www-form-urlencoded`` and ``multipart/form-data``.

Multipart parsing is python-multipart's; this module only turns its callbacks into Robyn's
``form_data`` (text fields) and the uploaded files, each an ``Upload`` (field name, file name,
content type, bytes). ``Request.files`` keys them by *file name*, as Robyn does and real apps
expect; ``Request.files_by_field`` keys them by field name (two files called ``photo.jpg`` in
different fields do not collide there).
"""

from __future__ import annotations

from typing import NamedTuple

from python_multipart.exceptions import MultipartParseError
from python_multipart.multipart import MultipartParser, parse_options_header

from .datastructures import parse_query
from .errors import FormError


class Upload(NamedTuple):
    """One file part of a multipart body."""

    field: str
    filename: str
    content_type: str
    data: bytes


def parse_form(content_type: str, body: bytes) -> tuple[dict[str, str], list[Upload]]:
    media_type, options = parse_options_header(content_type)
    if media_type == b"application/x-www-form-urlencoded":
        return {k: v[-1] for k, v in parse_query(body).items()}, []
    if media_type == b"multipart/form-data":
        boundary = options.get(b"boundary")
        if not boundary:
            raise FormError("multipart body without a boundary")
        return _parse_multipart(boundary, body)
    return {}, []


def _parse_multipart(boundary: bytes, body: bytes) -> tuple[dict[str, str], list[Upload]]:
    fields: dict[str, str] = {}
    files: list[Upload] = []
    part: dict = {}

    def on_part_begin() -> None:
        part.clear()
        part["headers"] = {}
        part["data"] = []

    def on_header_field(data: bytes, start: int, end: int) -> None:
        part["field"] = part.get("field", b"") + data[start:end]

    def on_header_value(data: bytes, start: int, end: int) -> None:
        part["value"] = part.get("value", b"") + data[start:end]

    def on_header_end() -> None:
        part["headers"][part.pop("field", b"").lower()] = part.pop("value", b"")

    def on_part_data(data: bytes, start: int, end: int) -> None:
        part["data"].append(data[start:end])

    def on_part_end() -> None:
        disposition, params = parse_options_header(part["headers"].get(b"content-disposition", b""))
        name = params.get(b"name", b"").decode("utf-8", "replace")
        payload = b"".join(part["data"])
        if b"filename" in params:
            content_type = part["headers"].get(b"content-type", b"application/octet-stream")
            files.append(Upload(name, params[b"filename"].decode("utf-8", "replace"),
                                content_type.decode("latin-1"), payload))
        else:
            fields[name] = payload.decode("utf-8", "replace")

    parser = MultipartParser(boundary, {
        "on_part_begin": on_part_begin, "on_header_field": on_header_field,
        "on_header_value": on_header_value, "on_header_end": on_header_end,
        "on_part_data": on_part_data, "on_part_end": on_part_end,
    })
    try:
        parser.write(body)
        parser.finalize()
    except MultipartParseError as exc:
        raise FormError(f"invalid multipart body: {exc}") from None
    return fields, files
