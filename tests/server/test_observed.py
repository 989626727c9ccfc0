"""The observing protocol repeats ``HttpProtocol.on_message_begin``'s and ``_write_response``'s
bodies (and ``data_received``'s, after its own first statement) instead of calling them (one
Python call less per request each): they must not drift apart."""

from __future__ import annotations

import ast
import inspect
import textwrap

from stonechat.server.http import HttpProtocol
from stonechat.server.observed import ObservedHttpProtocol


def _statements(function: object) -> list[str]:
    tree = ast.parse(textwrap.dedent(inspect.getsource(function)))  # type: ignore[arg-type]
    body = tree.body[0].body  # type: ignore[attr-defined]
    return [ast.dump(node) for node in body if not isinstance(node, ast.Expr)]


def test_on_message_begin_repeats_the_plain_protocols_body_first():
    plain = _statements(HttpProtocol.on_message_begin)
    observed = _statements(ObservedHttpProtocol.on_message_begin)
    assert plain and observed[:len(plain)] == plain
    assert len(observed) > len(plain)  # then the observing part


def test_data_received_keeps_the_read_then_repeats_the_plain_protocols_body():
    plain = _statements(HttpProtocol.data_received)
    observed = _statements(ObservedHttpProtocol.data_received)
    assert plain and observed[1:] == plain and "read" in observed[0]


def test_write_response_repeats_the_plain_protocols_body_first():
    plain = _statements(HttpProtocol._write_response)
    observed = _statements(ObservedHttpProtocol._write_response)
    assert plain and observed[:len(plain)] == plain
    assert len(observed) > len(plain)  # then the report


APP = """
from stonechat import Robyn, Response

app = Robyn(__file__)

@app.get("/")
def index():
    return "hello"

@app.get("/nothing")
def nothing():
    return Response(204, {}, "never sent")

app.start()
"""


def test_bytes_reported_are_the_body_bytes_written(serve, tmp_path):
    """What the observer is told was sent (here through the access log): the body when it is
    written, nothing for a HEAD or a status without a body, whatever the handler returned."""
    import json
    import time

    import httpx

    log = tmp_path / "access.log"
    server = serve(APP, args=["--access-log", str(log), "--access-log-format", "json"])
    with httpx.Client(base_url=server.url, timeout=10) as c:
        assert c.get("/").text == "hello"
        assert c.head("/").content == b""
        assert c.get("/nothing").status_code == 204
    deadline = time.monotonic() + 15
    while True:
        lines = [json.loads(line) for line in log.read_text().splitlines()] if log.exists() else []
        if len(lines) >= 3:
            break
        assert time.monotonic() < deadline, lines
        time.sleep(0.05)
    sent = [(entry["method"], entry["status"], entry["bytes"]) for entry in lines]
    assert sent[0] == ("GET", 200, 5)
    assert sent[1][0] == "HEAD" and sent[1][2] == 0
    assert sent[2] == ("GET", 204, 0)
