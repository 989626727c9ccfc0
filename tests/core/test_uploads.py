"""``stream_form``: a multipart body parsed as it arrives gives the same fields and files as the
whole-body parser, however the chunks cut it (mid-boundary, mid-header), with files spooled to
disk past ``spool_max_size``."""

from __future__ import annotations

import asyncio
import os

import pytest

from stonechat import FormField, UploadFile
from stonechat.core.errors import FormError
from stonechat.core.forms import parse_form
from stonechat.core.uploads import MAX_FIELD_SIZE, stream_form

BOUNDARY = "----stonechatBoundary42"
CONTENT_TYPE = f"multipart/form-data; boundary={BOUNDARY}"


def multipart(parts: list[tuple[str, bytes, str | None]]) -> bytes:
    out = b""
    for name, value, filename in parts:
        out += f"--{BOUNDARY}\r\n".encode()
        if filename is None:
            out += f'Content-Disposition: form-data; name="{name}"\r\n\r\n'.encode()
        else:
            out += (f'Content-Disposition: form-data; name="{name}"; filename="{filename}"\r\n'
                    "Content-Type: application/octet-stream\r\n\r\n").encode()
        out += value + b"\r\n"
    return out + f"--{BOUNDARY}--\r\n".encode()


async def chunked(body: bytes, size: int):
    for i in range(0, len(body), size):
        yield body[i:i + size]


async def collect(body: bytes, size: int, spool: int = 1024 * 1024) -> list:
    found = []
    async for part in stream_form(chunked(body, size), CONTENT_TYPE, spool):
        if isinstance(part, UploadFile):
            found.append(("file", part.field, part.filename, await part.read(), part.in_memory))
            await part.close()
        else:
            found.append(("field", part.name, part.value))
    return found


@pytest.mark.parametrize("size", [1, 7, 64, 4096, 1 << 20])
def test_any_chunking_gives_what_the_whole_body_parser_gives(size):
    blob = os.urandom(20000)
    body = multipart([("a", b"one", None), ("doc", blob, "d.bin"), ("b", "zwei é".encode(), None),
                      ("empty", b"", "e.txt")])
    found = asyncio.run(collect(body, size))
    fields, files = parse_form(CONTENT_TYPE, body)
    assert [f[1:] for f in found if f[0] == "field"] == list(fields.items())
    assert [(f[1], f[2], f[3]) for f in found if f[0] == "file"] == [(u.field, u.filename, u.data) for u in files]


def test_a_file_past_the_spool_size_moves_to_disk():
    blob = os.urandom(300000)
    found = asyncio.run(collect(multipart([("doc", blob, "d.bin"), ("small", b"x", "s.bin")]), 65536, spool=100000))
    assert found[0][3] == blob and found[0][4] is False
    assert found[1][3] == b"x" and found[1][4] is True


def test_urlencoded_and_bad_bodies():
    async def run(content_type: str, body: bytes) -> list:
        return [p async for p in stream_form(chunked(body, 3), content_type)]
    assert asyncio.run(run("application/x-www-form-urlencoded", b"a=1&b=x+y")) == [FormField("a", "1"), FormField("b", "x y")]
    with pytest.raises(FormError):
        asyncio.run(run("text/plain", b"hi"))
    with pytest.raises(FormError):
        asyncio.run(run("multipart/form-data", b"--x--"))  # no boundary
    with pytest.raises(FormError):
        asyncio.run(run(CONTENT_TYPE, multipart([("big", b"v" * (MAX_FIELD_SIZE + 1), None)])))
