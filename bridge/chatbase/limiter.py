"""Client-side pacing of Chatbase requests so the bridge stays under the API rate limit."""

from __future__ import annotations

import asyncio
from collections import deque
from typing import Protocol

from bridge.core.clock import SystemClock
from bridge.core.ports import Clock


class RequestLimiter(Protocol):
    """Admits one Chatbase request; waits while the window is full."""

    async def acquire(self) -> None: ...


class LocalLimiter:
    """In-process sliding window: at most ``limit`` requests in any ``window`` seconds.

    Chatbase documents "100 requests per 10-second sliding window" per key and IP (older
    docs; newer ones say 1,000 per key), hence the defaults. Waiters are admitted in
    arrival order.
    """

    def __init__(self, *, limit: int = 100, window: float = 10.0, clock: Clock | None = None):
        if limit < 1:
            raise ValueError("limit must be at least 1")
        if window <= 0:
            raise ValueError("window must be positive")
        self._limit = limit
        self._window = window
        self._clock: Clock = clock if clock is not None else SystemClock()
        self._stamps: deque[float] = deque()
        self._lock = asyncio.Lock()

    async def acquire(self) -> None:
        async with self._lock:
            while True:
                now = self._clock.now()
                horizon = now - self._window
                stamps = self._stamps
                while stamps and stamps[0] <= horizon:
                    stamps.popleft()
                if len(stamps) < self._limit:
                    stamps.append(now)
                    return
                await self._clock.sleep(stamps[0] - horizon)
