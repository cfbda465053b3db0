"""The rate limiter (this process's :class:`SlidingWindowLimiter`), and the limits shared by every replica
through Redis: the per-client rate limit and the queue depth (:class:`SharedLimits`).

A client is an API key when ``API_KEYS`` is set, else an address (the rate-limit guard decides which).

With ``REDIS_URL`` set, each check is one Lua script run atomically in Redis, with Redis's own clock:

- rate limit: a sorted set of hit times per client; exactly ``RATE_LIMIT_PER_HOUR`` hits per rolling hour
  are admitted across all replicas.
- queue depth: each process keeps its in-flight count in a key of its own that expires ``TTL_S`` after its
  last refresh (a heartbeat refreshes it while requests run), so the counts of a replica that died
  (SIGKILL) leave the total by themselves; admission sums the live keys and compares with
  ``MAX_QUEUE_DEPTH``, which is then the limit for the whole deployment.

If Redis cannot be reached, every replica falls back to its own in-process limits (the ones used without
``REDIS_URL``): one warning in the log, ``hndsr_shared_limits_degraded`` = 1 and
``hndsr_redis_errors_total`` counting, never a 500. Redis is tried again every ``RETRY_S``.
"""

from __future__ import annotations

import asyncio
import logging
import os
import socket
import time
import uuid
from array import array
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol

from . import metrics

logger = logging.getLogger("bentoml.hndsr")

WINDOW_S = 3600
TTL_S = 15.0
RETRY_S = 5.0
TIMEOUT_S = 2.0  # generous: a busy host delays the event loop, and a false "Redis is away" costs exactness

RATE_SCRIPT = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
local window = tonumber(ARGV[2]) * 1000000
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now - window)
if redis.call('ZCARD', KEYS[1]) >= tonumber(ARGV[1]) then
  local oldest = redis.call('ZRANGE', KEYS[1], 0, 0, 'WITHSCORES')
  return math.max(1, math.ceil((tonumber(oldest[2]) + window - now) / 1000000))
end
redis.call('ZADD', KEYS[1], now, ARGV[3])
redis.call('PEXPIRE', KEYS[1], math.ceil(window / 1000))
return -1
"""

ACQUIRE_SCRIPT = """
local total = 0
for _, key in ipairs(redis.call('SMEMBERS', KEYS[1])) do
  local value = redis.call('GET', key)
  if value then total = total + tonumber(value) else redis.call('SREM', KEYS[1], key) end
end
if total >= tonumber(ARGV[1]) then return total end
redis.call('SADD', KEYS[1], KEYS[2])
redis.call('INCR', KEYS[2])
redis.call('PEXPIRE', KEYS[2], ARGV[2])
return -1
"""

RELEASE_SCRIPT = """
if redis.call('DECR', KEYS[2]) < 0 then redis.call('SET', KEYS[2], 0) end
redis.call('PEXPIRE', KEYS[2], ARGV[1])
redis.call('SADD', KEYS[1], KEYS[2])
return 0
"""


class LocalLimiter(Protocol):
    limit: int

    def hit(self, key: str, limit: int | None = None) -> int | None: ...


class SlidingWindowLimiter:
    """Exact rolling-window limit per key with bounded memory.

    Each key keeps at most its limit of timestamps as whole seconds in a compact ``array`` (about 70 bytes
    for a key with one hit); keys idle for a whole window are purged, and beyond ``max_keys`` the least
    recently seen key is evicted.
    """

    def __init__(self, limit: int, window_s: int = WINDOW_S, max_keys: int = 10_000,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.limit = limit
        self.window_s = window_s
        self.max_keys = max_keys
        self.clock = clock
        self.epoch = clock()
        self.hits: OrderedDict[str, array] = OrderedDict()

    def _now(self) -> int:
        return int(self.clock() - self.epoch)

    def hit(self, key: str, limit: int | None = None) -> int | None:
        """Record a hit (``limit`` per window, default ``self.limit``); returns None if allowed, else seconds
        until the oldest hit leaves the window."""
        limit = limit or self.limit
        now = self._now()
        self._purge(now)
        stamps = self.hits.pop(key, None) or array("I")
        cutoff = now - self.window_s
        drop = next((i for i, t in enumerate(stamps) if t > cutoff), len(stamps))
        del stamps[:drop]
        self.hits[key] = stamps
        if len(stamps) >= limit:
            return max(1, stamps[0] + self.window_s - now)
        stamps.append(now)
        while len(self.hits) > self.max_keys:
            self.hits.popitem(last=False)
        return None

    def _purge(self, now: int) -> None:
        """Drop keys whose newest hit left the window; the dict is ordered by last use."""
        cutoff = now - self.window_s
        while self.hits:
            key, stamps = next(iter(self.hits.items()))
            if stamps and stamps[-1] > cutoff:
                break
            del self.hits[key]


@dataclass
class Admission:
    """Whether a request may enter, the depth seen, and whether Redis counted it (so must release it)."""

    admitted: bool
    depth: int
    shared: bool


class SharedLimits:
    """Redis-backed rate limit and queue depth with a per-replica fallback; one instance per process."""

    def __init__(self, url: str, prefix: str = "hndsr", client: Any = None,
                 clock: Callable[[], float] = time.monotonic) -> None:
        if client is None:
            import redis.asyncio

            client = redis.asyncio.Redis.from_url(url, socket_timeout=TIMEOUT_S, socket_connect_timeout=TIMEOUT_S)
        self.client = client
        self.prefix = prefix
        self.replicas_key = f"{prefix}:replicas"
        self.inflight_key = f"{prefix}:inflight:{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"
        self.clock = clock
        self.degraded = False
        self.retry_at = 0.0
        self.counted = 0  # requests this process has counted in Redis and not yet released
        self._heartbeat: asyncio.Task | None = None
        self._scripts = {name: client.register_script(body) for name, body in
                         (("rate", RATE_SCRIPT), ("acquire", ACQUIRE_SCRIPT), ("release", RELEASE_SCRIPT))}

    async def _call(self, name: str, keys: list[str], args: list[Any]) -> int | None:
        """Run a script; None when Redis is unavailable (the caller then uses its local limit)."""
        if self.degraded and self.clock() < self.retry_at:
            return None
        try:
            result = int(await self._scripts[name](keys=keys, args=args))
        except Exception as exc:  # redis.RedisError, OSError, timeouts: all mean "not shared right now"
            metrics.REDIS_ERRORS.inc()
            self.retry_at = self.clock() + RETRY_S
            if not self.degraded:
                self.degraded = True
                metrics.SHARED_LIMITS_DEGRADED.set(1)
                logger.warning("Redis unavailable (%s: %s): rate limit and queue depth are per replica until it "
                               "returns", type(exc).__name__, exc)
            return None
        if self.degraded:
            self.degraded = False
            metrics.SHARED_LIMITS_DEGRADED.set(0)
            logger.info("Redis reachable again: rate limit and queue depth are shared")
        return result

    async def hit(self, client_key: str, local: LocalLimiter, window_s: int, limit: int | None = None
                  ) -> int | None:
        """Record a hit for ``client_key`` (``limit`` per window, default ``local.limit``); None if allowed, else
        seconds until one leaves the window."""
        limit = limit or local.limit
        result = await self._call("rate", [f"{self.prefix}:rate:{client_key}"], [limit, window_s, uuid.uuid4().hex])
        if result is None:
            return local.hit(client_key, limit)
        return None if result < 0 else result

    async def acquire(self, limit: int, local_count: int) -> Admission:
        """Admit one inference if the deployment-wide in-flight count is below ``limit``."""
        result = await self._call("acquire", [self.replicas_key, self.inflight_key], [limit, int(TTL_S * 1000)])
        if result is None:
            return Admission(local_count < limit, local_count, shared=False)
        if result >= 0:
            return Admission(False, result, shared=True)
        self.counted += 1
        self._start_heartbeat()
        return Admission(True, 0, shared=True)

    async def release(self, admission: Admission) -> None:
        if admission.admitted and admission.shared:
            self.counted -= 1
            await self._call("release", [self.replicas_key, self.inflight_key], [int(TTL_S * 1000)])

    def _start_heartbeat(self) -> None:
        if self._heartbeat is None or self._heartbeat.done():
            self._heartbeat = asyncio.get_running_loop().create_task(self._beat())

    async def _beat(self) -> None:
        """Keep this process's count alive while it has requests in flight (else it expires)."""
        while self.counted > 0:
            await asyncio.sleep(TTL_S / 3)
            try:
                await self.client.pexpire(self.inflight_key, int(TTL_S * 1000))
            except Exception:  # the next admission notices and reports Redis being away
                pass


def connect(url: str | None) -> SharedLimits | None:
    """The shared limits for ``REDIS_URL``, or None (in-process limits) when it is not set."""
    return SharedLimits(url) if url else None

