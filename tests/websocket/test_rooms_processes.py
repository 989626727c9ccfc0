"""Rooms between the workers of one ``--processes 2`` server (the worker mesh: no external
service): delivery, send-to-id and presence across workers, a killed worker's members dropped
within the presence TTL, and positions that are per worker (another worker says "not
recovered", never replays the wrong thing).

Clients land on both workers deterministically: a client blocks its worker's loop for a
moment, so the connection opened meanwhile is accepted by the other one.
"""

from __future__ import annotations

import asyncio
import os

import httpx

from roomkit import ROOMS_APP, Client, await_until, events


def run(coro):
    return asyncio.run(asyncio.wait_for(coro, 90))


async def pid_of(client: Client) -> int:
    return int((await client.ask("pid")).split()[1])


async def on_other_worker(url: str, first: Client, first_pid: int) -> Client:
    for _ in range(5):
        await first.ws.send("block 1.0")
        await asyncio.sleep(0.2)  # the block has begun
        client = await Client.connect(url)
        assert await first.answer() == "unblocked"
        if await pid_of(client) != first_pid:
            return client
        await client.close()
    raise AssertionError("could not get a client onto the second worker")


def all_members(server, room: str) -> list:
    """What both workers answer (a few requests land on each)."""
    with httpx.Client(timeout=10) as http:
        return [http.get(f"{server.url}/members/{room}").json()["members"] for _ in range(6)]


def test_rooms_send_to_and_presence_across_workers(serve):
    server = serve(ROOMS_APP, args=["--processes", "2"], env={"STONECHAT_BROKER_PRESENCE_TTL": "1"})
    server.wait_for_output("serving http://127.0.0.1")
    url = server.ws_url + "/chat"

    async def go():
        a = await Client.connect(url)
        pid_a = await pid_of(a)
        b = await on_other_worker(url, a, pid_a)
        pid_b = await pid_of(b)
        a_id = (await a.ask("id")).split()[1]
        b_id = (await b.ask("id")).split()[1]
        assert await a.ask('join m {"w": "a"}') == "joined m True"
        assert await b.ask('join m {"w": "b"}') == "joined m True"
        await a.ws.send("say m from-a")
        assert await a.take(1) == ["from-a"] and await b.take(1) == ["from-a"]
        await b.ws.send("burst m 200 x")
        assert await b.answer() == "burst done 0"
        expected = [f"x{i}" for i in range(200)]
        assert await a.take(200) == expected and await b.take(200) == expected
        assert await a.ask(f"to {b_id} direct") == "sent True"
        assert await b.take(1) == ["direct"]
        both = {a_id: {"w": "a"}, b_id: {"w": "b"}}
        await await_until(lambda: all(m == both for m in all_members(server, "m")), what="presence")
        # b's worker dies: its member is dropped within the TTL by the other worker, and the
        # restarted worker learns the survivors.
        os.kill(pid_b, 9)
        await await_until(lambda: all(m == {a_id: {"w": "a"}} for m in all_members(server, "m")),
                          timeout=15, what="the killed worker's member to expire")
        await a.close()
    run(go())


def test_positions_are_per_worker(serve):
    server = serve(ROOMS_APP, args=["--processes", "2"])
    server.wait_for_output("serving http://127.0.0.1")

    async def go():
        a = await Client.connect(server.ws_url + "/chat")
        pid_a = await pid_of(a)
        r = await Client.connect(server.ws_url + "/rec?room=p")
        joined = events(await r.take(1))[0]
        await r.ws.send("say p one")
        one = events(await r.take(1))[0]
        assert one["type"] == "message" and one["offset"] == joined["offset"] + 1 and one["data"] == "one"
        pid_r = await pid_of(r)
        first, other_pid = (a, pid_a) if pid_a == pid_r else (None, None)
        if first is None:  # make sure we can reach the other worker than r's
            first, other_pid = r, pid_r
        elsewhere = await on_other_worker(server.ws_url + "/chat", first, other_pid)
        await elsewhere.close()
        # A position from r's worker presented to the other worker: told "not recovered".
        for _ in range(20):
            c = await Client.connect(server.ws_url + f"/rec?room=p&since={one['epoch']}:{one['offset']}")
            answer = events(await c.take(1))[0]
            if await pid_of(c) != pid_r:
                assert answer["recovered"] is False and answer["reason"] == "unknown epoch"
                break
            assert answer["recovered"] is True  # the same worker: its history
            await c.close()
        else:
            raise AssertionError("never reached the other worker")
        for client in (a, r, c):
            await client.close()
    run(go())
