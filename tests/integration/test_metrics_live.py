"""The benchmark's figures as production metrics, on the bridge ``compose`` builds (real Redis,
fake Chatbase over HTTP): deltas, added time, Chatbase 429s, errors and credits, feedback by
rating, and the stuck-answer watchdog."""

from __future__ import annotations

import asyncio
from collections.abc import Callable

import pytest

from bridge.app.metrics import Metrics
from bridge.core import notices
from bridge.core.models import Platform
from tests.fakes.chatbase import Answer, Gate, StreamFault
from tests.fakes.clock import FakeClock
from tests.fakes.harness import Harness, counter_value, harness


def sample(metrics: Metrics, name: str, **labels: str) -> float:
    value = metrics.registry.get_sample_value(name, labels)
    return 0.0 if value is None else float(value)


async def until(predicate: Callable[[], bool], *, within: float = 5.0) -> None:
    """Poll ``predicate`` until it holds; TimeoutError after ``within`` seconds. For states
    that signal no event (what the service has read from a stream, the watchdog's figures)."""
    async with asyncio.timeout(within):
        while not predicate():  # noqa: ASYNC110 - nothing to wait on but the state itself
            await asyncio.sleep(0.005)


def metrics_of(h: Harness) -> Metrics:
    return h.replicas[0].metrics


# ---------------------------------------------------------------------------- deltas


async def test_the_deltas_counter_counts_every_delta_the_fake_streamed(
    redis_url: str, redis_prefix: str
) -> None:
    async with harness(redis_url, redis_prefix) as h:
        m = metrics_of(h)
        first = [f"w{i} " for i in range(37)]
        second = [f"x{i} " for i in range(5)]
        h.fake.script(Answer(deltas=first), Answer(deltas=second))
        await h.service.handle_message(h.message("one"), h.sink())
        assert counter_value(m, "bridge_stream_deltas", platform="slack") == len(first)
        await h.service.handle_message(h.message("two", platform=Platform.DISCORD), h.sink())
        assert counter_value(m, "bridge_stream_deltas", platform="discord") == len(second)
        assert counter_value(m, "bridge_stream_deltas", platform="slack") == len(first)


async def test_deltas_are_added_in_batches_while_the_answer_streams(
    redis_url: str, redis_prefix: str
) -> None:
    async with harness(redis_url, redis_prefix) as h:
        m = metrics_of(h)
        watchdog = h.replicas[0].bridge.watchdog
        gate = Gate()
        deltas = [f"d{i} " for i in range(10)]
        h.fake.script(Answer(deltas=deltas, gate=gate))
        task = asyncio.create_task(h.service.handle_message(h.message("go"), h.sink()))
        gate.release(4)
        await gate.wait_sent(4)
        # Nothing is counted per delta: the count moves when the watchdog's round adds it.
        await until(lambda: (watchdog.check(), counter_value(
            m, "bridge_stream_deltas", platform="slack"))[1] == 4)
        gate.open()
        await task
        assert counter_value(m, "bridge_stream_deltas", platform="slack") == len(deltas)


# ---------------------------------------------------------------------------- added time


async def test_added_time_is_observed_once_per_answer_with_text(
    redis_url: str, redis_prefix: str
) -> None:
    async with harness(redis_url, redis_prefix) as h:
        m = metrics_of(h)
        h.fake.script(Answer(deltas=["Hello ", "there"]))
        await h.service.handle_message(h.message("hi"), h.sink())
        assert sample(m, "bridge_added_time_to_first_text_seconds_count", platform="slack") == 1
        assert sample(m, "bridge_time_to_first_text_seconds_count", platform="slack") == 1
        added = sample(m, "bridge_added_time_to_first_text_seconds_sum", platform="slack")
        whole = sample(m, "bridge_time_to_first_text_seconds_sum", platform="slack")
        assert 0 <= added <= whole
        # An answer that never had text (Chatbase refused it) adds no observation.
        h.fake.fail_next(500, "INTERNAL_SERVER_ERROR")
        sink = h.sink()
        await h.service.handle_message(h.message("again"), sink)
        assert sink.joined() and "▌" not in sink.joined()
        assert sample(m, "bridge_added_time_to_first_text_seconds_count", platform="slack") == 1


async def test_added_time_measures_from_the_first_delta_to_the_first_text_call(
    redis_url: str, redis_prefix: str
) -> None:
    clock = FakeClock()
    async with harness(redis_url, redis_prefix, clock=clock) as h:
        m = metrics_of(h)
        h.fake.script(Answer(deltas=["Some ", "text"]))
        # The platform's first call takes 3 s of the clock: that is after the call set off,
        # so it counts in the time to visible text but not in the bridge's added time.
        sink = h.sink(gate=asyncio.Event())
        task = asyncio.create_task(h.service.handle_message(h.message("go"), sink))
        await sink.entered.wait()
        clock.advance(3.0)
        assert sink.gate is not None
        sink.gate.set()
        await clock.drive(task)
        assert sample(m, "bridge_added_time_to_first_text_seconds_sum", platform="slack") == 0
        assert sample(m, "bridge_time_to_first_text_seconds_sum", platform="slack") >= 3.0
        assert sample(m, "bridge_added_time_to_first_text_seconds_bucket", platform="slack",
                      le="0.0005") == 1


# ---------------------------------------------------------------------------- Chatbase


async def test_a_chatbase_429_is_counted_as_such_and_as_an_error_by_code(
    redis_url: str, redis_prefix: str
) -> None:
    async with harness(redis_url, redis_prefix) as h:
        m = metrics_of(h)
        agent = h.fake.agent_id
        h.fake.rate_limit_next(retry_after=2)
        h.fake.script(Answer(text="after the wait"))
        sink = h.sink()
        await h.service.handle_message(h.message("hi"), sink)
        assert sink.joined() == "after the wait"
        assert counter_value(m, "bridge_chatbase_rate_limited", agent=agent) == 1
        assert counter_value(m, "bridge_chatbase_errors", agent=agent, endpoint="chat",
                             code="RATE_LIMIT_TOO_MANY_REQUESTS") == 1
        assert counter_value(m, "bridge_chatbase_requests", agent=agent, endpoint="chat",
                             status="429", code="RATE_LIMIT_TOO_MANY_REQUESTS") == 1
        assert counter_value(m, "bridge_chatbase_credits_exhausted", agent=agent,
                             code="RATE_LIMIT_TOO_MANY_REQUESTS") == 0


@pytest.mark.parametrize("code", ["CHAT_CREDITS_EXHAUSTED", "CHAT_AGENT_CREDITS_EXHAUSTED"])
async def test_credits_exhausted_is_counted_for_the_alert(
    redis_url: str, redis_prefix: str, code: str
) -> None:
    async with harness(redis_url, redis_prefix) as h:
        m = metrics_of(h)
        agent = h.fake.agent_id
        h.fake.fail_next(402, code, "Credits exhausted")
        sink = h.sink()
        await h.service.handle_message(h.message("hi"), sink)
        assert "credits" in sink.joined()
        assert counter_value(m, "bridge_chatbase_credits_exhausted", agent=agent,
                             code=code) == 1
        assert counter_value(m, "bridge_chatbase_errors", agent=agent, endpoint="chat",
                             code=code) == 1
        assert counter_value(m, "bridge_chatbase_rate_limited", agent=agent) == 0
        assert counter_value(m, "bridge_answers", platform="slack", outcome="error") == 1


@pytest.mark.parametrize(("fault", "code"), [
    (StreamFault.ERROR_OBJECT, "CHAT_STREAMING_ERROR"),
    (StreamFault.DISCONNECT, "STREAM_INTERRUPTED"),
    (StreamFault.MALFORMED, "STREAM_MALFORMED"),
])
async def test_a_stream_that_breaks_is_counted_by_its_code(
    redis_url: str, redis_prefix: str, fault: StreamFault, code: str
) -> None:
    async with harness(redis_url, redis_prefix) as h:
        m = metrics_of(h)
        h.fake.script(Answer(deltas=["one ", "two ", "three"], fault=fault, fault_after=2))
        sink = h.sink()
        await h.service.handle_message(h.message("hi"), sink)
        assert sink.joined().startswith("one two")
        assert counter_value(m, "bridge_chatbase_errors", agent=h.fake.agent_id,
                             endpoint="chat", code=code) == 1
        # The request itself succeeded: it is a 200 in the requests by status.
        assert counter_value(m, "bridge_chatbase_requests", agent=h.fake.agent_id,
                             endpoint="chat", status="200", code="") == 1
        assert counter_value(m, "bridge_stream_deltas", platform="slack") == 2


def test_unknown_codes_cannot_grow_the_label_set_without_bound() -> None:
    m = Metrics()
    for n in range(200):
        m.chatbase_request("chat", 400, f"SOME_CODE_{n}", agent="a")
    m.chatbase_request("chat", 400, "lower case <script>", agent="a")
    codes = {s.labels["code"] for family in m.registry.collect()
             if family.name == "bridge_chatbase_errors" for s in family.samples}
    assert "OTHER" in codes and len(codes) <= 65
    assert not any("<" in code for code in codes)


# ---------------------------------------------------------------------------- feedback


async def test_feedback_is_counted_by_rating(redis_url: str, redis_prefix: str) -> None:
    async with harness(redis_url, redis_prefix) as h:
        m = metrics_of(h)
        h.fake.script(Answer(text="An answer"))
        sink = h.sink()
        await h.service.handle_message(h.message("hi"), sink)
        part = sink.part_ids[0]

        def opener(record: object) -> object:
            return h.sink()

        await h.service.handle_reaction(h.reaction(part, "+1"), opener)  # type: ignore[arg-type]
        await h.service.handle_reaction(h.reaction(part, "+1", added=False),
                                        opener)  # type: ignore[arg-type]
        await h.service.handle_reaction(h.reaction(part, "-1"), opener)  # type: ignore[arg-type]
        assert [c.feedback for c in h.fake.feedback_calls] == ["positive", None, "negative"]
        for value in ("positive", "cleared", "negative"):
            assert counter_value(m, "bridge_feedback", platform="slack", value=value) == 1


# ---------------------------------------------------------------------------- watchdog


@pytest.mark.parametrize("shown", [0, 2])
async def test_the_watchdog_counts_a_stuck_answer_then_ends_it_with_a_notice(
    redis_url: str, redis_prefix: str, shown: int
) -> None:
    clock = FakeClock()
    async with harness(redis_url, redis_prefix, clock=clock, BRIDGE_STUCK_AFTER="30",
                       BRIDGE_STUCK_END_AFTER="90") as h:
        m = metrics_of(h)
        watchdog = h.replicas[0].bridge.watchdog
        gate = Gate()
        # The stream stalls after ``shown`` deltas and never finishes by itself.
        h.fake.script(Answer(deltas=["Half ", "an ", "answer"], gate=gate))
        sink = h.sink()
        task = asyncio.create_task(h.service.handle_message(h.message("go"), sink))
        gate.release(shown)
        if shown:
            await sink.wait_calls(1, "post")
            await until(lambda: sink.joined().startswith("Half an"))
        await until(lambda: watchdog.watching == 1)
        assert watchdog.check() == 0
        assert sample(m, "bridge_answers_stuck", platform="slack") == 0

        clock.advance(31)
        assert watchdog.check() == 1
        assert sample(m, "bridge_answers_stuck", platform="slack") == 1
        assert not task.done()
        assert counter_value(m, "bridge_watchdog_ended_answers", platform="slack") == 0

        clock.advance(60)
        watchdog.check()
        assert counter_value(m, "bridge_watchdog_ended_answers", platform="slack") == 1
        await asyncio.wait_for(asyncio.shield(task), 10)
        reason = notices.CUT_OFF.format(reason=notices.STUCK)
        # What was shown stays, marked as cut off; nothing shown: the notice alone. Never
        # the bare progress mark.
        assert sink.joined() == (f"Half an \n\n{reason}" if shown else reason)
        assert counter_value(m, "bridge_answers", platform="slack", outcome="stuck") == 1
        assert watchdog.check() == 0 and watchdog.watching == 0
        assert sample(m, "bridge_answers_stuck", platform="slack") == 0
        assert sample(m, "bridge_answers_in_flight", platform="slack") == 0
        await h.fake.wait_for(lambda: h.fake.streams_aborted == 1)

        # The conversation's turn was released: the next message is answered.
        h.fake.script(Answer(text="Next answer"))
        after = h.sink()
        await clock.drive(h.service.handle_message(h.message("again"), after))
        assert after.joined() == "Next answer"


async def test_an_answer_making_progress_is_never_stuck(redis_url: str, redis_prefix: str
                                                        ) -> None:
    clock = FakeClock()
    async with harness(redis_url, redis_prefix, clock=clock, BRIDGE_STUCK_AFTER="30",
                       BRIDGE_STUCK_END_AFTER="60") as h:
        m = metrics_of(h)
        watchdog = h.replicas[0].bridge.watchdog
        gate = Gate()
        h.fake.script(Answer(deltas=[f"w{i} " for i in range(6)], gate=gate))
        sink = h.sink()
        task = asyncio.create_task(h.service.handle_message(h.message("go"), sink))
        for n in range(1, 5):
            gate.release(1)
            await until(lambda n=n: len(sink.text_calls()) >= n)  # type: ignore[misc]
            watchdog.check()
            clock.advance(25)  # under the threshold since the last platform call
            assert watchdog.check() == 0
        gate.open()
        await clock.drive(task)
        assert sink.joined() == "".join(f"w{i} " for i in range(6))
        assert counter_value(m, "bridge_watchdog_ended_answers", platform="slack") == 0


async def test_with_end_after_zero_the_watchdog_only_counts(
    redis_url: str, redis_prefix: str
) -> None:
    clock = FakeClock()
    async with harness(redis_url, redis_prefix, clock=clock, BRIDGE_STUCK_AFTER="10",
                       BRIDGE_STUCK_END_AFTER="0") as h:
        watchdog = h.replicas[0].bridge.watchdog
        gate = Gate()
        h.fake.script(Answer(deltas=["a ", "b"], gate=gate))
        sink = h.sink()
        task = asyncio.create_task(h.service.handle_message(h.message("go"), sink))
        await until(lambda: watchdog.watching == 1)
        watchdog.check()
        clock.advance(10_000)
        assert watchdog.check() == 1
        assert not task.done()
        gate.open()
        await clock.drive(task)
        assert sink.joined() == "a b"
