"""The relay service end to end: fake Chatbase over HTTP, real Redis, a recording sink."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import pytest

from bridge.core import notices
from bridge.core.errors import PlatformRateLimited
from bridge.core.identity import conversation_key
from bridge.core.models import Platform, ReplyRecord
from bridge.core.rendering.renderer import READ_LEAD
from bridge.core.split import join_bodies, split_text
from bridge.core.tools import ToolRegistry
from tests.fakes.chatbase import Answer, FakeToolCall, Gate, StreamFault
from tests.fakes.clock import FakeClock
from tests.fakes.harness import harness
from tests.fakes.sink import RecordingSink


async def test_normal_answer_sequence_and_memory(redis_url: str, redis_prefix: str) -> None:
    async with harness(redis_url, redis_prefix) as h:
        h.fake.script(Answer(text="Hello there, friend.", deltas=["Hello", " there,", " friend."]))
        sink = h.sink()
        msg = h.message("hi")
        await h.service.handle_message(msg, sink)
        ops = [c.op for c in sink.calls]
        assert ops[0] == "working"
        assert ops[1] == "post"
        assert sink.calls[1].text is not None and sink.calls[1].text.startswith("Hello")
        assert ops[-1] == "finish"
        assert sink.joined() == "Hello there, friend."
        assert sink.text_calls()[-1].final
        body = h.fake.chat_calls[0].body
        assert body["message"] == "hi" and body["stream"] is True
        assert body["userId"] == "slack.T1.U1" and "conversationId" not in body
        # A follow-up continues the same conversation.
        follow = h.message("and then?", event_id="ev-follow")
        await h.service.handle_message(follow, h.sink())
        conversation_id = next(iter(h.fake.conversations))
        assert h.fake.chat_calls[1].body["conversationId"] == conversation_id
        assert "userId" not in h.fake.chat_calls[1].body
        record = await h.store.find_reply(Platform.SLACK, "C1", sink.part_ids[0])
        assert isinstance(record, ReplyRecord)
        assert record.conversation_id == conversation_id and record.asker == "U1"


async def test_fast_stream_is_coalesced(redis_url: str, redis_prefix: str) -> None:
    clock = FakeClock()
    async with harness(redis_url, redis_prefix, clock=clock) as h:
        gate = Gate()
        deltas = [f"w{i} " for i in range(200)]
        h.fake.script(Answer(deltas=deltas, gate=gate))
        sink = h.sink()
        task = asyncio.create_task(h.service.handle_message(h.message("go"), sink))
        gate.release(1)
        await sink.wait_calls(1, "post")
        gate.open()
        await h.fake.wait_for(lambda: h.fake.streams_finished == 1)
        await clock.drive(task)
        assert sink.joined() == "".join(deltas)
        # 200 deltas became a first post, at most one coalesced edit, and the final write.
        assert 2 <= len(sink.text_calls()) <= 3


async def test_many_answers_streaming_update_less_often(redis_url: str,
                                                      redis_prefix: str) -> None:
    """BRIDGE_LIVE_EDITS_PER_SECOND: two answers streaming on a budget of one edit a second
    are each edited every 2 s, not at the platform's 1 s, through the composition; both end
    exact, and the budget is free again once they end (bridge_edit_spacing_seconds). That the
    final text does not wait for the spacing is in tests/unit/core/test_render.py."""
    clock = FakeClock()
    async with harness(redis_url, redis_prefix, clock=clock,
                       BRIDGE_LIVE_EDITS_PER_SECOND=1) as h:
        metrics = h.replicas[0].metrics
        gates = [Gate(), Gate()]
        h.fake.script(*(Answer(deltas=[f"{who}1 ", f"{who}2 ", f"{who}3"], gate=gate)
                        for who, gate in zip("AB", gates, strict=True)))
        sinks = [h.sink(key=f"fake:{who}") for who in "AB"]
        tasks = []
        for who, gate, sink in zip("AB", gates, sinks, strict=True):
            tasks.append(asyncio.create_task(h.service.handle_message(
                h.message("go", user=f"U{who}", channel=f"C{who}"), sink)))
            gate.release(1)
            await sink.wait_calls(1, "post")
        assert metrics.registry.get_sample_value("bridge_edit_spacing_seconds") == 2.0
        first = sinks[0].text_calls()[0].at
        gates[0].release(1)
        # With A2 the writer waits for the spacing, 2 s after the post; the reader holds
        # until just before the platform's own interval would allow a call.
        async with asyncio.timeout(5):
            await clock.sleepers(2)
        assert clock.next_deadline() == pytest.approx(first + 1.0 - READ_LEAD)
        clock.advance(1.0)  # the platform's interval: not yet
        assert clock.pending == 1
        assert [c.op for c in sinks[0].text_calls()] == ["post"]
        assert clock.next_deadline() == first + 2.0
        clock.advance(1.0)
        await sinks[0].wait_calls(1, "edit")
        assert sinks[0].text_calls()[1].at == first + 2.0
        for gate in gates:
            gate.open()
        await clock.drive(asyncio.gather(*tasks))
        assert [s.joined() for s in sinks] == ["A1 A2 A3", "B1 B2 B3"]
        assert metrics.registry.get_sample_value("bridge_edit_spacing_seconds") == 0.0


async def test_slow_platform_does_not_block_the_stream(redis_url: str, redis_prefix: str) -> None:
    async with harness(redis_url, redis_prefix) as h:
        deltas = [f"part{i} " for i in range(50)]
        h.fake.script(Answer(deltas=deltas))
        platform_gate = asyncio.Event()
        sink = h.sink(gate=platform_gate)
        task = asyncio.create_task(h.service.handle_message(h.message("go"), sink))
        # The whole stream is read while the platform has not finished its first call.
        await sink.entered.wait()
        await h.fake.wait_for(lambda: h.fake.streams_finished == 1)
        assert sink.in_flight == 1 and sink.text_calls() == []
        platform_gate.set()
        await task
        assert sink.joined() == "".join(deltas)
        assert sink.max_in_flight == 1


async def test_platform_429_then_exact_final(redis_url: str, redis_prefix: str) -> None:
    async with harness(redis_url, redis_prefix) as h:
        gate = Gate()
        h.fake.script(Answer(deltas=["one ", "two ", "three"], gate=gate))
        sink = h.sink()
        task = asyncio.create_task(h.service.handle_message(h.message("go"), sink))
        gate.release(1)
        await sink.wait_calls(1, "post")
        sink.fail_next.append(PlatformRateLimited(4.0))
        gate.open()
        await task
        assert sink.joined() == "one two three"
        assert any(s >= 4.0 - 1e-6 for s in h.clock.slept)


async def test_long_answer_split_with_code_block(redis_url: str, redis_prefix: str) -> None:
    async with harness(redis_url, redis_prefix) as h:
        code = "".join(f"print({i})\n" for i in range(40))
        answer = "Here is the code:\n\n```python\n" + code + "```\n\nThat is all.\n"
        h.fake.script(Answer(text=answer))
        sink = h.sink(max_chars=250)
        await h.service.handle_message(h.message("code please"), sink)
        expected = split_text(answer, 250 - len(" ▌"))
        assert join_bodies(expected) == answer
        assert sink.visible() == [p.text for p in expected]
        assert len(sink.part_ids) == len(expected) > 1
        for part_id in sink.part_ids:
            record = await h.store.find_reply(Platform.SLACK, "C1", part_id)
            assert record is not None and record.part_ids == tuple(sink.part_ids)


async def test_stream_failing_half_way_keeps_text_and_says_so(
    redis_url: str, redis_prefix: str
) -> None:
    async with harness(redis_url, redis_prefix) as h:
        h.fake.script(Answer(deltas=["Partial ", "answer ", "here ", "never"],
                             fault=StreamFault.DISCONNECT, fault_after=3))
        sink = h.sink()
        await h.service.handle_message(h.message("go"), sink)
        final = sink.joined()
        assert final.startswith("Partial answer here")
        assert "cut off" in final and "▌" not in final
        assert sink.answered is False


async def test_error_before_text_is_a_friendly_line(redis_url: str, redis_prefix: str) -> None:
    async with harness(redis_url, redis_prefix) as h:
        h.fake.fail_next(402, "CHAT_CREDITS_EXHAUSTED", "No credits")
        sink = h.sink()
        await h.service.handle_message(h.message("go"), sink)
        assert "credits" in sink.joined()
        assert [c.op for c in sink.calls if c.op in ("post", "edit")] == ["post"]


async def test_conversation_not_ongoing_starts_over(redis_url: str, redis_prefix: str) -> None:
    async with harness(redis_url, redis_prefix) as h:
        await h.service.handle_message(h.message("first"), h.sink())
        first_id = next(iter(h.fake.conversations))
        h.fake.end_conversation(first_id)
        sink = h.sink()
        await h.service.handle_message(h.message("second"), sink)
        calls = h.fake.chat_calls
        assert calls[1].body["conversationId"] == first_id
        assert "conversationId" not in calls[2].body and calls[2].body["message"] == "second"
        assert calls[2].body["userId"] == "slack.T1.U1"
        assert sink.joined() == f"Echo: second\n\n{notices.NEW_CONVERSATION}"
        await h.service.handle_message(h.message("third"), h.sink())
        new_id = calls[2].body and h.fake.chat_calls[3].body["conversationId"]
        assert new_id != first_id and new_id in h.fake.conversations


async def test_duplicate_event_is_answered_once(redis_url: str, redis_prefix: str) -> None:
    async with harness(redis_url, redis_prefix) as h:
        msg = h.message("hi", event_id="same-event")
        first, second = h.sink(), h.sink()
        await h.service.handle_message(msg, first)
        await h.service.handle_message(msg, second)
        assert len(h.fake.chat_calls) == 1
        assert first.joined() == "Echo: hi" and second.calls == []


async def test_two_messages_in_one_conversation_take_turns(
    redis_url: str, redis_prefix: str
) -> None:
    async with harness(redis_url, redis_prefix) as h:
        gate = Gate()
        h.fake.script(Answer(text="first answer", gate=gate), Answer(text="second answer"))
        one, two = h.sink(), h.sink()
        t1 = asyncio.create_task(h.service.handle_message(h.message("one"), one))
        await h.fake.wait_requests(1, endpoint="chat")
        t2 = asyncio.create_task(h.service.handle_message(h.message("two"), two))
        # The second turn waits for the first: no second chat call while the first streams.
        await asyncio.wait({t2}, timeout=0.3)
        assert len(h.fake.chat_calls) == 1 and not t2.done()
        gate.open()
        await asyncio.gather(t1, t2)
        assert one.joined() == "first answer" and two.joined() == "second answer"
        conversation_id = next(iter(h.fake.conversations))
        assert h.fake.chat_calls[1].body["conversationId"] == conversation_id


async def test_two_replicas_answer_an_event_once(redis_url: str, redis_prefix: str) -> None:
    async with harness(redis_url, redis_prefix, replicas=2) as h:
        msg = h.message("hello", event_id="shared-event")
        sinks = [h.sink(), h.sink()]
        await asyncio.gather(*(
            r.service.handle_message(msg, s) for r, s in zip(h.replicas, sinks, strict=True)
        ))
        assert len(h.fake.chat_calls) == 1
        assert sorted(bool(s.calls) for s in sinks) == [False, True]


async def _answered(h: Any, text: str = "q", user: str = "U1") -> RecordingSink:
    sink: RecordingSink = h.sink()
    await h.service.handle_message(h.message(text, user=user), sink)
    return sink


async def test_feedback_add_switch_remove_and_non_asker(
    redis_url: str, redis_prefix: str
) -> None:
    async with harness(redis_url, redis_prefix) as h:
        sink = await _answered(h)
        part = sink.part_ids[0]
        opener = lambda record: h.sink()  # noqa: E731
        await h.service.handle_reaction(h.reaction(part, "+1"), opener)
        await h.service.handle_reaction(h.reaction(part, "-1"), opener)
        await h.service.handle_reaction(h.reaction(part, "-1", added=False), opener)
        await h.service.handle_reaction(h.reaction(part, "+1", added=False), opener)
        await h.service.handle_reaction(h.reaction(part, "+1", user="U2"), opener)
        await h.service.handle_reaction(h.reaction("unknown-message", "+1"), opener)
        bodies = [c.body for c in h.fake.feedback_calls]
        assert bodies == [
            {"feedback": "positive"}, {"feedback": "negative"},
            {"feedback": "positive"}, {"feedback": None},
        ]
        conversation = next(iter(h.fake.conversations.values()))
        assistant = next(m for m in conversation.messages if m.role == "assistant")
        assert {c.message_id for c in h.fake.feedback_calls} == {assistant.id}


async def test_feedback_from_anyone_when_configured(redis_url: str, redis_prefix: str) -> None:
    async with harness(redis_url, redis_prefix, BRIDGE_FEEDBACK_FROM="anyone") as h:
        sink = await _answered(h)
        await h.service.handle_reaction(h.reaction(sink.part_ids[0], "thumbsdown", user="U9"),
                                        lambda r: h.sink())
        assert [c.feedback for c in h.fake.feedback_calls] == ["negative"]


async def test_regenerate_latest_answer_in_place(redis_url: str, redis_prefix: str) -> None:
    async with harness(redis_url, redis_prefix) as h:
        old = await _answered(h, "first")
        latest = await _answered(h, "second")
        opened: list[RecordingSink] = []

        def opener(record: ReplyRecord) -> RecordingSink:
            sink = h.sink()
            sink.part_ids = list(record.part_ids)
            opened.append(sink)
            return sink

        # 🔄 on an older answer is ignored: retry would discard the later turns.
        await h.service.handle_reaction(h.reaction(old.part_ids[0], "arrows_counterclockwise"),
                                        opener)
        assert h.fake.retry_calls == [] and opened == []
        h.fake.script(Answer(text="A better second answer"))
        await h.service.handle_reaction(
            h.reaction(latest.part_ids[0], "arrows_counterclockwise"), opener)
        assert len(h.fake.retry_calls) == 1
        assert h.shared.messages[latest.part_ids[0]] == "A better second answer"
        assert not any(c.op == "post" for c in opened[0].calls)
        # Feedback now goes to the regenerated message.
        await h.service.handle_reaction(h.reaction(latest.part_ids[0], "+1"), opener)
        conversation = next(iter(h.fake.conversations.values()))
        newest = [m for m in conversation.messages if m.role == "assistant"][-1]
        assert h.fake.feedback_calls[-1].message_id == newest.id


async def test_a_regeneration_is_an_answer_in_flight_for_shutdown(
    redis_url: str, redis_prefix: str
) -> None:
    """Shutdown drains answers in flight with a grace period; a regeneration is one."""
    async with harness(redis_url, redis_prefix) as h:
        latest = await _answered(h, "first")
        gate = Gate()
        h.fake.script(Answer(deltas=["Again ", "and better."], gate=gate))

        def opener(record: ReplyRecord) -> RecordingSink:
            sink = h.sink()
            sink.part_ids = list(record.part_ids)
            return sink

        regenerating = asyncio.create_task(h.service.handle_reaction(
            h.reaction(latest.part_ids[0], "arrows_counterclockwise"), opener))
        gate.release(1)
        await gate.wait_sent(1)
        assert h.service.in_flight == 1
        gate.open()
        await regenerating
        assert h.service.in_flight == 0
        assert h.shared.messages[latest.part_ids[0]] == "Again and better."


async def test_tool_calls_registered_and_not(redis_url: str, redis_prefix: str) -> None:
    registry = ToolRegistry()
    seen: list[Any] = []

    async def lookup(arguments: Any) -> Any:
        seen.append(arguments)
        return {"status": "shipped"}

    registry.register("lookupOrder", lookup)
    async with harness(redis_url, redis_prefix, tools=registry) as h:
        h.fake.script(
            Answer(text="Let me check.", tool_calls=[
                FakeToolCall("lookupOrder", {"orderId": "A1"}, id="call_1"),
                FakeToolCall("refund", {"orderId": "A1"}, id="call_2"),
            ]),
            Answer(text="Your order has shipped."),
        )
        sink = h.sink()
        await h.service.handle_message(h.message("where is my order?"), sink)
        assert seen == [{"orderId": "A1"}]
        outputs = {c.tool_call_id: c.output for c in h.fake.tool_results}
        assert outputs["call_1"] == {"status": "shipped"}
        assert "not available" in outputs["call_2"]["error"]
        continuation = h.fake.chat_calls[1].body
        assert "message" not in continuation and continuation["conversationId"]
        assert sink.joined() == "Let me check.\n\nYour order has shipped."


async def test_empty_long_and_over_quota_messages(redis_url: str, redis_prefix: str) -> None:
    async with harness(redis_url, redis_prefix, BRIDGE_MAX_INPUT_CHARS=20,
                       BRIDGE_USER_QUOTA=2) as h:
        empty = h.sink()
        await h.service.handle_message(h.message("   "), empty)
        assert empty.joined() == notices.EMPTY_MESSAGE
        long = h.sink()
        await h.service.handle_message(h.message("x" * 21), long)
        assert "at most 20" in long.joined()
        await h.service.handle_message(h.message("ok"), h.sink())
        await h.service.handle_message(h.message("again"), h.sink())
        over = h.sink()
        await h.service.handle_message(h.message("third"), over)
        assert "limit of 2 questions" in over.joined()
        assert "come back in about 60 minutes" in over.joined()
        assert len(h.fake.chat_calls) == 2


async def test_dm_starts_over_after_idle(redis_url: str, redis_prefix: str) -> None:
    async with harness(redis_url, redis_prefix, BRIDGE_DM_IDLE_RESET=60) as h:
        first = h.message("hi", dm=True, channel="D1")
        await h.service.handle_message(first, h.sink())
        await h.service.handle_message(h.message("still here", dm=True, channel="D1"), h.sink())
        assert h.fake.chat_calls[1].body.get("conversationId")
        # Age the stored turn past the idle time.
        key = conversation_key(first, scope=h.settings.conversation_scope)
        redis_key = h.store.keys.conversation(key)
        state = json.loads(await h.store.redis.get(redis_key))
        state["t"] -= 3600
        await h.store.redis.set(redis_key, json.dumps(state), keepttl=True)
        await h.service.handle_message(h.message("hello again", dm=True, channel="D1"), h.sink())
        assert "conversationId" not in h.fake.chat_calls[2].body


async def test_drain_cuts_off_answers_and_tells_waiting_turns(
    redis_url: str, redis_prefix: str
) -> None:
    async with harness(redis_url, redis_prefix) as h:
        gate = Gate()
        h.fake.script(Answer(deltas=["Half ", "an ", "answer"], gate=gate))
        streaming, waiting = h.sink(), h.sink()
        t1 = asyncio.create_task(h.service.handle_message(h.message("one"), streaming))
        gate.release(1)
        await streaming.wait_calls(1, "post")
        # A second message of the same conversation waits for the first turn.
        t2 = asyncio.create_task(h.service.handle_message(h.message("two"), waiting))
        await asyncio.wait({t2}, timeout=0.2)
        await h.service.drain(grace=0.1)
        await asyncio.gather(t1, t2, return_exceptions=True)
        assert streaming.joined().startswith("Half ")
        assert "cut off" in streaming.joined() and "▌" not in streaming.joined()
        assert waiting.joined() == notices.RESTARTED_BEFORE_ANSWER
        # New messages after the drain are told the bridge is restarting.
        late = h.sink()
        await h.service.handle_message(h.message("three"), late)
        assert late.joined() == notices.RESTARTING
