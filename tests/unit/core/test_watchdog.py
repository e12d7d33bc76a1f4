"""The watchdog's loop: a round every CHECK_INTERVAL seconds of its clock, surviving a failed
round."""

from __future__ import annotations

import asyncio

import pytest

from bridge.app.metrics import Metrics
from bridge.core.watchdog import CHECK_INTERVAL, Watchdog
from tests.fakes.clock import FakeClock


async def test_run_checks_every_interval_and_keeps_going_after_a_failed_round(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    clock = FakeClock()
    metrics = Metrics()
    watchdog = Watchdog(clock=clock, metrics=metrics)
    rounds: list[float] = []
    real_check = watchdog.check

    def check() -> int:
        rounds.append(clock.now())
        if len(rounds) == 1:
            raise RuntimeError("a broken round")
        return real_check()

    monkeypatch.setattr(watchdog, "check", check)
    metrics.answers_stuck.labels("discord").set(7)
    task = asyncio.create_task(watchdog.run())
    try:
        for expected in (1, 2, 3):
            async with asyncio.timeout(5):
                await clock.sleepers(1)
                clock.advance(CHECK_INTERVAL)
                await clock.sleepers(1)  # the round ran and the loop sleeps again
            assert len(rounds) == expected
        assert rounds[1] - rounds[0] == CHECK_INTERVAL
        # A round with no answer in flight sets every platform's gauge to 0.
        assert metrics.registry.get_sample_value(
            "bridge_answers_stuck", {"platform": "discord"}) == 0
    finally:
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
