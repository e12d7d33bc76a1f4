"""Pacing slots shared by every replica: the next free time of each platform rate-limit bucket."""

from __future__ import annotations

from bridge.core.keys import Keys
from bridge.core.ports import Clock
from bridge.store.connection import Link, fmt, text

__all__ = ["Slots"]

# Numbers cross the Lua boundary as strings formatted with %.17g: a Lua number returned as
# such is truncated to an integer reply, and shorter formats lose the sub-millisecond part
# of a wall-clock time.

_RESERVE = """
local now, interval = tonumber(ARGV[1]), tonumber(ARGV[2])
local nxt = tonumber(redis.call('GET', KEYS[1]) or '0') or 0
local slot = math.max(now, nxt)
local free = slot + interval
local ttl = math.ceil((free - now + interval) * 1000) + 1000
redis.call('SET', KEYS[1], string.format('%.17g', free), 'PX', ttl)
return string.format('%.17g', slot)
"""

_PUSH_BACK = """
local untl, now = tonumber(ARGV[1]), tonumber(ARGV[2])
local nxt = tonumber(redis.call('GET', KEYS[1]) or '0') or 0
if untl <= nxt then return 0 end
local ttl = math.ceil(math.max(untl - now, 0) * 1000) + 1000
local current = redis.call('PTTL', KEYS[1])
if current > ttl then ttl = current end
redis.call('SET', KEYS[1], string.format('%.17g', untl), 'PX', ttl)
return 1
"""


class Slots:
    """One Lua call per reservation, so replicas sharing a bucket never collide."""

    def __init__(self, *, link: Link, keys: Keys, clock: Clock) -> None:
        self._link = link
        self._keys = keys
        self._clock = clock
        self._reserve = link.script(_RESERVE)
        self._push_back = link.script(_PUSH_BACK)

    async def reserve(self, key: str, interval: float, now: float) -> float:
        """The time (in the caller's clock) at which this call may go out on bucket ``key``;
        the bucket's next free time moves ``interval`` past it."""
        slot = await self._link.run(
            self._reserve, [self._keys.pace(key)], [fmt(now), fmt(interval)]
        )
        return float(text(slot))

    async def push_back(self, key: str, until: float, *, now: float | None = None) -> None:
        """Move bucket ``key``'s next free time to at least ``until`` (after a 429)."""
        current = self._clock.now() if now is None else now
        await self._link.run(
            self._push_back, [self._keys.pace(key)], [fmt(until), fmt(current)]
        )
