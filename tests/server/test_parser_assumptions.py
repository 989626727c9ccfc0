"""What server/http.py relies on in httptools' parser (llhttp), checked on the installed version.

``on_headers_complete`` takes the HTTP version to be 1.1, without asking the parser, when the
parser keeps the connection alive and the head has no Connection field. That holds only while
llhttp accepts just the versions 0.9, 1.0, 1.1 and 2.0 and keeps a connection alive without a
Connection field for 1.1 alone; an httptools upgrade that changed either would fail here.
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
