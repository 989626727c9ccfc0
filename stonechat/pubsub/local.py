"""The in-process engine: one process, nothing to configure (the default).

Nothing leaves the process: the rooms layer has already delivered a message to this process's
members when it calls ``publish``, so publishing is a no-op; presence is a dict. The rooms
layer numbers room messages itself (``numbered = False``) and keeps the bounded history.
"""

from __future__ import annotations

from typing import Any, Generator, Optional

from .broker import BrokerStatus, HistoryRange, Payload, Sink, new_node_id


class Ready:
    """An awaitable that is already done (no future, no task per message)."""

    __slots__ = ("value",)

    def __init__(self, value: Any = None) -> None:
        self.value = value

    def __await__(self) -> Generator[Any, None, Any]:
        return self.value
        yield  # pragma: no cover - makes this a generator


DONE = Ready(None)
TRUE = Ready(True)
FALSE = Ready(False)


class LocalBroker:
    """In-process: no other process to reach."""

    name = "local"
    numbered = False

    def __init__(self) -> None:
        self.status = BrokerStatus(engine=self.name)
        self.node = new_node_id()
        self.sink: Optional[Sink] = None
        self.presence: dict[str, dict[str, Optional[dict]]] = {}

    async def start(self, sink: Sink) -> None:
        self.sink = sink

    async def close(self) -> None:
        self.status.listener = "stopped"

    def subscribe(self, room: str) -> Ready:
        self.status.rooms += 1
        return DONE

    def unsubscribe(self, room: str) -> None:
        self.status.rooms -= 1

    def publish(self, room: str, payload: Payload) -> Ready:
        self.status.published += 1
        return DONE

    def publish_endpoint(self, endpoint: str, payload: Payload) -> None:
        pass

    def subscribe_endpoint(self, endpoint: str) -> None:
        pass

    def watch(self, connection_id: str) -> None:
        pass

    def unwatch(self, connection_id: str) -> None:
        pass

    def send_to(self, connection_id: str, payload: Payload) -> Ready:
        return FALSE  # not in this process: nowhere else to look

    async def history(self, room: str, after: int, limit: int) -> HistoryRange:
        return HistoryRange(None, 0, [], False)  # the rooms layer keeps the history

    def presence_add(self, room: str, connection_id: str, info: Optional[dict]) -> None:
        self.presence.setdefault(room, {})[connection_id] = info

    def presence_remove(self, room: str, connection_id: str) -> None:
        members = self.presence.get(room)
        if members is not None:
            members.pop(connection_id, None)
            if not members:
                del self.presence[room]

    async def members(self, room: str) -> dict:
        return dict(self.presence.get(room, {}))

    async def count(self, room: str) -> int:
        return len(self.presence.get(room, ()))


__all__ = ["DONE", "FALSE", "LocalBroker", "Ready", "TRUE"]
