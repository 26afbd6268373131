"""Usage counts in Redis: one running total per tenant, metric and month, shared by every process.

The store :mod:`app.tenancy.usage` counts in when ``USAGE_STORAGE_URI`` names a Redis.
No SQL here: :mod:`~app.tenancy.usage` seeds from, and flushes to, PostgreSQL. Keys
(``prefix``: ``USAGE_KEY_PREFIX``):

- ``{prefix}:{YYYY-MM}``, a hash: field ``{tenant_id}:{metric}`` holds the month's running
  total. It expires 40 days after the month ends (long after its last flush).
- ``{prefix}:dirty``, a hash: field ``{YYYY-MM}:{tenant_id}:{metric}`` holds the total at
  the last increment, until a flush wrote it to PostgreSQL and deleted it, only if still
  equal (a count that arrived meanwhile leaves it dirty).

One round trip per count: :data:`_COUNT`, a Lua script (atomic in Redis), refuses at the
limit, or increments the total and marks it dirty. A total Redis does not hold (a new
month, a Redis restarted empty) comes back as :data:`SEED`: the caller reads the stored
value and calls again with it. Both keys hash to different slots: not for Redis Cluster.

Every call returns ``None`` when Redis does not answer (socket timeouts of 0.5 s, one
reconnect): the caller counts in memory. After a failure the request path skips Redis
for 1 s, then 2, 4 ... at most 60 s (:meth:`RedisCounts.usable`); the flusher tries on
each flush anyway (``force``), so an answer ends the outage within a flush interval. One
warning when an outage starts, one when it ends, as for the rate limiter's storage.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from datetime import date, timedelta
from typing import NamedTuple

import redis
from redis.backoff import NoBackoff
from redis.retry import Retry

from ..backoff import Backoff
from .errors import InvalidPeriod
from .periods import format_period, parse_period, period_end

log = logging.getLogger(__name__)

#: (tenant id, metric, period), as in :mod:`app.tenancy.usage`.
Key = tuple[int, str, date]

#: Outcomes of :meth:`RedisCounts.count`.
SEED, COUNTED, REFUSED = 0, 1, 2

#: Days a month's hash outlives the month.
KEEP_DAYS = 40

# KEYS: month hash, dirty hash. ARGV: field, dirty field, amount, limit (-1: none),
# stored value to seed with ('' : none), seconds the month hash lives when seeded.
_COUNT = """
local total = redis.call('HGET', KEYS[1], ARGV[1])
if not total then
  if ARGV[5] == '' then return {0, 0} end
  total = ARGV[5]
  redis.call('HSET', KEYS[1], ARGV[1], total)
  if redis.call('TTL', KEYS[1]) == -1 then redis.call('EXPIRE', KEYS[1], ARGV[6]) end
end
total = tonumber(total)
local limit = tonumber(ARGV[4])
if limit >= 0 and total >= limit then return {2, total} end
total = redis.call('HINCRBY', KEYS[1], ARGV[1], ARGV[3])
redis.call('HSET', KEYS[2], ARGV[2], total)
return {1, total}
"""

# KEYS: dirty hash. ARGV: field, value, field, value ... Deletes a field only if it still holds that value.
_CLEAN = """
local removed = 0
for i = 1, #ARGV, 2 do
  if redis.call('HGET', KEYS[1], ARGV[i]) == ARGV[i + 1] then
    redis.call('HDEL', KEYS[1], ARGV[i])
    removed = removed + 1
  end
end
return removed
"""


class Counted(NamedTuple):
    outcome: int  # SEED, COUNTED or REFUSED
    total: int  # after the count; when refused, the total that refused it

    @property
    def needs_seed(self) -> bool:
        return self.outcome == SEED

    @property
    def refused(self) -> bool:
        return self.outcome == REFUSED


class Dirty(NamedTuple):
    """A total not yet written to PostgreSQL, as read from the dirty hash."""

    key: Key
    value: int
    field: bytes
    raw: bytes  # the value as stored: what the compare-and-delete compares


def _parse(field: bytes) -> Key | None:
    try:
        period, tenant_id, metric = field.decode().split(":", 2)
        return int(tenant_id), metric, parse_period(period)
    except (ValueError, InvalidPeriod):  # not ours: left alone
        return None


def _lifetime(period: date) -> int:
    """Seconds from now until :data:`KEEP_DAYS` after ``period`` ends (at least a day)."""
    return max(86_400, int((period_end(period) + timedelta(days=KEEP_DAYS)).timestamp() - time.time()))


class RedisCounts:
    """The running totals in one Redis under one prefix, and whether that Redis answers."""

    #: Dirty fields per HSCAN step and per compare-and-delete.
    BATCH = 500

    def __init__(self, url: str, prefix: str, timeout: float = 0.5) -> None:
        self.url, self.prefix, self.timeout = url, prefix, timeout
        self.scheme = url.partition(":")[0]
        self.dirty_key = f"{prefix}:dirty"
        self._connect()

    def _connect(self) -> None:
        """A client, its pool and its scripts of this process (nothing connects until the first call)."""
        self._client = redis.Redis.from_url(
            self.url, socket_timeout=self.timeout, socket_connect_timeout=self.timeout,
            retry=Retry(NoBackoff(), 1),  # one reconnect: a pooled connection Redis closed is no outage
        )
        self._count = self._client.register_script(_COUNT)
        self._clean = self._client.register_script(_CLEAN)
        self._backoff = Backoff()  # when the request path tries Redis again after a failure

    def forget_in_child(self) -> None:
        """After a fork: a pool and a backoff of the child's own (never the parent's sockets or lock)."""
        self._connect()

    def close(self) -> None:
        self._client.close()

    @property
    def down(self) -> bool:
        """Whether the last call failed (an outage: counted in memory until a call succeeds)."""
        return self._backoff.failing

    def usable(self) -> bool:
        """Whether the request path should try Redis now (not within an outage's backoff)."""
        return self._backoff.due()

    def count(self, key: Key, amount: int, limit: int | None, seed: int | None = None,
              force: bool = False) -> Counted | None:
        """Add ``amount`` to the key's total unless it reached ``limit``; ``None`` when Redis is away.

        ``seed``: the stored value, to start a total Redis does not hold (else :data:`SEED`
        comes back). ``force``: try even within an outage's backoff (the flusher).
        """
        if not force and not self.usable():
            return None
        tenant_id, metric, period = key
        name = format_period(period)
        try:
            outcome, total = self._count(
                keys=[f"{self.prefix}:{name}", self.dirty_key],
                args=[f"{tenant_id}:{metric}", f"{name}:{tenant_id}:{metric}", amount,
                      -1 if limit is None else limit, "" if seed is None else seed, _lifetime(period)],
            )
        except redis.RedisError as exc:
            self._failed(exc)
            return None
        self._answered()
        return Counted(int(outcome), int(total))

    def dirty(self) -> list[Dirty] | None:
        """Every total not yet written to PostgreSQL, in key order; ``None`` when Redis is away."""
        found: list[Dirty] = []
        try:
            for field, raw in self._client.hscan_iter(self.dirty_key, count=self.BATCH):
                key = _parse(field)
                if key is not None:
                    found.append(Dirty(key, int(raw), field, raw))
        except redis.RedisError as exc:
            self._failed(exc)
            return None
        self._answered()
        return sorted(found)

    def clean(self, written: Sequence[Dirty]) -> bool:
        """Delete the dirty fields still holding what was written; False when Redis is away (they stay)."""
        try:
            for start in range(0, len(written), self.BATCH):
                pairs = [part for entry in written[start:start + self.BATCH] for part in (entry.field, entry.raw)]
                self._clean(keys=[self.dirty_key], args=pairs)
        except redis.RedisError as exc:
            self._failed(exc)
            return False
        return True

    def _answered(self) -> None:
        if self._backoff.answered():  # once, however many threads saw it answer
            log.warning("usage storage answers again: counting there", extra={"event": "usage.storage_up"})

    def _failed(self, exc: BaseException) -> None:
        started, _ = self._backoff.failed()
        if started:  # one warning an outage, not one a request
            log.warning("usage storage failed (%s): counting in each process's memory until it answers again",
                        type(exc).__name__, extra={"event": "usage.storage_down"})
