#!/usr/bin/env python3
"""Coverage-guided fuzzing (atheris, libFuzzer) of the WebSocket frame reader,
``stonechat/server/websocket/frames.py``. Not part of ``make test``: it runs for minutes.

    .venv/bin/pip install atheris
    mkdir -p bench/out/fuzz_frames
    .venv/bin/python bench/fuzz_frames.py -max_total_time=600 -print_final_stats=1 \
        -artifact_prefix=bench/out/fuzz_frames/ bench/out/fuzz_frames
    .venv/bin/coverage run --branch --include='*/websocket/frames.py' \
        bench/fuzz_frames.py --replay bench/out/fuzz_frames && .venv/bin/coverage report -m

What one input does: its first byte picks a mode (deflate or not, messages dropped or not, as
after the server's close frame) and a message size limit; the rest is either
fed as raw client bytes (with or without permessage-deflate), or read as a list of frame specs
(opcode, FIN, reserved bits, mask, payload; the payload compressed by a real client-side
compressor when RSV1 is set) from which the harness builds the stream, so the fuzzer reaches
valid compressed and fragmented messages as easily as broken ones. The stream is then fed in
one piece and again cut into reads where the input says. It fails on anything ``feed`` raises
other than ProtocolError, on an event of a kind the reader must not give, on a message over the
limit, and on two cuts of the same bytes giving different outcomes. See bench/README.md
("Fuzzing the frame reader") for the last run's figures.
"""

from __future__ import annotations

import os
import struct
import sys
import zlib
from pathlib import Path

import atheris

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

# The package first, uninstrumented: its __init__ imports the whole framework, which is not
# what is fuzzed. Then the WebSocket modules again, instrumented for coverage.
import stonechat  # noqa: E402,F401  (imported for its side effect)
for _name in [m for m in sys.modules if m.startswith("stonechat.server.websocket")]:
    del sys.modules[_name]
with atheris.instrument_imports(include=["stonechat.server.websocket"]):
    from stonechat.server.websocket.deflate import Inflater, negotiate
    from stonechat.server.websocket.frames import Close, FrameReader, Ping, Pong, ProtocolError, as_list

LIMITS = (0, 125, 1000, 70_000)
OFFERS = (b"permessage-deflate", b"permessage-deflate; client_no_context_takeover")


def reader(deflate: int, max_size: int, drop: bool) -> FrameReader:
    inflater = None
    if deflate:
        negotiated = negotiate([OFFERS[deflate - 1]])
        assert negotiated is not None
        inflater = Inflater(negotiated)
    r = FrameReader(max_size, inflater)
    r.drop_messages = drop  # as after the server's own close frame
    return r


def outcome(stream: bytes, cuts: list[int], deflate: int, max_size: int, drop: bool) -> list:
    """Every event, and ("failed", code) last if the reader raised ProtocolError."""
    r = reader(deflate, max_size, drop)
    bounds = [0, *cuts, len(stream)]
    out: list = []
    for a, b in zip(bounds, bounds[1:]):
        try:
            out += as_list(r.feed(stream[a:b]))
        except ProtocolError as exc:
            if exc.code not in (1002, 1007, 1009):
                raise AssertionError(f"unexpected close code {exc.code}") from None
            out += exc.events
            out.append(("failed", exc.code))
            break
    return out


def build(fdp: atheris.FuzzedDataProvider) -> bytes:
    """Frames from specs: the harness masks them and compresses RSV1 payloads."""
    compressor = zlib.compressobj(wbits=-15)
    stream = b""
    while fdp.remaining_bytes() > 2 and len(stream) < 100_000:
        b0 = fdp.ConsumeIntInRange(0, 255)
        n = fdp.ConsumeIntInRange(0, 300)
        payload = fdp.ConsumeBytes(n)
        if b0 & 0x40 and fdp.ConsumeBool():
            payload *= fdp.ConsumeIntInRange(1, 64)  # repeated, it shrinks and inflates past a limit
            out = compressor.compress(payload) + compressor.flush(zlib.Z_SYNC_FLUSH)
            payload = out[:-4] if b0 & 0x80 else out  # the tail goes at the message's end
        mask = fdp.ConsumeBytes(4) if fdp.ConsumeIntInRange(0, 15) else b""
        length = len(payload)
        if length < 126:
            head = bytes([b0, (0x80 if mask else 0) | length])
        elif length < 65536:
            head = bytes([b0, (0x80 if mask else 0) | 126]) + struct.pack("!H", length)
        else:
            head = bytes([b0, (0x80 if mask else 0) | 127]) + struct.pack("!Q", length)
        if mask:
            mask = (mask + b"\0\0\0\0")[:4]
            key = (mask * (length // 4 + 1))[:length]
            payload = (int.from_bytes(payload, "big") ^ int.from_bytes(key, "big")).to_bytes(length, "big")
            stream += head + mask + payload
        else:
            stream += head + payload
    return stream


def check(events: list, max_size: int, drop: bool) -> None:
    for event in events:
        assert not (drop and isinstance(event, (str, bytes))), "a message while dropping them"
        if isinstance(event, str):
            assert len(event.encode()) <= max_size, "text message over the limit"
        elif isinstance(event, bytes):
            assert len(event) <= max_size, "binary message over the limit"
        elif isinstance(event, (Ping, Pong)):
            assert len(event.payload) <= 125
        elif isinstance(event, Close):
            assert event is events[-1], "an event after a close frame"
        else:
            assert isinstance(event, tuple) and event is events[-1], f"unexpected event {event!r}"


def test_one_input(data: bytes) -> None:
    fdp = atheris.FuzzedDataProvider(data)
    mode = fdp.ConsumeIntInRange(0, 255)
    deflate = mode % 3
    max_size = LIMITS[(mode >> 2) & 3]
    structured = mode & 0x10
    drop = bool(mode & 0x20)
    count = fdp.ConsumeIntInRange(0, 8)
    cut_points = [fdp.ConsumeIntInRange(0, 1 << 16) for _ in range(count)]
    stream = build(fdp) if structured else fdp.ConsumeBytes(fdp.remaining_bytes())
    cuts = sorted({c % len(stream) for c in cut_points if stream and c % len(stream)})
    whole = outcome(stream, [], deflate, max_size, drop)
    check(whole, max_size, drop)
    pieces = outcome(stream, cuts, deflate, max_size, drop)
    if pieces != whole:
        raise AssertionError(f"cut at {cuts}: {pieces!r} != {whole!r}")
    if len(stream) < 4096 and outcome(stream, list(range(1, len(stream))), deflate, max_size, drop) != whole:
        raise AssertionError("byte by byte differs from one piece")


def seed(corpus: Path) -> None:
    """A few valid inputs to start from, written when the corpus directory is empty."""
    if not corpus.is_dir() or any(corpus.iterdir()):
        return
    def frame(b0: int, payload: bytes) -> bytes:
        return bytes([b0, 0x80 | len(payload)]) + b"\0\0\0\0" + payload
    samples = [
        frame(0x81, b"hello") + frame(0x89, b"p") + frame(0x88, b"\x03\xe8bye"),
        frame(0x01, "κό".encode()) + frame(0x8A, b"") + frame(0x80, "σμε".encode()),
        frame(0x02, b"\x00\x01") + frame(0x80, b"\x02"),
    ]
    for i, sample in enumerate(samples):
        (corpus / f"seed-raw-{i}").write_bytes(bytes([4 | 1 if i else 4, 0]) + sample)
    (corpus / "seed-built").write_bytes(bytes([0x10 | 4 | 1, 2, 0, 9]) + bytes([0xC1, 40]) + b"a" * 40 + b"\x01\x01\x02\x03\x04")


def replay(corpus: Path) -> None:
    """Run every input of a corpus once, in Python (for ``coverage run``: libFuzzer's exit
    skips coverage's atexit hook)."""
    inputs = sorted(p for p in corpus.iterdir() if p.is_file())
    for path in inputs:
        test_one_input(path.read_bytes())
    print(f"replayed {len(inputs)} inputs from {corpus}")


if __name__ == "__main__":
    if sys.argv[1:2] == ["--replay"]:
        replay(Path(sys.argv[2]))
        sys.exit(0)
    for arg in sys.argv[1:]:
        if not arg.startswith("-") and os.path.isdir(arg):
            seed(Path(arg))
    atheris.Setup(sys.argv, test_one_input)
    atheris.Fuzz()
