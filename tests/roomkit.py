"""Helpers for the room tests: the test app, a private ``redis-server`` per test (so a test can
kill, restart, slow or starve it), and a WebSocket client that tells command answers (``= ...``)
from room traffic. Every wait is bounded and waits for an event, never for a guessed time."""

from __future__ import annotations

import asyncio
import json
import subprocess
import time
from pathlib import Path
from typing import Any, Callable, Optional

import redis
from redis.backoff import NoBackoff
from redis.retry import Retry
import websockets

from conftest import free_port  # noqa: F401 (re-exported for the room tests)

ROOMS_APP = str(Path(__file__).resolve().parent / "websocket" / "rooms_app.py")


class RedisServer:
    """``redis-server --port N --save ''`` of this test alone."""

    def __init__(self, directory: Path, port: Optional[int] = None) -> None:
        self.directory = directory
        self.port = port or free_port()
        self.url = f"redis://127.0.0.1:{self.port}/0"
        self.proc: Optional[subprocess.Popen] = None
        self.starts = 0

    def start(self) -> "RedisServer":
        self.starts += 1
        log = open(self.directory / f"redis-{self.port}-{self.starts}.log", "wb")
        self.proc = subprocess.Popen(
            ["redis-server", "--port", str(self.port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
             "--enable-debug-command", "local",
             "--dir", str(self.directory)], stdout=log, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            try:
                if self.client().ping():
                    return self
            except redis.ConnectionError:
                time.sleep(0.02)
        raise RuntimeError(f"redis-server on {self.port} did not start")

    def client(self) -> redis.Redis:
        return redis.Redis(host="127.0.0.1", port=self.port, socket_timeout=30)

    def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(10)

    def ping_blocked(self, timeout: float = 0.3) -> bool:
        """True while Redis does not answer a PING within ``timeout`` (it is busy: DEBUG SLEEP)."""
        try:
            redis.Redis(host="127.0.0.1", port=self.port, socket_timeout=timeout, socket_connect_timeout=timeout,
                        retry=Retry(NoBackoff(), 0)).ping()  # no retries: one PING, one answer
            return False
        except (redis.TimeoutError, redis.ConnectionError):  # the handshake itself may time out
            return True

    def subscriber_count(self) -> int:
        return sum(1 for c in self.client().client_list() if c.get("name", "").startswith("stonechat-")
                   and int(c.get("sub", 0)) > 0)


def wait_until(predicate: Callable[[], Any], timeout: float = 10.0, what: str = "condition") -> Any:
    """Poll ``predicate`` (a cheap check of real state) until it is truthy; fail after ``timeout``."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.02)


async def await_until(predicate: Callable[[], Any], timeout: float = 10.0, what: str = "condition") -> Any:
    deadline = time.monotonic() + timeout
    while True:
        value = await predicate() if asyncio.iscoroutinefunction(predicate) else predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.02)


class Client:
    """One WebSocket client of the test app. ``traffic`` holds what is not a command answer."""

    def __init__(self, ws: Any) -> None:
        self.ws = ws
        self.traffic: list = []
        self.answers: list = []

    @classmethod
    async def connect(cls, url: str) -> "Client":
        return cls(await websockets.connect(url, max_size=None, max_queue=None))

    async def _next(self, timeout: float) -> Any:
        message = await asyncio.wait_for(self.ws.recv(), timeout)
        if isinstance(message, str) and message.startswith("= "):
            self.answers.append(message[2:])
        else:
            self.traffic.append(message)
        return message

    async def ask(self, command: str, timeout: float = 10.0) -> str:
        await self.ws.send(command)
        return await self.answer(timeout)

    async def answer(self, timeout: float = 10.0) -> str:
        deadline = time.monotonic() + timeout
        while not self.answers:
            await self._next(max(0.01, deadline - time.monotonic()))
        return self.answers.pop(0)

    async def take(self, n: int, timeout: float = 10.0) -> list:
        """The next ``n`` room/broadcast messages (consumed)."""
        deadline = time.monotonic() + timeout
        while len(self.traffic) < n:
            left = deadline - time.monotonic()
            if left <= 0:
                raise AssertionError(f"got {len(self.traffic)} of {n} messages: {self.traffic[-5:]}")
            await self._next(left)
        taken, self.traffic = self.traffic[:n], self.traffic[n:]
        return taken

    async def take_until(self, predicate: Callable[[Any], bool], timeout: float = 10.0) -> list:
        """Messages up to and including the first that satisfies ``predicate`` (consumed)."""
        deadline = time.monotonic() + timeout
        seen = 0
        while True:
            for i in range(seen, len(self.traffic)):
                if predicate(self.traffic[i]):
                    taken, self.traffic = self.traffic[:i + 1], self.traffic[i + 1:]
                    return taken
            seen = len(self.traffic)
            left = deadline - time.monotonic()
            if left <= 0:
                raise AssertionError(f"no matching message in {len(self.traffic)}: {self.traffic[-5:]}")
            await self._next(left)

    async def silent(self, timeout: float = 0.3) -> bool:
        """True if nothing but command answers arrives within ``timeout`` (for isolation checks,
        after a later message proved delivery has happened)."""
        try:
            while True:
                await self._next(timeout)
                if self.traffic:
                    return False
        except asyncio.TimeoutError:
            return not self.traffic

    async def close(self) -> None:
        await self.ws.close()

    def abort(self) -> None:
        """Drop the TCP connection without a close frame."""
        self.ws.transport.abort()


def events(messages: list) -> list:
    return [json.loads(m) for m in messages]


def check_stream(items: list) -> list:
    """Envelopes of one recovering client: within an epoch the offsets go up by one; any other
    step must come right after a ``lost`` (or a ``joined``) notice. Returns the messages' data."""
    data = []
    epoch, offset = None, None
    for item in items:
        kind = item["type"]
        if kind in ("lost", "joined"):
            epoch, offset = item["epoch"], item["offset"]
            continue
        if kind != "message":
            continue
        if offset is not None:
            assert item["epoch"] == epoch and item["offset"] == offset + 1, (
                f"silent jump from {epoch}:{offset} to {item['epoch']}:{item['offset']}")
        epoch, offset = item["epoch"], item["offset"]
        data.append(item.get("data"))
    return data
