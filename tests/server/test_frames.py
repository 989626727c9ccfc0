"""The Sans-I/O frame reader and the frame writers (``server/websocket/frames.py``), fed byte
strings: no socket, no event loop. Each RFC 6455 rule with its close code (masking, reserved
bits and opcodes, fragmentation with control frames between fragments, UTF-8 checked while a
message streams in, frame and message size, close-frame payloads), permessage-deflate (a
compressed message, a zip bomb, bad data), and the same outcome whichever way the bytes are cut
into reads. The property tests (hypothesis) are in test_frames_properties.py.
"""

from __future__ import annotations

import struct
import zlib
from typing import Optional

import pytest

from stonechat.server.websocket.deflate import Inflater, Negotiated, negotiate
from stonechat.server.websocket.frames import (
    Close, FrameReader, Ping, Pong, ProtocolError, as_list, control_frame, deflate_frame,
    encode_frame, failure_close_frame)

MASK = b"\x37\xfa\x21\x3d"
MAX = 1000


def client_frame(opcode: int, payload: bytes = b"", fin: bool = True, rsv: int = 0,
                 mask: Optional[bytes] = MASK, length: Optional[int] = None) -> bytes:
    """One frame as a client sends it: masked with ``mask`` (None: unmasked)."""
    n = len(payload) if length is None else length
    head = bytearray([(0x80 if fin else 0) | (rsv << 4) | opcode])
    bit = 0x80 if mask is not None else 0
    if n < 126:
        head.append(bit | n)
    elif n < 65536:
        head += bytes([bit | 126]) + struct.pack("!H", n)
    else:
        head += bytes([bit | 127]) + struct.pack("!Q", n)
    if mask is None:
        return bytes(head) + payload
    key = (mask * (len(payload) // 4 + 1))[:len(payload)]
    masked = (int.from_bytes(payload, "big") ^ int.from_bytes(key, "big")).to_bytes(len(payload), "big")
    return bytes(head) + mask + masked


def text(s: str, **kw) -> bytes:
    return client_frame(0x1, s.encode(), **kw)


def close(code: Optional[int] = 1000, reason: bytes = b"") -> bytes:
    return client_frame(0x8, b"" if code is None else struct.pack("!H", code) + reason)


class Failed:
    """The end of an event list when the reader raised ProtocolError."""

    def __init__(self, code: int) -> None:
        self.code = code

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Failed) and other.code == self.code

    def __repr__(self) -> str:
        return f"Failed({self.code})"


def feed(data: bytes, pieces: Optional[list[int]] = None, reader: Optional[FrameReader] = None,
         max_size: int = MAX) -> list:
    """Every event ``data`` gives, fed in one piece or cut at ``pieces`` (offsets), and
    Failed(code) last if the reader raised."""
    reader = reader or FrameReader(max_size)
    cuts = [0, *(pieces or []), len(data)]
    out: list = []
    for a, b in zip(cuts, cuts[1:]):
        try:
            out += as_list(reader.feed(data[a:b]))
        except ProtocolError as exc:
            out += exc.events
            out.append(Failed(exc.code))
            break
    return out


def bytewise(data: bytes, **kw) -> list:
    return feed(data, list(range(1, len(data))), **kw)


# -- the fast path and its result shapes --------------------------------------------------------

def test_one_whole_frame_gives_the_message_itself():
    reader = FrameReader(MAX)
    assert reader.feed(text("hello")) == "hello"
    assert reader.feed(client_frame(0x2, b"\x00\xff")) == b"\x00\xff"
    assert reader.feed(text("")) == ""
    assert reader.feed(client_frame(0x2)) == b""


def test_several_frames_in_one_read_give_a_list_in_order():
    reader = FrameReader(MAX)
    assert reader.feed(text("a") + client_frame(0x2, b"b") + client_frame(0x9, b"p")) == ["a", b"b", Ping(b"p")]
    assert reader.feed(text("x")[:3]) is None  # nothing complete yet
    assert reader.feed(text("x")[3:]) == "x"


def test_lengths_of_7_16_and_64_bits():
    for n in (125, 126, 65535, 65536):
        payload = bytes(i & 0xFF for i in range(n))
        assert feed(client_frame(0x2, payload), max_size=1 << 20) == [payload]


# -- masking, reserved bits, opcodes ---------------------------------------------------------------

def test_unmasked_client_frames_fail_1002():
    assert feed(text("ok") + text("hi", mask=None)) == ["ok", Failed(1002)]
    assert feed(text("hi", mask=None)[:2]) == [Failed(1002)]  # known from the first two bytes


@pytest.mark.parametrize("rsv", [1, 2, 3, 4, 5, 6, 7])
def test_reserved_bits_without_an_extension_fail_1002(rsv):
    assert feed(text("hi", rsv=rsv)) == [Failed(1002)]
    assert feed(client_frame(0x9, b"p", rsv=rsv)) == [Failed(1002)]


@pytest.mark.parametrize("opcode", [0x3, 0x4, 0x5, 0x6, 0x7, 0xB, 0xC, 0xD, 0xE, 0xF])
def test_reserved_opcodes_fail_1002(opcode):
    assert feed(text("before") + client_frame(opcode, b"x")) == ["before", Failed(1002)]


def test_frame_length_with_the_top_bit_set_fails_1002():
    head = bytes([0x82, 0x80 | 127]) + struct.pack("!Q", 1 << 63) + MASK
    assert feed(head) == [Failed(1002)]


# -- control frames --------------------------------------------------------------------------------

def test_control_frames():
    assert feed(client_frame(0x9, b"ping!") + client_frame(0xA, b"pong")) == [Ping(b"ping!"), Pong(b"pong")]
    assert feed(client_frame(0x9, b"x" * 125)) == [Ping(b"x" * 125)]
    assert feed(client_frame(0x9, b"x" * 126)) == [Failed(1002)]  # over 125 bytes
    assert feed(client_frame(0x9, b"p", fin=False)) == [Failed(1002)]  # fragmented
    assert feed(client_frame(0xA, b"p", fin=False)) == [Failed(1002)]
    assert feed(client_frame(0x8, b"", fin=False)) == [Failed(1002)]


# -- fragmentation ---------------------------------------------------------------------------------

def test_fragments_with_control_frames_between():
    data = (text("frag", fin=False) + client_frame(0x9, b"ping!")
            + client_frame(0x0, "ment€".encode(), fin=False) + client_frame(0xA, b"unsolicited")
            + client_frame(0x0, b"ed"))
    expected = [Ping(b"ping!"), Pong(b"unsolicited"), "fragment€ed"]
    assert feed(data) == expected
    assert bytewise(data) == expected


def test_a_character_split_between_fragments_is_fine():
    euro = "€".encode()
    data = client_frame(0x1, euro[:1], fin=False) + client_frame(0x0, euro[1:2], fin=False) + client_frame(0x0, euro[2:])
    assert feed(data) == ["€"]


def test_binary_fragments_and_empty_fragments():
    data = (client_frame(0x2, b"", fin=False) + client_frame(0x0, b"ab", fin=False)
            + client_frame(0x0, b"", fin=False) + client_frame(0x0, b"c"))
    assert feed(data) == [b"abc"]


def test_fragmentation_errors_fail_1002():
    assert feed(client_frame(0x0, b"cont")) == [Failed(1002)]  # no message in progress
    assert feed(text("a", fin=False) + text("b")) == [Failed(1002)]  # new message inside one
    assert feed(text("a", fin=False) + client_frame(0x2, b"b")) == [Failed(1002)]
    assert feed(text("a") + client_frame(0x0, b"b")) == ["a", Failed(1002)]  # the message had ended


def test_close_between_fragments_ends_reading():
    data = client_frame(0x2, b"\x01", fin=False) + close(1000, b"done") + client_frame(0x0, b"\x02")
    assert feed(data) == [Close(1000, "done", b"\x03\xe8")]


# -- UTF-8 -------------------------------------------------------------------------------------------

@pytest.mark.parametrize("payload", [
    b"\xff", b"ok \xed\xa0\x80",  # a byte never in UTF-8; a UTF-16 surrogate
    b"\xc0\xaf",                   # an overlong encoding
    b"\xf4\x90\x80\x80",           # above U+10FFFF
    b"abc\xe2\x82",                # a character cut off at the end of the message
])
def test_invalid_utf8_fails_1007(payload):
    assert feed(client_frame(0x1, payload)) == [Failed(1007)]
    assert bytewise(client_frame(0x1, payload)) == [Failed(1007)]
    assert feed(client_frame(0x1, payload[:1], fin=False) + client_frame(0x0, payload[1:])) == [Failed(1007)]


def test_invalid_utf8_fails_before_the_message_ends():
    # Across fragments: the second fragment can never become valid; no final fragment needed.
    reader = FrameReader(MAX)
    assert reader.feed(client_frame(0x1, "κόσμε".encode(), fin=False)) is None
    with pytest.raises(ProtocolError) as failed:
        reader.feed(client_frame(0x0, b"\xf4\x90", fin=False))
    assert failed.value.code == 1007
    # Within one frame: only its first bytes have arrived, the bad ones among them.
    whole = client_frame(0x1, b"abc\xf4\x90\x80\x80" + b"d" * 500)
    reader = FrameReader(MAX)
    with pytest.raises(ProtocolError) as failed:
        reader.feed(whole[:14])
    assert failed.value.code == 1007
    assert reader.feed(whole[14:]) is None  # nothing is read after a protocol error


def test_binary_messages_are_not_utf8_checked():
    assert feed(client_frame(0x2, b"\xff\xfe")) == [b"\xff\xfe"]


# -- sizes -------------------------------------------------------------------------------------------

def test_message_at_the_limit_passes_over_it_fails_1009():
    assert feed(client_frame(0x2, b"x" * MAX)) == [b"x" * MAX]
    assert feed(client_frame(0x2, b"x" * (MAX + 1))) == [Failed(1009)]
    assert feed(text("y" * (MAX + 1))) == [Failed(1009)]


def test_an_oversized_frame_fails_on_its_header_alone():
    header = client_frame(0x2, b"", length=10 ** 9)
    assert feed(header) == [Failed(1009)]
    assert feed(client_frame(0x9, b"", length=70000)[:14]) == [Failed(1002)]  # control: 1002 first


def test_an_oversized_fragmented_message_fails_1009():
    data = text("a" * 600, fin=False) + client_frame(0x0, b"b" * 401)
    assert feed(data) == [Failed(1009)]
    assert feed(text("a" * 600, fin=False) + client_frame(0x0, b"b" * 400)) == ["a" * 600 + "b" * 400]


# -- close frames ------------------------------------------------------------------------------------

@pytest.mark.parametrize("code", [1000, 1001, 1002, 1003, 1007, 1008, 1009, 1010, 1011, 1012, 1013, 1014, 3000, 4999])
def test_valid_close_codes(code):
    assert feed(close(code, "bye €".encode())) == [Close(code, "bye €", struct.pack("!H", code))]


@pytest.mark.parametrize("code", [0, 999, 1004, 1005, 1006, 1015, 1016, 2000, 2999, 5000, 65535])
def test_invalid_close_codes_fail_1002(code):
    assert feed(close(code)) == [Failed(1002)]


def test_close_payload_rules():
    assert feed(close(None)) == [Close(1005, "", b"")]
    assert feed(client_frame(0x8, b"\x03")) == [Failed(1002)]  # a 1-byte payload
    assert feed(close(1000, b"\xff")) == [Failed(1007)]  # a reason that is not UTF-8


def test_nothing_is_read_after_a_close_frame():
    reader = FrameReader(MAX)
    assert reader.feed(text("last") + close(1000) + text("after") + b"\x00garbage") == ["last", Close(1000, "", b"\x03\xe8")]
    assert reader.feed(text("later")) is None


def test_events_before_an_error_come_with_it():
    reader = FrameReader(MAX)
    with pytest.raises(ProtocolError) as failed:
        reader.feed(text("one") + client_frame(0x9, b"p") + client_frame(0x3))
    assert (failed.value.code, failed.value.events) == (1002, ["one", Ping(b"p")])
    assert "reserved opcode 3" in failed.value.reason


# -- after our own close frame ----------------------------------------------------------------------

def test_drop_messages_still_checks_frames_and_passes_control_frames():
    reader = FrameReader(MAX)
    reader.drop_messages = True
    data = text("gone") + text("frag", fin=False) + client_frame(0x9, b"p") + client_frame(0x0, b"ment") + close(1000)
    assert feed(data, reader=reader) == [Ping(b"p"), Close(1000, "", b"\x03\xe8")]
    reader = FrameReader(MAX)
    reader.drop_messages = True
    assert feed(text("x", mask=None), reader=reader) == [Failed(1002)]


# -- any cut of the bytes into reads ------------------------------------------------------------------

SEQUENCES = {
    "messages and controls": (text("hello") + client_frame(0x2, bytes(range(200))) + client_frame(0x9, b"p")
                              + text("κό", fin=False) + client_frame(0xA) + client_frame(0x0, "σμε".encode())
                              + text("x" * 300) + close(1001, b"bye")),
    "utf-8 error late": text("fine") + client_frame(0x1, "ok".encode() * 40 + b"\xff" + b"z" * 30),
    "oversized": text("fine") + client_frame(0x2, b"q" * (MAX + 1)),
    "bad close": text("fine") + client_frame(0x8, b"\x03\xe8\xff"),
}


@pytest.mark.parametrize("name", SEQUENCES)
def test_every_cut_gives_the_same_events(name):
    data = SEQUENCES[name]
    whole = feed(data)
    assert whole and (name == "messages and controls") == (not isinstance(whole[-1], Failed))
    for cut in range(1, len(data)):
        assert feed(data, [cut]) == whole, cut
    assert bytewise(data) == whole


# -- permessage-deflate ----------------------------------------------------------------------------

def deflated(data: bytes, compressor=None) -> bytes:
    c = compressor or zlib.compressobj(wbits=-15)
    out = c.compress(data) + c.flush(zlib.Z_SYNC_FLUSH)
    assert out.endswith(b"\x00\x00\xff\xff")
    return out[:-4]


def deflate_reader(offer: bytes = b"permessage-deflate", max_size: int = MAX) -> FrameReader:
    negotiated = negotiate([offer])
    assert negotiated is not None
    return FrameReader(max_size, Inflater(negotiated))


def test_compressed_messages_whole_fragmented_and_in_pieces():
    message = ("stonechat " * 50).encode()
    packed = deflated(message)
    whole = client_frame(0x1, packed, rsv=4)
    assert feed(whole, reader=deflate_reader()) == [message.decode()]
    fragmented = (client_frame(0x2, packed[:7], rsv=4, fin=False) + client_frame(0x9, b"p")
                  + client_frame(0x0, packed[7:]))
    assert feed(fragmented, reader=deflate_reader()) == [Ping(b"p"), message]
    assert bytewise(whole, reader=deflate_reader()) == [message.decode()]
    # An uncompressed message on the same connection is fine too.
    assert feed(text("plain") + whole, reader=deflate_reader()) == ["plain", message.decode()]


def test_the_client_context_is_kept_between_messages_unless_declined():
    compressor = zlib.compressobj(wbits=-15)
    first = client_frame(0x1, deflated(b"abcabcabc" * 20, compressor), rsv=4)
    second = client_frame(0x1, deflated(b"abcabcabc" * 20, compressor), rsv=4)  # refers to the first
    assert feed(first + second, reader=deflate_reader()) == ["abcabcabc" * 20] * 2
    one_shot = [client_frame(0x1, deflated(b"xyz" * 30), rsv=4) for _ in range(2)]
    assert feed(b"".join(one_shot), reader=deflate_reader(b"permessage-deflate; client_no_context_takeover")) == ["xyz" * 30] * 2


def test_zip_bomb_fails_1009_without_being_expanded():
    bomb = deflated(b"\x00" * 10_000_000)
    assert len(bomb) < 20_000
    assert feed(client_frame(0x2, bomb, rsv=4), reader=deflate_reader(max_size=1 << 20), max_size=1 << 20) == [Failed(1009)]
    # Counted across fragments, after inflating: 700 + 400 bytes of one compressed message.
    c = zlib.compressobj(wbits=-15)
    first = c.compress(b"a" * 700) + c.flush(zlib.Z_SYNC_FLUSH)
    last = deflated(b"b" * 400, c)
    data = (client_frame(0x1, first[:5], rsv=4, fin=False) + client_frame(0x0, first[5:], fin=False)
            + client_frame(0x0, last))
    assert feed(data, reader=deflate_reader()) == [Failed(1009)]
    c = zlib.compressobj(wbits=-15)
    first = c.compress(b"a" * 600) + c.flush(zlib.Z_SYNC_FLUSH)
    data = client_frame(0x1, first, rsv=4, fin=False) + client_frame(0x0, deflated(b"b" * 400, c))
    assert feed(data, reader=deflate_reader()) == ["a" * 600 + "b" * 400]  # exactly at the limit


def test_bad_compressed_data_fails_1007():
    assert feed(client_frame(0x2, b"\xff\xff\xff\xff", rsv=4), reader=deflate_reader()) == [Failed(1007)]


def test_compressed_invalid_utf8_fails_1007():
    assert feed(client_frame(0x1, deflated(b"ok\xff"), rsv=4), reader=deflate_reader()) == [Failed(1007)]


def test_rsv1_with_deflate_only_on_a_first_data_frame():
    packed = deflated(b"hello hello")
    assert feed(client_frame(0x1, b"hel", fin=False) + client_frame(0x0, b"lo", rsv=4),
                reader=deflate_reader()) == [Failed(1002)]
    assert feed(client_frame(0x9, b"p", rsv=4), reader=deflate_reader()) == [Failed(1002)]
    assert feed(client_frame(0x1, packed, rsv=2), reader=deflate_reader()) == [Failed(1002)]  # RSV2


# -- writing -------------------------------------------------------------------------------------------

def server_frame(frame: bytes) -> tuple[int, int, bytes]:
    """(first byte, payload length, payload) of an unmasked server frame."""
    n = frame[1]
    assert not n & 0x80  # a server never masks
    pos = 2
    if n == 126:
        n, pos = struct.unpack("!H", frame[2:4])[0], 4
    elif n == 127:
        n, pos = struct.unpack("!Q", frame[2:10])[0], 10
    assert len(frame) == pos + n
    return frame[0], n, frame[pos:]


@pytest.mark.parametrize("n", [0, 1, 125, 126, 65535, 65536])
def test_encode_frame(n):
    assert server_frame(encode_frame("é" * (n // 2) + "a" * (n % 2))) == (0x81, n, ("é" * (n // 2) + "a" * (n % 2)).encode())
    assert server_frame(encode_frame(b"b" * n)) == (0x82, n, b"b" * n)
    assert server_frame(encode_frame(bytearray(b"c" * n)))[2] == b"c" * n
    with pytest.raises(TypeError):
        encode_frame(42)  # type: ignore[arg-type]


def test_deflate_frame_compresses_long_messages_only():
    params = Negotiated("permessage-deflate", 12, False)
    short = deflate_frame("short", params)
    assert short == encode_frame("short")
    first, _, payload = server_frame(deflate_frame("long " * 100, params))
    assert first == 0x81 | 0x40
    assert zlib.decompressobj(-15).decompress(payload + b"\x00\x00\xff\xff") == ("long " * 100).encode()


def test_control_frames_written():
    assert control_frame(0x9, b"abc") == b"\x89\x03abc"
    assert control_frame(0x8, b"") == b"\x88\x00"
    assert server_frame(failure_close_frame(1002, "bad")) == (0x88, 5, b"\x03\xeabad")
