"""Rooms: who is in which room in this process, delivery of room messages in order, send-to-id
anywhere, presence, and the recovery bookkeeping (positions, gaps, replays).

Everything that leaves the process goes through a broker (``pubsub/broker.py``); this module
never knows which engine it is. Two ways of numbering:

* the broker numbers (Redis): a room message is delivered when it comes back from the broker,
  to this process's members in offset order; a gap (offset jumps) or a new epoch makes the
  room *resync*: live messages are held (bounded) while the missing range is read back from
  the broker's history; what cannot be read back is announced to recovering clients as lost;
* this process numbers (in-process, worker mesh): a message is delivered here at once and
  handed to the broker for the other processes; each process numbers what it delivers, keeps
  a bounded history per room, and positions are valid on this process only (another process's
  epoch differs, so a client that lands elsewhere is told "not recovered", never misled).

Envelope (endpoints with ``recovery=True``), one JSON text message per event:

    {"type": "message", "room": R, "epoch": E, "offset": N, "data": "..."}   (or "data_base64")
    {"type": "joined",  "room": R, "epoch": E, "offset": N}                 (+ "recovered", "missed",
                                                                             "reason" after a join
                                                                             with ``since``)
    {"type": "lost",    "room": R, "epoch": E, "offset": N, "reason": "..."}
    {"type": "join" | "leave", "room": R, "id": ID, "info": {...}}          (``announce=True``;
                                                                             plain endpoints too)

"lost" means: messages before this position may be missing; from it on the stream is whole.
"""

from __future__ import annotations

import asyncio
import base64
import logging
import threading
import time
from concurrent.futures import Future
import uuid
from collections import deque
from typing import Any, Awaitable, Generator, Optional, Union

import orjson

from ..pubsub.broker import Broker, BrokerError, BrokerSettings, BrokerStatus, Payload, Position, as_payload
from ..pubsub.local import DONE, Ready

logger = logging.getLogger("stonechat.rooms")

MIN_BUFFER = 1000  # live messages held per room (or per recovering client) while a range is read back
CATCH_UP_CHUNK = 1000  # entries per history read while a room catches up
SWEEP_EVERY = 5.0  # seconds between two sweeps of empty rooms kept for their history


def envelope(room: str, position: Position, payload: Payload) -> str:
    if isinstance(payload, str):
        return orjson.dumps({"type": "message", "room": room, "epoch": position.epoch,
                             "offset": position.offset, "data": payload}).decode()
    return orjson.dumps({"type": "message", "room": room, "epoch": position.epoch, "offset": position.offset,
                         "data_base64": base64.b64encode(payload).decode()}).decode()


def notice(kind: str, room: str, epoch: Optional[str], offset: int, **extra: Any) -> str:
    return orjson.dumps({"type": kind, "room": room, "epoch": epoch or "", "offset": offset, **extra}).decode()


def _send(ws: Any, frame_or_message: Payload) -> None:
    conn = ws._conn
    if conn is not None and not conn.closed:
        try:
            conn.send_nowait(frame_or_message)
        except Exception:  # closed meanwhile (ConnectionClosed): it leaves with its session
            pass


def fan_out(members: dict, message: Payload) -> int:
    """``message`` to every live connection in ``members`` (id → connector), encoded once per
    frame kind (plain, or permessage-deflate), never waiting for any of them; how many it was
    written to. One failing connection (closed meanwhile) never stops the others. The one loop
    of every broadcast: rooms, endpoints (``api.send_to_all``), recovery."""
    frames: dict = {}
    sent = 0
    for ws in list(members.values()):
        conn = ws._conn
        if conn is None or conn.closed:
            continue
        frame = frames.get(conn.frame_kind)
        if frame is None:
            frame = frames[conn.frame_kind] = conn.prepare(message)
        try:
            conn.send_frame_nowait(frame)
            sent += 1
        except Exception:
            pass
    return sent


class LocalRoom:
    """One room as this process sees it: its members here and where its stream stands."""

    __slots__ = ("name", "plain", "enveloped", "recovering", "epoch", "offset", "history", "syncing",
                 "baseline", "ready", "empty_since", "announce", "recheck")

    def __init__(self, name: str, epoch: Optional[str], history_size: int) -> None:
        self.name = name
        self.plain: dict = {}        # id → connector: gets the payload as sent
        self.enveloped: dict = {}    # id → connector: gets envelopes (recovery endpoints)
        self.recovering: dict = {}   # id → [connector, buffer]: joined, its replay not done yet
        self.epoch = epoch
        self.offset = 0              # the last offset delivered here
        self.history: Optional[deque] = deque(maxlen=history_size) if history_size else None
        self.syncing: Optional[list] = None  # held (payload, position) while reading back a range
        self.baseline = epoch is not None   # where the stream stands is known
        self.ready: Any = DONE       # resolves when the broker delivers this room here
        self.empty_since = 0.0
        self.announce: set = set()   # ids that announced their join (so they announce their leave)
        self.recheck = False         # the subscription dropped during a catch-up: one more pass

    def __len__(self) -> int:
        return len(self.plain) + len(self.enveloped) + len(self.recovering)


class Joining:
    """What ``join()`` returns: the member is in the room already (this process delivers to it
    from now on); awaiting waits until every process does, and until its replay is done.
    The awaited value is True (recovered or nothing to recover) or False (not recovered)."""

    __slots__ = ("task", "value")

    def __init__(self, task: Optional[asyncio.Future] = None, value: Optional[bool] = True) -> None:
        self.task = task
        self.value = value

    def __await__(self) -> Generator[Any, None, Any]:
        if self.task is not None:
            result = yield from self.task.__await__()
            return self.value if result is None else result
        return self.value


class RoomHub:
    """This process's rooms. One per served app; the endpoints' clients point to it."""

    def __init__(self, broker: Broker, settings: BrokerSettings) -> None:
        self.broker = broker
        self.numbered = broker.numbered
        self.history_size = history_size = settings.broker_history_size
        self.history_ttl = settings.broker_history_ttl
        self.presence_ttl = settings.broker_presence_ttl
        self.buffer_limit = max(MIN_BUFFER, history_size)
        self.rooms: dict[str, LocalRoom] = {}
        self.connections: dict[str, Any] = {}  # every live client of this process, by id
        self.endpoints: dict[str, Any] = {}    # endpoint → its Clients (endpoint broadcasts from the broker)
        self.tasks: set = set()                # held: the loop keeps only weak references
        self.epoch_prefix = uuid.uuid4().hex[:10]
        self.epochs = 0
        self.last_sweep = time.monotonic()
        self.loop: Optional[asyncio.AbstractEventLoop] = None  # set at start: threads hand over to it
        self.loop_thread = 0

    @property
    def status(self) -> BrokerStatus:
        return self.broker.status

    def use(self, broker: Broker) -> None:
        """Switch engine before anything was joined (the worker mesh, once the server says
        there are other workers)."""
        self.broker = broker
        self.numbered = broker.numbered

    async def start(self) -> None:
        self.loop = asyncio.get_running_loop()
        self.loop_thread = threading.get_ident()
        await self.broker.start(self)
        for endpoint in self.endpoints:
            self.broker.subscribe_endpoint(endpoint)

    async def close(self) -> None:
        for task in list(self.tasks):
            task.cancel()
        await self.broker.close()

    def _spawn(self, coro: Any, what: str) -> asyncio.Task:
        task = asyncio.ensure_future(coro)
        self.tasks.add(task)

        def done(t: asyncio.Task) -> None:
            self.tasks.discard(t)
            if not t.cancelled() and t.exception() is not None:
                logger.error("room %s failed", what, exc_info=t.exception())
        task.add_done_callback(done)
        return task

    def _new_epoch(self) -> str:
        self.epochs += 1
        return f"{self.epoch_prefix}{self.epochs}"

    # -- connections ---------------------------------------------------------------------------

    def connected(self, ws: Any) -> None:
        self.connections[ws.id] = ws
        self.broker.watch(ws.id)
        joins = ws.__dict__.pop("_joins", None)  # made in the connect handler, before the upgrade
        if joins:
            for args in joins:
                try:
                    self.join(ws, *args)
                except Exception:
                    logger.exception("room join from the connect handler of %s failed", ws.endpoint)

    def disconnected(self, ws: Any) -> None:
        """Every kind of end (close, abort, handler crash, shutdown): leave every room."""
        if self.connections.pop(ws.id, None) is None:
            return
        self.broker.unwatch(ws.id)
        rooms = ws._rooms
        if rooms:
            for name in list(rooms):
                self.leave(ws, name)

    # -- membership ----------------------------------------------------------------------------

    def _room(self, name: str) -> LocalRoom:
        now = time.monotonic()
        if not self.numbered and now - self.last_sweep > SWEEP_EVERY:
            self._sweep(now)
        room = self.rooms.get(name)
        if room is None:
            if self.numbered:
                room = LocalRoom(name, None, 0)
                room.syncing = []  # held until the baseline is known
                room.ready = self._spawn(self._subscribe(room), f"{name!r} subscription")
            else:
                room = LocalRoom(name, self._new_epoch(), self.history_size)
                self.broker.subscribe(name)
            self.rooms[name] = room
        elif not len(room) and room.empty_since:
            room.empty_since = 0.0
            if not self.numbered:
                self.broker.subscribe(name)
        return room

    async def _subscribe(self, room: LocalRoom) -> None:
        await self.broker.subscribe(room.name)
        if self.rooms.get(room.name) is room:
            await self._catch_up(room, first=True)

    def join(self, ws: Any, name: str, info: Optional[dict] = None, since: Any = None,
             announce: bool = False) -> Joining:
        if not isinstance(name, str) or not name:
            raise ValueError(f"a room name is a non-empty string, got {name!r}")
        if info is not None and not isinstance(info, dict):
            raise TypeError(f"join(info=...) takes a dict, got {type(info).__name__}")
        recovery = ws._clients.recovery
        position = Position.parse(since)
        if position is not None and not recovery:
            raise ValueError(f"join({name!r}, since=...): recovery is not enabled on {ws.endpoint} "
                             "(@app.websocket(..., recovery=True))")
        conn = ws._conn
        if conn is None:  # the connect handler: joined right after the upgrade (never if refused)
            ws.__dict__.setdefault("_joins", []).append((name, info, since, announce))
            return Joining(None, None)
        if conn.closed:
            return Joining(None, False)
        rooms = ws._rooms
        if rooms is None:
            rooms = ws._rooms = {}
        if name in rooms:
            return Joining(None, True)
        room = self._room(name)
        rooms[name] = room
        self.broker.presence_add(name, ws.id, info)
        result: Joining
        if not recovery:
            room.plain[ws.id] = ws
            result = Joining(room.ready if room.ready is not DONE else None, True)
        elif not self.numbered:
            result = Joining(None, self._recover_local(room, ws, position))
        else:
            room.recovering[ws.id] = [ws, []]
            result = Joining(self._spawn(self._recover(room, ws, position), f"{name!r} recovery"))
        if announce:
            room.announce.add(ws.id)
            self._announce("join", room, ws, info)
        return result

    def leave(self, ws: Any, name: str) -> bool:
        rooms = ws._rooms
        room = rooms.pop(name, None) if rooms else None
        if room is None:
            return False
        wid = ws.id
        room.plain.pop(wid, None)
        room.enveloped.pop(wid, None)
        room.recovering.pop(wid, None)
        self.broker.presence_remove(name, wid)
        if wid in room.announce:
            room.announce.discard(wid)
            self._announce("leave", room, ws, None)
        if not len(room):
            self.broker.unsubscribe(name)
            if self.numbered or room.history is None:
                del self.rooms[name]
            else:  # kept for its history: a client that comes back here may still recover
                room.empty_since = time.monotonic()
        return True

    def _sweep(self, now: float) -> None:
        self.last_sweep = now
        for room in [r for r in self.rooms.values() if r.empty_since and now - r.empty_since > self.history_ttl]:
            del self.rooms[room.name]

    def _announce(self, kind: str, room: LocalRoom, ws: Any, info: Optional[dict]) -> None:
        text = orjson.dumps({"type": kind, "room": room.name, "id": ws.id, "info": info}).decode()
        try:
            self.publish(room.name, text)
        except Exception as exc:  # BrokerOverloaded: the announcement is what is lost, said so
            logger.warning("room %r: %s announcement for %s not sent: %s", room.name, kind, ws.id, exc)

    # -- sending -------------------------------------------------------------------------------

    def publish(self, name: str, message: Any) -> Awaitable[Optional[Position]]:
        """To every member of room ``name`` in every process. Raises BrokerOverloaded at once
        when the broker's queue is full."""
        payload = as_payload(message)
        if self.numbered:
            return self.broker.publish(name, payload)  # delivered here when it comes back, in order
        room = self.rooms.get(name)
        position = None
        if room is not None:
            now = time.monotonic()
            if now - self.last_sweep > SWEEP_EVERY:
                self._sweep(now)
            if room.name in self.rooms:
                room.offset += 1
                position = Position(room.epoch or "", room.offset)
                if room.history is not None:
                    room.history.append((room.offset, payload))
                self._deliver(room, payload, position)
        self.broker.publish(name, payload)
        return Ready(position)

    def send_to(self, recipient_id: str, message: Any) -> Union[bool, Awaitable[bool]]:
        """To one client, in this process (True/False at once) or in another (an awaitable
        that says whether some process took it)."""
        payload = as_payload(message)
        ws = self.connections.get(recipient_id)
        if ws is not None:
            conn = ws._conn
            if conn is None or conn.closed:
                return False
            try:
                conn.send_nowait(payload)
            except Exception:
                return False
            return True
        return self.broker.send_to(recipient_id, payload)

    def relay_endpoint(self, endpoint: str) -> Any:
        """The ``Clients.relay`` for an endpoint when the broker carries endpoint broadcasts."""
        broker = self.broker

        def relay(message: Payload) -> None:
            try:
                broker.publish_endpoint(endpoint, message)
            except BrokerError as exc:  # best effort, like the mesh: this process's clients still get it
                logger.warning("endpoint %s: broadcast not sent to the other processes: %s", endpoint, exc)
        return relay

    # -- what the broker delivers (the Sink) ---------------------------------------------------

    def endpoint_message(self, endpoint: str, payload: Payload) -> None:
        clients = self.endpoints.get(endpoint)
        if clients:
            fan_out(clients, payload)

    def direct_message(self, connection_id: str, payload: Payload) -> bool:
        ws = self.connections.get(connection_id)
        if ws is None:
            return False
        _send(ws, payload)
        return True

    def room_message(self, name: str, payload: Payload, position: Optional[Position]) -> None:
        room = self.rooms.get(name)
        if room is None or room.empty_since:
            if room is not None and not self.numbered:  # kept for its history: number and keep
                room.offset += 1
                if room.history is not None:
                    room.history.append((room.offset, payload))
            return
        if position is None:  # this process numbers (another worker published it)
            room.offset += 1
            position = Position(room.epoch or "", room.offset)
            if room.history is not None:
                room.history.append((room.offset, payload))
            self._deliver(room, payload, position)
            return
        if room.syncing is not None:
            self._hold(room, payload, position)
            return
        self._apply(room, payload, position)

    def _apply(self, room: LocalRoom, payload: Payload, position: Position) -> None:
        """A numbered message, in a room whose baseline is known and that is not resyncing."""
        if position.epoch == room.epoch:
            offset = position.offset
            if offset == room.offset + 1:
                room.offset = offset
                self._deliver(room, payload, position)
                return
            if offset <= room.offset:
                return  # already delivered (a replay overlapped the live stream)
        elif room.epoch is None and room.offset == 0 and position.offset == 1:
            room.epoch = position.epoch  # the room's first message ever
            room.offset = 1
            self._deliver(room, payload, position)
            return
        # A gap, or a new epoch: hold the live stream and read the missing range back.
        self.status.gaps += 1
        room.syncing = [(payload, position)]
        self._spawn(self._catch_up(room), f"{room.name!r} resync")

    def _hold(self, room: LocalRoom, payload: Payload, position: Position) -> None:
        held = room.syncing
        assert held is not None
        if len(held) < self.buffer_limit:
            held.append((payload, position))
            return
        # Too much arrived while reading back: keep the newest only; the catch-up reads the rest
        # from the history too (what is no longer there is announced as lost).
        held.clear()
        held.append((payload, position))

    def resync(self) -> None:
        """The broker's subscription dropped: every room reads back what it may have missed."""
        for room in list(self.rooms.values()):
            if room.syncing is None:
                room.syncing = []
                room.ready = self._spawn(self._resync_after_reconnect(room), f"{room.name!r} resync")
            else:
                room.recheck = True

    async def _resync_after_reconnect(self, room: LocalRoom) -> None:
        await self.broker.subscribe(room.name)
        await self._catch_up(room)

    async def _catch_up(self, room: LocalRoom, first: bool = False) -> None:
        """Bring ``room`` level with the broker's stream, then play what was held meanwhile."""
        try:
            while True:
                if room.syncing is None:
                    room.syncing = []
                if first or not room.baseline:
                    answer = await self.broker.history(room.name, 1 << 62, 0)
                    held = room.syncing
                    room.epoch = answer.epoch
                    room.offset = answer.top
                    if held and held[0][1].epoch == answer.epoch:
                        # they arrived after the subscription: the baseline is just before them
                        room.offset = min(answer.top, held[0][1].offset - 1)
                    room.baseline = True
                    first = False
                else:
                    answer = await self.broker.history(room.name, room.offset, CATCH_UP_CHUNK)
                    if self.rooms.get(room.name) is not room:
                        return
                    if answer.epoch != room.epoch:
                        if room.offset or room.epoch is not None:
                            self._lost(room, "stream restarted", answer.epoch, 0)
                        room.epoch, room.offset = answer.epoch, 0
                        answer = await self.broker.history(room.name, 0, CATCH_UP_CHUNK)
                        if answer.epoch != room.epoch:
                            continue  # restarted again meanwhile
                    # Read the missing range back in chunks, up to where the live stream (held) goes on.
                    target = answer.top
                    held = room.syncing
                    if held and held[0][1].epoch == room.epoch:
                        target = min(target, held[0][1].offset - 1)
                    whole = True
                    while True:
                        entries = answer.entries
                        if not answer.complete:
                            whole = False
                            start = entries[0][0] - 1 if entries else answer.top
                            self._lost(room, "history trimmed", answer.epoch, start)
                            room.offset = start
                        position_epoch = room.epoch or ""
                        for offset, payload in entries:
                            if offset == room.offset + 1 and offset <= target:
                                room.offset = offset
                                self._deliver(room, payload, Position(position_epoch, offset))
                        if room.offset >= target or not entries:
                            break
                        answer = await self.broker.history(room.name, room.offset, CATCH_UP_CHUNK)
                        if answer.epoch != room.epoch:
                            break  # restarted meanwhile: the next pass sees it
                    if whole:
                        self.status.repaired += 1
                if room.recheck:  # the subscription dropped meanwhile: read once more
                    room.recheck = False
                    continue
                held, room.syncing = room.syncing or [], None
                for i, (payload, position) in enumerate(held):
                    self._apply(room, payload, position)
                    if room.syncing is not None:  # a new gap: the rest waits for the next pass
                        room.syncing.extend(held[i + 1:])
                        break
                if room.syncing is None:
                    return
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            # The range cannot be read back (the broker refused: its queue is full): say so, then
            # go on with what arrived live, from right before the first of it.
            logger.warning("room %r: could not read back its stream (%s)", room.name, exc)
            held, room.syncing = room.syncing or [], None
            if held:
                room.epoch, room.offset = held[0][1].epoch, held[0][1].offset - 1
            room.baseline = True
            self._lost(room, "broker unavailable", room.epoch, room.offset)
            for payload, position in held:
                if position.epoch == room.epoch and position.offset == room.offset + 1:
                    room.offset = position.offset
                    self._deliver(room, payload, position)

    def _lost(self, room: LocalRoom, reason: str, epoch: Optional[str], offset: int) -> None:
        """Messages of ``room`` before (epoch, offset) may be missing here: say so to the
        clients that track positions, and in the log for the others."""
        text = notice("lost", room.name, epoch, offset, reason=reason)
        told = len(room.enveloped) + len(room.recovering)
        fan_out(room.enveloped, text)
        lost_at = Position(epoch or "", offset)
        for entry in room.recovering.values():
            entry[1].append((None, (text, lost_at)))
        self.status.not_recovered += told
        logger.warning("room %r: messages may be lost (%s); %d recovering client(s) told", room.name,
                       reason, told)

    # -- delivery ------------------------------------------------------------------------------

    def _deliver(self, room: LocalRoom, payload: Payload, position: Position) -> None:
        if room.plain:
            fan_out(room.plain, payload)
        if room.enveloped:
            fan_out(room.enveloped, envelope(room.name, position, payload))
        if room.recovering:
            limit = self.buffer_limit
            for entry in room.recovering.values():
                buffer = entry[1]
                if len(buffer) < limit:
                    buffer.append((payload, position))
                elif buffer[-1][1] is not None:
                    buffer.append((None, None))  # overflow marker: the client is told "lost"

    # -- recovery ------------------------------------------------------------------------------

    def _recover_local(self, room: LocalRoom, ws: Any, since: Optional[Position]) -> bool:
        """This process numbers: replay from the local history, synchronously."""
        recovered, missed, reason = True, 0, ""
        if since is not None:
            history = room.history or ()
            first = history[0][0] if history else room.offset + 1
            if since.epoch != room.epoch:
                recovered, reason = False, "unknown epoch"
            elif since.offset > room.offset:
                recovered, reason = False, "position ahead of the stream"
            elif since.offset + 1 < first:
                recovered, reason = False, "history trimmed"
            else:
                for offset, payload in history:
                    if offset > since.offset:
                        _send(ws, envelope(room.name, Position(room.epoch or "", offset), payload))
                        missed += 1
        extra: dict = {}
        if since is not None:
            extra = {"recovered": recovered, "missed": missed}
            if reason:
                extra["reason"] = reason
                self.status.not_recovered += 1
        _send(ws, notice("joined", room.name, room.epoch, room.offset, **extra))
        room.enveloped[ws.id] = ws
        return recovered

    async def _recover(self, room: LocalRoom, ws: Any, since: Optional[Position]) -> bool:
        """The broker numbers: wait until the room is delivered here, read the missed range
        back, replay it, then what arrived meanwhile (deduplicated by offset). Everything
        from here to the end runs without awaiting, so nothing slips between the replay and
        the live stream."""
        try:
            await room.ready
            recovered, reason = True, ""
            replay: list = []
            epoch: Optional[str] = None
            offset = 0
            if since is not None:
                answer = await self.broker.history(room.name, since.offset, self.history_size)
                epoch, offset = answer.epoch, answer.top
                if answer.epoch is None or answer.epoch != since.epoch:
                    recovered, reason = False, "unknown epoch"
                elif since.offset > answer.top:
                    recovered, reason = False, "position ahead of the stream"
                elif not answer.complete:
                    recovered, reason = False, "history trimmed"
                elif answer.top - since.offset > self.history_size:
                    recovered, reason = False, "too many missed"  # a bounded replay, never a partial one
                else:
                    replay = answer.entries
                    offset = replay[-1][0] if replay else since.offset
            entry = room.recovering.get(ws.id)
            if entry is None:
                return False
            buffer = entry[1]
            if since is None:
                # start right before the first message that arrived after the join
                first = next((p for item, p in buffer if item is not None), None)
                if first is not None:
                    epoch, offset = first.epoch, first.offset - 1
                else:
                    epoch, offset = room.epoch, room.offset
            for o, payload in replay:
                _send(ws, envelope(room.name, Position(epoch or "", o), payload))
            extra: dict = {}
            if since is not None:
                extra = {"recovered": recovered, "missed": len(replay)}
                if reason:
                    extra["reason"] = reason
                    self.status.not_recovered += 1
            _send(ws, notice("joined", room.name, epoch, offset, **extra))
            for payload, position in buffer:
                if payload is None:  # a "lost" notice, or the overflow marker
                    if position is None:
                        text, lost_at = notice("lost", room.name, room.epoch, room.offset,
                                               reason="overflow"), Position(room.epoch or "", room.offset)
                        self.status.not_recovered += 1
                    else:
                        text, lost_at = position
                    _send(ws, text)
                    epoch, offset = lost_at.epoch, lost_at.offset
                    continue
                if position.epoch != epoch:
                    epoch, offset = position.epoch, 0
                if position.offset > offset:
                    _send(ws, envelope(room.name, position, payload))
                    offset = position.offset
            room.recovering.pop(ws.id, None)
            room.enveloped[ws.id] = ws
            return recovered
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            logger.warning("room %r: recovery for %s failed (%s)", room.name, ws.id, exc)
            if room.recovering.pop(ws.id, None) is not None:
                _send(ws, notice("lost", room.name, room.epoch, room.offset, reason="broker unavailable"))
                self.status.not_recovered += 1
                room.enveloped[ws.id] = ws
            return False

    # -- presence ------------------------------------------------------------------------------

    async def members(self, name: str) -> dict:
        return await self.broker.members(name)

    async def count(self, name: str) -> int:
        return await self.broker.count(name)


class Room:
    """``app.room(name)``: send to a room from anywhere in the app (HTTP handlers, startup
    tasks), and ask who is in it."""

    __slots__ = ("app", "name")

    def __init__(self, app: Any, name: str) -> None:
        if not isinstance(name, str) or not name:
            raise ValueError(f"a room name is a non-empty string, got {name!r}")
        self.app = app
        self.name = name

    def _hub(self) -> RoomHub:
        hub = getattr(self.app, "room_hub", None)
        if hub is None:
            raise RuntimeError(f"room {self.name!r}: the app is not serving yet (use it from handlers "
                               "or startup handlers)")
        return hub

    def send(self, message: Any) -> Any:
        """Publish now; await the result for the message's position (once the broker took it).
        From another thread (a ``threaded=True`` handler) the message is handed to the event
        loop and a ``concurrent.futures.Future`` of the position is returned."""
        hub = self._hub()
        loop = hub.loop
        if loop is not None and threading.get_ident() != hub.loop_thread:
            future: Future = Future()

            async def publish() -> None:
                try:
                    future.set_result(await hub.publish(self.name, message))
                except Exception as exc:
                    future.set_exception(exc)
            loop.call_soon_threadsafe(lambda: hub._spawn(publish(), f"{self.name!r} publish from a thread"))
            return future
        return hub.publish(self.name, message)

    sync_send = send

    async def async_send(self, message: Any) -> Optional[Position]:
        return await self._hub().publish(self.name, message)

    async def members(self) -> dict:
        """``{connection id: info dict or None}`` over every process (eventually consistent)."""
        return await self._hub().members(self.name)

    async def count(self) -> int:
        return await self._hub().count(self.name)

    def __repr__(self) -> str:
        return f"Room({self.name!r})"


__all__ = ["Joining", "LocalRoom", "Room", "RoomHub", "as_payload", "envelope", "notice"]
