"""The Redis engine: rooms, endpoint broadcasts, send-to-id and presence across machines, on
redis-py's asyncio connections (``pip install 'stonechat[redis]'``; hiredis is used when present).

Per room, one Lua script numbers the message (``HINCRBY`` on the room's meta hash, whose epoch
is made when the hash is), appends it to a capped stream (``XADD MAXLEN ~ N`` with a TTL) and
``PUBLISH``es ``offset:epoch:payload`` — one atomic step, so every process sees a room's
messages in offset order and a missing offset is a gap it can name and read back.

Two connections per process, each owned by one task:

* the *command* connection carries everything we send, in order, pipelined: publishes,
  presence, history reads. Callers put commands on a bounded queue (full: ``BrokerOverloaded``
  at once, never a wait); the writer sends what is queued as one batch and reads the replies.
  On a connection error the unanswered commands go back to the front and are sent again after
  a reconnect (capped backoff, reset on success): order holds; a duplicate is possible.
* the *subscriber* connection is read by one task as fast as it can, handing each message to
  the rooms layer synchronously (no queue in between: a process that cannot keep up makes
  Redis close the connection at ``client-output-buffer-limit pubsub``, which it survives like
  any disconnect). It is subscribed to a room only while this process has a member there,
  to ``sc:e:<endpoint>`` for endpoint broadcasts and ``sc:c:<id>`` for each local client.
  After a reconnect it resubscribes and the rooms layer reads back what it may have missed.

Presence: a sorted set (expiry time per id) and a hash (info per id) per room, refreshed by
each process every ``presence_ttl / 3``; members whose process stopped refreshing (killed)
are dropped by the next read. The listener's state is ``status`` (``BrokerStatus``).
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import time
from collections import deque
from typing import Any, Callable, Optional

import orjson

from .broker import (BrokerError, BrokerOverloaded, BrokerSettings, BrokerStatus, BrokerUnavailable, HistoryRange, Outcome,
                     Payload, Position, Sink, as_payload, new_node_id, safe_url)

logger = logging.getLogger("stonechat.pubsub.redis")

BATCH = 512            # commands per pipelined round trip
BACKOFF_MIN = 0.05     # seconds before the first reconnect attempt
BACKOFF_MAX = 2.0      # the cap of the doubling backoff
COMMAND_TIMEOUT = 15.0  # seconds a batch may take before the connection counts as dead
KEEPALIVE = 5.0        # seconds between pings on an idle subscriber connection
CONNECT_TIMEOUT = 5.0
META_TTL_MIN = 86400.0  # seconds a room's numbering outlives its last message (at least)
SUB_CHUNK = 1000       # channels per SUBSCRIBE command

PUBLISH = """
local epoch = redis.call('HGET', KEYS[1], 'e')
if not epoch then
  local t = redis.call('TIME')
  epoch = t[1] .. t[2]
  redis.call('HSET', KEYS[1], 'e', epoch)
  redis.call('DEL', KEYS[2])
end
local offset = redis.call('HINCRBY', KEYS[1], 'o', 1)
redis.call('PEXPIRE', KEYS[1], ARGV[5])
if ARGV[3] ~= '0' then
  redis.call('XADD', KEYS[2], 'MAXLEN', '~', ARGV[3], offset .. '-0', 'd', ARGV[2])
  redis.call('PEXPIRE', KEYS[2], ARGV[4])
end
redis.call('PUBLISH', ARGV[1], offset .. ':' .. epoch .. ':' .. ARGV[2])
return {offset, epoch}
"""

HISTORY = """
local meta = redis.call('HMGET', KEYS[1], 'e', 'o')
if not meta[1] then
  -- no stream yet: make its epoch now, so a position handed out before the first message
  -- already names this life of the stream
  local t = redis.call('TIME')
  meta = {t[1] .. t[2], '0'}
  redis.call('HSET', KEYS[1], 'e', meta[1], 'o', 0)
  redis.call('DEL', KEYS[2])
end
redis.call('PEXPIRE', KEYS[1], ARGV[3])
local top = tonumber(meta[2])
local after = tonumber(ARGV[1])
if after >= top or ARGV[2] == '0' then return {meta[1], top, {}} end
return {meta[1], top, redis.call('XRANGE', KEYS[2], (after + 1) .. '-0', '+', 'COUNT', ARGV[2])}
"""

PRESENCE_ADD = """
local t = redis.call('TIME')
local now = t[1] * 1000 + math.floor(t[2] / 1000)
for i = 1, #ARGV - 1, 2 do
  redis.call('ZADD', KEYS[1], now + tonumber(ARGV[#ARGV]), ARGV[i])
  redis.call('HSET', KEYS[2], ARGV[i], ARGV[i + 1])
end
redis.call('PEXPIRE', KEYS[1], ARGV[#ARGV])
redis.call('PEXPIRE', KEYS[2], ARGV[#ARGV])
return 1
"""

PRESENCE_REMOVE = """
redis.call('ZREM', KEYS[1], ARGV[1])
redis.call('HDEL', KEYS[2], ARGV[1])
return 1
"""

PRESENCE_GET = """
local t = redis.call('TIME')
local now = t[1] * 1000 + math.floor(t[2] / 1000)
local gone = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', now)
for _, id in ipairs(gone) do redis.call('HDEL', KEYS[2], id) end
if #gone > 0 then redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now) end
if ARGV[1] == 'count' then return redis.call('HLEN', KEYS[2]) end
return redis.call('HGETALL', KEYS[2])
"""

SCRIPTS = {name: (source, hashlib.sha1(source.encode()).hexdigest())
           for name, source in (("publish", PUBLISH), ("history", HISTORY), ("presence_add", PRESENCE_ADD),
                                ("presence_remove", PRESENCE_REMOVE), ("presence_get", PRESENCE_GET))}


def _redis() -> Any:
    try:
        import redis.asyncio as aioredis
    except ImportError:
        raise ImportError("the Redis broker needs redis-py: pip install 'stonechat[redis]'") from None
    return aioredis


def _body(payload: Payload) -> bytes:
    if isinstance(payload, str):
        return b"t" + payload.encode()
    return b"b" + bytes(payload)


def _payload(body: bytes) -> Payload:
    return body[1:].decode() if body[:1] == b"t" else body[1:]


def room_keys(room: str) -> tuple[bytes, bytes, bytes, bytes, bytes]:
    """(channel, meta, stream, presence zset, presence hash) of ``room``."""
    tag = b"{" + room.encode() + b"}"
    return (b"sc:r:" + room.encode(), b"sc:m:" + tag, b"sc:s:" + tag, b"sc:z:" + tag, b"sc:p:" + tag)


class _Command:
    __slots__ = ("args", "outcome", "parse")

    def __init__(self, args: tuple, outcome: Optional[Outcome], parse: Optional[Callable[[Any], Any]]) -> None:
        self.args = args
        self.outcome = outcome
        self.parse = parse


class _Channel:
    """One channel of the subscriber connection: what we want, and the confirmations we wait for."""

    __slots__ = ("name", "wanted", "confirmed", "pending")

    def __init__(self, name: bytes) -> None:
        self.name = name
        self.wanted = False
        self.confirmed = False
        self.pending: deque = deque()  # ("s", future) / ("u", None), in the order sent


def _position(reply: Any) -> Position:
    offset, epoch = reply
    return Position(epoch.decode() if isinstance(epoch, bytes) else str(epoch), int(offset))


class RedisBroker:
    """One process's connections to Redis (``listen=False``: publishing only, see ``Publisher``)."""

    name = "redis"
    numbered = True

    def __init__(self, settings: BrokerSettings, listen: bool = True) -> None:
        self.url = settings.broker
        self.settings = settings
        self.listen = listen
        self.status = BrokerStatus(engine=self.name, url=safe_url(self.url), connected=False, listener="stopped")
        self.node = new_node_id()
        self.node_bytes = self.node.encode()
        self.sink: Optional[Sink] = None
        self.queue: deque = deque()
        self.queue_limit = max(1, settings.broker_queue_size)
        self.history_size = settings.broker_history_size
        self.history_ttl_ms = str(max(1, int(settings.broker_history_ttl * 1000)))
        self.meta_ttl_ms = str(int(max(settings.broker_history_ttl, META_TTL_MIN) * 1000))
        self.presence_ttl_ms = str(max(1, int(settings.broker_presence_ttl * 1000)))
        self.maxlen = str(settings.broker_history_size)
        self.channels: dict[bytes, _Channel] = {}
        self.sub_ops: list = []          # (b"SUBSCRIBE" | b"UNSUBSCRIBE", channel) not sent yet
        self.presence: dict[str, dict[str, Optional[dict]]] = {}  # this process's members, to refresh
        self.keys: dict[str, tuple] = {}
        self.epochs: dict[bytes, str] = {}
        self.pool: Any = None
        self.command_conn: Any = None
        self.sub_conn: Any = None
        self.wake: Optional[asyncio.Event] = None
        self.sub_wake: Optional[asyncio.Event] = None
        self.tasks: list[asyncio.Task] = []
        self.closing = False
        self.last_read = 0.0

    # -- connections ---------------------------------------------------------------------------

    async def start(self, sink: Optional[Sink]) -> None:
        aioredis = _redis()
        from redis.utils import HIREDIS_AVAILABLE
        self.status.parser = "hiredis" if HIREDIS_AVAILABLE else "python"
        self.sink = sink
        try:  # RESP2: pub/sub messages are plain replies read by our loop (RESP3 pushes bypass it)
            self.pool = aioredis.ConnectionPool.from_url(
                self.url, socket_timeout=None, socket_connect_timeout=CONNECT_TIMEOUT, protocol=2,
                client_name=f"stonechat-{self.node}")
        except ValueError as exc:
            raise BrokerUnavailable(f"broker {safe_url(self.url)}: bad URL ({exc})") from None
        self.wake = asyncio.Event()
        self.sub_wake = asyncio.Event()
        try:
            self.command_conn = await self._connect()
            if self.listen:
                self.sub_conn = await self._connect(scripts=False)
        except Exception as exc:
            raise BrokerUnavailable(f"broker {safe_url(self.url)} is not reachable: {exc}") from None
        self.status.connected = True
        loop = asyncio.get_running_loop()
        self.tasks.append(loop.create_task(self._watched(self._writer, "command writer")))
        if self.listen:
            self.status.listener = "running"
            self.last_read = loop.time()
            self.tasks.append(loop.create_task(self._watched(self._reader, "listener")))
            self.tasks.append(loop.create_task(self._watched(self._sub_writer, "subscriber writer")))
            self.tasks.append(loop.create_task(self._watched(self._refresh_presence, "presence refresh")))

    async def _connect(self, scripts: bool = True) -> Any:
        conn = self.pool.make_connection()
        await asyncio.wait_for(conn.connect(), CONNECT_TIMEOUT + 1)
        if scripts:
            await conn.send_packed_command(conn.pack_commands(
                [("SCRIPT", "LOAD", source) for source, _ in SCRIPTS.values()]), check_health=False)
            for _ in SCRIPTS:
                await conn.read_response()
        return conn

    async def _watched(self, loop_fn: Callable, what: str) -> None:
        """Run one of the broker's loops; if it ever ends by a bug, say so loudly and restart it:
        a listener never dies silently."""
        while not self.closing:
            try:
                await loop_fn()
                return
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                self.status.error(f"{what} crashed: {exc!r}")
                if what == "listener":
                    self.status.listener = "failed"
                logger.exception("Redis broker %s crashed; restarting it", what)
                await asyncio.sleep(BACKOFF_MIN)

    async def close(self) -> None:
        if self.closing:
            return
        self.closing = True
        if self.queue and self.command_conn is not None and self.status.connected:
            deadline = time.monotonic() + 2.0  # what the last clients' leaves queued
            while self.queue and time.monotonic() < deadline:
                await asyncio.sleep(0.01)
        for task in self.tasks:
            task.cancel()
        for task in self.tasks:
            try:
                await task
            except BaseException:
                pass
        for conn in (self.command_conn, self.sub_conn):
            if conn is not None:
                try:
                    await conn.disconnect()
                except Exception:
                    pass
        if self.pool is not None:
            await self.pool.disconnect()
        for command in self.queue:
            if command.outcome is not None:
                command.outcome.fail(BrokerUnavailable(f"broker {self.status.url}: closed"))
        self.queue.clear()
        self.status.listener = "stopped"
        self.status.connected = False

    def _failed(self, what: str, exc: BaseException) -> None:
        self.status.error(f"{what}: {exc}")
        logger.warning("Redis broker %s: %s: %s", self.status.url, what, exc)

    # -- the command connection ----------------------------------------------------------------

    def _queue(self, args: tuple, parse: Optional[Callable[[Any], Any]] = None, outcome: bool = True) -> Outcome:
        if self.closing or self.wake is None:
            raise BrokerUnavailable(f"broker {self.status.url}: {'closed' if self.closing else 'not started'}")
        if len(self.queue) >= self.queue_limit:
            self.status.rejected += 1
            raise BrokerOverloaded(f"broker {self.status.url}: {len(self.queue)} messages already waiting "
                                   f"(broker_queue_size); this one was not sent")
        result = Outcome() if outcome else None
        self.queue.append(_Command(args, result, parse))
        self.status.queued = len(self.queue)
        wake = self.wake
        if wake is not None and not wake.is_set():
            wake.set()
        return result  # type: ignore[return-value]

    async def _writer(self) -> None:
        assert self.wake is not None
        backoff = BACKOFF_MIN
        queue = self.queue
        while True:
            if not queue:
                self.wake.clear()
                await self.wake.wait()
                continue
            conn = self.command_conn
            if conn is None or not conn.is_connected:
                try:
                    self.command_conn = conn = await self._connect()
                except Exception as exc:
                    self.status.connected = False
                    self._failed(f"cannot reconnect (retrying in {backoff:.2f} s)", exc)
                    await asyncio.sleep(backoff)
                    backoff = min(backoff * 2, BACKOFF_MAX)
                    continue
                self.status.reconnects += 1
                logger.info("Redis broker %s: command connection back", self.status.url)
            batch = [queue.popleft() for _ in range(min(BATCH, len(queue)))]
            replies: list = []
            try:
                await asyncio.wait_for(self._exchange(conn, batch, replies), COMMAND_TIMEOUT)
            except asyncio.CancelledError:
                queue.extendleft(reversed(batch[len(replies):]))
                self._settle(batch[:len(replies)], replies)
                raise
            except Exception as exc:
                # What was answered is settled; the rest goes back, first in line, for the next connection.
                self._settle(batch[:len(replies)], replies)
                queue.extendleft(reversed(batch[len(replies):]))
                self.status.connected = False
                self._failed("command connection lost", exc)
                try:
                    await conn.disconnect()
                except Exception:
                    pass
                self.command_conn = None
                continue
            backoff = BACKOFF_MIN
            self.status.connected = True
            retry = self._settle(batch, replies)
            if retry:  # the scripts were flushed (SCRIPT FLUSH): load them, then send those again
                queue.extendleft(reversed(retry))
                try:
                    await conn.disconnect()
                except Exception:
                    pass
                self.command_conn = None
            self.status.queued = len(queue)

    @staticmethod
    async def _exchange(conn: Any, batch: list, replies: list) -> None:
        from redis.exceptions import ResponseError
        await conn.send_packed_command(conn.pack_commands([c.args for c in batch]), check_health=False)
        read = conn.read_response
        for _ in batch:
            try:
                replies.append(await read())
            except ResponseError as exc:
                replies.append(exc)

    def _settle(self, batch: list, replies: list) -> list:
        from redis.exceptions import NoScriptError, ResponseError
        retry = []
        for command, reply in zip(batch, replies):
            outcome = command.outcome
            if isinstance(reply, ResponseError):
                if isinstance(reply, NoScriptError):
                    retry.append(command)
                    continue
                self.status.rejected += 1
                if outcome is not None:
                    outcome.fail(reply)
                    if outcome.awaited:
                        continue
                self._failed(f"command {command.args[0]!r} failed", reply)
                continue
            if outcome is not None:
                try:
                    outcome.set(command.parse(reply) if command.parse is not None else reply)
                except Exception as exc:  # a reply we cannot read: a bug, said so
                    outcome.fail(exc)
                    self._failed("unreadable reply", exc)
        return retry

    def _evalsha(self, script: str, keys: tuple, args: tuple) -> tuple:
        return ("EVALSHA", SCRIPTS[script][1], len(keys), *keys, *args)

    def _keys(self, room: str) -> tuple:
        keys = self.keys.get(room)
        if keys is None:
            if len(self.keys) > 100000:
                self.keys.clear()
            keys = self.keys[room] = room_keys(room)
        return keys

    # -- publishing ----------------------------------------------------------------------------

    def publish(self, room: str, payload: Payload) -> Outcome:
        channel, meta, stream, _, _ = self._keys(room)
        self.status.published += 1
        return self._queue(("EVALSHA", SCRIPTS["publish"][1], 2, meta, stream, channel, _body(payload),
                            self.maxlen, self.history_ttl_ms, self.meta_ttl_ms), _position)

    def publish_endpoint(self, endpoint: str, payload: Payload) -> None:
        self._queue(("PUBLISH", b"sc:e:" + endpoint.encode(), self.node_bytes + b"\x00" + _body(payload)),
                    outcome=False)

    def send_to(self, connection_id: str, payload: Payload) -> Outcome:
        return self._queue(("PUBLISH", b"sc:c:" + connection_id.encode(), _body(payload)), lambda n: int(n) > 0)

    async def history(self, room: str, after: int, limit: int) -> HistoryRange:
        _, meta, stream, _, _ = self._keys(room)

        def parse(reply: Any) -> HistoryRange:
            epoch, top, raw = reply
            top = int(top or 0)
            if epoch is None:
                return HistoryRange(None, 0, [], True)
            entries = [(int(entry_id.split(b"-", 1)[0]), _payload(fields[1])) for entry_id, fields in raw]
            # whole: it starts right after ``after`` with nothing missing (it may stop at ``limit``)
            complete = after >= top or (bool(entries) and entries[0][0] == after + 1
                                        and entries[-1][0] - entries[0][0] == len(entries) - 1)
            return HistoryRange(epoch.decode(), top, entries, complete)
        return await self._queue(self._evalsha("history", (meta, stream), (after, limit, self.meta_ttl_ms)), parse)

    # -- presence ------------------------------------------------------------------------------

    def presence_add(self, room: str, connection_id: str, info: Optional[dict]) -> None:
        self.presence.setdefault(room, {})[connection_id] = info
        _, _, _, zset, hashkey = self._keys(room)
        try:
            self._queue(self._evalsha("presence_add", (zset, hashkey),
                                      (connection_id, orjson.dumps(info), self.presence_ttl_ms)), outcome=False)
        except BrokerOverloaded:
            pass  # listed by the next refresh (every presence_ttl / 3)

    def presence_remove(self, room: str, connection_id: str) -> None:
        members = self.presence.get(room)
        if members is not None:
            members.pop(connection_id, None)
            if not members:
                del self.presence[room]
        _, _, _, zset, hashkey = self._keys(room)
        try:
            self._queue(self._evalsha("presence_remove", (zset, hashkey), (connection_id,)), outcome=False)
        except BrokerError:
            pass  # it expires within presence_ttl, since nobody refreshes it

    async def members(self, room: str) -> dict:
        _, _, _, zset, hashkey = self._keys(room)

        def parse(reply: Any) -> dict:
            return {reply[i].decode(): orjson.loads(reply[i + 1]) for i in range(0, len(reply), 2)}
        return await self._queue(self._evalsha("presence_get", (zset, hashkey), ("all",)), parse)

    async def count(self, room: str) -> int:
        _, _, _, zset, hashkey = self._keys(room)
        return await self._queue(self._evalsha("presence_get", (zset, hashkey), ("count",)), int)

    async def _refresh_presence(self) -> None:
        interval = max(self.settings.broker_presence_ttl / 3.0, 0.05)
        while True:
            await asyncio.sleep(interval)
            for room, members in list(self.presence.items()):
                _, _, _, zset, hashkey = self._keys(room)
                items = list(members.items())
                for i in range(0, len(items), 200):
                    args: list = []
                    for cid, info in items[i:i + 200]:
                        args += [cid, orjson.dumps(info)]
                    try:
                        self._queue(self._evalsha("presence_add", (zset, hashkey), (*args, self.presence_ttl_ms)),
                                    outcome=False)
                    except BrokerOverloaded:
                        break  # the next round tries again

    # -- the subscriber connection -------------------------------------------------------------

    def _want(self, name: bytes, future: bool) -> Any:
        channel = self.channels.get(name)
        if channel is None:
            channel = self.channels[name] = _Channel(name)
        if channel.wanted:
            for op, waiter in reversed(channel.pending):
                if op == "s":
                    return waiter
            return None  # confirmed already
        channel.wanted = True
        waiter = asyncio.get_running_loop().create_future() if future else None
        channel.pending.append(("s", waiter))
        self._sub_op(b"SUBSCRIBE", name)
        self.status.rooms = sum(1 for c in self.channels.values() if c.wanted)
        return waiter

    def _unwant(self, name: bytes) -> None:
        channel = self.channels.get(name)
        if channel is None or not channel.wanted:
            return
        channel.wanted = False
        channel.pending.append(("u", None))
        self._sub_op(b"UNSUBSCRIBE", name)

    def _sub_op(self, op: bytes, name: bytes) -> None:
        self.sub_ops.append((op, name))
        wake = self.sub_wake
        if wake is not None and not wake.is_set():
            wake.set()

    async def _sub_writer(self) -> None:
        assert self.sub_wake is not None
        while True:
            if not self.sub_ops:
                self.sub_wake.clear()
                await self.sub_wake.wait()
                continue
            ops, self.sub_ops = self.sub_ops, []
            conn = self.sub_conn
            if conn is None or not conn.is_connected:
                continue  # the reconnect subscribes to everything wanted
            commands: list[list[bytes]] = []
            for op, name in ops:  # consecutive (un)subscriptions make one command
                if commands and commands[-1][0] == op and op != b"PING" and len(commands[-1]) < SUB_CHUNK:
                    commands[-1].append(name)
                else:
                    commands.append([op, name])
            try:
                await conn.send_packed_command(conn.pack_commands(commands), check_health=False)
            except Exception as exc:
                self._failed("subscriber write failed", exc)  # the reader notices and reconnects

    def subscribe(self, room: str) -> Any:
        waiter = self._want(self._keys(room)[0], True)
        return waiter if waiter is not None else _DONE

    def unsubscribe(self, room: str) -> None:
        self._unwant(self._keys(room)[0])

    def subscribe_endpoint(self, endpoint: str) -> None:
        self._want(b"sc:e:" + endpoint.encode(), False)

    def watch(self, connection_id: str) -> None:
        self._want(b"sc:c:" + connection_id.encode(), False)

    def unwatch(self, connection_id: str) -> None:
        self._unwant(b"sc:c:" + connection_id.encode())

    async def _reader(self) -> None:
        backoff = BACKOFF_MIN
        first = True
        loop = asyncio.get_running_loop()
        while True:
            conn = self.sub_conn
            if conn is None or not conn.is_connected:
                try:
                    conn = await self._connect(scripts=False)
                except Exception as exc:
                    self.status.listener = "reconnecting"
                    self._failed(f"listener cannot reconnect (retrying in {backoff:.2f} s)", exc)
                    await asyncio.sleep(backoff)
                    backoff = min(backoff * 2, BACKOFF_MAX)
                    continue
                self.sub_conn = conn
                self.status.reconnects += 1
                logger.info("Redis broker %s: listener back; resubscribing", self.status.url)
            if not first:  # the first connection's subscriptions are queued already
                self._resubscribe(conn)
            first = False
            keepalive = loop.create_task(self._keepalive(conn))
            try:
                self.status.listener = "running"
                self.last_read = loop.time()
                read = conn.read_response
                dispatch = self._dispatch
                while True:
                    message = await read()
                    backoff = BACKOFF_MIN  # a message arrived: the connection works
                    self.last_read = loop.time()
                    dispatch(message)
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                self.status.listener = "reconnecting"
                self._failed("listener connection lost", exc)
                try:
                    await conn.disconnect()
                except Exception:
                    pass
                self.sub_conn = None
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, BACKOFF_MAX)
            finally:
                keepalive.cancel()

    def _resubscribe(self, conn: Any) -> None:
        """A new subscriber connection: subscribe to everything wanted (carrying the waiters
        over), and have the rooms read back what they may have missed meanwhile."""
        self.sub_ops = []
        for name, channel in list(self.channels.items()):
            if not channel.wanted:
                for _, waiter in channel.pending:
                    if waiter is not None and not waiter.done():
                        waiter.set_result(None)
                del self.channels[name]
                continue
            waiters = [w for op, w in channel.pending if op == "s" and w is not None and not w.done()]
            waiter = waiters[-1] if waiters else asyncio.get_running_loop().create_future()
            for other in waiters[:-1]:
                waiter.add_done_callback(_also(other))
            channel.pending = deque([("s", waiter)])
            channel.confirmed = False
            self.sub_ops.append((b"SUBSCRIBE", name))
        if self.sink is not None:
            self.sink.resync()
        if self.sub_wake is not None:
            self.sub_wake.set()

    async def _keepalive(self, conn: Any) -> None:
        loop = asyncio.get_running_loop()
        while True:
            await asyncio.sleep(KEEPALIVE)
            if loop.time() - self.last_read > 3 * KEEPALIVE:
                self._failed("listener", TimeoutError(f"no answer for {3 * KEEPALIVE:.0f} s"))
                await conn.disconnect()
                return
            if loop.time() - self.last_read > KEEPALIVE:
                self._sub_op(b"PING", b"")

    def _dispatch(self, message: Any) -> None:
        kind = message[0]
        if kind == b"message":
            channel = message[1]
            data = message[2]
            self.status.received += 1
            sink = self.sink
            if sink is None:
                return
            try:
                prefix = channel[:5]
                if prefix == b"sc:r:":
                    i = data.index(b":")
                    j = data.index(b":", i + 1)
                    raw_epoch = data[i + 1:j]
                    epoch = self.epochs.get(raw_epoch)
                    if epoch is None:
                        if len(self.epochs) > 10000:
                            self.epochs.clear()
                        epoch = self.epochs[raw_epoch] = raw_epoch.decode()
                    body = data[j + 1:]
                    sink.room_message(channel[5:].decode(), body[1:].decode() if body[:1] == b"t" else body[1:],
                                      Position(epoch, int(data[:i])))
                elif prefix == b"sc:e:":
                    origin, _, body = data.partition(b"\x00")
                    if origin != self.node_bytes:  # our own was delivered here when sent
                        sink.endpoint_message(channel[5:].decode(), _payload(body))
                elif prefix == b"sc:c:":
                    sink.direct_message(channel[5:].decode(), _payload(data))
            except Exception:
                logger.exception("Redis broker: a message on %r could not be delivered", channel)
            return
        if kind == b"subscribe" or kind == b"unsubscribe":
            channel = self.channels.get(message[1])
            if channel is None or not channel.pending:
                return
            op, waiter = channel.pending.popleft()
            if op == "s":
                channel.confirmed = True
                if waiter is not None and not waiter.done():
                    waiter.set_result(None)
            else:
                channel.confirmed = False
                if not channel.wanted and not channel.pending:
                    del self.channels[channel.name]
                    self.status.rooms = sum(1 for c in self.channels.values() if c.wanted)


def _also(other: asyncio.Future) -> Callable[[asyncio.Future], None]:
    """A done-callback that resolves ``other`` too (waiters carried over a reconnect)."""
    def resolve(_: asyncio.Future) -> None:
        if not other.done():
            other.set_result(None)
    return resolve


class _Done:
    __slots__ = ()

    def __await__(self) -> Any:
        return None
        yield  # pragma: no cover


_DONE = _Done()


class Publisher:
    """Publish to a stonechat app's rooms, endpoints and clients from a process with no server
    (a job queue, a cron job): ``pub = Publisher("redis://...")``, then ``await pub.send(room,
    msg)``; ``await pub.close()`` (or ``async with Publisher(url) as pub``). The app must use
    the same Redis (``broker=``); history and presence settings are read like the app's."""

    def __init__(self, broker_url: str, **settings: Any) -> None:
        self.settings = BrokerSettings.from_sources({**settings, "broker": broker_url})
        if not self.settings.broker:
            raise ValueError("Publisher needs a Redis URL (redis://host:port/db): with no broker, "
                             "only the app's own process can reach its clients")
        self.broker = RedisBroker(self.settings, listen=False)
        self.started = False

    async def _ready(self) -> RedisBroker:
        if not self.started:
            await self.broker.start(None)
            self.started = True
        return self.broker

    async def send(self, room: str, message: Any) -> Position:
        """To every member of ``room``; returns the message's position."""
        broker = await self._ready()
        return await broker.publish(room, as_payload(message))

    def send_nowait(self, room: str, message: Any) -> None:
        """Queue a room message without waiting for Redis (pipelined with the next ones; after
        ``start()`` / ``async with``). BrokerOverloaded when ``broker_queue_size`` are waiting."""
        self.broker.publish(room, as_payload(message))

    def broadcast_nowait(self, endpoint: str, message: Any) -> None:
        self.broker.publish_endpoint(endpoint, as_payload(message))

    async def start(self) -> "Publisher":
        await self._ready()
        return self

    async def broadcast(self, endpoint: str, message: Any) -> None:
        """To every client of the WebSocket ``endpoint`` (e.g. ``"/chat"``), in every process."""
        broker = await self._ready()
        broker.publish_endpoint(endpoint, as_payload(message))
        await broker._queue(("PING",))  # returns once what came before was sent

    async def send_to(self, connection_id: str, message: Any) -> bool:
        """To one client id; True when some process has it."""
        broker = await self._ready()
        return await broker.send_to(connection_id, as_payload(message))

    async def members(self, room: str) -> dict:
        return await (await self._ready()).members(room)

    async def count(self, room: str) -> int:
        return await (await self._ready()).count(room)

    @property
    def status(self) -> BrokerStatus:
        return self.broker.status

    async def close(self) -> None:
        if self.started:
            await self.broker.close()

    async def __aenter__(self) -> "Publisher":
        await self._ready()
        return self

    async def __aexit__(self, *exc: Any) -> None:
        await self.close()


__all__ = ["Publisher", "RedisBroker", "room_keys"]
