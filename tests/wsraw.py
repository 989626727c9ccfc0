"""A raw-socket WebSocket client for tests that need to misbehave (bad frames, no pongs, not
reading). Blocking, standard library only."""

from __future__ import annotations

import base64
import os
import socket
import struct
from typing import Optional


def frame(opcode: int, payload: bytes = b"", fin: bool = True, rsv: int = 0, mask: bool = True,
          length: Optional[int] = None) -> bytes:
    n = len(payload) if length is None else length
    head = bytearray([(0x80 if fin else 0) | (rsv << 4) | opcode])
    mbit = 0x80 if mask else 0
    if n < 126:
        head.append(mbit | n)
    elif n < 65536:
        head.append(mbit | 126)
        head += struct.pack("!H", n)
    else:
        head.append(mbit | 127)
        head += struct.pack("!Q", n)
    if not mask:
        return bytes(head) + payload
    key = os.urandom(4)
    return bytes(head) + key + bytes(b ^ key[i & 3] for i, b in enumerate(payload))


class RawWS:
    def __init__(self, port: int, path: str = "/", headers: str = "", rcvbuf: Optional[int] = None,
                 timeout: float = 5.0) -> None:
        self.sock = socket.socket()
        if rcvbuf:
            self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
        self.sock.settimeout(timeout)
        self.sock.connect(("127.0.0.1", port))
        key = base64.b64encode(os.urandom(16)).decode()
        self.sock.sendall((f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nUpgrade: websocket\r\n"
                           f"Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\n"
                           f"Sec-WebSocket-Version: 13\r\n{headers}\r\n").encode())
        self.buf = b""
        while b"\r\n\r\n" not in self.buf:
            chunk = self.sock.recv(4096)
            if not chunk:
                break
            self.buf += chunk
        head, _, self.buf = self.buf.partition(b"\r\n\r\n")
        self.status = int(head.split(b" ", 2)[1]) if head else 0
        self.head = head

    def send(self, data: bytes) -> None:
        self.sock.sendall(data)

    def send_text(self, text: str) -> None:
        self.send(frame(0x1, text.encode()))

    def _need(self, n: int) -> bool:
        while len(self.buf) < n:
            chunk = self.sock.recv(65536)
            if not chunk:
                return False
            self.buf += chunk
        return True

    def recv_frame(self) -> Optional[tuple[int, bytes]]:
        """(opcode, payload) of the next server frame, or None at EOF."""
        if not self._need(2):
            return None
        n = self.buf[1] & 0x7F
        pos = 2
        if n == 126:
            self._need(4)
            n = struct.unpack("!H", self.buf[2:4])[0]
            pos = 4
        elif n == 127:
            self._need(10)
            n = struct.unpack("!Q", self.buf[2:10])[0]
            pos = 10
        if not self._need(pos + n):
            return None
        opcode = self.buf[0] & 0x0F
        self.last_rsv = self.buf[0] & 0x70  # RSV1 (0x40): compressed (permessage-deflate)
        payload = self.buf[pos:pos + n]
        self.buf = self.buf[pos + n:]
        return opcode, payload

    def recv_close(self) -> tuple[Optional[int], str]:
        """Skip data frames until the close frame; its (code, reason)."""
        while True:
            f = self.recv_frame()
            if f is None:
                raise EOFError("connection closed without a close frame")
            if f[0] == 0x8:
                if len(f[1]) >= 2:
                    return struct.unpack("!H", f[1][:2])[0], f[1][2:].decode()
                return None, ""

    def at_eof(self) -> bool:
        try:
            return self.sock.recv(65536) == b""
        except ConnectionResetError:
            return True

    def abort(self) -> None:
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        self.sock.close()

    def close(self) -> None:
        self.sock.close()
