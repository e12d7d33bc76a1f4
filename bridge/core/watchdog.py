"""The answers in flight as the watchdog sees them: stuck answers made visible (and ended),
and the figures counted per answer instead of per delta (deltas, the bridge's added time)."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Protocol

from bridge.core.models import Platform
from bridge.core.ports import Clock, RelayMetrics
from bridge.core.rendering.renderer import Renderer

log = logging.getLogger(__name__)

# How often the watchdog looks: the resolution of "stuck" and how far behind the deltas
# counter may lag (a scrape every 15-30 s sees each batch once).
CHECK_INTERVAL = 5.0


class Streamed(Protocol):
    """What the answer's stream loop counts: text deltas received, a plain integer (a metric
    call per delta costs about a microsecond, the delta's own handling a few)."""

    deltas: int


@dataclass(eq=False, slots=True)
class Watched:
    """One answer in flight."""

    platform: str
    renderer: Renderer
    streamed: Streamed
    task: asyncio.Task[object] | None
    calls: int  # the renderer's platform calls when progress was last seen
    progress_at: float  # when it was last seen
    counted: int = 0  # deltas already added to the counter
    ended: bool = False


class Watchdog:
    """Counts answers whose last visible progress (a platform call carrying their text, or
    their start) is older than ``stuck_after`` as stuck, and ends those older than
    ``end_after`` (0: never) by cancelling them: the service then marks what was shown as
    cut off, so the reply never stays a bare placeholder and the turn's lock is released.

    ``check`` does one round (``run`` calls it every ``CHECK_INTERVAL`` seconds); on each it
    also adds the deltas each answer received since the last round to the deltas counter,
    and an answer's remaining deltas when it ends."""

    def __init__(
        self, *, clock: Clock, metrics: RelayMetrics, stuck_after: float = 120.0,
        end_after: float = 0.0,
    ) -> None:
        self._clock = clock
        self._metrics = metrics
        self.stuck_after = stuck_after
        self.end_after = end_after
        self._answers: dict[Renderer, Watched] = {}
        self._platforms = {p.value for p in Platform}

    @contextlib.contextmanager
    def watch(self, platform: str, renderer: Renderer, streamed: Streamed) -> Iterator[Watched]:
        """Watch the answer rendered by ``renderer`` (its deltas counted in ``streamed``)
        while the current task renders it."""
        watched = Watched(platform=platform, renderer=renderer, streamed=streamed,
                          task=asyncio.current_task(), calls=renderer.calls,
                          progress_at=self._clock.now())
        self._answers[renderer] = watched
        self._platforms.add(platform)
        try:
            yield watched
        finally:
            del self._answers[renderer]
            self._count_deltas(watched)
            if renderer.first_delta_at is not None and renderer.first_call_at is not None:
                self._metrics.added_first_text_seconds.labels(platform).observe(
                    max(0.0, renderer.first_call_at - renderer.first_delta_at))

    def ended(self, renderer: Renderer) -> bool:
        """Whether the watchdog ended the answer ``renderer`` renders."""
        watched = self._answers.get(renderer)
        return watched is not None and watched.ended

    @property
    def watching(self) -> int:
        return len(self._answers)

    def check(self) -> int:
        """One round; returns how many answers are stuck now."""
        now = self._clock.now()
        stuck = dict.fromkeys(self._platforms, 0)
        for watched in list(self._answers.values()):
            self._count_deltas(watched)
            calls = watched.renderer.calls
            if calls != watched.calls:
                watched.calls, watched.progress_at = calls, now
                continue
            idle = now - watched.progress_at
            if idle < self.stuck_after:
                continue
            stuck[watched.platform] += 1
            if self.end_after and idle >= self.end_after and not watched.ended:
                self._end(watched, idle)
        for platform, count in stuck.items():
            self._metrics.answers_stuck.labels(platform).set(count)
        return sum(stuck.values())

    def _end(self, watched: Watched, idle: float) -> None:
        if watched.task is None or watched.task.done():
            return
        watched.ended = True
        log.warning("ending an answer on %s that showed no progress for %.0fs "
                    "(BRIDGE_STUCK_END_AFTER)", watched.platform, idle)
        self._metrics.watchdog_ended.labels(watched.platform).inc()
        watched.task.cancel()

    def _count_deltas(self, watched: Watched) -> None:
        new = watched.streamed.deltas - watched.counted
        if new > 0:
            watched.counted += new
            self._metrics.deltas.labels(watched.platform).inc(new)

    async def run(self, interval: float = CHECK_INTERVAL) -> None:
        """Check every ``interval`` seconds until cancelled."""
        while True:
            await self._clock.sleep(interval)
            try:
                self.check()
            except Exception:
                log.exception("the stuck-answer watchdog failed a round")
