"""WebSocket frames (RFC 6455 section 5), Sans-I/O: bytes in, messages and control frames out,
and the frames the server writes.

``FrameReader.feed(data)`` turns what a client sends into messages (``str`` for text, ``bytes``
for binary), control frames (``Ping``, ``Pong``, ``Close``), or raises ``ProtocolError`` with
the close code the connection must fail with. It holds no transport, no clock and no event
loop: the asyncio protocol (``protocol.py``) feeds it what it reads and acts on what comes out,
and the tests feed it byte strings.

The rules, each with its close code: client frames are masked (1002); a reserved bit is only
allowed as RSV1 on the first frame of a message when permessage-deflate was negotiated (1002);
reserved opcodes (1002); control frames are unfragmented and carry at most 125 bytes (1002);
a continuation only inside a fragmented message, no new data frame inside one (1002); a message
over ``max_size`` bytes, counted after inflating (1009); text that is not UTF-8, checked while
it streams in, so the error comes before the rest of the message (1007); compressed data that
does not inflate (1007); a close payload of 1 byte, an invalid close code (1002) or a reason
that is not UTF-8 (1007). Nothing after a close frame or a protocol error is read.

Why our own codec and not the ``websockets`` library's Sans-I/O layer: measured on the bench
machine, its ``receive_data`` + ``events_received`` + ``send_text`` + ``data_to_send`` cost
7.6 µs per 64-byte echoed message (a generator-based parser, a ``Frame`` object and an event
list per frame). ``feed`` parses a whole frame that arrived in one read with a handful of
integer operations and one slice (about 1 µs including unmasking with
``websockets.speedups.apply_mask``, the only piece of that library we use, with a pure-Python
fallback), and returns the message itself: no event object, no list. Only a read that completes
more than one event returns a list. Anything incomplete switches to streaming: the header is
kept, payload chunks are unmasked (the mask rotated by the offset) and text goes through the
incremental UTF-8 decoder as it arrives, so a huge frame costs O(n) and is never re-copied.
"""

from __future__ import annotations

import codecs
import struct
import zlib
from typing import Any, Callable, Optional, Union

from ..interface import VALID_CLOSE_CODES
from .deflate import MIN_SIZE as DEFLATE_MIN_SIZE
from .deflate import Inflater, Negotiated, TooBig, compress

OP_CONT, OP_TEXT, OP_BINARY, OP_CLOSE, OP_PING, OP_PONG = 0x0, 0x1, 0x2, 0x8, 0x9, 0xA


def _mask_py(data: bytes, mask: bytes) -> bytes:
    n = len(data)
    key = (mask * (n // 4 + 1))[:n]
    return (int.from_bytes(data, "little") ^ int.from_bytes(key, "little")).to_bytes(n, "little")


apply_mask: Callable[[bytes, bytes], bytes]
try:  # the C helper of the websockets library: XOR with the masking key
    from websockets.speedups import apply_mask
except ImportError:  # pragma: no cover - pure-Python fallback
    apply_mask = _mask_py

_UTF8_DECODER = codecs.getincrementaldecoder("utf-8")


# -- what the reader gives back --------------------------------------------------------------

class ProtocolError(Exception):
    """The client broke the protocol: fail the connection with close ``code``.

    ``events`` are the events the same ``feed`` call completed before the bad bytes; they
    came first, so they are handled first."""

    def __init__(self, code: int, reason: str) -> None:
        super().__init__(reason)
        self.code = code
        self.reason = reason
        self.events: list[Event] = []


class Ping:
    __slots__ = ("payload",)

    def __init__(self, payload: bytes) -> None:
        self.payload = payload

    def __eq__(self, other: object) -> bool:
        return other.__class__ is self.__class__ and other.payload == self.payload

    def __repr__(self) -> str:
        return f"{self.__class__.__name__}({self.payload!r})"


class Pong(Ping):
    __slots__ = ()


class Close:
    """The peer's close frame: ``code`` 1005 when it had no payload; ``payload`` is what a
    reply echoes (the code's two bytes, or nothing)."""

    __slots__ = ("code", "reason", "payload")

    def __init__(self, code: int, reason: str, payload: bytes) -> None:
        self.code = code
        self.reason = reason
        self.payload = payload

    def __eq__(self, other: object) -> bool:
        return (other.__class__ is Close and other.code == self.code
                and other.reason == self.reason and other.payload == self.payload)

    def __repr__(self) -> str:
        return f"Close({self.code}, {self.reason!r})"


Event = Union[str, bytes, Ping, Pong, Close]
Fed = Union[None, str, bytes, Ping, Pong, Close, "list[Event]"]
"""What ``feed`` returns: None (nothing complete yet), one event, or a list of two or more."""


def _add(out: Any, event: Event) -> Any:
    if out is None:
        return event
    if out.__class__ is list:
        out.append(event)
        return out
    return [out, event]


def as_list(fed: Fed) -> list[Event]:
    """``feed``'s result as a list, whatever its shape (for callers off the hot path)."""
    if fed is None:
        return []
    if fed.__class__ is list:
        return fed
    return [fed]  # type: ignore[list-item]


# -- reading -------------------------------------------------------------------------------

class FrameReader:
    """The frames of one connection's client, parsed as they arrive (see the module docstring).

    ``inflater`` is set when permessage-deflate was negotiated. ``drop_messages`` is set by the
    protocol once its own close frame is sent: frames are still parsed and checked, data
    messages are dropped unread; control frames still come out."""

    __slots__ = (
        "max_size", "inflater", "drop_messages", "finished", "buf",
        # the frame whose payload is streaming in
        "f_remaining", "f_mask", "f_offset", "f_opcode", "f_fin", "f_parts",
        # the fragmented (or streamed) message in progress
        "m_opcode", "m_parts", "m_size", "m_decoder", "m_compressed",
    )

    def __init__(self, max_size: int, inflater: Optional[Inflater] = None) -> None:
        self.max_size = max_size
        self.inflater = inflater
        self.drop_messages = False
        self.finished = False  # after a close frame or a protocol error: nothing more is read
        self.buf = b""
        self.f_remaining = 0
        self.f_mask = b""
        self.f_offset = 0
        self.f_opcode = 0
        self.f_fin = True
        self.f_parts: list[Any] = []
        self.m_opcode = 0
        self.m_parts: list[Any] = []
        self.m_size = 0
        self.m_decoder: Any = None
        self.m_compressed = False

    def feed(self, data: bytes) -> Fed:
        """The events ``data`` completes: None, one event, or a list of two or more in order.
        Raises ProtocolError (its ``events`` completed first)."""
        if self.finished:
            return None
        out: Any = None
        try:
            if self.f_remaining:
                data, out = self._stream_payload(data)
                if not data or self.finished:
                    return out
            buf = self.buf + data if self.buf else data
            self.buf = b""
            end = len(buf)
            pos = 0
            while end - pos >= 2:
                b0 = buf[pos]
                b1 = buf[pos + 1]
                if not b1 & 0x80:
                    raise ProtocolError(1002, "client frames must be masked")
                n = b1 & 0x7F
                if n < 126:
                    start = pos + 6
                    if end < start:
                        break
                elif n == 126:
                    start = pos + 8
                    if end < start:
                        break
                    n = (buf[pos + 2] << 8) | buf[pos + 3]
                else:
                    start = pos + 14
                    if end < start:
                        break
                    n = int.from_bytes(buf[pos + 2:pos + 10], "big")
                    if n >> 63:
                        raise ProtocolError(1002, "frame length has the most significant bit set")
                if b0 & 0x70:
                    self._reserved_bits(b0)
                stop = start + n
                if (b0 == 0x81 or b0 == 0x82) and not self.m_opcode and stop <= end:
                    # The fast path: a whole unfragmented data frame is here.
                    if n > self.max_size:
                        raise ProtocolError(1009, f"message too big (limit {self.max_size} bytes)")
                    payload = apply_mask(buf[start:stop], buf[start - 4:start]) if n else b""
                    pos = stop
                    if self.drop_messages:
                        continue
                    if b0 == 0x81:
                        try:
                            message: Any = payload.decode()
                        except UnicodeDecodeError:
                            raise ProtocolError(1007, "invalid UTF-8 in a text message") from None
                    else:
                        message = payload
                    if out is None:
                        out = message
                    elif out.__class__ is list:
                        out.append(message)
                    else:
                        out = [out, message]
                    continue
                opcode = b0 & 0x0F
                self._check_header(b0, opcode, n)
                if stop > end:
                    # An incomplete payload: stream it from here on.
                    self.f_remaining = n
                    self.f_mask = buf[start - 4:start]
                    self.f_offset = 0
                    self.f_opcode = opcode
                    self.f_fin = bool(b0 & 0x80)
                    self.f_parts = []
                    if opcode == OP_TEXT or (opcode == OP_CONT and self.m_opcode == OP_TEXT):
                        if self.m_decoder is None:
                            self.m_decoder = _UTF8_DECODER()
                    if end > start:
                        self._stream_payload(buf[start:])  # cannot complete it: checks UTF-8
                    return out
                payload = apply_mask(buf[start:stop], buf[start - 4:start]) if n else b""
                pos = stop
                event = self._frame(opcode, bool(b0 & 0x80), payload)
                if event is not None:
                    out = _add(out, event)
                    if self.finished:
                        return out
            if pos < end:
                self.buf = buf[pos:] if pos else buf
            return out
        except ProtocolError as exc:
            self.finished = True
            self.buf = b""
            exc.events = as_list(out)
            raise

    def _reserved_bits(self, b0: int) -> None:
        """RSV1 on the first frame of a data message means compressed, if permessage-deflate
        was negotiated; any other reserved bit, anywhere else, is a protocol error."""
        if (b0 & 0x70) == 0x40 and self.inflater is not None:
            opcode = b0 & 0x0F
            if opcode == OP_TEXT or opcode == OP_BINARY:
                self.m_compressed = True
                return
            raise ProtocolError(1002, "RSV1 on a frame that is not the first of a data message")
        raise ProtocolError(1002, "reserved bits set without a negotiated extension")

    def _check_header(self, b0: int, opcode: int, n: int) -> None:
        """Validate a frame header that is not on the fast path."""
        if opcode >= 8:
            if opcode > OP_PONG:
                raise ProtocolError(1002, f"reserved opcode {opcode}")
            if not b0 & 0x80:
                raise ProtocolError(1002, "fragmented control frame")
            if n > 125:
                raise ProtocolError(1002, "control frame payload over 125 bytes")
            return
        if opcode == OP_CONT:
            if not self.m_opcode:
                raise ProtocolError(1002, "continuation frame without a message in progress")
        elif opcode > OP_BINARY:
            raise ProtocolError(1002, f"reserved opcode {opcode}")
        elif self.m_opcode:
            raise ProtocolError(1002, "new data frame while a fragmented message is in progress")
        if self.m_size + n > self.max_size:
            raise ProtocolError(1009, f"message too big (limit {self.max_size} bytes)")

    def _stream_payload(self, data: bytes) -> tuple[bytes, Any]:
        """Consume payload bytes of the frame in progress: (what follows it, the event it
        completed or None)."""
        take = self.f_remaining
        chunk, rest = (data, b"") if len(data) <= take else (data[:take], data[take:])
        off = self.f_offset & 3
        mask = self.f_mask[off:] + self.f_mask[:off] if off else self.f_mask
        plain = apply_mask(chunk, mask) if chunk else b""
        self.f_offset += len(chunk)
        self.f_remaining -= len(chunk)
        opcode = self.f_opcode
        text = (opcode == OP_TEXT or (opcode == OP_CONT and self.m_opcode == OP_TEXT)) and not self.m_compressed
        if text:
            if not self.drop_messages:
                try:
                    self.f_parts.append(self.m_decoder.decode(plain, False))
                except UnicodeDecodeError:
                    raise ProtocolError(1007, "invalid UTF-8 in a text message") from None
        else:
            self.f_parts.append(plain)
        if self.f_remaining:
            return b"", None
        parts, self.f_parts = self.f_parts, []
        fin = self.f_fin
        if text:
            # Already decoded: the pieces go to the message as they are.
            if opcode == OP_TEXT:
                self.m_opcode = OP_TEXT
            self.m_parts.extend(parts)
            self.m_size += self.f_offset
            return rest, (self._finish_message() if fin else None)
        payload = b"".join(parts) if len(parts) != 1 else parts[0]
        return rest, self._frame(opcode, fin, payload)

    def _frame(self, opcode: int, fin: bool, payload: bytes) -> Optional[Event]:
        """A complete frame off the fast path (fragments, control frames, compressed)."""
        if opcode >= 8:
            return self._control(opcode, payload)
        if opcode != OP_CONT:
            self.m_opcode = opcode
            if opcode == OP_TEXT and self.m_decoder is None:
                self.m_decoder = _UTF8_DECODER()
        if self.m_compressed:
            assert self.inflater is not None
            try:
                payload = self.inflater.inflate(payload, fin, self.max_size - self.m_size)
            except TooBig:
                raise ProtocolError(1009, f"message too big (limit {self.max_size} bytes)") from None
            except zlib.error:
                raise ProtocolError(1007, "invalid compressed data") from None
        self.m_size += len(payload)
        if self.m_opcode == OP_TEXT:
            if not self.drop_messages:
                try:
                    self.m_parts.append(self.m_decoder.decode(payload, False))
                except UnicodeDecodeError:
                    raise ProtocolError(1007, "invalid UTF-8 in a text message") from None
        else:
            self.m_parts.append(payload)
        return self._finish_message() if fin else None

    def _finish_message(self) -> Optional[Event]:
        parts = self.m_parts
        opcode = self.m_opcode
        self.m_parts = []
        self.m_opcode = 0
        self.m_size = 0
        self.m_compressed = False
        if opcode == OP_TEXT:
            decoder = self.m_decoder
            self.m_decoder = None
            try:
                decoder.decode(b"", True)  # a character cut off at the end raises; nothing is left
            except UnicodeDecodeError:
                raise ProtocolError(1007, "invalid UTF-8 in a text message") from None
            message: Any = "".join(parts)
        else:
            message = b"".join(parts)
        return None if self.drop_messages else message

    def _control(self, opcode: int, payload: bytes) -> Event:
        if opcode == OP_PING:
            return Ping(payload)
        if opcode == OP_PONG:
            return Pong(payload)
        # OP_CLOSE
        if len(payload) == 1:
            raise ProtocolError(1002, "close frame with a 1-byte payload")
        if payload:
            code = (payload[0] << 8) | payload[1]
            if code not in VALID_CLOSE_CODES:
                raise ProtocolError(1002, f"invalid close code {code}")
            try:
                reason = payload[2:].decode()
            except UnicodeDecodeError:
                raise ProtocolError(1007, "invalid UTF-8 in the close reason") from None
        else:
            code, reason = 1005, ""
        self.finished = True
        self.buf = b""
        return Close(code, reason, payload[:2])

    def stop(self) -> None:
        """Read nothing more and let go of what is buffered (the connection is closing)."""
        self.finished = True
        self.buf = b""
        self.f_parts = []
        self.m_parts = []


# -- writing ---------------------------------------------------------------------------------

# Pre-built headers for small unfragmented server frames (FIN + opcode, unmasked length).
_TEXT_HEADS = [bytes((0x81, n)) for n in range(126)]
_BINARY_HEADS = [bytes((0x82, n)) for n in range(126)]
_PACK_16 = struct.Struct("!BBH").pack
_PACK_64 = struct.Struct("!BBQ").pack


def encode_frame(message: Union[str, bytes]) -> bytes:
    """The wire bytes of one unfragmented server frame: text for ``str``, binary for bytes."""
    if message.__class__ is str:
        payload = message.encode()
        heads, opcode = _TEXT_HEADS, 0x81
    elif isinstance(message, (bytes, bytearray, memoryview)):
        payload = bytes(message)
        heads, opcode = _BINARY_HEADS, 0x82
    else:
        raise TypeError(f"a WebSocket message is str or bytes, not {type(message).__name__}")
    n = len(payload)
    if n < 126:
        return heads[n] + payload
    if n < 65536:
        return _PACK_16(opcode, 126, n) + payload
    return _PACK_64(opcode, 127, n) + payload


def deflate_frame(message: Union[str, bytes], params: Negotiated) -> bytes:
    """Like ``encode_frame``, compressed (RSV1) when the message is long enough to gain."""
    if message.__class__ is str:
        payload = message.encode()
        opcode = 0x81
    elif isinstance(message, (bytes, bytearray, memoryview)):
        payload = bytes(message)
        opcode = 0x82
    else:
        raise TypeError(f"a WebSocket message is str or bytes, not {type(message).__name__}")
    if len(payload) < DEFLATE_MIN_SIZE:
        return encode_frame(message)
    payload = compress(payload, params.server_bits)
    n = len(payload)
    if n < 126:
        return bytes((opcode | 0x40, n)) + payload
    if n < 65536:
        return _PACK_16(opcode | 0x40, 126, n) + payload
    return _PACK_64(opcode | 0x40, 127, n) + payload


def control_frame(opcode: int, payload: bytes) -> bytes:
    """A ping, pong or close frame from the server (payload at most 125 bytes)."""
    return bytes((0x80 | opcode, len(payload))) + payload


def failure_close_frame(code: int, reason: str) -> bytes:
    """The close frame that fails a connection on a protocol error."""
    return control_frame(OP_CLOSE, struct.pack("!H", code) + reason.encode()[:123])
