"""The real clock behind the ``Clock`` port."""

from __future__ import annotations

import asyncio
import time


class SystemClock:
    """Monotonic time and real sleeps."""

    def now(self) -> float:
        return time.monotonic()

    async def sleep(self, seconds: float) -> None:
        await asyncio.sleep(max(0.0, seconds))
