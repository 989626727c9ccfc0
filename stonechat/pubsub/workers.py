"""The worker-mesh engine: rooms, send-to-id and presence between the workers of one
``--processes N`` server, with no external service (the default on one machine).

It rides on the server's peer messages (``server/interface.py``, "Peers": ``publish(bytes)``
reaches every other worker, in order, best effort, never waiting). This module only decides
what the bytes mean:

    R <room length: 2 bytes> <room> <t|b> <payload>      a room message
    C <id length: 2 bytes> <id> <t|b> <payload>          to one connection id
    P <JSON>                                             presence: add / remove / snap / hello / bye

Rooms are numbered by each worker as it delivers (``numbered = False``): per-room order holds
per publisher, history and positions are per worker (a client that reconnects to another
worker is told "not recovered"). Presence: every worker tells the others its joins and leaves
and sends its whole state every ``presence_ttl / 3`` (which also repairs a lost message); a worker not heard from for ``presence_ttl`` (killed,
stuck) is dropped from the others' view, and a restarted worker asks for everyone's state.
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Any, Callable, Optional

import orjson

from .broker import Payload, Sink
from .local import TRUE, LocalBroker, Ready

logger = logging.getLogger("stonechat.pubsub.workers")


def _head(kind: bytes, name: str) -> bytes:
    raw = name.encode()
    return kind + len(raw).to_bytes(2, "big") + raw


def _body(payload: Payload) -> bytes:
    if isinstance(payload, str):
        return b"t" + payload.encode()
    return b"b" + bytes(payload)


class WorkerMesh(LocalBroker):
    """This worker's end of the mesh; ``receive`` is handed every message of the other workers
    that is not an endpoint broadcast (those stay in ``websocket/session.py``)."""

    name = "workers"

    def __init__(self, publish: Callable[[bytes], None], presence_ttl: float = 30.0) -> None:
        super().__init__()
        self.status.engine = self.name
        self.peer_publish = publish
        self.presence_ttl = presence_ttl
        self.remote: dict[str, dict[str, dict[str, Any]]] = {}  # node → room → id → info
        self.seen: dict[str, float] = {}                          # node → when last heard
        self.beat_task: Optional[asyncio.Task] = None

    async def start(self, sink: Sink) -> None:
        self.attach(sink)

    def attach(self, sink: Sink) -> None:
        """Start now, from the running loop (the server connects the workers after startup)."""
        if self.beat_task is not None:
            return
        self.sink = sink
        # Not now: the server opens the mesh right after connect_peers returns, and a publish
        # before that would leave the peer stuck "connecting" (server/peers.py).
        asyncio.get_running_loop().call_soon(self._tell, {"op": "hello"})
        self.beat_task = asyncio.ensure_future(self._beat())

    async def close(self) -> None:
        if self.beat_task is not None:
            self.beat_task.cancel()
        self._tell({"op": "bye"})
        self.status.listener = "stopped"

    async def _beat(self) -> None:
        interval = max(self.presence_ttl / 3.0, 0.05)
        while True:
            await asyncio.sleep(interval)
            self._tell({"op": "snap", "rooms": self.presence})  # repairs a lost add/remove too
            self._expire(time.monotonic())

    def _tell(self, message: dict) -> None:
        message["node"] = self.node
        try:
            self.peer_publish(b"P" + orjson.dumps(message))
        except Exception as exc:  # the mesh is closing
            logger.debug("presence message not sent: %s", exc)

    def _expire(self, now: float) -> None:
        for node in [n for n, at in self.seen.items() if now - at > self.presence_ttl]:
            logger.info("worker %s not heard from for %.1f s: its room members are dropped", node,
                        self.presence_ttl)
            del self.seen[node]
            self.remote.pop(node, None)

    # -- sending -------------------------------------------------------------------------------

    def publish(self, room: str, payload: Payload) -> Ready:
        self.status.published += 1
        self.peer_publish(_head(b"R", room) + _body(payload))
        return Ready(None)

    def send_to(self, connection_id: str, payload: Payload) -> Ready:
        self.peer_publish(_head(b"C", connection_id) + _body(payload))
        return TRUE  # handed to the other workers; the one that has it delivers it

    def presence_add(self, room: str, connection_id: str, info: Optional[dict]) -> None:
        super().presence_add(room, connection_id, info)
        self._tell({"op": "add", "room": room, "id": connection_id, "info": info})

    def presence_remove(self, room: str, connection_id: str) -> None:
        super().presence_remove(room, connection_id)
        self._tell({"op": "remove", "room": room, "id": connection_id})

    async def members(self, room: str) -> dict:
        self._expire(time.monotonic())
        found = dict(self.presence.get(room, {}))
        for rooms in self.remote.values():
            found.update(rooms.get(room, {}))
        return found

    async def count(self, room: str) -> int:
        return len(await self.members(room))

    # -- receiving -----------------------------------------------------------------------------

    def receive(self, data: bytes) -> None:
        kind = data[:1]
        sink = self.sink
        if sink is None:
            return
        self.status.received += 1
        if kind == b"P":
            self._presence(orjson.loads(data[1:]))
            return
        n = int.from_bytes(data[1:3], "big")
        name = data[3:3 + n].decode()
        body = data[3 + n:]
        payload: Payload = body[1:].decode() if body[:1] == b"t" else body[1:]
        if kind == b"R":
            sink.room_message(name, payload, None)
        elif kind == b"C":
            sink.direct_message(name, payload)

    def _presence(self, message: dict) -> None:
        node = message.get("node")
        op = message.get("op")
        if not node or node == self.node:
            return
        if op == "bye":
            self.seen.pop(node, None)
            self.remote.pop(node, None)
            return
        self.seen[node] = time.monotonic()
        rooms = self.remote.setdefault(node, {})
        if op == "add":
            rooms.setdefault(message["room"], {})[message["id"]] = message.get("info")
        elif op == "remove":
            members = rooms.get(message["room"])
            if members is not None:
                members.pop(message["id"], None)
                if not members:
                    del rooms[message["room"]]
        elif op == "hello":  # a worker (re)started: tell it what is here
            self._tell({"op": "snap", "rooms": self.presence})
        elif op == "snap":
            self.remote[node] = {room: dict(members) for room, members in message.get("rooms", {}).items()}


__all__ = ["WorkerMesh"]
