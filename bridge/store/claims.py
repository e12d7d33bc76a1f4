"""Exactly-once claims of platform events, and the per-user message quota counted with them."""

from __future__ import annotations

from bridge.core.keys import Keys
from bridge.core.models import Claim
from bridge.store.connection import Link

__all__ = ["Claim", "Claims"]

_CLAIM = """
if not redis.call('SET', KEYS[1], '1', 'NX', 'EX', ARGV[1]) then return {0, 0, 0} end
if #KEYS < 2 then return {1, 0, 0} end
local n = redis.call('INCR', KEYS[2])
local ttl = redis.call('PTTL', KEYS[2])
if ttl < 0 then
  redis.call('PEXPIRE', KEYS[2], ARGV[2])
  ttl = tonumber(ARGV[2])
end
return {1, n, ttl}
"""


class Claims:
    """``SET NX EX`` on event ids, shared by every replica; one round trip per claim."""

    def __init__(self, *, link: Link, keys: Keys, dedup_ttl: int) -> None:
        self._link = link
        self._keys = keys
        self._dedup_ttl = dedup_ttl
        self._script = link.script(_CLAIM)

    async def claim(
        self, event_id: str, *, quota_subject: str | None = None, quota_window: int = 3600
    ) -> Claim:
        """Claim a platform event once across replicas and redeliveries; when it is new and
        ``quota_subject`` is given, count it against that subject's window."""
        keys = [self._keys.event(event_id)]
        if quota_subject is not None:
            keys.append(self._keys.quota(quota_subject))
        first, count, ttl_ms = await self._link.run(
            self._script, keys, [self._dedup_ttl, max(1, quota_window) * 1000]
        )
        return Claim(bool(int(first)), int(count), int(ttl_ms) / 1000)
