"""A real async resource across the lifecycle: an asyncpg pool to the local PostgreSQL.

The startup handler opens the pool, a route uses it, the shutdown handler closes it. The
connections are found in ``pg_stat_activity`` by a unique ``application_name``. To prove the
*shutdown handler* closed them (and not just the kernel at process exit), a later shutdown
step keeps the process alive for a moment and the test sees the count reach 0 before exit.

Needs PostgreSQL at 127.0.0.1:5432 (trust auth, database ``test``); fails loudly without it.
"""

from __future__ import annotations

import asyncio
import signal
import time
import uuid

import httpx
import pytest

import asyncpg

DSN = "postgresql://postgres@127.0.0.1:5432/test"
START_HINT = "pg_ctlcluster --skip-systemctl-redirect $(ls /etc/postgresql) main start"

PG_APP = """
import asyncio, os
import asyncpg
from stonechat import Robyn

app = Robyn(__file__)
NAME = os.environ["PG_APP_NAME"]

@app.shutdown_handler
async def linger():
    # registered first, so it runs after close_pool: the process is still alive here
    print("pool closed; lingering", flush=True)
    await asyncio.sleep(1.5)

@app.startup_handler
async def open_pool():
    app.state.pool = await asyncpg.create_pool(
        "postgresql://postgres@127.0.0.1:5432/test", min_size=2, max_size=4,
        server_settings={"application_name": NAME})
    print("pool open", flush=True)

@app.get("/answer")
async def answer():
    async with app.state.pool.acquire() as conn:
        return {"answer": await conn.fetchval("SELECT 41 + 1")}

@app.shutdown_handler
async def close_pool():
    await app.state.pool.close()

app.start(drain_timeout=2, shutdown_handler_timeout=5)
"""


def count_connections(name: str) -> int:
    async def query() -> int:
        conn = await asyncpg.connect(DSN, timeout=5)
        try:
            return await conn.fetchval(
                "SELECT count(*) FROM pg_stat_activity WHERE application_name = $1", name)
        finally:
            await conn.close()
    return asyncio.run(query())


@pytest.fixture
def postgres() -> None:
    try:
        count_connections("stonechat-probe")
    except (OSError, asyncpg.PostgresError, asyncio.TimeoutError) as exc:
        pytest.fail(f"PostgreSQL is required at {DSN} and is not reachable ({exc!r}). "
                    f"Start it with: {START_HINT}", pytrace=False)


@pytest.mark.parametrize("args", [[], ["--processes", "2"]])
def test_asyncpg_pool_opened_at_startup_is_closed_by_shutdown_handler(serve, postgres, args):
    name = f"stonechat-test-{uuid.uuid4().hex[:12]}"
    server = serve(PG_APP, args=args, env={"PG_APP_NAME": name})
    workers = 2 if args else 1
    deadline = time.monotonic() + 10
    while server.output().count("pool open") < workers and time.monotonic() < deadline:
        time.sleep(0.05)
    for _ in range(5):
        assert httpx.get(server.url + "/answer", timeout=10).json() == {"answer": 42}
    assert count_connections(name) >= 2 * workers

    server.signal(signal.SIGTERM)
    deadline = time.monotonic() + 10
    while server.output().count("pool closed; lingering") < workers and time.monotonic() < deadline:
        time.sleep(0.02)
    assert server.output().count("pool closed; lingering") == workers, server.output()
    # the shutdown handler closed them while the process is still alive
    deadline = time.monotonic() + 1.0
    remaining = count_connections(name)
    while remaining and time.monotonic() < deadline:
        time.sleep(0.05)
        remaining = count_connections(name)
    assert remaining == 0
    assert server.proc.poll() is None, "the process exited before the check; the proof is void"
    assert server.wait(10) == 0
    assert count_connections(name) == 0
