"""The Redis engine on its own (no server), against a private ``redis-server``: publishes keep
their order through the pipelined connection, subscriptions are confirmed in the order asked
(subscribe / unsubscribe / subscribe in a row), history answers say when they are whole,
flushed scripts are loaded again, the queue is bounded, and a killed subscriber connection is
reported and comes back. Plus the settings, named when wrong."""

from __future__ import annotations

import asyncio

import pytest

from roomkit import RedisServer
from stonechat import Robyn
from stonechat.pubsub.broker import BrokerOverloaded, BrokerSettings, BrokerSettingsError, Position, safe_url
from stonechat.pubsub.redis import RedisBroker


@pytest.fixture
def redis_server(tmp_path):
    server = RedisServer(tmp_path).start()
    yield server
    server.kill()


class Sink:
    def __init__(self) -> None:
        self.rooms: list = []
        self.resyncs = 0
        self.arrived = asyncio.Event()

    def room_message(self, room, payload, position):
        self.rooms.append((room, payload, position))
        self.arrived.set()

    def endpoint_message(self, endpoint, payload):
        pass

    def direct_message(self, connection_id, payload):
        return False

    def resync(self):
        self.resyncs += 1


async def until(predicate, timeout=10.0):
    deadline = asyncio.get_running_loop().time() + timeout
    while not predicate():
        assert asyncio.get_running_loop().time() < deadline, "timed out"
        await asyncio.sleep(0.01)


def run(coro):
    return asyncio.run(asyncio.wait_for(coro, 60))


def broker(url, **settings):
    return RedisBroker(BrokerSettings.from_sources({"broker": url, **settings}, environ={}))


def test_order_subscriptions_history_and_scripts(redis_server):
    async def go():
        sink = Sink()
        b = broker(redis_server.url, broker_history_size=100)
        await b.start(sink)
        await b.subscribe("a")
        outcomes = [b.publish("a", f"m{i}") for i in range(300)]  # not awaited: pipelined
        positions = [await o for o in outcomes]
        assert [p.offset for p in positions] == list(range(1, 301))
        assert len({p.epoch for p in positions}) == 1
        await until(lambda: len(sink.rooms) == 300)
        assert [m[1] for m in sink.rooms] == [f"m{i}" for i in range(300)]
        assert [m[2] for m in sink.rooms] == positions
        # bytes stay bytes
        await b.publish("a", b"\x00\xff")
        await until(lambda: len(sink.rooms) == 301)
        assert sink.rooms[-1][1] == b"\x00\xff"
        # subscribe / unsubscribe / subscribe in a row: still subscribed at the end
        b.unsubscribe("a")
        await b.subscribe("a")
        await b.publish("a", "after")
        await until(lambda: sink.rooms[-1][1] == "after")
        # history: whole after 290, trimmed (about 100 kept) after 10
        recent = await b.history("a", 290, 100)
        assert recent.complete and [e[0] for e in recent.entries] == list(range(291, 303))
        old = await b.history("a", 10, 100)
        assert not old.complete and old.top == 302
        # the scripts flushed under us: loaded again, nothing lost
        redis_server.client().script_flush()
        again = await b.publish("a", "after flush")
        assert again.offset == 303
        assert b.status.healthy and b.status.parser in ("hiredis", "python")
        await b.close()
        assert b.status.listener == "stopped"
    run(go())


def test_bounded_queue_and_listener_comes_back(redis_server):
    async def go():
        sink = Sink()
        b = broker(redis_server.url, broker_queue_size=50)
        await b.start(sink)
        await b.subscribe("q")
        with pytest.raises(BrokerOverloaded, match="broker_queue_size"):
            for i in range(60):  # nothing yields to the writer meanwhile: the 51st is refused
                b.publish("q", str(i))
        assert b.status.rejected == 1
        await until(lambda: len(sink.rooms) == 50)
        assert redis_server.client().client_kill_filter(_type="pubsub") == 1
        await until(lambda: b.status.reconnects >= 1 and b.status.listener == "running" and sink.resyncs == 1)
        assert "listener connection lost" in b.status.last_error
        await b.subscribe("q")
        await b.publish("q", "back")
        await until(lambda: sink.rooms[-1][1] == "back")
        await b.close()
    run(go())


def test_settings_are_checked_by_name():
    with pytest.raises(BrokerSettingsError, match="broker_history_size: must not be negative"):
        Robyn(__file__, broker_history_size=-1)
    with pytest.raises(BrokerSettingsError, match="not a broker URL"):
        Robyn(__file__, broker="http://127.0.0.1:6379")
    with pytest.raises(BrokerSettingsError, match="STONECHAT_BROKER_PRESENCE_TTL: expected float"):
        BrokerSettings.from_sources({}, environ={"STONECHAT_BROKER_PRESENCE_TTL": "soon"})
    settings = BrokerSettings.from_sources({}, environ={"STONECHAT_BROKER": "local", "STONECHAT_BROKER_LOCAL_FALLBACK": "yes"})
    assert settings.broker == "" and settings.broker_local_fallback is True
    assert Position.parse("abc:12") == Position("abc", 12) == Position.parse({"epoch": "abc", "offset": "12"})
    with pytest.raises(ValueError, match="not a room position"):
        Position.parse("12")
    assert safe_url("redis://user:secret@host:6379/0") == "redis://user:***@host:6379/0"
