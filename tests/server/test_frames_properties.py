"""Properties of the frame reader (``server/websocket/frames.py``), checked with hypothesis on
generated input: valid input round-trips exactly (random messages, random fragmentation with
control frames between fragments, random masks, cut into random reads; plain and compressed),
and any input at all, random or a valid stream mutated, gives only events or ProtocolError
(nothing else ever escapes ``feed``) with the same outcome however it is cut into reads.

Deterministic: ``derandomize=True`` and no example database, so a run is the same run every
time and can never flake; no deadline (the machine is shared). The coverage-guided fuzzer for
the same code is ``bench/fuzz_frames.py``.
"""

from __future__ import annotations

import struct
import zlib

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from stonechat.server.interface import VALID_CLOSE_CODES
from stonechat.server.websocket.deflate import Inflater, negotiate
from stonechat.server.websocket.frames import Close, FrameReader, Ping, Pong
from test_frames import Failed, client_frame, feed

FIXED = settings(derandomize=True, database=None, deadline=None, max_examples=200,
                 suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])

masks = st.binary(min_size=4, max_size=4)
payloads = st.one_of(
    st.binary(max_size=300),
    # now and then a 16- or 64-bit length, cheaply
    st.builds(lambda n, b: bytes([b]) * n, st.integers(60_000, 70_000), st.integers(0, 255)),
)
messages = st.one_of(st.text(max_size=200), payloads)
controls = st.builds(lambda kind, payload: (kind, payload), st.sampled_from([Ping, Pong]), st.binary(max_size=125))


@st.composite
def cuts(draw, length: int) -> list[int]:
    """Offsets at which to cut ``length`` bytes into reads."""
    if length < 2:
        return []
    return sorted(set(draw(st.lists(st.integers(1, length - 1), max_size=12))))


@st.composite
def message_frames(draw, message, compress=None) -> tuple[bytes, list]:
    """``message`` as client frames: random fragmentation, a random control frame between any
    two fragments. (bytes, the events they must give)."""
    is_text = isinstance(message, str)
    payload = message.encode() if is_text else message
    compressed = compress is not None and draw(st.booleans())
    if compressed:
        payload = compress(payload)
    points = draw(cuts(len(payload) + 1)) if payload else []
    pieces = [payload[a:b] for a, b in zip([0, *points], [*points, len(payload)])] or [b""]
    out = b""
    events: list = []
    for i, piece in enumerate(pieces):
        opcode = (0x1 if is_text else 0x2) if i == 0 else 0x0
        rsv = 4 if compressed and i == 0 else 0
        out += client_frame(opcode, piece, fin=i == len(pieces) - 1, rsv=rsv, mask=draw(masks))
        if i < len(pieces) - 1 and draw(st.integers(0, 3)) == 0:
            kind, body = draw(controls)
            out += client_frame(0x9 if kind is Ping else 0xA, body, mask=draw(masks))
            events.append(kind(body))
    events.append(message)
    return out, events


@st.composite
def streams(draw, compress=None) -> tuple[bytes, list]:
    """A valid client stream: messages and control frames, maybe a close frame and garbage
    after it (never read)."""
    data = b""
    expected: list = []
    for item in draw(st.lists(st.one_of(messages, controls), max_size=8)):
        if isinstance(item, tuple):
            kind, body = item
            data += client_frame(0x9 if kind is Ping else 0xA, body, mask=draw(masks))
            expected.append(kind(body))
        else:
            frames, events = draw(message_frames(item, compress))
            data += frames
            expected += events
    if draw(st.booleans()):
        code = draw(st.sampled_from(sorted(VALID_CLOSE_CODES)))
        reason = draw(st.text(max_size=20).filter(lambda r: len(r.encode()) <= 123))
        data += client_frame(0x8, struct.pack("!H", code) + reason.encode(), mask=draw(masks))
        expected.append(Close(code, reason, struct.pack("!H", code)))
        data += draw(st.binary(max_size=20))
    return data, expected


def mutate(data: bytes, edits: list[tuple[int, int, int]]) -> bytes:
    out = bytearray(data)
    for where, kind, value in edits:
        if kind == 3 or not out:
            out.insert(where % (len(out) + 1), value)
            continue
        i = where % len(out)
        if kind == 0:
            out[i] ^= 1 << (value & 7)
        elif kind == 1:
            out[i] = value
        else:
            del out[i]
    return bytes(out)


edits = st.lists(st.tuples(st.integers(0, 1 << 20), st.integers(0, 3), st.integers(0, 255)), max_size=4)
BIG = 1 << 20


def deflate_reader(max_size: int = BIG) -> FrameReader:
    negotiated = negotiate([b"permessage-deflate"])
    assert negotiated is not None
    return FrameReader(max_size, Inflater(negotiated))


class ClientCompressor:
    """The client's side of permessage-deflate with context takeover: one compressor for all
    messages, each ending with the empty stored block stripped."""

    def __init__(self) -> None:
        self.compressor = zlib.compressobj(wbits=-15)

    def __call__(self, data: bytes) -> bytes:
        out = self.compressor.compress(data) + self.compressor.flush(zlib.Z_SYNC_FLUSH)
        return out[:-4]


# -- valid input round-trips ------------------------------------------------------------------------

@FIXED
@given(st.data())
def test_valid_streams_round_trip_whatever_the_reads(data):
    stream, expected = data.draw(streams())
    assert feed(stream, max_size=BIG) == expected
    assert feed(stream, data.draw(cuts(len(stream))), max_size=BIG) == expected


@FIXED
@given(st.data())
def test_compressed_streams_round_trip_whatever_the_reads(data):
    stream, expected = data.draw(streams(ClientCompressor()))
    assert feed(stream, reader=deflate_reader()) == expected
    assert feed(stream, data.draw(cuts(len(stream))), reader=deflate_reader()) == expected


# -- any input: only events or ProtocolError, the same however it is cut ---------------------------

def same_outcome_however_cut(stream: bytes, pieces: list[int], make_reader) -> list:
    whole = feed(stream, reader=make_reader())  # only ProtocolError is caught: anything else fails
    assert feed(stream, pieces, reader=make_reader()) == whole
    assert all(isinstance(e, (str, bytes, Ping, Pong, Close, Failed)) for e in whole)
    return whole


@FIXED
@given(st.data())
def test_mutated_streams_give_events_or_protocol_error(data):
    stream, _ = data.draw(streams())
    stream = mutate(stream, data.draw(edits))
    same_outcome_however_cut(stream, data.draw(cuts(len(stream))), lambda: FrameReader(1000))


@FIXED
@given(st.data())
def test_mutated_compressed_streams_give_events_or_protocol_error(data):
    stream, _ = data.draw(streams(ClientCompressor()))
    stream = mutate(stream, data.draw(edits))
    same_outcome_however_cut(stream, data.draw(cuts(len(stream))), lambda: deflate_reader(1000))


@FIXED
@given(st.binary(max_size=400), st.data())
def test_random_bytes_give_events_or_protocol_error(stream, data):
    outcome = same_outcome_however_cut(stream, data.draw(cuts(len(stream))), lambda: FrameReader(1000))
    if stream and not stream[1:2] or (len(stream) > 1 and not stream[1] & 0x80):
        assert outcome in ([], [Failed(1002)])  # unmasked: refused on its first two bytes
