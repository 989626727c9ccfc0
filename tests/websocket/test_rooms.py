"""Rooms in one process (the in-process engine): both WebSocket styles, membership, leaving on
every kind of disconnect, send-to-id across endpoints, presence, announcements, publishing
from HTTP handlers and from a task started at startup, and recovery from the local history."""

from __future__ import annotations

import asyncio
import signal

import httpx
import pytest

from roomkit import ROOMS_APP, Client, await_until, check_stream, events

def run(coro):
    return asyncio.run(asyncio.wait_for(coro, 60))


@pytest.fixture(scope="module")
def server(serve_module):
    return serve_module(ROOMS_APP, env={"TICKER": "1", "STONECHAT_BROKER_HISTORY_SIZE": "20"})


def members(server, room):
    return httpx.get(f"{server.url}/members/{room}", timeout=10).json()


def test_room_delivery_isolation_and_both_styles(server):
    async def go():
        a = await Client.connect(server.ws_url + "/chat")
        b = await Client.connect(server.ws_url + "/chat")
        c = await Client.connect(server.ws_url + "/cb?room=news")  # joined in its connect handler
        assert await a.ask("join news") == "joined news True"
        assert await b.ask("join sport") == "joined sport True"
        assert await c.ask("rooms") == 'rooms ["news"]'
        assert await a.ask("rooms") == 'rooms ["news"]'
        await a.ws.send("say news hello")
        assert await a.take(1) == ["hello"]
        assert await c.take(1) == ["hello"]
        await c.ws.send("say news from-callbacks")  # sync_broadcast(room=)
        assert await a.take(1) == ["from-callbacks"]
        assert await c.take(1) == ["from-callbacks"]
        await b.ws.send("say sport goal")
        assert await b.take(1) == ["goal"]
        assert await a.silent() and await c.silent()  # isolation: news members heard no sport
        # Both: a joins sport too; leave works and says whether it was a member.
        assert await a.ask("join sport") == "joined sport True"
        await b.ws.send("say sport two")
        assert await a.take(1) == ["two"] and await b.take(1) == ["two"]
        assert await a.ask("leave sport") == "left sport True"
        assert await a.ask("leave sport") == "left sport False"
        assert await c.ask("leave news") == "left news True"
        await b.ws.send("say sport three")
        assert await b.take(1) == ["three"]
        assert await a.silent()
        for client in (a, b, c):
            await client.close()
    run(go())


def test_send_to_any_endpoint_and_sync_form(server):
    async def go():
        a = await Client.connect(server.ws_url + "/chat")
        c = await Client.connect(server.ws_url + "/cb")
        c_id = (await c.ask("id")).split()[1]
        a_id = (await a.ask("id")).split()[1]
        assert await a.ask(f"to {c_id} hi-c") == "sent True"  # another endpoint, same process
        assert await c.take(1) == ["hi-c"]
        assert await c.ask(f"to {a_id} hi-a") == "sent True"  # sync_send_to
        assert await a.take(1) == ["hi-a"]
        assert await a.ask("to 00000000-no-such-id x") == "sent False"
        await a.close()
        await c.close()
    run(go())


def test_leaving_is_automatic_on_close_abort_and_crash(server):
    async def go():
        clients = [await Client.connect(server.ws_url + "/chat") for _ in range(3)]
        ids = []
        for i, client in enumerate(clients):
            ids.append((await client.ask("id")).split()[1])
            assert await client.ask(f'join lobby {{"n": {i}}}') == "joined lobby True"
        found = members(server, "lobby")
        assert found["count"] == 3
        assert found["members"] == {ids[0]: {"n": 0}, ids[1]: {"n": 1}, ids[2]: {"n": 2}}
        await clients[0].close()
        await await_until(lambda: members(server, "lobby")["count"] == 2, what="leave on close")
        clients[1].abort()
        await await_until(lambda: members(server, "lobby")["count"] == 1, what="leave on abort")
        await clients[2].ws.send("crash")
        await await_until(lambda: members(server, "lobby")["count"] == 0, what="leave on handler crash")
        await asyncio.wait_for(clients[2].ws.wait_closed(), 10)
        assert clients[2].ws.close_code == 1011
        assert members(server, "lobby") == {"members": {}, "count": 0}
    run(go())


def test_announcements_and_publishing_from_http_and_a_startup_task(server):
    async def go():
        a = await Client.connect(server.ws_url + "/chat")
        b = await Client.connect(server.ws_url + "/chat")
        b_id = (await b.ask("id")).split()[1]
        assert await a.ask("joina hall") == "joined hall"
        assert events(await a.take(1))[0]["type"] == "join"
        assert await b.ask('joina hall {"nick": "bee"}') == "joined hall"
        assert events(await a.take(1)) == [{"type": "join", "room": "hall", "id": b_id, "info": {"nick": "bee"}}]
        await b.close()
        assert events(await a.take(1)) == [{"type": "leave", "room": "hall", "id": b_id, "info": None}]
        answer = httpx.post(f"{server.url}/send/hall", content="from http", timeout=10).json()
        assert answer["position"]
        assert await a.take(1) == ["from http"]
        answer = httpx.post(f"{server.url}/threaded/hall", content="from a thread", timeout=10).json()
        assert answer["position"]  # handed to the loop, its position came back
        assert await a.take(1) == ["from a thread"]
        assert await a.ask("join ticks") == "joined ticks True"
        ticks = await a.take(3)
        numbers = [int(t.split()[1]) for t in ticks]
        assert numbers == list(range(numbers[0], numbers[0] + 3))
        assert await a.ask("since") == ("error join('x', since=...): recovery is not enabled on /chat "
                                        "(@app.websocket(..., recovery=True))")
        await a.close()
    run(go())


def test_recovery_from_the_local_history(server):
    async def go():
        r = await Client.connect(server.ws_url + "/rec?room=rr")
        joined = events(await r.take(1))[0]
        assert joined["type"] == "joined" and joined["offset"] == 0 and "recovered" not in joined
        other = await Client.connect(server.ws_url + "/rec?room=rr")
        await other.take(1)
        for i in range(3):
            await other.ws.send(f"say rr m{i}")
        got = events(await r.take(3))
        assert check_stream([joined] + got) == ["m0", "m1", "m2"]
        last = got[-1]
        await r.close()
        for i in range(3, 6):
            await other.ws.send(f"say rr m{i}")
        await other.take(6)
        back = await Client.connect(server.ws_url + f"/rec?room=rr&since={last['epoch']}:{last['offset']}")
        replay = events(await back.take(4))
        assert [m.get("data") for m in replay[:3]] == ["m3", "m4", "m5"]
        assert replay[3] == {"type": "joined", "room": "rr", "epoch": last["epoch"], "offset": 6,
                             "recovered": True, "missed": 3}
        await other.ws.send("say rr live")
        assert check_stream(replay + events(await back.take(1))) == ["m3", "m4", "m5", "live"]
        # Another epoch, and a position older than the history (20 messages): never a partial replay.
        wrong = await Client.connect(server.ws_url + "/rec?room=rr&since=nosuchepoch:2")
        answer = events(await wrong.take(1))[0]
        assert answer["recovered"] is False and answer["reason"] == "unknown epoch" and answer["missed"] == 0
        for i in range(25):
            await other.ws.send(f"say rr n{i}")
        await other.take(26)
        old = await Client.connect(server.ws_url + f"/rec?room=rr&since={last['epoch']}:{last['offset']}")
        answer = events(await old.take(1))[0]
        assert answer["type"] == "joined" and answer["recovered"] is False
        assert answer["reason"] == "history trimmed" and answer["offset"] == 32
        for client in (back, wrong, old, other):
            await client.close()
    run(go())


def test_shutdown_leaves_every_room(serve):
    server = serve(ROOMS_APP)

    async def go():
        a = await Client.connect(server.ws_url + "/chat")
        assert await a.ask("join lobby") == "joined lobby True"
        assert members(server, "lobby")["count"] == 1
        server.signal(signal.SIGTERM)
        await asyncio.wait_for(a.ws.wait_closed(), 15)
        assert a.ws.close_code == 1001
    run(go())
    assert server.wait(15) == 0
    assert "at shutdown: lobby count=0" in server.output()
