"""Response headers from a mounted app to stonechat's server (``stonechat/asgi/headers.py``):
the block written, the framing headers the server owns left out (whatever their case), the
app's Content-Length kept for HEAD, CR/LF refused in names and values every time, header
pairs in any ASGI shape, and the table of known pairs bounded."""

from __future__ import annotations

import pytest

from stonechat.asgi import headers
from stonechat.asgi.headers import HeaderError, block_from_asgi


def test_the_block_and_the_length():
    block, length = block_from_asgi([(b"content-type", b"text/plain"), (b"content-length", b"13"),
                                     (b"x-one", b"1"), (b"set-cookie", b"a=1"), (b"set-cookie", b"b=2")])
    assert block == b"content-type: text/plain\r\nx-one: 1\r\nset-cookie: a=1\r\nset-cookie: b=2\r\n"
    assert length == 13
    assert block_from_asgi([]) == (b"", -1)


def test_framing_headers_are_the_servers_in_any_case():
    block, length = block_from_asgi([(b"Content-Length", b"7"), (b"Transfer-Encoding", b"chunked"),
                                     (b"connection", b"close"), (b"Keep-Alive", b"5"), (b"Date", b"x"),
                                     (b"server", b"other"), (b"x-kept", b"yes")])
    assert block == b"x-kept: yes\r\n" and length == 7
    assert block_from_asgi([(b"content-length", b"not a number")]) == (b"", -1)


@pytest.mark.parametrize("pair", [(b"x-a", b"1\r\nset-cookie: evil=1"), (b"x-a", b"1\n"), (b"x-a", b"\r"),
                                  (b"x\r\ny", b"1"), (b"x\n", b"1")])
def test_cr_or_lf_is_refused_every_time(pair):
    for _ in range(2):  # never remembered as a line to write
        with pytest.raises(HeaderError):
            block_from_asgi([(b"content-type", b"text/plain"), pair])
    assert pair not in headers._LINES


def test_pairs_in_any_asgi_shape():
    assert block_from_asgi([[b"x-list", b"1"], (bytearray(b"x-array"), bytearray(b"2"))]) == \
        (b"x-list: 1\r\nx-array: 2\r\n", -1)
    with pytest.raises(HeaderError):
        block_from_asgi([[b"x-list", b"1\r\n"]])
    assert block_from_asgi(pair for pair in [(b"x-gen", b"3"), [b"x-then-list", b"4"], (b"x-last", b"5")]) == \
        (b"x-gen: 3\r\nx-then-list: 4\r\nx-last: 5\r\n", -1)


def test_the_table_of_known_pairs_is_bounded():
    for i in range(3 * headers._LINES_MAX):
        assert block_from_asgi([(b"etag", b"%d" % i)]) == (b"etag: %d\r\n" % i, -1)
    assert len(headers._LINES) <= headers._LINES_MAX
