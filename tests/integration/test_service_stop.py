"""Stopping an answer, and the sources listed under one: the relay service end to end (fake
Chatbase over HTTP, real Redis, a recording sink)."""

from __future__ import annotations

import asyncio
from typing import Any

from bridge.core import notices
from bridge.core.identity import event_handle, thread_handle
from bridge.core.models import InboundMessage, Platform
from tests.fakes.chatbase import Answer, Gate
from tests.fakes.harness import Harness, counter_value, harness
from tests.fakes.sink import RecordingSink

SHOWN = ["First ", "part ", "of ", "it. "]
REST = ["Never ", "shown."]


async def _streaming(
    h: Harness, gate: Gate, **message: Any
) -> tuple[asyncio.Task[None], RecordingSink, InboundMessage]:
    """An answer that has streamed SHOWN and waits for the rest: its task, sink, message."""
    h.fake.script(Answer(deltas=SHOWN + REST, gate=gate))
    sink = h.sink()
    msg = h.message("tell me", **message)
    task = asyncio.create_task(h.service.handle_message(msg, sink))
    gate.release(len(SHOWN))
    await gate.wait_sent(len(SHOWN))
    await sink.wait_calls(1, "post")
    return task, sink, msg


async def test_stop_keeps_the_text_closes_the_stream_and_remembers(
    redis_url: str, redis_prefix: str
) -> None:
    async with harness(redis_url, redis_prefix) as h:
        gate = Gate()
        task, sink, msg = await _streaming(h, gate)
        # The renderer may not have shown every delta yet; the stop keeps all received.
        await h.fake.wait_for(lambda: h.fake.streams_started == 1)
        assert await h.service.stop(event_handle(Platform.SLACK, msg.event_id)) is True
        await task
        assert sink.joined() == "".join(SHOWN) + "\n\n" + notices.STOPPED
        assert "Never" not in sink.joined()
        assert sink.answered is True  # a stopped answer still takes feedback
        await h.fake.wait_for(lambda: h.fake.streams_aborted == 1)
        assert h.fake.streams_finished == 0
        assert counter_value(h.replicas[0].metrics, "bridge_answers", platform="slack",
                             outcome="stopped") == 1
        # The conversation Chatbase opened is remembered (read back by userId), so a
        # follow-up in the thread continues it.
        (conversation_id,) = h.fake.conversations
        h.fake.script(Answer(text="Continued."))
        await h.service.handle_message(h.message("go on"), h.sink())
        assert h.fake.chat_calls[-1].body.get("conversationId") == conversation_id
        # Nothing is left registered: a second stop finds nothing.
        assert await h.service.stop(event_handle(Platform.SLACK, msg.event_id)) is False


async def test_stop_by_thread_in_a_continued_conversation(
    redis_url: str, redis_prefix: str
) -> None:
    async with harness(redis_url, redis_prefix) as h:
        h.fake.script(Answer(text="One."))
        await h.service.handle_message(h.message("first"), h.sink())
        (conversation_id,) = h.fake.conversations
        gate = Gate()
        task, sink, msg = await _streaming(h, gate)
        handle = thread_handle(Platform.SLACK, "C1", msg.conversation_thread or "")
        assert await h.service.stop(handle) is True
        await task
        assert sink.joined().endswith(notices.STOPPED)
        # Known already, so no read-back: the next turn continues the same conversation.
        assert h.fake.calls("list_user_conversations") == []
        h.fake.script(Answer(text="Three."))
        await h.service.handle_message(h.message("third"), h.sink())
        assert h.fake.chat_calls[-1].body["conversationId"] == conversation_id


async def test_a_stopped_answer_is_not_regenerated(redis_url: str, redis_prefix: str) -> None:
    async with harness(redis_url, redis_prefix) as h:
        gate = Gate()
        task, sink, msg = await _streaming(h, gate)
        await h.service.stop(event_handle(Platform.SLACK, msg.event_id))
        await task
        await h.service.handle_reaction(h.reaction(sink.part_ids[0], "arrows_counterclockwise"),
                                        lambda record: h.sink())
        assert h.fake.retry_calls == []
        # Feedback on it still reaches Chatbase.
        await h.service.handle_reaction(h.reaction(sink.part_ids[0], "+1"),
                                        lambda record: h.sink())
        assert [c.feedback for c in h.fake.feedback_calls] == ["positive"]


async def test_stop_before_any_text_says_so(redis_url: str, redis_prefix: str) -> None:
    async with harness(redis_url, redis_prefix) as h:
        gate = Gate()
        h.fake.script(Answer(deltas=REST, gate=gate))
        sink = h.sink()
        msg = h.message("tell me")
        task = asyncio.create_task(h.service.handle_message(msg, sink))
        await h.fake.wait_for(lambda: h.fake.streams_started == 1)
        assert await h.service.stop(event_handle(Platform.SLACK, msg.event_id))
        await task
        assert sink.joined() == notices.STOPPED


async def test_a_stop_for_another_answer_changes_nothing(
    redis_url: str, redis_prefix: str
) -> None:
    async with harness(redis_url, redis_prefix) as h:
        gate = Gate()
        task, sink, _ = await _streaming(h, gate)
        assert await h.service.stop(event_handle(Platform.SLACK, "someone-else")) is False
        gate.open()
        await task
        assert sink.joined() == "".join(SHOWN + REST)


async def test_a_stop_reaches_the_replica_that_streams(redis_url: str, redis_prefix: str) -> None:
    async with harness(redis_url, redis_prefix, replicas=2) as h:
        for replica in h.replicas:
            await replica.store.stops.ready.wait()
        gate = Gate()
        task, sink, msg = await _streaming(h, gate)
        other = h.replicas[1].service
        # Not running on the second replica: it asks the others through Redis.
        assert await other.stop(event_handle(Platform.SLACK, msg.event_id)) is False
        await task
        assert sink.joined().endswith(notices.STOPPED)
        await h.fake.wait_for(lambda: h.fake.streams_aborted == 1)


async def test_shutdown_still_cuts_off_rather_than_stops(
    redis_url: str, redis_prefix: str
) -> None:
    async with harness(redis_url, redis_prefix) as h:
        gate = Gate()
        task, sink, _ = await _streaming(h, gate)
        await h.service.drain(0)
        await asyncio.gather(task, return_exceptions=True)
        assert notices.CUT_OFF.format(reason=notices.SHUTTING_DOWN) in sink.joined()
        assert notices.STOPPED not in sink.joined()


SOURCES = [
    # Chunk shapes of the AI SDK's UI message stream protocol
    # (https://ai-sdk.dev/docs/ai-sdk-ui/stream-protocol, "Source Parts", "File Part").
    {"type": "source-url", "sourceId": "https://example.com",
     "url": "https://example.com/guide", "title": "The guide"},
    {"type": "source-document", "sourceId": "doc-1", "mediaType": "file",
     "title": "Handbook @everyone"},
    {"type": "source-url", "sourceId": "again", "url": "https://example.com/guide"},
    {"type": "file", "url": "https://example.com/file.png", "mediaType": "image/png"},
]


async def test_sources_end_the_answer_once_each(redis_url: str, redis_prefix: str) -> None:
    async with harness(redis_url, redis_prefix) as h:
        h.fake.script(Answer(text="It is in the guide.", sources=SOURCES))
        sink = h.sink()
        await h.service.handle_message(h.message("where?"), sink)
        assert sink.joined() == (
            "It is in the guide.\n\n**Sources**\n"
            "1. [The guide](https://example.com/guide)\n"
            "2. Handbook @\u200beveryone\n"
            "3. [file.png](https://example.com/file.png)"
        )


async def test_sources_can_be_turned_off(redis_url: str, redis_prefix: str) -> None:
    async with harness(redis_url, redis_prefix, BRIDGE_SHOW_SOURCES="false") as h:
        h.fake.script(Answer(text="It is in the guide.", sources=SOURCES))
        sink = h.sink()
        await h.service.handle_message(h.message("where?"), sink)
        assert sink.joined() == "It is in the guide."
