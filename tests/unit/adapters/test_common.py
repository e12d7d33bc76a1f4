"""EventTasks and apologise: the machinery both adapters share."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence

import pytest

from adapters.common import SOMETHING_WENT_WRONG, EventTasks, apologise
from bridge.core.errors import PlatformError


class Reply:
    """A sink that records what the catch-all does with it."""

    def __init__(self, *, shown: Sequence[str] = (), refuse: bool = False) -> None:
        self.part_ids: list[str] = list(shown)
        self.refuse = refuse
        self.posted: list[str] = []
        self.finished: list[tuple[tuple[str, ...], bool]] = []

    async def post(self, text: str, *, final: bool) -> str:
        if self.refuse:
            raise PlatformError("the channel is gone")
        self.posted.append(text)
        self.part_ids.append(f"m{len(self.part_ids)}")
        return self.part_ids[-1]

    async def finish(self, part_ids: Sequence[str], *, answered: bool) -> None:
        self.finished.append((tuple(part_ids), answered))


async def fail() -> None:
    raise RuntimeError("a bug")


async def test_a_failure_is_logged_and_the_user_told(caplog: pytest.LogCaptureFixture) -> None:
    tasks = EventTasks(platform="test")
    told = asyncio.Event()

    async def notice() -> None:
        told.set()

    tasks.spawn(fail(), name="test-answer", notice=notice)
    await tasks.wait_idle()
    assert told.is_set()
    assert "handling test-answer failed" in caplog.text


async def test_a_failing_notice_is_only_logged(caplog: pytest.LogCaptureFixture) -> None:
    tasks = EventTasks(platform="test")

    async def notice() -> None:
        raise PlatformError("cannot post")

    tasks.spawn(fail(), name="x", notice=notice)
    await tasks.wait_idle()
    assert "could not tell the user" in caplog.text
    assert tasks.in_flight == 0


async def test_intake_switch() -> None:
    tasks = EventTasks(platform="test")
    assert not tasks.taking
    tasks.open()
    assert tasks.taking
    tasks.stop_intake()
    assert not tasks.taking


async def test_wait_idle_includes_work_spawned_by_work() -> None:
    tasks = EventTasks(platform="test")
    done: list[str] = []

    async def second() -> None:
        await asyncio.sleep(0)
        done.append("second")

    async def first() -> None:
        tasks.spawn(second(), name="second")

    tasks.spawn(first(), name="first")
    await tasks.wait_idle()
    assert done == ["second"]


async def test_drain_waits_up_to_its_grace_then_close_cancels() -> None:
    tasks = EventTasks(platform="test")
    tasks.open()
    release = asyncio.Event()
    cancelled = asyncio.Event()

    async def stuck() -> None:
        try:
            await release.wait()
        except asyncio.CancelledError:
            cancelled.set()
            raise

    tasks.spawn(stuck(), name="stuck")
    await asyncio.sleep(0)
    assert tasks.in_flight == 1
    assert await tasks.drain(0.01) is False
    await tasks.close()
    assert cancelled.is_set() and tasks.in_flight == 0
    assert tasks.closed and not tasks.taking


async def test_close_with_grace_lets_quick_work_finish() -> None:
    tasks = EventTasks(platform="test")
    finished = asyncio.Event()

    async def quick() -> None:
        await asyncio.sleep(0)
        finished.set()

    tasks.spawn(quick(), name="quick")
    await tasks.close(grace=5.0)
    assert finished.is_set()


async def test_close_is_idempotent_and_refuses_new_work() -> None:
    tasks = EventTasks(platform="test")
    await tasks.close()
    await tasks.close()
    ran: list[str] = []

    async def work() -> None:
        ran.append("ran")

    tasks.spawn(work(), name="late")  # closed unstarted: no "never awaited" warning
    await asyncio.sleep(0)
    assert ran == [] and tasks.in_flight == 0


async def test_apologise_posts_the_notice_when_nothing_was_shown() -> None:
    reply = Reply()
    await apologise(reply)
    assert reply.posted == [SOMETHING_WENT_WRONG]
    assert reply.finished == [(("m0",), False)]


async def test_apologise_keeps_a_half_shown_answer_and_finishes_it() -> None:
    reply = Reply(shown=["a", "b"])
    await apologise(reply)
    assert reply.posted == []
    assert reply.finished == [(("a", "b"), False)]


async def test_apologise_still_finishes_when_the_notice_cannot_be_posted() -> None:
    reply = Reply(refuse=True)
    await apologise(reply)
    assert reply.finished == [((), False)]
