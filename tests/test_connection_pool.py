"""Connection pools: limits, reuse, idle reaping, fairness, cancellation, close."""

from __future__ import annotations

import asyncio
import contextlib
import itertools
from collections.abc import AsyncIterator, Callable

import pytest

from mta.smtp.pool import (
    ConnectionPool,
    PoolClosed,
    PoolSaturated,
    PoolSettings,
    PoolStats,
)
from mta.smtp.session import SmtpTemporaryFailure, SmtpTimeouts
from tests.support.smtp_servers import (
    Script,
    ScriptedSmtpServer,
    SmtpSinkProcess,
    requires_smtp_sink,
)

FAST = SmtpTimeouts(**{name: 2.0 for name in SmtpTimeouts.__dataclass_fields__})
MESSAGE = b"Subject: pooled\r\n\r\nHello.\r\n"


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def settings(**overrides: object) -> PoolSettings:
    values: dict[str, object] = {"ehlo_name": "client.test", "timeouts": FAST, "close_grace": 1.0}
    values.update(overrides)
    return PoolSettings(**values)  # type: ignore[arg-type]


@contextlib.asynccontextmanager
async def pool_to(
    server: ScriptedSmtpServer | SmtpSinkProcess,
    clock: FakeClock | None = None,
    **overrides: object,
) -> AsyncIterator[ConnectionPool]:
    if clock is None:
        pool = ConnectionPool(server.host, server.port, settings(**overrides))
    else:
        pool = ConnectionPool(server.host, server.port, settings(**overrides), clock=clock)
    try:
        yield pool
    finally:
        await pool.close()


def send(pool: ConnectionPool, rcpt: str = "b@rcpt.test") -> asyncio.Task[object]:
    return asyncio.get_running_loop().create_task(pool.send("a@sender.test", [rcpt], MESSAGE))


async def wait_for_stats(
    pool: ConnectionPool, predicate: Callable[[PoolStats], bool], timeout: float = 2.0
) -> None:
    """Yield to the loop until the pool's stats satisfy ``predicate`` (bounded in time)."""
    deadline = asyncio.get_running_loop().time() + timeout
    for _ in itertools.count():
        if predicate(pool.stats()):
            return
        assert asyncio.get_running_loop().time() < deadline, f"stuck at {pool.stats()}"
        await asyncio.sleep(0)  # a yield, not a delay: the pool has no change event to wait on


def waiting(count: int) -> Callable[[PoolStats], bool]:
    return lambda stats: stats.waiting == count


async def test_never_more_than_max_connections_at_the_server() -> None:
    release = asyncio.Event()
    async with ScriptedSmtpServer(Script(holds={".": release})) as server:
        async with pool_to(server, max_connections=3) as pool:
            tasks = [send(pool, f"r{i}@rcpt.test") for i in range(12)]
            await server.record.wait_until(lambda: server.record.commands.count("DATA") == 3)
            await wait_for_stats(pool, lambda s: s.waiting == 9)
            assert server.record.active == 3 and pool.stats().open == 3
            release.set()
            results = await asyncio.gather(*tasks)
    assert len(results) == 12 and len(server.record.messages) == 12
    assert server.record.max_active == 3 and server.record.connections == 3


async def test_connections_carry_at_most_max_messages() -> None:
    async with (
        ScriptedSmtpServer() as server,
        pool_to(server, max_messages_per_connection=3) as pool,
    ):
        for i in range(10):
            await pool.send("a@sender.test", [f"r{i}@rcpt.test"], MESSAGE)
        await server.record.wait_until(lambda: server.record.commands.count("QUIT") == 3)
        stats = pool.stats()
    assert server.record.connections == 4 and server.record.ehlos == 4  # ceil(10 / 3)
    assert stats.connections_opened == 4 and stats.messages_sent == 10
    # RSET between messages on a reused connection, never on a fresh one
    assert server.record.commands.count("RSET") == 10 - 4
    assert server.record.commands.count("QUIT") == 4  # 3 spent + 1 on close


async def test_no_rset_probe_when_disabled_by_idle_threshold() -> None:
    async with ScriptedSmtpServer() as server, pool_to(server, rset_before_reuse=60.0) as pool:
        for _ in range(3):
            await pool.send("a@sender.test", ["b@rcpt.test"], MESSAGE)
    assert "RSET" not in server.record.commands and server.record.connections == 1


async def test_idle_connections_reaped_on_injected_clock() -> None:
    clock = FakeClock()
    async with ScriptedSmtpServer() as server, pool_to(server, clock, idle_timeout=30.0) as pool:
        await pool.send("a@sender.test", ["b@rcpt.test"], MESSAGE)
        clock.now += 29.0
        assert pool.reap_idle() == 0
        clock.now += 1.0
        assert pool.reap_idle() == 1
        await server.record.wait_until(lambda: server.record.active == 0)
        await wait_for_stats(pool, lambda s: s.open == 0)
        assert server.record.commands[-1] == "QUIT"
        await pool.send("a@sender.test", ["b@rcpt.test"], MESSAGE)
    assert server.record.connections == 2


async def test_idle_checked_lazily_on_checkout() -> None:
    clock = FakeClock()
    async with ScriptedSmtpServer() as server, pool_to(server, clock, idle_timeout=30.0) as pool:
        await pool.send("a@sender.test", ["b@rcpt.test"], MESSAGE)
        clock.now += 31.0
        await pool.send("a@sender.test", ["b@rcpt.test"], MESSAGE)
    assert server.record.connections == 2


async def test_reaper_task_closes_idle_connections() -> None:
    async with ScriptedSmtpServer() as server, pool_to(server, idle_timeout=0.05) as pool:
        await asyncio.gather(*(send(pool, f"r{i}@rcpt.test") for i in range(3)))
        await server.record.wait_until(lambda: server.record.active == 0, timeout=2.0)
        await wait_for_stats(pool, lambda s: s.open == 0 and s.idle == 0)
    assert server.record.commands.count("QUIT") == server.record.connections


async def test_waiters_are_served_in_fifo_order() -> None:
    release = asyncio.Event()
    async with ScriptedSmtpServer(Script(holds={".": release})) as server:
        async with pool_to(server, max_connections=1) as pool:
            first = send(pool, "first@rcpt.test")
            await server.record.wait_until(lambda: "DATA" in server.record.commands)
            waiters = []
            for name in ("w1", "w2", "w3"):
                waiters.append(send(pool, f"{name}@rcpt.test"))
                await wait_for_stats(pool, waiting(len(waiters)))
            release.set()
            await asyncio.gather(first, *waiters)
    order = [m.rcpt_tos[0].split("@")[0] for m in server.record.messages]
    assert order == ["first", "w1", "w2", "w3"]


async def test_waiter_queue_is_bounded() -> None:
    release = asyncio.Event()
    async with ScriptedSmtpServer(Script(holds={".": release})) as server:
        async with pool_to(server, max_connections=1, max_waiters=1) as pool:
            first = send(pool)
            await server.record.wait_until(lambda: "DATA" in server.record.commands)
            second = send(pool)
            await wait_for_stats(pool, lambda s: s.waiting == 1)
            with pytest.raises(PoolSaturated):
                await pool.send("a@sender.test", ["c@rcpt.test"], MESSAGE)
            release.set()
            await asyncio.gather(first, second)


async def test_cancelled_waiter_does_not_leak_a_slot() -> None:
    release = asyncio.Event()
    async with ScriptedSmtpServer(Script(holds={".": release})) as server:
        async with pool_to(server, max_connections=1) as pool:
            first = send(pool)
            await server.record.wait_until(lambda: "DATA" in server.record.commands)
            waiter = send(pool)
            await wait_for_stats(pool, lambda s: s.waiting == 1)
            waiter.cancel()
            with pytest.raises(asyncio.CancelledError):
                await waiter
            release.set()
            await first
            await pool.send("a@sender.test", ["c@rcpt.test"], MESSAGE)
            assert pool.stats().waiting == 0 and pool.stats().open == 1
    assert server.record.connections == 1


async def test_cancelled_transaction_discards_the_connection() -> None:
    release = asyncio.Event()
    async with ScriptedSmtpServer(Script(holds={".": release})) as server:
        async with pool_to(server) as pool:
            task = send(pool)
            await server.record.wait_until(lambda: "DATA" in server.record.commands)
            task.cancel()
            with pytest.raises(asyncio.CancelledError):
                await task
            assert pool.stats().open == 0
            release.set()
            await pool.send("a@sender.test", ["c@rcpt.test"], MESSAGE)
    assert server.record.connections == 2


async def test_errored_connection_is_never_reused() -> None:
    script = Script(drop_nth={".": 1})
    async with ScriptedSmtpServer(script) as server, pool_to(server) as pool:
        with pytest.raises(SmtpTemporaryFailure):
            await pool.send("a@sender.test", ["b@rcpt.test"], MESSAGE)
        await pool.send("a@sender.test", ["b@rcpt.test"], MESSAGE)
    assert server.record.connections == 2 and len(server.record.messages) == 1


async def test_dead_reused_connection_replaced_after_rset_probe() -> None:
    async with ScriptedSmtpServer(Script(drop_nth={"RSET": 1})) as server, pool_to(server) as pool:
        await pool.send("a@sender.test", ["b@rcpt.test"], MESSAGE)
        result = await pool.send("a@sender.test", ["b@rcpt.test"], MESSAGE)
    assert result.accepted and server.record.connections == 2


async def test_dead_reused_connection_replaced_at_mail() -> None:
    script = Script(drop_nth={"MAIL": 2})
    async with (
        ScriptedSmtpServer(script) as server,
        pool_to(server, rset_before_reuse=60.0) as pool,
    ):
        await pool.send("a@sender.test", ["b@rcpt.test"], MESSAGE)
        result = await pool.send("a@sender.test", ["b@rcpt.test"], MESSAGE)
    assert result.accepted and server.record.connections == 2
    assert len(server.record.messages) == 2


async def test_close_quits_everything_and_refuses_new_sends() -> None:
    async with ScriptedSmtpServer() as server:
        pool = ConnectionPool(server.host, server.port, settings(max_connections=3))
        await asyncio.gather(*(send(pool, f"r{i}@rcpt.test") for i in range(3)))
        assert pool.stats().idle == 3
        await pool.close()
        assert pool.stats().open == 0
        await server.record.wait_until(lambda: server.record.active == 0)
        assert server.record.commands.count("QUIT") == 3
        with pytest.raises(PoolClosed):
            await pool.send("a@sender.test", ["b@rcpt.test"], MESSAGE)


async def test_close_cuts_in_flight_transactions_after_grace() -> None:
    release = asyncio.Event()
    async with ScriptedSmtpServer(Script(holds={".": release})) as server:
        pool = ConnectionPool(server.host, server.port, settings(close_grace=0.1))
        task = send(pool)
        await server.record.wait_until(lambda: "DATA" in server.record.commands)
        await pool.close()
        with pytest.raises(SmtpTemporaryFailure):
            await task
        assert pool.stats().open == 0
        release.set()


def test_settings_are_validated() -> None:
    from engine.errors import ConfigError

    with pytest.raises(ConfigError, match="max_connections"):
        settings(max_connections=0)
    with pytest.raises(ConfigError, match="ehlo_name"):
        settings(ehlo_name="bad name")
    with pytest.raises(ConfigError, match="tls"):
        settings(tls="sometimes")
    with pytest.raises(ConfigError, match=r"timeouts\.rcpt"):
        SmtpTimeouts(rcpt=0)


@requires_smtp_sink
async def test_pool_against_smtp_sink_under_load() -> None:
    async with SmtpSinkProcess() as sink:
        async with pool_to(sink, max_connections=5, max_messages_per_connection=20) as pool:
            results = await asyncio.gather(*(send(pool, f"r{i}@rcpt.test") for i in range(200)))
            stats = pool.stats()
    assert len(results) == 200 and stats.messages_sent == 200
    assert 10 <= stats.connections_opened <= 14  # 200 / 20, plus partly used ones at the end
