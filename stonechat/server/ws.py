"""The WebSocket protocol (RFC 6455) on one connection, after the HTTP upgrade.

Owns: handshake validation (``check_handshake``), the ``101`` answer, frame parsing and
writing, message assembly, UTF-8 validation, control frames (ping/pong/close), the close
handshake, limits (message size, connections per process and per IP), keepalive pings, the
idle timeout, and flow control in both directions; permessage-deflate when negotiated (the
codec and the negotiation are ``deflate.py``). It knows the framework only through
``server/interface.py``: the session it runs is ``accept.session(connection)`` and the
connection it hands over is the ``WebSocketProtocol`` itself (see ``WebSocketConnection``).

Why our own frame codec and not the ``websockets`` library's Sans-I/O layer
------------------------------------------------------------------------------
Measured on the bench machine: ``ServerProtocol.receive_data`` + ``events_received`` +
``send_text`` + ``data_to_send`` cost 7.6 µs per 64-byte echoed message (generator-based
parser, a ``Frame`` object and an event list per frame), before any asyncio work. The code
below parses a complete frame that arrived in one read with a handful of integer operations
and one slice (about 1 µs including unmasking with ``websockets.speedups.apply_mask``, the
only piece of the library we use, with a pure-Python fallback). The Robyn target (half of its
57-78 µs of server CPU per message) leaves no room for 7.6 µs of parsing. Owning the codec also
lets us fail fast: a text payload is UTF-8-checked while it streams in (incremental decoder),
so an invalid byte closes with 1007 before the rest of the frame or message arrives.

Theory of operation
-------------------
``data_received`` has one fast path: no partial frame pending and the whole frame in the
buffer. Anything incomplete switches to streaming: the header is kept, payload chunks are
unmasked (mask rotated by the offset) and, for text, fed to the incremental decoder as they
arrive, so a huge frame costs O(n) and never re-copies the buffer. Messages go straight to a
waiting ``receive()`` or into a bounded queue; when the queue is full, reading pauses.

States: OPEN → CLOSING (our close frame sent, waiting for the peer's) → CLOSED (both close
frames exchanged, or the connection dropped). After the close handshake, or after we fail the
connection on a protocol error, we half-close (FIN) and keep reading until the peer closes, so
unread bytes never turn our close frame into an RST; ``ws_close_timeout`` bounds every wait.

Deadlines (ping interval, pong timeout, idle timeout) are checked once a second by
``ServerState.tick`` via ``check_timeouts``; nothing per message schedules a timer.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import codecs
import hashlib
import logging
import struct
import zlib
from collections import deque
from typing import Any, Optional, Union

from .deflate import Inflater, Negotiated, TooBig, compress, negotiate
from .deflate import MIN_SIZE as _DEFLATE_MIN_SIZE
from .state import ServerState
from .flow import FlowControl
from .interface import VALID_CLOSE_CODES as _VALID_CODES, NO_MESSAGE, ConnectionClosed, HTTPRequest, HTTPResponse, WebSocketAccept, close_payload, plain_response

try:  # the C helper of the websockets library: XOR with the masking key
    from websockets.speedups import apply_mask as _apply_mask
except ImportError:  # pragma: no cover - pure-Python fallback
    _apply_mask = None

logger = logging.getLogger("stonechat.server.ws")

_GUID = b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11"

OPEN, CLOSING, CLOSED = 1, 2, 3

OP_CONT, OP_TEXT, OP_BINARY, OP_CLOSE, OP_PING, OP_PONG = 0x0, 0x1, 0x2, 0x8, 0x9, 0xA

# Pre-built headers for small unfragmented server frames (FIN + opcode, unmasked length).
_TEXT_HEADS = [bytes((0x81, n)) for n in range(126)]
_BINARY_HEADS = [bytes((0x82, n)) for n in range(126)]
_PACK_16 = struct.Struct("!BBH").pack
_PACK_64 = struct.Struct("!BBQ").pack

_UTF8_DECODER = codecs.getincrementaldecoder("utf-8")


def _mask_py(data: bytes, mask: bytes) -> bytes:
    n = len(data)
    key = (mask * (n // 4 + 1))[:n]
    return (int.from_bytes(data, "little") ^ int.from_bytes(key, "little")).to_bytes(n, "little")


apply_mask = _apply_mask or _mask_py


check_close_code = close_payload


def encode_frame(message: Union[str, bytes]) -> bytes:
    """The wire bytes of one unfragmented server frame: text for ``str``, binary for bytes."""
    if message.__class__ is str:
        payload = message.encode()  # type: ignore[union-attr]
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
        payload = message.encode()  # type: ignore[union-attr]
        opcode = 0x81
    elif isinstance(message, (bytes, bytearray, memoryview)):
        payload = bytes(message)
        opcode = 0x82
    else:
        raise TypeError(f"a WebSocket message is str or bytes, not {type(message).__name__}")
    if len(payload) < _DEFLATE_MIN_SIZE:
        return encode_frame(message)
    payload = compress(payload, params.server_bits)
    n = len(payload)
    if n < 126:
        return bytes((opcode | 0x40, n)) + payload
    if n < 65536:
        return _PACK_16(opcode | 0x40, 126, n) + payload
    return _PACK_64(opcode | 0x40, 127, n) + payload


def _control_frame(opcode: int, payload: bytes) -> bytes:
    return bytes((0x80 | opcode, len(payload))) + payload


# -- handshake -------------------------------------------------------------------------------

def _refuse(status: int, text: str, extra: bytes = b"") -> HTTPResponse:
    return plain_response(status, text + "\n", extra)


def check_handshake(request: HTTPRequest, state: ServerState) -> Optional[HTTPResponse]:
    """``None`` if ``request`` is a valid RFC 6455 opening handshake we have room for, else the
    refusal: 400 (malformed), 426 + ``Sec-WebSocket-Version: 13`` (other version), 503 (limits)."""
    if request.method != "GET":
        return _refuse(400, "Bad WebSocket handshake: the method must be GET")
    if request.http_version not in ("1.1", "2.0"):
        return _refuse(400, "Bad WebSocket handshake: HTTP/1.1 required")
    connection_upgrade = False
    keys = []
    version = None
    for name, value in request.headers:
        if name == b"connection":
            if any(t.strip().lower() == b"upgrade" for t in value.split(b",")):
                connection_upgrade = True
        elif name == b"sec-websocket-key":
            keys.append(value.strip())
        elif name == b"sec-websocket-version":
            version = value.strip() if version is None else b"duplicate"
    if not connection_upgrade:
        return _refuse(400, "Bad WebSocket handshake: missing 'Connection: Upgrade'")
    if version != b"13":
        return _refuse(426, "Upgrade Required: only WebSocket version 13 is supported",
                       b"upgrade: websocket\r\nsec-websocket-version: 13\r\n")
    if len(keys) != 1:
        return _refuse(400, "Bad WebSocket handshake: exactly one Sec-WebSocket-Key required")
    try:
        if len(base64.b64decode(keys[0], validate=True)) != 16:
            raise ValueError
    except (binascii.Error, ValueError):
        return _refuse(400, "Bad WebSocket handshake: Sec-WebSocket-Key must be 16 bytes, base64")
    settings = state.settings
    if len(state.websockets) >= settings.ws_max_connections:
        logger.warning("refusing WebSocket from %s: ws_max_connections (%d) reached",
                       request.client, settings.ws_max_connections)
        return _refuse(503, "Too many WebSocket connections, try again later", b"retry-after: 5\r\n")
    ip = request.client[0] if request.client else None
    if ip is not None and state.websockets_from(ip) >= settings.ws_max_connections_per_ip:
        logger.warning("refusing WebSocket from %s: ws_max_connections_per_ip (%d) reached",
                       ip, settings.ws_max_connections_per_ip)
        return _refuse(503, "Too many WebSocket connections from this address", b"retry-after: 5\r\n")
    return None


def _accept_key(request: HTTPRequest) -> bytes:
    for name, value in request.headers:
        if name == b"sec-websocket-key":
            return base64.b64encode(hashlib.sha1(value.strip() + _GUID).digest())
    raise ValueError("no Sec-WebSocket-Key")  # check_handshake made sure there is one


class _Fail(Exception):
    """A protocol violation: fail the connection with ``code``."""

    def __init__(self, code: int, reason: str) -> None:
        super().__init__(reason)
        self.code = code
        self.reason = reason


# -- the protocol ------------------------------------------------------------------------------

class WebSocketProtocol(FlowControl, asyncio.Protocol):
    """One WebSocket connection: the transport's protocol and the session's connection object."""

    # Messages queued for a receive() that nobody is awaiting, before reading pauses.
    MAX_QUEUED = 64

    __slots__ = (
        "state_obj", "settings", "request", "accept", "client", "path",
        "state", "buf", "waiter", "queue", "queued_bytes", "max_size", "max_buffer",
        # streaming frame in progress
        "f_remaining", "f_mask", "f_offset", "f_opcode", "f_fin", "f_parts", "f_control",
        # fragmented message in progress
        "m_opcode", "m_parts", "m_size", "m_decoder", "m_compressed",
        # permessage-deflate (server/deflate.py), when negotiated
        "deflate", "inflater", "frame_kind",
        # close bookkeeping
        "close_code", "close_reason", "closed_by", "close_sent", "close_received",
        "close_timer", "closed_future", "discard", "session_task", "batch_delivered", "pending_end",
        # keepalive / idle
        "last_rx", "last_message", "ping_payload", "ping_sent_at", "ping_count", "ip",
        "__weakref__",
    )

    def __init__(self, state: ServerState, transport: asyncio.Transport, request: HTTPRequest,
                 accept: WebSocketAccept) -> None:
        FlowControl.__init__(self, state.loop)
        self.transport = transport
        self.state_obj = state
        self.settings = settings = state.settings
        self.request = request
        self.accept = accept
        self.client = request.client
        self.ip = request.client[0] if request.client else None
        self.path = request.path.decode("latin-1")
        self.state = OPEN
        self.buf = b""
        self.waiter: Optional[asyncio.Future] = None
        self.queue: deque = deque()
        self.queued_bytes = 0
        self.max_size = settings.ws_max_message_size
        self.max_buffer = max(settings.ws_max_write_buffer, settings.ws_write_limit)
        self.f_remaining = 0
        self.f_mask = b""
        self.f_offset = 0
        self.f_opcode = 0
        self.f_fin = True
        self.f_parts: list = []
        self.f_control = False
        self.m_opcode = 0
        self.m_parts: list = []
        self.m_size = 0
        self.m_decoder: Any = None
        self.m_compressed = False
        self.deflate: Optional[Negotiated] = None
        self.inflater: Optional[Inflater] = None
        self.frame_kind: Any = None  # frames from prepare() can be shared by equal kinds
        self.close_code = 1006
        self.close_reason = ""
        self.closed_by = ""
        self.close_sent = False
        self.close_received = False
        self.close_timer: Optional[asyncio.TimerHandle] = None
        self.closed_future: asyncio.Future = self.loop.create_future()
        self.discard = False
        self.batch_delivered = False  # a message was delivered during this data_received
        self.pending_end: Any = None  # (fn, args): a close/failure waiting for queued messages
        self.session_task: Optional[asyncio.Task] = None
        self.last_rx = self.last_message = state.now
        self.ping_payload: Optional[bytes] = None
        self.ping_sent_at = 0.0
        self.ping_count = 0

    # -- start -----------------------------------------------------------------------------

    def start(self, tail: bytes) -> None:
        """Answer 101, register the connection, start the session, feed early bytes."""
        state = self.state_obj
        accept = self.accept
        head = [b"HTTP/1.1 101 Switching Protocols\r\nupgrade: websocket\r\nconnection: Upgrade\r\n"
                b"sec-websocket-accept: ", _accept_key(self.request), b"\r\n"]
        if accept.subprotocol:
            head.append(b"sec-websocket-protocol: %s\r\n" % accept.subprotocol.encode("latin-1"))
        if self.settings.ws_per_message_deflate:
            offers = [value for name, value in self.request.headers if name == b"sec-websocket-extensions"]
            negotiated = negotiate(offers) if offers else None
            if negotiated is not None:
                head.append(b"sec-websocket-extensions: %s\r\n" % negotiated.response.encode())
                self.deflate = negotiated
                self.inflater = Inflater(negotiated)
                self.frame_kind = negotiated.frame_kind
        head.append(accept.headers)
        head.append(b"\r\n")
        transport = self.transport
        transport.write(b"".join(head))
        transport.set_write_buffer_limits(high=self.settings.ws_write_limit)  # type: ignore[attr-defined]
        state.add_websocket(self, self.ip)
        if transport.is_closing():  # the client left during the handshake
            self._set_closed(1006, "", "client")
            self.loop.call_soon(self.connection_lost, None)
        self.session_task = self.loop.create_task(self._run_session())
        if tail:
            self.data_received(tail)

    async def _run_session(self) -> None:
        try:
            await self.accept.session(self)
        except (ConnectionClosed, asyncio.CancelledError):
            pass
        except Exception:
            logger.exception("WebSocket session on %s failed", self.path)
            if self.state == OPEN:
                self.close_nowait(1011, "internal error")
            return
        if self.state == OPEN:
            self.close_nowait(1000, "")

    # -- asyncio.Protocol ------------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:  # pragma: no cover
        pass  # set_protocol() does not call it; start() does the work

    def data_received(self, data: bytes) -> None:
        if self.discard:
            return
        self.last_rx = self.state_obj.now
        self.batch_delivered = False
        try:
            if self.f_remaining:
                data = self._stream_payload(data)
                if not data or self.discard:
                    return
            buf = self.buf + data if self.buf else data
            self.buf = b""
            end = len(buf)
            pos = 0
            while end - pos >= 2:
                b0 = buf[pos]
                b1 = buf[pos + 1]
                if not b1 & 0x80:
                    raise _Fail(1002, "client frames must be masked")
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
                        raise _Fail(1002, "frame length has the most significant bit set")
                opcode = b0 & 0x0F
                if b0 & 0x70:
                    self._reserved_bits(b0, opcode)
                mask = buf[start - 4:start]
                stop = start + n
                if (b0 == 0x81 or b0 == 0x82) and not self.m_opcode and stop <= end:
                    # Fast path: a whole unfragmented data frame is here.
                    if n > self.max_size:
                        raise _Fail(1009, f"message too big (limit {self.max_size} bytes)")
                    payload = apply_mask(buf[start:stop], mask) if n else b""
                    pos = stop
                    if self.state != OPEN:
                        continue  # after our close frame, data is read and dropped
                    if opcode == OP_TEXT:
                        try:
                            message: Any = payload.decode()
                        except UnicodeDecodeError:
                            raise _Fail(1007, "invalid UTF-8 in a text message") from None
                    else:
                        message = payload
                    self._deliver(message, n)
                    continue
                self._check_header(b0, opcode, n)
                if stop > end:
                    # Incomplete payload: stream it from here on.
                    self.f_remaining = n
                    self.f_mask = mask
                    self.f_offset = 0
                    self.f_opcode = opcode
                    self.f_fin = bool(b0 & 0x80)
                    self.f_parts = []
                    self.f_control = opcode >= 8
                    if opcode == OP_TEXT or (opcode == OP_CONT and self.m_opcode == OP_TEXT):
                        if self.m_decoder is None:
                            self.m_decoder = _UTF8_DECODER()
                    rest = buf[start:]
                    if rest:
                        self._stream_payload(rest)
                    return
                payload = apply_mask(buf[start:stop], mask) if n else b""
                pos = stop
                self._frame(opcode, bool(b0 & 0x80), payload)
                if self.discard:
                    return
            if pos < end:
                self.buf = buf[pos:] if pos else buf
        except _Fail as exc:
            if self.batch_delivered or self.queue:
                # Let the session handle the valid messages that came before the bad bytes first.
                self._defer_end(self._fail, exc.code, exc.reason)
            else:
                self._fail(exc.code, exc.reason)

    def _defer_end(self, fn: Any, *args: Any) -> None:
        """Run ``fn`` (a close or a failure) once the session has taken the messages that
        arrived before it: right after the next loop step, or when the queue runs empty (bounded
        by ``ws_close_timeout``)."""
        self.discard = True
        if not self.queue:
            self.loop.call_soon(fn, *args)
            return
        self.pending_end = (fn, args)
        self.loop.call_later(self.settings.ws_close_timeout, self._run_pending_end)
        self.resume_reading()

    def _run_pending_end(self) -> None:
        pending, self.pending_end = self.pending_end, None
        if pending is not None:
            pending[0](*pending[1])

    def _reserved_bits(self, b0: int, opcode: int) -> None:
        """RSV1 on the first frame of a data message means compressed, if permessage-deflate
        was negotiated; any other reserved bit, anywhere else, is a protocol error."""
        if (b0 & 0x70) == 0x40 and self.inflater is not None:
            if opcode == OP_TEXT or opcode == OP_BINARY:
                self.m_compressed = True
                return
            raise _Fail(1002, "RSV1 on a frame that is not the first of a data message")
        raise _Fail(1002, "reserved bits set without a negotiated extension")

    def _check_header(self, b0: int, opcode: int, n: int) -> None:
        """Validate a frame header that is not on the fast path."""
        if opcode >= 8:
            if opcode > OP_PONG:
                raise _Fail(1002, f"reserved opcode {opcode}")
            if not b0 & 0x80:
                raise _Fail(1002, "fragmented control frame")
            if n > 125:
                raise _Fail(1002, "control frame payload over 125 bytes")
            return
        if opcode == OP_CONT:
            if not self.m_opcode:
                raise _Fail(1002, "continuation frame without a message in progress")
        elif opcode > OP_BINARY:
            raise _Fail(1002, f"reserved opcode {opcode}")
        elif self.m_opcode:
            raise _Fail(1002, "new data frame while a fragmented message is in progress")
        if self.m_size + n > self.max_size:
            raise _Fail(1009, f"message too big (limit {self.max_size} bytes)")

    def _stream_payload(self, data: bytes) -> bytes:
        """Consume payload bytes of the frame in progress; return what follows it."""
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
            if self.state == OPEN:
                try:
                    self.f_parts.append(self.m_decoder.decode(plain, False))
                except UnicodeDecodeError:
                    raise _Fail(1007, "invalid UTF-8 in a text message") from None
        else:
            self.f_parts.append(plain)
        if self.f_remaining:
            return b""
        parts, self.f_parts = self.f_parts, []
        fin = self.f_fin
        if text:
            # Already decoded: add the pieces to the message directly.
            if opcode == OP_TEXT:
                self.m_opcode = OP_TEXT
            self.m_parts.extend(parts)
            self.m_size += self.f_offset
            if fin:
                self._finish_message()
        else:
            payload = b"".join(parts) if len(parts) != 1 else parts[0]
            self._frame(opcode, fin, payload)
        return rest

    def _frame(self, opcode: int, fin: bool, payload: bytes) -> None:
        """A complete frame off the slow path (fragments, control frames)."""
        if opcode >= 8:
            self._control(opcode, payload)
            return
        if opcode != OP_CONT:
            self.m_opcode = opcode
            if opcode == OP_TEXT and self.m_decoder is None:
                self.m_decoder = _UTF8_DECODER()
        if self.m_compressed:
            assert self.inflater is not None
            try:
                payload = self.inflater.inflate(payload, fin, self.max_size - self.m_size)
            except TooBig:
                raise _Fail(1009, f"message too big (limit {self.max_size} bytes)") from None
            except zlib.error:
                raise _Fail(1007, "invalid compressed data") from None
        self.m_size += len(payload)
        if self.m_opcode == OP_TEXT:
            if self.state == OPEN:
                try:
                    self.m_parts.append(self.m_decoder.decode(payload, False))
                except UnicodeDecodeError:
                    raise _Fail(1007, "invalid UTF-8 in a text message") from None
        else:
            self.m_parts.append(payload)
        if fin:
            self._finish_message()

    def _finish_message(self) -> None:
        parts = self.m_parts
        size = self.m_size
        opcode = self.m_opcode
        self.m_parts = []
        self.m_opcode = 0
        self.m_size = 0
        self.m_compressed = False
        if opcode == OP_TEXT:
            decoder = self.m_decoder
            self.m_decoder = None
            try:
                tail = decoder.decode(b"", True)
            except UnicodeDecodeError:
                raise _Fail(1007, "invalid UTF-8 in a text message") from None
            if tail:
                parts.append(tail)
            message: Any = "".join(parts)
        else:
            message = b"".join(parts)
        if self.state == OPEN:
            self._deliver(message, size)

    def _deliver(self, message: Any, size: int) -> None:
        self.last_message = self.last_rx  # set by data_received for these very bytes
        self.batch_delivered = True
        waiter = self.waiter
        if waiter is not None:
            self.waiter = None
            if not waiter.done():
                waiter.set_result(message)
                return
        self.queue.append(message)
        self.queued_bytes += len(message)
        if (len(self.queue) >= self.MAX_QUEUED or self.queued_bytes > self.max_size) and not self.read_paused:
            self.pause_reading()

    def _control(self, opcode: int, payload: bytes) -> None:
        if opcode == OP_PING:
            if self.state == OPEN:
                self.transport.write(_control_frame(OP_PONG, payload))
            return
        if opcode == OP_PONG:
            if self.ping_payload is not None and payload == self.ping_payload:
                self.ping_payload = None
            return
        # OP_CLOSE
        if len(payload) == 1:
            raise _Fail(1002, "close frame with a 1-byte payload")
        if payload:
            code = (payload[0] << 8) | payload[1]
            if code not in _VALID_CODES:
                raise _Fail(1002, f"invalid close code {code}")
            try:
                reason = payload[2:].decode()
            except UnicodeDecodeError:
                raise _Fail(1007, "invalid UTF-8 in the close reason") from None
        else:
            code, reason = 1005, ""
        if (self.batch_delivered or self.queue) and self.state == OPEN:
            # Messages that came just before the close go to the session first.
            self._defer_end(self._peer_closed, code, reason, payload[:2])
            return
        self._peer_closed(code, reason, payload[:2])

    def _peer_closed(self, code: int, reason: str, reply: bytes) -> None:
        self.close_received = True
        if self.state == OPEN:
            # The peer started the closing handshake: echo its code, then close TCP.
            self.close_sent = True
            self.transport.write(_control_frame(OP_CLOSE, reply))
            self._set_closed(code, reason, "client")
        else:
            # Our close was answered.
            self._set_closed(self.close_code, self.close_reason, self.closed_by or "server")
        self._finish_tcp()

    # -- closing ---------------------------------------------------------------------------

    def _set_closed(self, code: int, reason: str, by: str) -> None:
        """Logically closed: wake receivers and senders, log once."""
        if self.state == CLOSED:
            return
        self.state = CLOSED
        self.close_code = code
        self.close_reason = reason
        self.closed_by = by
        logger.info("WebSocket %s from %s closed by %s: %d %s", self.path,
                    self.ip, by, code, reason or "(no reason)")
        exc = ConnectionClosed(code, reason, by)
        waiter = self.waiter
        if waiter is not None:
            self.waiter = None
            if not waiter.done():
                waiter.set_exception(exc)
        self.wake_writers(exc)
        if not self.closed_future.done():
            self.closed_future.set_result(None)
        if self.read_paused:
            try:
                self.resume_reading()
            except Exception:  # pragma: no cover - transport already gone
                pass

    def _finish_tcp(self) -> None:
        """Close handshake done (or connection failed): send FIN, drain the peer, bounded."""
        self.discard = True
        self.buf = b""
        self.f_remaining = 0
        transport = self.transport
        if transport.is_closing():
            return
        if transport.can_write_eof():
            transport.write_eof()
        else:  # pragma: no cover
            transport.close()
        self._arm_close_timer()

    def _arm_close_timer(self) -> None:
        if self.close_timer is None:
            self.close_timer = self.loop.call_later(self.settings.ws_close_timeout, self._close_timeout)

    def _close_timeout(self) -> None:
        self.close_timer = None
        if self.state != CLOSED:
            logger.info("WebSocket %s from %s: no close frame from the peer within %.1f s, aborting",
                        self.path, self.ip, self.settings.ws_close_timeout)
            self._set_closed(self.close_code if self.close_sent else 1006, self.close_reason,
                             self.closed_by or "server")
        self.transport.abort()

    def _fail(self, code: int, reason: str) -> None:
        """Fail the connection (RFC 6455 7.1.7): close frame with ``code``, then TCP close."""
        logger.info("WebSocket %s from %s: protocol error, closing %d: %s", self.path, self.ip, code, reason)
        if not self.close_sent:
            self.close_sent = True
            self.transport.write(_control_frame(OP_CLOSE, struct.pack("!H", code) + reason.encode()[:123]))
        self._set_closed(code, reason, "server")
        self._finish_tcp()

    def close_nowait(self, code: int = 1000, reason: str = "") -> None:
        """Start the closing handshake now (callable from sync code); harmless if closing."""
        payload = check_close_code(code, reason)
        if self.state != OPEN:
            return
        self.state = CLOSING
        self.close_sent = True
        self.close_code = code
        self.close_reason = reason
        self.closed_by = "server"
        transport = self.transport
        if transport.is_closing():
            self._set_closed(1006, "", "client")
            return
        transport.write(_control_frame(OP_CLOSE, payload))
        # Reading must go on to see the peer's close frame, even if the app stopped reading.
        self.resume_reading()
        self._arm_close_timer()

    async def close(self, code: int = 1000, reason: str = "") -> None:
        """Close with ``code``/``reason`` and wait until the close handshake is over (bounded)."""
        self.close_nowait(code, reason)
        await asyncio.shield(self.closed_future)

    async def wait_closed(self) -> None:
        await asyncio.shield(self.closed_future)

    @property
    def closed(self) -> bool:
        return self.state != OPEN

    async def shutdown(self) -> None:
        """Server stop: close 1001, wait for the peer's close and for the session to finish."""
        if self.state == OPEN:
            self.close_nowait(1001, "server shutting down")
        await asyncio.shield(self.closed_future)
        task = self.session_task
        if task is not None and not task.done():
            try:
                await asyncio.wait_for(asyncio.shield(task), self.settings.ws_close_timeout)
            except asyncio.TimeoutError:
                logger.warning("WebSocket session on %s still running %.1f s after close; cancelling",
                               self.path, self.settings.ws_close_timeout)
                task.cancel()
            except BaseException:
                pass

    def eof_received(self) -> Optional[bool]:
        if self.state != CLOSED:
            self._set_closed(1006, "", "client")
        return False  # let the transport close

    def connection_lost(self, exc: Optional[BaseException]) -> None:
        if self.state != CLOSED:
            self._set_closed(1006, "", "client")
        if self.close_timer is not None:
            self.close_timer.cancel()
            self.close_timer = None
        self.discard = True
        self.state_obj.remove_websocket(self, self.ip)
        self.queue.clear()

    # -- the connection API the session uses (interface.WebSocketConnection) ---------------

    async def receive(self) -> Union[str, bytes]:
        message = self.receive_nowait()
        if message is NO_MESSAGE:
            message = await self.next_message()
        return message

    def receive_nowait(self) -> Any:
        queue = self.queue
        if queue:
            message = queue.popleft()
            self.queued_bytes -= len(message)
            if self.read_paused:
                self._maybe_resume_reading()
            if self.pending_end is not None and not queue:
                self.loop.call_soon(self._run_pending_end)
            return message
        if self.state != OPEN:
            raise ConnectionClosed(self.close_code, self.close_reason, self.closed_by)
        return NO_MESSAGE

    def next_message(self) -> "asyncio.Future[Any]":
        if self.waiter is not None:
            raise RuntimeError("receive() is already being awaited by another task")
        waiter = self.waiter = self.loop.create_future()
        return waiter

    def _maybe_resume_reading(self) -> None:
        if len(self.queue) <= self.MAX_QUEUED // 2 and self.queued_bytes <= self.max_size // 2:
            self.resume_reading()

    async def send(self, message: Union[str, bytes]) -> None:
        """Send one message; waits while the client's buffer is over ``ws_write_limit``.
        A client that does not drain within ``ws_send_timeout`` is closed with 1013."""
        self.write_message(message)
        if self.write_paused:
            await self._drain()

    def write_message(self, message: Union[str, bytes]) -> None:
        if self.state != OPEN:
            raise ConnectionClosed(self.close_code, self.close_reason, self.closed_by, sending=True)
        self.transport.write(encode_frame(message) if self.deflate is None else deflate_frame(message, self.deflate))

    def send_nowait(self, message: Union[str, bytes]) -> None:
        """Send without waiting (sync code, broadcast); a client whose buffer passes
        ``ws_max_write_buffer`` is closed with 1013 instead of growing memory."""
        self.send_frame_nowait(self.prepare(message))

    def prepare(self, message: Union[str, bytes]) -> bytes:
        """The frame for ``message`` on this connection; connections with the same
        ``frame_kind`` can be sent the same frame (broadcast encodes once per kind)."""
        return encode_frame(message) if self.deflate is None else deflate_frame(message, self.deflate)

    def send_frame_nowait(self, frame: bytes) -> None:
        """Write a frame made by ``prepare()`` (one encoding for many clients)."""
        if self.state != OPEN:
            raise ConnectionClosed(self.close_code, self.close_reason, self.closed_by, sending=True)
        transport = self.transport
        transport.write(frame)
        if self.write_paused and transport.get_write_buffer_size() > self.max_buffer:
            logger.warning("WebSocket %s from %s: client not reading (%d bytes queued), closing 1013",
                           self.path, self.ip, transport.get_write_buffer_size())
            self._close_slow_client()

    def _close_slow_client(self) -> None:
        # Its buffer will not drain, so waiting for a close reply makes no sense: say why, then drop.
        self.close_nowait(1013, "client too slow")
        self._set_closed(1013, "client too slow", "server")
        self.transport.abort()

    async def drain(self) -> None:
        """Wait while this client's unsent data is over ``ws_write_limit`` (1013 after
        ``ws_send_timeout``)."""
        if self.write_paused and self.state != CLOSED:
            await self._drain()

    async def _drain(self) -> None:
        fut = self.writable()
        try:
            await asyncio.wait_for(fut, self.settings.ws_send_timeout)
        except asyncio.TimeoutError:
            logger.warning("WebSocket %s from %s: send blocked over %.1f s, closing 1013",
                           self.path, self.ip, self.settings.ws_send_timeout)
            self._close_slow_client()
            raise ConnectionClosed(1013, "client too slow", "server", sending=True) from None

    # -- deadlines (ServerState.tick, once a second) -----------------------------------------

    def check_timeouts(self, now: float) -> None:
        if self.state != OPEN:
            return
        settings = self.settings
        idle = settings.ws_idle_timeout
        if idle and now - self.last_message > idle:
            logger.info("WebSocket %s from %s: idle for %.0f s", self.path, self.ip, idle)
            self.close_nowait(1001, "idle timeout")
            return
        interval = settings.ws_ping_interval
        if not interval:
            return
        if self.ping_payload is not None:
            if now - self.ping_sent_at > settings.ws_ping_timeout and not self.read_paused:
                logger.info("WebSocket %s from %s: no pong within %.1f s", self.path, self.ip,
                            settings.ws_ping_timeout)
                self.close_nowait(1011, "keepalive ping timeout")
                self._set_closed(1011, "keepalive ping timeout", "server")
                self.transport.abort()
            return
        if now - self.last_rx >= interval:
            self.ping_count += 1
            self.ping_payload = payload = struct.pack("!I", self.ping_count)
            self.ping_sent_at = now
            self.transport.write(_control_frame(OP_PING, payload))


__all__ = ["WebSocketProtocol", "check_handshake", "check_close_code", "encode_frame", "ConnectionClosed"]
