"""permessage-deflate (RFC 7692): WebSocket messages compressed with DEFLATE, when the server
setting ``ws_per_message_deflate`` is on and the client offers it (browsers always do).

Off by default: compression costs CPU per message and memory per connection, and pays off
only for larger, repetitive messages (JSON, text). What we negotiate, and why:

* ``server_no_context_takeover``, always (a server may declare it unasked): each message we
  send is compressed on its own. That keeps no compressor per connection (zlib's state is tens
  of KiB), and it makes a compressed frame the same for every client, so a broadcast
  compresses once for all of them (``frame_kind``).
* the client's own choice of context takeover: we keep its decompressor between messages
  unless it declared ``client_no_context_takeover``; the window is its 15 bits or less.
* ``server_max_window_bits=N`` when the client asks for it (9..15); 8 is declined, as zlib
  cannot produce a raw 256-byte-window stream. Unknown or repeated parameters decline that
  offer; the next offer is tried, and with none left the connection opens uncompressed.

Receiving: the first frame of a message carries RSV1 when it is compressed; its frames are
inflated as they complete, against ``ws_max_message_size`` on the *inflated* size (a small
"zip bomb" frame closes 1009 without being expanded), and invalid data closes 1007.
Sending: messages of at least ``MIN_SIZE`` bytes are compressed; shorter ones go as they are,
which the extension allows, since DEFLATE's overhead makes them larger.
"""

from __future__ import annotations

import zlib
from typing import Optional

MIN_SIZE = 128  # bytes; shorter messages are sent uncompressed
WINDOW_BITS = 12  # our compression window (4 KiB): a small message gains little from more
MEM_LEVEL = 5
_TAIL = b"\x00\x00\xff\xff"  # the empty stored block RFC 7692 strips from every message


class Negotiated:
    """The parameters both sides agreed on, and the 101's ``Sec-WebSocket-Extensions`` value."""

    __slots__ = ("response", "server_bits", "client_no_context", "frame_kind")

    def __init__(self, response: str, server_bits: int, client_no_context: bool) -> None:
        self.response = response
        self.server_bits = server_bits
        self.client_no_context = client_no_context
        # Frames we send depend on nothing but the window: equal kinds can share a frame.
        self.frame_kind = server_bits


def _parse_offer(params: list[str]) -> Optional[Negotiated]:
    seen: set[str] = set()
    server_bits = WINDOW_BITS
    answer = ["permessage-deflate", "server_no_context_takeover"]
    client_no_context = False
    for raw in params:
        name, _, value = raw.strip().partition("=")
        name, value = name.strip().lower(), value.strip().strip('"')
        if not name or name in seen:
            return None
        seen.add(name)
        if name == "server_no_context_takeover":
            if value:
                return None
        elif name == "client_no_context_takeover":
            if value:
                return None
            client_no_context = True
            answer.append("client_no_context_takeover")
        elif name == "server_max_window_bits":
            if not value.isdigit() or not 9 <= int(value) <= 15:
                return None  # 8 included: see the module docstring
            server_bits = min(WINDOW_BITS, int(value))
            answer.append(f"server_max_window_bits={server_bits}")
        elif name == "client_max_window_bits":
            if value and (not value.isdigit() or not 8 <= int(value) <= 15):
                return None
            # Supported by the client; we do not limit it (our inflater takes any window).
        else:
            return None
    return Negotiated("; ".join(answer), server_bits, client_no_context)


def negotiate(header_values: list[bytes]) -> Optional[Negotiated]:
    """The first acceptable permessage-deflate offer among the client's
    ``Sec-WebSocket-Extensions`` header values, or None."""
    for value in header_values:
        try:
            text = value.decode("ascii")
        except UnicodeDecodeError:
            continue
        for offer in text.split(","):
            name, *params = offer.split(";")
            if name.strip().lower() != "permessage-deflate":
                continue
            negotiated = _parse_offer(params)
            if negotiated is not None:
                return negotiated
    return None


class TooBig(Exception):
    """The inflated message passes the size limit."""


class Inflater:
    """One connection's receiving side."""

    __slots__ = ("params", "inflater")

    def __init__(self, params: Negotiated) -> None:
        self.params = params
        self.inflater: Optional[zlib._Decompress] = None  # made on the first compressed message

    def inflate(self, payload: bytes, fin: bool, room: int) -> bytes:
        """The inflated bytes of one frame of a compressed message; ``room`` is how many bytes
        the message may still grow. Raises TooBig, or zlib.error for invalid data."""
        inflater = self.inflater
        if inflater is None:
            inflater = self.inflater = zlib.decompressobj(-zlib.MAX_WBITS)
        out = inflater.decompress(payload, room + 1) if payload else b""
        if len(out) > room or inflater.unconsumed_tail:
            raise TooBig
        if fin:
            left = room - len(out)
            tail = inflater.decompress(_TAIL, left + 1)
            if len(tail) > left or inflater.unconsumed_tail:
                raise TooBig
            out += tail
            if self.params.client_no_context:
                self.inflater = None  # the next message starts afresh: no window to keep
        return out


def compress(data: bytes, bits: int) -> bytes:
    """``data`` (a message's payload) as one permessage-deflate payload (no context kept)."""
    compressor = zlib.compressobj(zlib.Z_DEFAULT_COMPRESSION, zlib.DEFLATED, -bits, MEM_LEVEL)
    out = compressor.compress(data) + compressor.flush(zlib.Z_SYNC_FLUSH)
    return out[:-4] if out.endswith(_TAIL) else out
