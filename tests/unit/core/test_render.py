"""The renderer's timing and exactness, on a recording sink and a controllable clock."""

from __future__ import annotations

import asyncio

import pytest

from bridge.core.errors import PlatformError, PlatformMessageFrozen, PlatformRateLimited
from bridge.core.notices import CUT_OFF
from bridge.core.ports import Budget, Operation
from bridge.core.rendering.pacing import MAX_SPACING, LocalSlots, Pacer
from bridge.core.rendering.renderer import GAVE_UP_REASON, MAX_FAILURES, READ_LEAD, Renderer
from bridge.core.split import Fence, fence_after, join_bodies, split_text
from tests.fakes.clock import FakeClock
from tests.fakes.sink import RecordingSink, Shared


def make(clock: FakeClock, **kw: object) -> tuple[RecordingSink, Renderer]:
    sink = RecordingSink(clock=clock, **kw)  # type: ignore[arg-type]
    renderer = Renderer(sink=sink, pacer=Pacer(slots=LocalSlots(), clock=clock), clock=clock)
    return sink, renderer


async def test_first_text_is_posted_at_once_and_final_is_exact() -> None:
    clock = FakeClock()
    sink, renderer = make(clock)
    async with renderer:
        renderer.append("Hello")
        await sink.wait_calls(1, "post")
        assert sink.text_calls()[0].text == "Hello ▌"
        assert sink.text_calls()[0].at == clock.now()  # no pacing wait for the first post
        renderer.append(" world")
        # The next edit waits for the bucket's interval.
        await clock.sleepers(1)
        clock.advance(1.0)
        await sink.wait_calls(1, "edit")
        ids = await clock.drive(renderer.finish())
    assert sink.joined() == "Hello world"
    assert ids == ("m1",)
    final_calls = [c for c in sink.text_calls() if c.final]
    assert final_calls and final_calls[-1].text == "Hello world"
    assert sink.answered is True


async def test_nothing_is_posted_before_real_text() -> None:
    clock = FakeClock(auto=True)
    sink, renderer = make(clock)
    async with renderer:
        renderer.append("   ")
        await asyncio.sleep(0)
        assert sink.text_calls() == []
        renderer.append("Hi")
        await renderer.finish()
    assert [c.text for c in sink.text_calls()][-1] == "   Hi"
    assert all((c.text or "").strip() not in ("", "▌") for c in sink.text_calls())


async def test_fast_stream_is_coalesced_latest_wins() -> None:
    clock = FakeClock()
    sink, renderer = make(clock)
    async with renderer:
        renderer.append("a")
        await sink.wait_calls(1, "post")
        for i in range(200):
            renderer.append(str(i % 10))
        await clock.sleepers(1)
        clock.advance(1.0)
        await sink.wait_calls(1, "edit")
        await clock.drive(renderer.finish())
    texts = [c.text for c in sink.text_calls()]
    # 201 deltas, but only a post, one coalesced edit and the final write.
    assert len(texts) <= 3
    assert sink.joined() == "a" + "".join(str(i % 10) for i in range(200))


async def test_slow_platform_never_blocks_the_reader_and_one_call_in_flight() -> None:
    clock = FakeClock(auto=True)
    gate = asyncio.Event()
    sink, renderer = make(clock, gate=gate)
    async with renderer:
        renderer.append("first")
        await asyncio.sleep(0)
        # The platform is stuck; the reader keeps appending without waiting.
        for _ in range(1000):
            renderer.append(".")
        assert sink.in_flight == 1
        gate.set()
        await renderer.finish()
    assert sink.max_in_flight == 1
    assert sink.joined() == "first" + "." * 1000


async def test_platform_429_stretches_pacing_and_final_is_still_written() -> None:
    clock = FakeClock(auto=True)
    sink, renderer = make(clock, interval=1.0)
    async with renderer:
        renderer.append("one")
        await sink.wait_calls(1, "post")
        sink.fail_next.append(PlatformRateLimited(7.0))
        renderer.append(" two")
        await renderer.finish()
    assert sink.joined() == "one two"
    # The retry after the 429 waited at least the retry-after.
    assert any(s >= 7.0 - 1e-6 for s in clock.slept)


async def test_long_answer_splits_with_code_block_and_every_part_final() -> None:
    clock = FakeClock(auto=True)
    sink, renderer = make(clock, max_chars=200)
    code = "".join(f"x = {i}\n" for i in range(60))
    answer = "Intro paragraph.\n\n```python\n" + code + "```\nDone.\n"
    async with renderer:
        for i in range(0, len(answer), 7):
            renderer.append(answer[i : i + 7])
            await asyncio.sleep(0)
        await renderer.finish()
    parts = sink.visible()
    assert len(parts) >= 3
    assert all(len(p) <= 200 for p in parts)
    assert all("▌" not in p for p in parts)
    for p in parts:
        state: Fence | None = None
        for line in p.splitlines():
            state = fence_after(line, state)
        assert state is None, p
    # What is shown is exactly the answer's split: its bodies join back to the answer.
    expected = split_text(answer, 200 - len(" ▌"))
    assert parts == [p.text for p in expected]
    assert join_bodies(expected) == answer


async def test_append_only_stream_only_grows() -> None:
    clock = FakeClock(auto=True)
    sink, renderer = make(clock, progress_mark=None)
    async with renderer:
        for word in ["Streaming ", "is ", "append ", "only."]:
            renderer.append(word)
            await asyncio.sleep(0)
        await renderer.finish()
    assert sink.joined() == "Streaming is append only."
    assert sink.text_calls()[-1].final


async def test_regenerate_edits_existing_parts_and_drops_leftovers() -> None:
    clock = FakeClock(auto=True)
    shared = Shared()
    shared.messages.update({"old1": "old part one", "old2": "old part two"})
    sink = RecordingSink(clock=clock, shared=shared)
    sink.part_ids = ["old1", "old2"]
    renderer = Renderer(sink=sink, pacer=Pacer(slots=LocalSlots(), clock=clock), clock=clock,
                        existing=("old1", "old2"))
    async with renderer:
        renderer.append("A shorter new answer")
        ids = await renderer.finish()
    assert ids == ("old1",)
    assert shared.messages == {"old1": "A shorter new answer"}
    assert not any(c.op == "post" for c in sink.calls)


async def test_message_deleted_while_streaming_is_posted_again() -> None:
    clock = FakeClock(auto=True)
    sink, renderer = make(clock)
    async with renderer:
        renderer.append("part")
        await sink.wait_calls(1, "post")
        del sink.shared.messages["m1"]
        renderer.append(" more")
        ids = await renderer.finish()
    assert sink.shared.messages[ids[0]] == "part more"


async def test_repeated_platform_errors_give_up_without_hanging() -> None:
    clock = FakeClock(auto=True)
    sink, renderer = make(clock)
    async with renderer:
        renderer.append("x")
        await sink.wait_calls(1, "post")
        sink.fail_next.extend(PlatformError("boom") for _ in range(20))
        renderer.append("y")
        await renderer.finish()
    assert renderer.failed
    assert sink.answered is False


async def test_a_part_that_refuses_edits_keeps_its_text_and_the_rest_follows() -> None:
    clock = FakeClock(auto=True)
    sink, renderer = make(clock)
    async with renderer:
        renderer.append("First paragraph.\n\n")
        await sink.wait_calls(1, "post")
        sink.fail_next.append(PlatformMessageFrozen("30046"))
        renderer.append("Second part.")
        ids = await renderer.finish()
    assert ids == ("m1", "m2")
    first, rest = sink.visible()
    # The old message stays as it was; the answer goes on, and ends, in a new one.
    assert first == "First paragraph.\n\n ▌"
    assert rest == "Second part."
    assert first.removesuffix(" ▌") + rest == "First paragraph.\n\nSecond part."
    assert sink.answered is True and not renderer.failed


async def test_a_part_frozen_inside_a_code_block_reopens_the_fence() -> None:
    clock = FakeClock(auto=True)
    sink, renderer = make(clock)
    async with renderer:
        renderer.append("```py\nx = 1\n")
        await sink.wait_calls(1, "post")
        sink.fail_next.append(PlatformMessageFrozen("30046"))
        renderer.append("y = 2\n```\nDone.")
        await renderer.finish()
    first, rest = sink.visible()
    assert first == "```py\nx = 1\n``` ▌"
    assert rest == "```py\ny = 2\n```\nDone."


async def test_a_last_part_frozen_under_the_mark_is_posted_anew() -> None:
    clock = FakeClock(auto=True)
    sink, renderer = make(clock)
    async with renderer:
        renderer.append("All of it")
        await sink.wait_calls(1, "post")
        sink.fail_next.append(PlatformMessageFrozen("30046"))
        ids = await renderer.finish()
    assert sink.visible() == ["All of it"]
    assert ids == ("m2",) and "m1" not in sink.shared.messages


async def test_giving_up_makes_one_last_write_without_the_progress_mark() -> None:
    clock = FakeClock(auto=True)
    sink, renderer = make(clock)
    async with renderer:
        renderer.append("shown so far")
        await sink.wait_calls(1, "post")
        # Refuses every write until the bridge gives up, then accepts one.
        sink.fail_next.extend(PlatformError("locked") for _ in range(MAX_FAILURES))
        renderer.append(" and more")
        await renderer.finish()
    assert renderer.failed and sink.answered is False
    assert sink.visible() == ["shown so far\n\n" + CUT_OFF.format(reason=GAVE_UP_REASON)]


async def test_a_platform_refusing_everything_gets_one_last_attempt_not_a_loop() -> None:
    clock = FakeClock(auto=True)
    sink, renderer = make(clock)
    async with renderer:
        renderer.append("shown so far")
        await sink.wait_calls(1, "post")
        sink.fail_next.extend(PlatformError("missing permission") for _ in range(50))
        renderer.append(" and more")
        await renderer.finish()
    assert renderer.failed
    # MAX_FAILURES refused calls, then exactly one last attempt.
    assert len(sink.fail_next) == 50 - MAX_FAILURES - 1
    assert sink.visible() == ["shown so far ▌"]


# --------------------------------------------------------------------------- edit budget


def budgeted(clock: FakeClock, *, edits_per_second: float, others: int = 0,
             **kw: object) -> tuple[RecordingSink, Pacer, Renderer]:
    """A renderer on a pacer with a process edit budget, ``others`` answers already streaming."""
    pacer = Pacer(slots=LocalSlots(), clock=clock, edits_per_second=edits_per_second)
    for _ in range(others):
        pacer.join()
    sink = RecordingSink(clock=clock, **kw)  # type: ignore[arg-type]
    return sink, pacer, Renderer(sink=sink, pacer=pacer, clock=clock)


class _StreamBudgets(RecordingSink):
    """Like Slack's streams: the first post on a budget of its own, far slower than the
    edits' (chat.startStream against chat.appendStream)."""

    def budget(self, op: Operation, *, final: bool = False) -> Budget:
        return Budget("start", 3.0) if op == "post" else Budget("append", 0.5)


async def test_a_call_holds_the_reader_only_when_the_next_edit_shares_its_budget() -> None:
    for sink_class, held in ((RecordingSink, True), (_StreamBudgets, False)):
        clock = FakeClock()
        gate = asyncio.Event()
        sink = sink_class(clock=clock, gate=gate)
        renderer = Renderer(sink=sink, pacer=Pacer(slots=LocalSlots(), clock=clock),
                            clock=clock)
        async with renderer:
            renderer.append("Hello")
            await sink.entered.wait()  # the post is out
            # The same budget takes no edit for an interval: nothing read meanwhile could
            # be shown sooner. A budget of its own for edits could take one at once.
            assert renderer.hold() == (pytest.approx(1.0 - READ_LEAD) if held else 0.0)
            gate.set()
            await clock.drive(renderer.finish())
        assert sink.joined() == "Hello"


async def test_many_answers_streaming_space_out_progress_edits_not_first_or_final() -> None:
    clock = FakeClock()
    # Three answers streaming besides this one, on a budget of 2 edits/s: 4 / 2 = 2 s apart,
    # twice the platform's 1 s interval.
    sink, pacer, renderer = budgeted(clock, edits_per_second=2, others=3)
    start = clock.now()
    async with renderer:
        renderer.append("Hello")
        await sink.wait_calls(1, "post")
        assert sink.text_calls()[0].at == start  # the first text is not spaced
        assert pacer.spacing() == 2.0
        renderer.append(" world")
        await clock.sleepers(1)
        assert clock.next_deadline() == start + 2.0
        assert renderer.hold() > 0  # the reader is held while the edit waits
        clock.advance(1.0)  # the platform's interval alone would allow the edit now
        assert clock.pending == 1 and clock.next_deadline() == start + 2.0
        clock.advance(1.0)
        await sink.wait_calls(1, "edit")
        assert sink.text_calls()[1].at == start + 2.0
        assert sink.text_calls()[1].text == "Hello world ▌"
        renderer.append("!")
        await clock.sleepers(1)
        assert clock.next_deadline() == start + 4.0
        # The final text does not wait for the spacing, only for the platform's interval.
        await clock.drive(renderer.finish())
    final = sink.text_calls()[-1]
    assert final.final and final.text == "Hello world!" and final.at == start + 3.0
    assert pacer.spacing() == 1.5  # this answer left the budget; the three others remain


async def test_spacing_within_the_platform_interval_adds_no_wait() -> None:
    clock = FakeClock()
    sink, pacer, renderer = budgeted(clock, edits_per_second=2)
    start = clock.now()
    async with renderer:
        renderer.append("one")
        await sink.wait_calls(1, "post")
        assert pacer.spacing() == 0.5  # under the 1 s interval: pacing alone decides
        renderer.append(" two")
        await clock.sleepers(1)
        clock.advance(1.0)
        await sink.wait_calls(1, "edit")
        await clock.drive(renderer.finish())
    assert [c.at for c in sink.text_calls()] == [start, start + 1.0, start + 2.0]
    assert all(s == 1.0 for s in clock.slept)  # no sleep of its own
    assert pacer.spacing() == 0


async def test_the_edit_budget_is_left_however_a_reply_ends() -> None:
    clock = FakeClock(auto=True)
    # Given up after refused calls.
    sink, pacer, renderer = budgeted(clock, edits_per_second=1)
    async with renderer:
        renderer.append("shown")
        await sink.wait_calls(1, "post")
        assert pacer.spacing() == 1.0
        sink.fail_next.extend(PlatformError("locked") for _ in range(MAX_FAILURES))
        renderer.append(" more")
        await sink.wait_calls(1, "edit")  # the last word, after giving up
        assert renderer.failed and pacer.spacing() == 0
        await renderer.finish()
    assert pacer.spacing() == 0
    # Left without finishing (the reply's task was cancelled or failed).
    sink, pacer, renderer = budgeted(clock, edits_per_second=1)
    try:
        async with renderer:
            renderer.append("shown")
            await sink.wait_calls(1, "post")
            assert pacer.spacing() == 1.0
            raise RuntimeError("the stream broke")
    except RuntimeError:
        pass
    assert pacer.spacing() == 0


def test_spacing_is_capped() -> None:
    pacer = Pacer(slots=LocalSlots(), clock=FakeClock(), edits_per_second=1)
    for _ in range(1000):
        pacer.join()
    assert pacer.spacing() == MAX_SPACING
    for _ in range(1000):
        pacer.leave()
    assert pacer.spacing() == 0
