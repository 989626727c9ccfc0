"""Rooms across machines on Redis: each test starts its own ``redis-server`` on a free port and
up to three stonechat servers standing for three machines, with clients spread over them.

Parsers: the tests marked with the ``parser`` fixture run twice, with hiredis and with
redis-py's pure-Python parser (hiredis hidden from the servers by a shadow package on
PYTHONPATH); each run checks which parser the servers really use (``/status``). To run every
test of this module on the pure-Python parser: ``STONECHAT_TEST_REDIS_PARSER=python``.
"""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import threading
import time

import httpx
import pytest

from roomkit import ROOMS_APP, Client, RedisServer, await_until, check_stream, events, free_port


def run(coro, timeout=90):
    return asyncio.run(asyncio.wait_for(coro, timeout))


@pytest.fixture
def redis_server(tmp_path):
    server = RedisServer(tmp_path).start()
    yield server
    server.kill()


def without_hiredis(directory) -> dict:
    shadow = directory / "no-hiredis"
    (shadow / "hiredis").mkdir(parents=True, exist_ok=True)
    (shadow / "hiredis" / "__init__.py").write_text("raise ImportError('hidden by the test')\n")
    return {"PYTHONPATH": str(shadow)}


@pytest.fixture(params=["hiredis", "python"])
def parser(request, tmp_path):
    return request.param, (without_hiredis(tmp_path) if request.param == "python" else {})


def machines(serve, redis_server, n=3, extra=None, parser_env=None):
    if parser_env is None and os.environ.get("STONECHAT_TEST_REDIS_PARSER") == "python":
        parser_env = without_hiredis(redis_server.directory)
    env = {"STONECHAT_BROKER": redis_server.url, "STONECHAT_BROKER_PRESENCE_TTL": "1",
           "STONECHAT_WS_CLOSE_TIMEOUT": "2", **(parser_env or {}), **(extra or {})}
    servers = [serve(ROOMS_APP, env=env) for _ in range(n)]
    for server in servers:  # the port accepts before startup (the broker connection) is done
        server.wait_for_output("serving http://")
    return servers


def status(server):
    return httpx.get(f"{server.url}/status", timeout=10).json()


def members(server, room):
    return httpx.get(f"{server.url}/members/{room}", timeout=10).json()


def test_room_delivery_isolation_and_endpoint_broadcast_across_machines(serve, redis_server, parser):
    name, env = parser
    s = machines(serve, redis_server, parser_env=env)
    assert {status(x)["parser"] for x in s} == {name}

    async def go():
        a = await Client.connect(s[0].ws_url + "/chat")
        b = await Client.connect(s[1].ws_url + "/chat")
        c = await Client.connect(s[2].ws_url + "/cb?room=news")  # callbacks style, joined before the upgrade
        d = await Client.connect(s[2].ws_url + "/chat")
        assert await a.ask("join news") == "joined news True"
        assert await b.ask("join news") == "joined news True"
        assert await d.ask("join sport") == "joined sport True"
        await await_until(lambda: members(s[0], "news")["count"] == 3, what="c's join")
        await a.ws.send("say news hello")
        for client in (a, b, c):
            assert await client.take(1) == ["hello"]
        await c.ws.send("say news from-c")  # sync_broadcast on machine 3
        for client in (a, b, c):
            assert await client.take(1) == ["from-c"]
        await d.ws.send("say sport goal")
        assert await d.take(1) == ["goal"]
        assert await a.silent() and await b.silent() and await c.silent()
        # Everyone on the endpoint, every machine, exactly once (the sender's machine delivers
        # its own at once and skips its copy from Redis).
        await b.ws.send("all everyone")
        for client in (a, b, d):
            assert await client.take(1) == ["everyone"]
        assert await a.silent() and await b.silent() and await d.silent()
        for client in (a, b, c, d):
            await client.close()
    run(go())


def test_send_to_reaches_a_client_on_another_machine(serve, redis_server):
    s = machines(serve, redis_server, n=2)

    async def go():
        a = await Client.connect(s[0].ws_url + "/chat")
        b = await Client.connect(s[1].ws_url + "/chat")
        c = await Client.connect(s[1].ws_url + "/cb")
        b_id = (await b.ask("id")).split()[1]
        a_id = (await a.ask("id")).split()[1]
        assert await a.ask(f"to {b_id} over-there") == "sent True"
        assert await b.take(1) == ["over-there"]
        assert await c.ask(f"to {a_id} back") == "sent True"  # sync form: handed to the broker
        assert await a.take(1) == ["back"]
        assert await a.ask("to 00000000-gone nothing") == "sent False"
        await b.close()
        for _ in range(100):  # once b's machine unsubscribed its channel, nobody takes it
            if await a.ask(f"to {b_id} late") == "sent False":
                break
            await asyncio.sleep(0.05)
        else:
            raise AssertionError("send_to a closed client kept answering True")
        for client in (a, c):
            await client.close()
    run(go())


def test_per_room_order_under_bursts(serve, redis_server, parser):
    name, env = parser
    s = machines(serve, redis_server, parser_env=env)

    async def go():
        watchers = [await Client.connect(x.ws_url + "/rec?room=burst") for x in s]
        for w in watchers:
            assert events(await w.take(1))[0]["type"] == "joined"
        p1 = await Client.connect(s[0].ws_url + "/chat")
        p2 = await Client.connect(s[1].ws_url + "/chat")
        await asyncio.gather(p1.ws.send("burst burst 500 x"), p2.ws.send("burst burst 500 y"))
        assert await p1.answer(30) == "burst done 0"
        assert await p2.answer(30) == "burst done 0"
        streams = [events(await w.take(1000, 30)) for w in watchers]
        orders = [check_stream(stream) for stream in streams]  # contiguous offsets, no jump
        assert orders[0] == orders[1] == orders[2]  # one order for the room, on every machine
        assert [m for m in orders[0] if m.startswith("x")] == [f"x{i}" for i in range(500)]
        assert [m for m in orders[0] if m.startswith("y")] == [f"y{i}" for i in range(500)]
        assert all(st["gaps"] == 0 for st in map(status, s))
        for client in watchers + [p1, p2]:
            await client.close()
    run(go())


def test_a_thousand_rooms(serve, redis_server):
    s = machines(serve, redis_server, n=2)

    async def go():
        even = await Client.connect(s[0].ws_url + "/chat")
        odd = await Client.connect(s[1].ws_url + "/chat")
        assert await even.ask("joinmany room 0:1000:2", 30) == "joined 500"
        assert await odd.ask("joinmany room 1:1000:2", 30) == "joined 500"
        assert status(s[0])["rooms"] >= 500 and status(s[1])["rooms"] >= 500
        code = ("import asyncio, stonechat\n"
                "async def main():\n"
                f"    async with stonechat.Publisher({redis_server.url!r}) as pub:\n"
                "        for i in range(1000):\n"
                "            await pub.send(f'room{i}', f'to room{i}')\n"
                "asyncio.run(main())\n")
        done = await asyncio.create_subprocess_exec(sys.executable, "-c", code)  # no server in it
        assert await done.wait() == 0
        got_even = await even.take(500, 30)
        got_odd = await odd.take(500, 30)
        assert got_even == [f"to room{i}" for i in range(0, 1000, 2)]
        assert got_odd == [f"to room{i}" for i in range(1, 1000, 2)]
        assert await even.silent() and await odd.silent()
        await even.close()
        await odd.close()
    run(go())


def test_presence_after_join_leave_abort_and_kill_9(serve, redis_server):
    s = machines(serve, redis_server)

    async def go():
        a = await Client.connect(s[0].ws_url + "/chat")
        b = await Client.connect(s[1].ws_url + "/chat")
        c = await Client.connect(s[2].ws_url + "/chat")
        ids = [(await x.ask("id")).split()[1] for x in (a, b, c)]
        for i, client in enumerate((a, b, c)):
            assert await client.ask(f'join lobby {{"machine": {i}}}') == "joined lobby True"
        for server in s:  # every machine sees all three, with their info
            assert members(server, "lobby")["members"] == {ids[i]: {"machine": i} for i in range(3)}
        assert await a.ask("leave lobby") == "left lobby True"
        await await_until(lambda: members(s[2], "lobby")["count"] == 2, what="leave")
        b.abort()
        await await_until(lambda: set(members(s[2], "lobby")["members"]) == {ids[2]}, what="abort")
        d = await Client.connect(s[0].ws_url + "/chat")
        assert await d.ask("join lobby") == "joined lobby True"
        # A machine dies without a word: its members vanish within the presence TTL (1 s here).
        killed_at = time.monotonic()
        s[2].kill()
        d_id = (await d.ask("id")).split()[1]
        await await_until(lambda: set(members(s[0], "lobby")["members"]) == {d_id}, timeout=10,
                          what="the killed machine's member to expire")
        assert time.monotonic() - killed_at < 1.0 + 2.0  # the TTL, plus one refresh period of slack
        assert ids[2] not in members(s[0], "lobby")["members"]
        await a.close()
        await d.close()
    run(go())


def test_recovery_after_a_client_reconnects_elsewhere(serve, redis_server, parser):
    name, env = parser
    s = machines(serve, redis_server, n=2, extra={"STONECHAT_BROKER_HISTORY_SIZE": "50"}, parser_env=env)

    async def go():
        r = await Client.connect(s[0].ws_url + "/rec?room=rr")
        joined = events(await r.take(1))[0]
        assert joined["type"] == "joined" and joined["epoch"] and joined["offset"] == 0
        pub = await Client.connect(s[1].ws_url + "/chat")
        for i in range(3):
            await pub.ws.send(f"say rr m{i}")
        got = events(await r.take(3))
        assert check_stream([joined] + got) == ["m0", "m1", "m2"]
        last = got[-1]
        await r.close()
        for i in range(3, 8):
            await pub.ws.send(f"say rr m{i}")
        assert await pub.ask("echo sync") == "echo sync"
        back = await Client.connect(s[1].ws_url + f"/rec?room=rr&since={last['epoch']}:{last['offset']}")
        replay = events(await back.take(6))
        assert [m["data"] for m in replay[:5]] == [f"m{i}" for i in range(3, 8)]
        assert replay[5] == {"type": "joined", "room": "rr", "epoch": last["epoch"], "offset": 8,
                             "recovered": True, "missed": 5}
        await pub.ws.send("say rr live")
        assert check_stream(replay + events(await back.take(1))) == [f"m{i}" for i in range(3, 8)] + ["live"]
        # More missed than the 50 kept (the stream is trimmed to about 50): "not recovered",
        # nothing replayed; 40 missed: replayed.
        for i in range(300):
            await pub.ws.send(f"say rr n{i}")
        got = events(await back.take(300, 30))
        old = await Client.connect(s[0].ws_url + f"/rec?room=rr&since={last['epoch']}:{last['offset']}")
        answer = events(await old.take(1))[0]
        assert answer["type"] == "joined" and answer["recovered"] is False and answer["offset"] == 309
        assert answer["reason"] in ("history trimmed", "too many missed") and answer["missed"] == 0
        recent = got[-41]
        near = await Client.connect(s[0].ws_url + f"/rec?room=rr&since={recent['epoch']}:{recent['offset']}")
        replay = events(await near.take(41))
        assert [m["data"] for m in replay[:40]] == [f"n{i}" for i in range(260, 300)]
        assert replay[40]["recovered"] is True and replay[40]["missed"] == 40
        await near.close()
        wrong = await Client.connect(s[0].ws_url + "/rec?room=rr&since=1234:5")
        answer = events(await wrong.take(1))[0]
        assert answer["recovered"] is False and answer["reason"] == "unknown epoch"
        for client in (back, old, wrong, pub):
            await client.close()
    run(go())


def test_redis_killed_and_restarted_mid_burst(serve, redis_server):
    s = machines(serve, redis_server, n=2)

    async def go():
        watcher = await Client.connect(s[1].ws_url + "/rec?room=storm")
        plain = await Client.connect(s[1].ws_url + "/chat")
        assert await plain.ask("join storm") == "joined storm True"
        first = events(await watcher.take(1))
        pub = await Client.connect(s[0].ws_url + "/chat")
        await pub.ws.send("burst storm 300 a")
        first += events(await watcher.take(50, 30))  # mid-burst
        redis_server.kill()
        assert await pub.answer(30) == "burst done 0"  # publishes queue while Redis is gone
        redis_server.start()
        await await_until(lambda: all(status(x)["healthy"] for x in s), timeout=20, what="reconnect")
        await pub.ws.send("burst storm 20 b")
        assert await pub.answer(30) == "burst done 0"
        stream = first + events(await watcher.take_until(
            lambda m: json.loads(m).get("data") == "b19", timeout=30))
        data = check_stream(stream)  # every jump is announced
        kinds = [m["type"] for m in stream]
        assert "lost" in kinds, "the restart lost messages and nobody was told"
        lost = next(m for m in stream if m["type"] == "lost")
        assert lost["reason"] == "stream restarted"
        assert data[-20:] == [f"b{i}" for i in range(20)]
        a_seen = [int(x[1:]) for x in data if x.startswith("a")]
        assert a_seen == sorted(a_seen)  # the publisher's order held
        plain_got = await plain.take_until(lambda m: m == "b19", timeout=30)
        plain_a = [int(x[1:]) for x in plain_got if x.startswith("a")]
        assert plain_a == sorted(plain_a)
        assert status(s[1])["not_recovered"] >= 1 and status(s[1])["reconnects"] >= 1
        # A client that was away across the restart comes back: its epoch is gone.
        back = await Client.connect(s[0].ws_url + f"/rec?room=storm&since={first[0]['epoch']}:10")
        answer = events(await back.take(1))[0]
        assert answer["recovered"] is False and answer["reason"] == "unknown epoch"
        for client in (watcher, plain, pub, back):
            await client.close()
    run(go(), timeout=120)


def test_client_kill_type_pubsub_is_survived_without_loss(serve, redis_server):
    # The history holds the whole burst, so what the gap missed can always be read back.
    s = machines(serve, redis_server, n=2, extra={"STONECHAT_BROKER_HISTORY_SIZE": "5000"})

    async def go():
        watcher = await Client.connect(s[1].ws_url + "/rec?room=k")
        await watcher.take(1)
        pub = await Client.connect(s[0].ws_url + "/chat")
        await pub.ws.send("burst k 2000 m")
        await watcher.take_until(lambda m: json.loads(m).get("data") == "m100", timeout=30)
        killed = redis_server.client().client_kill_filter(_type="pubsub")
        assert killed >= 2
        assert await pub.answer(60) == "burst done 0"
        rest = events(await watcher.take_until(lambda m: json.loads(m).get("data") == "m1999", timeout=60))
        data = check_stream(rest)
        assert [m for m in rest if m["type"] == "lost"] == []  # read back from the stream: nothing lost
        assert data[-1] == "m1999" and data == [f"m{i}" for i in range(101, 2000)]
        st = status(s[1])
        assert st["reconnects"] >= 1 and st["listener"] == "running"
        await await_until(lambda: redis_server.subscriber_count() >= 2, what="resubscribed")
        for client in (watcher, pub):
            await client.close()
    run(go(), timeout=120)


def test_tiny_pubsub_output_buffer_drops_only_the_slow_machine_which_catches_up(serve, redis_server, tmp_path):
    """python-socketio#1581: Redis drops a subscriber over ``client-output-buffer-limit
    pubsub``. Here the stuck machine reconnects and reads what it missed back from the stream;
    the others never wait for it, and are never dropped: the limit (4 MB) is far above what a
    machine that reads falls behind by, and far below the burst's 30 MB that the stuck one
    leaves unread. (A limit under two messages, 32 KB, also dropped the machine that reads,
    several times a burst, making the test depend on how fast its repairs ran.)"""
    s = machines(serve, redis_server, extra={"STONECHAT_BROKER_HISTORY_SIZE": "5000",
                                             "STONECHAT_WS_MAX_WRITE_BUFFER": str(256 << 20)})
    redis_server.client().config_set("client-output-buffer-limit", "pubsub 4mb 2mb 1")
    release = tmp_path / "release"

    async def go():
        slow = await Client.connect(s[1].ws_url + "/rec?room=big")
        fast = await Client.connect(s[2].ws_url + "/rec?room=big")
        await slow.take(1)
        await fast.take(1)
        pub = await Client.connect(s[0].ws_url + "/chat")
        blocker = await Client.connect(s[1].ws_url + "/chat")
        await blocker.ws.send(f"hold {release}")  # machine 2's loop stops reading Redis until released
        assert await pub.ask("echo go") == "echo go"
        # 30 MB: more than the kernel's socket buffers take while nobody reads
        await pub.ws.send("burst big 1500 " + "x" * 20000)
        got_fast = events(await fast.take(1500, 60))  # while machine 2 is still stuck
        assert [m for m in got_fast if m["type"] != "message"] == []
        assert len(check_stream(got_fast)) == 1500
        release.write_text("go")
        assert await blocker.answer(30) == "released"
        got_slow = events(await slow.take_until(
            lambda m: json.loads(m).get("offset") == 1500 and json.loads(m)["type"] == "message", timeout=60))
        assert len(check_stream(got_slow)) == 1500  # read back after Redis dropped it: nothing lost
        st = status(s[1])
        assert st["reconnects"] >= 1 and st["repaired"] >= 1 and st["healthy"]
        fast_st = status(s[2])  # the machine that kept reading was never dropped
        assert fast_st["reconnects"] == 0 and fast_st["repaired"] == 0 and fast_st["healthy"], fast_st
        for client in (slow, fast, pub, blocker):
            await client.close()
    run(go(), timeout=120)


def test_debug_sleep_stalls_no_local_client_and_memory_stays_bounded(serve, redis_server):
    s = machines(serve, redis_server, n=2, extra={"STONECHAT_BROKER_QUEUE_SIZE": "200"})

    async def go():
        a = await Client.connect(s[0].ws_url + "/chat")
        b = await Client.connect(s[0].ws_url + "/chat")
        m = await Client.connect(s[1].ws_url + "/rec?room=slow")
        await m.take(1)
        slept = []

        def sleep_redis():
            began = time.monotonic()
            assert redis_server.client().execute_command("DEBUG", "SLEEP", "4") in (b"OK", "OK", True)
            slept.append(time.monotonic() - began)
        sleeper = threading.Thread(target=sleep_redis)
        sleeper.start()
        await await_until(lambda: redis_server.ping_blocked(), what="DEBUG SLEEP to begin")
        assert await a.ask("echo alive", 3) == "echo alive"  # the loop serves
        await a.ws.send("all local-broadcast")  # endpoint broadcast: this machine's clients at once
        assert await b.take(1, 3) == ["local-broadcast"]
        assert (await asyncio.to_thread(httpx.get, f"{s[0].url}/status", timeout=3)).status_code == 200
        answer = await a.ask("burst slow 500 q", 3)
        assert sleeper.is_alive()  # all of it happened while Redis slept
        rejected = int(answer.split()[-1])
        assert 250 <= rejected <= 300  # queue bounded at 200 (+ what was already sent)
        sleeper.join()
        assert slept and slept[0] >= 3.9
        got = check_stream(events(await m.take(500 - rejected, 30)))
        assert got == sorted(got, key=lambda x: int(x[1:])) and len(got) == 500 - rejected
        assert status(s[0])["rejected"] >= rejected
        for client in (a, b, m):
            await client.close()
    run(go())


def test_redis_unreachable_at_startup(serve, tmp_path):
    url = f"redis://127.0.0.1:{free_port()}/0"
    failed = serve(ROOMS_APP, env={"STONECHAT_BROKER": url}, wait=False)
    assert failed.wait(30) == 3
    assert f"broker {url} is not reachable" in failed.output()
    local = serve(ROOMS_APP, env={"STONECHAT_BROKER": url, "STONECHAT_BROKER_LOCAL_FALLBACK": "1"})
    assert "serving local-only" in local.wait_for_output("serving http://")
    st = status(local)
    assert st["engine"] == "local" and url in st["last_error"]

    async def go():
        a = await Client.connect(local.ws_url + "/chat")
        assert await a.ask("join x") == "joined x True"
        await a.ws.send("say x still-works")
        assert await a.take(1) == ["still-works"]
        await a.close()
    run(go())


def test_missing_redis_package_names_the_extra(serve, tmp_path, redis_server):
    shadow = tmp_path / "no-redis"
    (shadow / "redis").mkdir(parents=True)
    (shadow / "redis" / "__init__.py").write_text("raise ImportError('hidden by the test')\n")
    failed = serve(ROOMS_APP, env={"STONECHAT_BROKER": redis_server.url, "PYTHONPATH": str(shadow)}, wait=False)
    assert failed.wait(30) != 0
    assert "pip install 'stonechat[redis]'" in failed.output()


def test_publisher_in_a_separate_process_and_presence_from_it(serve, redis_server):
    s = machines(serve, redis_server, n=1)

    async def go():
        a = await Client.connect(s[0].ws_url + "/chat")
        a_id = (await a.ask("id")).split()[1]
        assert await a.ask('join jobs {"who": "a"}') == "joined jobs True"
        code = ("import asyncio, json, stonechat\n"
                "async def main():\n"
                f"    pub = stonechat.Publisher({redis_server.url!r})\n"
                "    position = await pub.send('jobs', {'done': 1})\n"
                f"    sent = await pub.send_to({a_id!r}, 'just you')\n"
                "    await pub.broadcast('/chat', 'everyone on /chat')\n"
                "    print(json.dumps([str(position), sent, await pub.members('jobs'), await pub.count('jobs')]))\n"
                "    await pub.close()\n"
                "asyncio.run(main())\n")
        out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=30)
        assert out.returncode == 0, out.stderr
        position, sent, found, count = json.loads(out.stdout)
        assert position.endswith(":1") and sent is True and count == 1 and found == {a_id: {"who": "a"}}
        assert await a.take(3) == ['{"done":1}', "just you", "everyone on /chat"]
        await a.close()
    run(go())


def test_the_broker_flag_wins(serve, redis_server):
    server = serve(ROOMS_APP, args=["--broker", redis_server.url], env={"STONECHAT_BROKER": "local"})
    server.wait_for_output("serving http://")
    st = status(server)
    assert st["engine"] == "redis" and st["url"] == redis_server.url and st["healthy"]
