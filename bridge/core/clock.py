"""The real clock behind the ``Clock`` port."""

from __future__ import annotations

import asyncio
import time


class SystemClock:
    """Wall-clock time and real sleeps.

    Wall time, not monotonic: pacing slots are shared through Redis by every replica, and
    monotonic clocks of different processes share no origin."""

    def now(self) -> float:
        return time.time()

    async def sleep(self, seconds: float) -> None:
        await asyncio.sleep(max(0.0, seconds))
