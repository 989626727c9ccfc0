"""What server/http.py relies on in httptools' parser (llhttp), checked on the installed version.

``on_headers_complete`` takes the HTTP version to be 1.1, without asking the parser, when the
parser keeps the connection alive and the head has no Connection field. That holds only while
llhttp accepts just the versions 0.9, 1.0, 1.1 and 2.0 and keeps a connection alive without a
Connection field for 1.1 alone; an httptools upgrade that changed either would fail here.

The access log (``features/access_log.py``, ``_head_block``) takes a request's version and
header block to be its connection's previous ones when those bytes, from ``HTTP/`` on, sit
right after its own method and target: sound while the parser takes no version but x.y (the
line then ends where the bytes say only for a line spelled the one way) and refuses a field
line without a colon or with white space before the colon (a request line read as a field line).
"""

import httptools
import pytest


class _Head:
    def on_headers_complete(self) -> None:
        pass


def _parse(request: bytes) -> httptools.HttpRequestParser:
    parser = httptools.HttpRequestParser(_Head())
    parser.feed_data(request)
    return parser


@pytest.mark.parametrize("version", ["0.9", "1.0", "1.1", "2.0"])
@pytest.mark.parametrize("connection", [b"", b"Connection: keep-alive\r\n", b"Connection: close\r\n",
                                        b"Connection: Upgrade\r\n"])
def test_keep_alive_without_connection_field_means_http11(version, connection):
    parser = _parse(b"GET / HTTP/%s\r\nHost: x\r\n%s\r\n" % (version.encode(), connection))
    assert parser.get_http_version() == version
    if parser.should_keep_alive() and not connection:
        assert version == "1.1"
    if not connection:
        assert parser.should_keep_alive() == (version == "1.1")


@pytest.mark.parametrize("version", ["0.0", "1.2", "1.9", "2.1", "3.0", "9.9"])
def test_other_versions_are_refused(version):
    with pytest.raises(httptools.HttpParserError):
        _parse(b"GET / HTTP/%s\r\nHost: x\r\n\r\n" % version.encode())


@pytest.mark.parametrize("line", [b"GET / HTTP/1.1", b"GET /a:b HTTP/1.1", b"Name : value", b"Na me: value",
                                  b"GET http://h:80/ HTTP/1.1"])
def test_a_field_line_without_a_colon_or_with_space_before_it_is_refused(line):
    with pytest.raises(httptools.HttpParserError):
        _parse(b"GET / HTTP/1.1\r\nHost: x\r\n%s\r\n\r\n" % line)

