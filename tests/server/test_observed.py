"""The observing protocol repeats ``HttpProtocol.on_message_begin``'s and ``_write_response``'s
bodies instead of calling them (one Python call less per request each): they must not drift apart."""

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


def test_write_response_repeats_the_plain_protocols_body_first():
    plain = _statements(HttpProtocol._write_response)
    observed = _statements(ObservedHttpProtocol._write_response)
    assert plain and observed[:len(plain)] == plain
    assert len(observed) > len(plain)  # then the report
