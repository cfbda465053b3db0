"""The rate limiter of one process, and the Redis-shared limits: exact counts across 'replicas' (several
SharedLimits on one real redis-server), per-client limits, the expiry of a dead replica's in-flight count, and
the per-replica fallback when Redis is away."""

from __future__ import annotations

import asyncio
import logging
import tracemalloc

import pytest

from hndsr_service import metrics, ratelimit
from hndsr_service.ratelimit import SharedLimits, SlidingWindowLimiter
from hndsr_service.settings import SettingsError, load_settings


def replicas(url: str, n: int) -> list[SharedLimits]:
    return [SharedLimits(url, prefix=f"test{id(url)}") for _ in range(n)]


def test_rate_limit_is_exact_across_replicas(redis_url: str) -> None:
    async def scenario() -> list[int | None]:
        shared = replicas(redis_url, 3)
        local = SlidingWindowLimiter(7)
        hits = [shared[i % 3].hit("10.0.0.1", local, 3600) for i in range(20)]
        results = await asyncio.gather(*hits)
        assert await shared[0].hit("10.0.0.2", local, 3600) is None  # another client has its own budget
        return results

    results = asyncio.run(scenario())
    assert results.count(None) == 7
    assert all(1 <= r <= 3600 for r in results if r is not None)


def test_each_client_has_its_own_limit_across_replicas(redis_url: str) -> None:
    async def scenario() -> tuple[list[int | None], list[int | None]]:
        shared = replicas(redis_url, 2)
        local = SlidingWindowLimiter(3)
        default = [await shared[i % 2].hit("key:aaaa", local, 3600) for i in range(5)]
        own = [await shared[i % 2].hit("key:bbbb", local, 3600, limit=4) for i in range(6)]
        return default, own

    default, own = asyncio.run(scenario())
    assert default.count(None) == 3 and own.count(None) == 4


def test_queue_depth_is_shared_and_released(redis_url: str) -> None:
    async def scenario() -> None:
        a, b = replicas(redis_url, 2)
        first, second = await a.acquire(2, 0), await b.acquire(2, 0)
        assert first.admitted and second.admitted
        third = await a.acquire(2, 1)
        assert not third.admitted and third.depth == 2 and third.shared
        await b.release(second)
        assert (await a.acquire(2, 1)).admitted

    asyncio.run(scenario())


def test_dead_replica_counts_expire(redis_url: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(ratelimit, "TTL_S", 0.3)

    async def scenario() -> None:
        dead, alive = replicas(redis_url, 2)
        assert (await dead.acquire(1, 0)).admitted  # never released: its process was SIGKILLed
        dead._heartbeat.cancel()
        assert not (await alive.acquire(1, 0)).admitted
        await asyncio.sleep(0.5)
        assert (await alive.acquire(1, 0)).admitted

    asyncio.run(scenario())


def test_rolling_window_frees_oldest_hit() -> None:
    now = [0.0]
    limiter = SlidingWindowLimiter(2, window_s=100, clock=lambda: now[0])
    assert limiter.hit("a") is None
    now[0] = 40
    assert limiter.hit("a") is None
    assert limiter.hit("a") == 60
    now[0] = 101
    assert limiter.hit("a") is None  # the hit at t=0 left the window
    assert limiter.hit("b") is None  # keys are independent


def test_a_client_limit_other_than_the_default() -> None:
    limiter = SlidingWindowLimiter(2)
    assert [limiter.hit("big", limit=4) for _ in range(5)].count(None) == 4
    assert [limiter.hit("small") for _ in range(3)].count(None) == 2


def test_limiter_memory_is_bounded_and_stale_keys_purged() -> None:
    now = [0.0]
    limiter = SlidingWindowLimiter(100, window_s=3600, max_keys=10_000, clock=lambda: now[0])
    tracemalloc.start()
    for i in range(20_000):
        limiter.hit(f"10.{i // 65536}.{i // 256 % 256}.{i % 256}")
    current, _peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    assert len(limiter.hits) == 10_000
    assert current < 4 * 2**20, f"{current / 2**20:.1f} MiB for 10,000 clients"
    now[0] = 4000
    limiter.hit("new")
    assert list(limiter.hits) == ["new"]


class GoneRedis:
    """A client whose every script call fails as when the Redis server has gone away."""

    def register_script(self, body: str):
        async def call(keys, args):
            raise ConnectionError("Connection refused")

        return call


def test_without_redis_each_replica_falls_back_to_its_own_limits(caplog: pytest.LogCaptureFixture) -> None:
    clock = [0.0]
    shared = SharedLimits("redis://unused", client=GoneRedis(), clock=lambda: clock[0])
    local = SlidingWindowLimiter(2)
    errors_before = metrics.REDIS_ERRORS._value.get()

    async def scenario() -> None:
        with caplog.at_level(logging.WARNING, logger="bentoml.hndsr"):
            assert await shared.hit("c", local, 3600) is None
            assert await shared.hit("c", local, 3600) is None
            assert await shared.hit("c", local, 3600) is not None  # the local limit of 2
            admission = await shared.acquire(3, 2)
            assert admission.admitted and not admission.shared
            assert not (await shared.acquire(3, 3)).admitted
            await shared.release(admission)  # nothing to release in Redis
        clock[0] += ratelimit.RETRY_S + 1
        await shared.hit("d", local, 3600)  # tries Redis again after RETRY_S

    asyncio.run(scenario())
    warnings = [r for r in caplog.records if "Redis unavailable" in r.getMessage()]
    assert len(warnings) == 1  # one line, not one per request
    assert metrics.SHARED_LIMITS_DEGRADED._value.get() == 1
    assert metrics.REDIS_ERRORS._value.get() - errors_before == 2  # the first failure and the retry


def test_redis_url_setting() -> None:
    assert load_settings({}).redis_url is None
    assert load_settings({"REDIS_URL": "redis://cache:6379/0"}).redis_url == "redis://cache:6379/0"
    with pytest.raises(SettingsError, match="REDIS_URL"):
        load_settings({"REDIS_URL": "cache:6379"})
