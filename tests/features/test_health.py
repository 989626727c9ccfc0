"""Liveness and readiness on the real server (docs/production.md): checks against the real
PostgreSQL (127.0.0.1:5432, database ``test``), a failing and a hanging check named in the
body, and /ready flipping to 503 at a real SIGTERM while an in-flight request still completes.
"""

from __future__ import annotations

import asyncio
import json
import signal
import socket
import time
from pathlib import Path

import httpx
import pytest

from stonechat.features.health import Health

APP = """
import asyncio, os, time
from pathlib import Path
import asyncpg
from stonechat import Robyn

app = Robyn(__file__)
RELEASE = Path(os.environ.get("RELEASE", "/nonexistent"))
MODE = os.environ.get("MODE", "ok")

@app.startup_handler
async def open_pool():
    app.state.pool = await asyncpg.create_pool("postgresql://postgres@127.0.0.1:5432/test",
                                               min_size=1, max_size=2, timeout=10)

@app.shutdown_handler
async def close_pool():
    await app.state.pool.close()

async def database():
    async with app.state.pool.acquire() as conn:
        assert await conn.fetchval("SELECT 1") == 1

async def other_database():  # nothing listens on port 1
    conn = await asyncpg.connect("postgresql://postgres@127.0.0.1:1/test", timeout=5)
    await conn.close()

def disk():  # a sync check runs on a thread
    time.sleep(0.05)
    return True

async def hangs():
    await asyncio.sleep(60)

checks = [database, disk]
if MODE == "failing":
    checks += [("replica", other_database), hangs]
app.health(checks=checks, check_timeout=1.0)

@app.get("/slow")
async def slow():
    print("slow began", flush=True)
    deadline = time.monotonic() + 30
    while not RELEASE.exists() and time.monotonic() < deadline:
        await asyncio.sleep(0.02)
    return "slow done"

app.start()
"""


@pytest.fixture(scope="module")
def postgres() -> None:
    import asyncpg

    async def ping() -> None:
        conn = await asyncpg.connect("postgresql://postgres@127.0.0.1:5432/test", timeout=5)
        await conn.close()
    try:
        asyncio.run(ping())
    except (OSError, asyncpg.PostgresError, asyncio.TimeoutError) as exc:
        pytest.fail(f"PostgreSQL at 127.0.0.1:5432 (database test) is needed: {exc}")


def test_live_and_ready_with_a_real_database(serve, postgres):
    server = serve(APP)
    r = httpx.get(server.url + "/health", timeout=10)
    assert r.status_code == 200 and r.json() == {"status": "ok"}
    r = httpx.get(server.url + "/ready", timeout=10)
    assert r.status_code == 200, r.text
    assert r.json() == {"status": "ready", "checks": {"database": "ok", "disk": "ok"}}
    assert r.headers["content-type"] == "application/json"


def test_a_failing_and_a_hanging_check_are_named(serve, postgres):
    server = serve(APP, env={"MODE": "failing"})
    started = time.monotonic()
    r = httpx.get(server.url + "/ready", timeout=10)
    assert time.monotonic() - started < 8  # the checks run side by side, each bounded
    assert r.status_code == 503
    body = r.json()
    assert body["status"] == "not ready"
    assert body["reason"] == "check failed: replica, hangs"
    assert body["checks"]["database"] == "ok" and body["checks"]["disk"] == "ok"
    assert body["checks"]["replica"].startswith("failed: ") and "Connection" in body["checks"]["replica"]
    assert body["checks"]["hangs"] == "failed: timed out after 1 s"
    assert httpx.get(server.url + "/health", timeout=10).status_code == 200  # alive all the same


def test_ready_is_503_from_sigterm_while_in_flight_requests_complete(serve, postgres, tmp_path: Path):
    release = tmp_path / "release"
    server = serve(APP, env={"RELEASE": str(release)})
    assert httpx.get(server.url + "/ready", timeout=10).status_code == 200
    slow = socket.create_connection(("127.0.0.1", server.port), timeout=30)
    slow.sendall(b"GET /slow HTTP/1.1\r\nHost: x\r\n\r\n")
    server.wait_for_output("slow began")
    # A load balancer's probe on a keep-alive connection it opened before the stop (a new
    # connection would be refused: the listening socket closes at once). Its first answer
    # proves the server reads it; the next head is half sent, so the drain waits for it.
    probe = socket.create_connection(("127.0.0.1", server.port), timeout=30)
    probe.sendall(b"GET /health HTTP/1.1\r\nHost: x\r\n\r\n")
    assert read_response(probe).startswith(b"HTTP/1.1 200 ")
    probe.sendall(b"GET /ready HTTP/1.1\r\nHost: x\r\n")
    server.signal(signal.SIGTERM)
    server.wait_for_output("draining 2 requests")  # the slow one and the probe's
    probe.sendall(b"\r\n")
    answer = read_response(probe)
    assert answer.startswith(b"HTTP/1.1 503 "), answer
    assert json.loads(answer.split(b"\r\n\r\n", 1)[1]) == {"status": "not ready", "reason": "stopping"}
    assert b"connection: close" in answer.lower()
    release.touch()  # only now may the slow request finish: it completes during the drain
    done = read_response(slow)
    assert done.startswith(b"HTTP/1.1 200 ") and done.endswith(b"slow done"), done
    assert server.wait(30) == 0
    assert "running shutdown handler close_pool" in server.output()


def read_response(sock: socket.socket) -> bytes:
    """One response with a Content-Length body."""
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = sock.recv(65536)
        assert chunk, data
        data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    length = int(next(line.split(b":", 1)[1] for line in head.split(b"\r\n")
                      if line.lower().startswith(b"content-length:")))
    while len(body) < length:
        chunk = sock.recv(65536)
        assert chunk, data
        body += chunk
    return head + b"\r\n\r\n" + body


def test_ready_is_503_until_startup_has_run():
    """The native server does not accept before startup ends (connections wait in the
    backlog), so this state is only visible to the Health object itself."""
    health = Health([], 1.0)
    assert asyncio.run(health.ready()).status_code == 503
    health.mark_started()
    assert asyncio.run(health.ready()).status_code == 200
    health.mark_stopping()
    response = asyncio.run(health.ready())
    assert response.status_code == 503 and json.loads(response.description) == {"status": "not ready",
                                                                                 "reason": "stopping"}


def test_bad_checks_fail_at_registration():
    with pytest.raises(TypeError, match="not callable"):
        Health(["nope"], 1.0)  # type: ignore[list-item]
    with pytest.raises(ValueError, match="must be positive"):
        Health([], 0)
