"""Paces platform calls so every reply on one rate-limit bucket, on every replica, fits it,
and spaces the progress edits of this process's answers out while many stream at once."""

from __future__ import annotations

import logging

from bridge.core.errors import StoreError
from bridge.core.ports import Budget, Clock, SlotStore

log = logging.getLogger(__name__)

# However many answers stream at once, each still shows progress at least this often (a
# Slack stream must roll over well before Slack ends it, BRIDGE_SLACK_STREAM_ROLLOVER_SECONDS).
MAX_SPACING = 10.0


class LocalSlots:
    """Bucket state for this process only: the fallback while Redis is unreachable."""

    def __init__(self) -> None:
        self._next: dict[str, float] = {}

    async def reserve(self, key: str, interval: float, now: float) -> float:
        slot = max(now, self._next.get(key, 0.0))
        self._next[key] = slot + interval
        if len(self._next) > 10_000:
            # Forget buckets whose next free time has passed: they constrain nothing.
            self._next = {k: v for k, v in self._next.items() if v > now}
        return slot

    async def push_back(self, key: str, until: float) -> None:
        self._next[key] = max(self._next.get(key, 0.0), until)


class Pacer:
    """Waits for a slot in a budget before a platform call; stretches after a 429.

    Also the process's edit budget: at most ``edits_per_second`` progress edits a second
    across the answers showing text (``join``/``leave``). With more answers than that
    streaming, each answer's progress edits are ``spacing()`` seconds apart; first and final
    texts are not spaced."""

    def __init__(self, *, slots: SlotStore, clock: Clock,
                 edits_per_second: float = float("inf")) -> None:
        self._slots = slots
        self._local = LocalSlots()
        self._clock = clock
        self._per_edit = 1.0 / edits_per_second
        self._live = 0

    def join(self) -> None:
        """An answer shows text and will edit it as it streams."""
        self._live += 1

    def leave(self) -> None:
        """That answer's progress edits are over (its final text is next, or it ended)."""
        self._live -= 1

    def spacing(self) -> float:
        """Seconds between two progress edits of one answer that keep this process within
        its edit budget (0 while the answers streaming are fewer than the budget)."""
        return min(self._live * self._per_edit, MAX_SPACING)

    async def wait(self, budget: Budget) -> None:
        await self.until(await self.reserve(budget))

    async def reserve(self, budget: Budget) -> float:
        """Take the next slot in ``budget``; returns when it is (clock time)."""
        now = self._clock.now()
        try:
            return await self._slots.reserve(budget.key, budget.interval, now)
        except StoreError as exc:
            log.warning("pacing falls back to this process only: %s", exc)
            return await self._local.reserve(budget.key, budget.interval, now)

    async def until(self, slot: float) -> None:
        """Sleep until ``slot`` (clock time), if it is still ahead."""
        delay = slot - self._clock.now()
        if delay > 0:
            await self._clock.sleep(delay)

    async def penalise(self, budget: Budget, retry_after: float) -> None:
        until = self._clock.now() + max(retry_after, budget.interval)
        try:
            await self._slots.push_back(budget.key, until)
        except StoreError as exc:
            log.warning("pacing falls back to this process only: %s", exc)
        await self._local.push_back(budget.key, until)
