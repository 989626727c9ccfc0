"""Response headers between the two contracts: ASGI's ``[(name, value), ...]`` lists and the
server's pre-encoded ``name: value\\r\\n`` blocks (``server/interface.py``).

Framing is the server's business on both sides. Towards stonechat's server (a mounted app's
response) Content-Length, Transfer-Encoding and Connection are dropped, since the server frames
the body itself, and so are Date and Server, which it always adds. Towards an ASGI server (a
stonechat app under uvicorn) a block never holds framing headers (the interface forbids them);
the caller adds Content-Length for a body it sends whole.
"""

from __future__ import annotations

from typing import Any, Iterable

_DROPPED = frozenset({b"content-length", b"transfer-encoding", b"connection", b"keep-alive", b"date", b"server"})


class HeaderError(ValueError):
    """An ASGI app sent a header the server cannot write (CR or LF in it: response splitting)."""


# First bytes of the dropped names in upper case: only such a name needs lower-casing to be
# recognised (ASGI says names are lower-case; this keeps a sloppy app's "Content-Length" out).
_UPPER_FIRSTS = frozenset(b"CTKDS")

# What each (name, value) pair an app sent becomes: the line to write, b"" for a header the
# server frames itself, or the int of a Content-Length. Apps send the same pairs over and over
# (a route's Content-Type, a handful of lengths), so a pair costs a dict lookup instead of the
# checks and the encoding; the table is emptied when full, which bounds it whatever apps send.
_LINES: dict[tuple, Any] = {}
_LINES_MAX = 1024


def _line(name: Any, value: Any) -> Any:
    """What one header becomes (see ``_LINES``); HeaderError for CR or LF in it."""
    if name.__class__ is not bytes or value.__class__ is not bytes:  # ASGI says bytes; take a bytearray too
        name, value = bytes(memoryview(name)), bytes(memoryview(value))
    if name in _DROPPED or (name[:1] and name[0] in _UPPER_FIRSTS and name.lower() in _DROPPED):
        if name.lower() == b"content-length" and value.isdigit():
            return int(value)
        return b""
    if b"\r" in name or b"\n" in name or b"\r" in value or b"\n" in value:
        raise HeaderError(f"invalid character (CR or LF) in response header {name!r}")
    return b"%s: %s\r\n" % (name, value)


def block_from_asgi(headers: Iterable[Any]) -> tuple[bytes, int]:
    """The server's header block for an ASGI header list, and the Content-Length the app gave
    (-1 if none): a HEAD answer needs it, since its body is empty."""
    lines = _LINES
    parts: list[bytes] = []
    length = -1
    for pair in headers:
        try:
            line = lines.get(pair)
        except TypeError:  # a pair that cannot be a key (a list, bytearrays): encoded each time
            line = _line(*pair)
        else:
            if line is None:
                line = _line(*pair)
                if len(lines) >= _LINES_MAX:
                    lines.clear()
                lines[pair] = line
        if line.__class__ is int:
            length = line
        elif line:
            parts.append(line)
    return b"".join(parts), length


_PARSED: dict[bytes, list[tuple[bytes, bytes]]] = {}
_PARSED_MAX = 512  # distinct blocks remembered; most apps have a handful (one per route kind)


def asgi_from_block(block: bytes) -> list[tuple[bytes, bytes]]:
    """An ASGI header list (names lower-case) for a server header block. Blocks repeat (they
    are pre-encoded per route), so parsed ones are remembered; each call gets its own list,
    since middleware may change the list in place."""
    parsed = _PARSED.get(block)
    if parsed is None:
        parsed = []
        for line in block.split(b"\r\n"):
            if line:
                name, _, value = line.partition(b":")
                parsed.append((name.strip().lower(), value.strip(b" \t")))
        if len(_PARSED) >= _PARSED_MAX:
            _PARSED.clear()
        _PARSED[block] = parsed
    return list(parsed)


__all__ = ["HeaderError", "asgi_from_block", "block_from_asgi"]
