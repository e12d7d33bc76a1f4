"""Issue 13, the Chatbase side: conversations that recover by themselves, one turn loop for
messages and regenerate, honest endings, and a line for every documented error code.

Through the real relay service against the fake Chatbase over HTTP and a real Redis.
"""

from __future__ import annotations

import json
import logging
from contextlib import AsyncExitStack
from typing import Any

import aiohttp
import pytest

from bridge.app.compose import compose, compose_chatbase
from bridge.core import notices
from bridge.core.clock import SystemClock
from bridge.core.errors import ChatbaseAPIError, operator_hint
from bridge.core.identity import conversation_key
from bridge.core.models import ReplyRecord
from bridge.core.tools import ToolRegistry
from tests.fakes.chatbase import Answer, FakeToolCall
from tests.fakes.harness import Harness, Replica, harness, roomy_limiter
from tests.fakes.sink import RecordingSink
from tests.reliability.rig import recording

MARK = "▌"


async def _answered(h: Harness, text: str, sink: RecordingSink | None = None) -> RecordingSink:
    sink = sink or h.sink()
    await h.service.handle_message(h.message(text), sink)
    return sink


def _only_conversation(h: Harness) -> str:
    (conversation_id,) = h.fake.conversations
    return conversation_id


def _opener(h: Harness, opened: list[RecordingSink]) -> Any:
    def opener(record: ReplyRecord) -> RecordingSink:
        sink = h.sink()
        sink.part_ids = list(record.part_ids)
        opened.append(sink)
        return sink

    return opener


# --------------------------------------------------------------------------- recovery


async def test_a_forgotten_conversation_starts_a_new_one(redis_url: str, redis_prefix: str) -> None:
    async with harness(redis_url, redis_prefix) as h:
        await _answered(h, "first")
        old = _only_conversation(h)
        h.fake.forget_conversation(old)  # deleted in the dashboard, or expired
        with recording() as logs:
            sink = await _answered(h, "second")
        assert sink.joined() == f"Echo: second\n\n{notices.NEW_CONVERSATION}"
        refused, fresh = h.fake.chat_calls[1], h.fake.chat_calls[2]
        assert refused.body["conversationId"] == old
        assert "conversationId" not in fresh.body and fresh.body["userId"] == "slack.T1.U1"
        assert logs.find("no longer has this conversation", refused.request_id,
                         level=logging.INFO)
        # The new conversation is remembered: the next message continues it, no 404.
        new = _only_conversation(h)
        await _answered(h, "third")
        assert h.fake.chat_calls[3].body["conversationId"] == new
        assert len(h.fake.chat_calls) == 4


@pytest.mark.parametrize("code", ["CHAT_CONVERSATION_MISMATCH", "CHAT_CONVERSATION_NOT_ONGOING"])
async def test_a_conversation_chatbase_refuses_starts_a_new_one(
    redis_url: str, redis_prefix: str, code: str
) -> None:
    async with harness(redis_url, redis_prefix) as h:
        await _answered(h, "first")
        h.fake.fail_next(400, code, "cannot continue")
        sink = await _answered(h, "second")
        assert sink.joined() == f"Echo: second\n\n{notices.NEW_CONVERSATION}"
        assert "conversationId" not in h.fake.chat_calls[-1].body
        assert MARK not in sink.joined()


async def test_a_new_conversation_is_tried_once(redis_url: str, redis_prefix: str) -> None:
    async with harness(redis_url, redis_prefix) as h:
        await _answered(h, "first")
        h.fake.fail_next(400, "CHAT_CONVERSATION_MISMATCH", times=2)
        sink = await _answered(h, "second")
        # The new conversation refused too: one line, no loop.
        assert sink.joined() == notices.for_error(ChatbaseAPIError(
            code="CHAT_CONVERSATION_MISMATCH", message="m", status=400))
        assert len(h.fake.chat_calls) == 3


async def test_changing_the_agent_starts_fresh_conversations(
    redis_url: str, redis_prefix: str
) -> None:
    async with harness(redis_url, redis_prefix) as h:
        await _answered(h, "first")
        old = _only_conversation(h)
        h.fake.add_agent("agent-new")
        switched = h.settings.model_copy(update={"chatbase_agent_id": "agent-new"})
        async with AsyncExitStack() as stack:
            bridge = await stack.enter_async_context(compose(
                switched, clock=h.clock, store_clock=SystemClock(),
                limiter=roomy_limiter(h.clock),
            ))
            other = Replica(bridge)
            follow = h.message("after the switch")
            # The thread is still the bot's: a follow-up without a mention is answered.
            assert await other.service.has_conversation(follow)
            sink = h.sink()
            await other.service.handle_message(follow, sink)
            assert sink.joined() == "Echo: after the switch"
            call = h.fake.chat_calls[-1]
            assert call.path == "/agents/agent-new/chat"
            assert "conversationId" not in call.body and call.body["userId"] == "slack.T1.U1"
            assert len(h.fake.chat_calls) == 2  # no request for the old agent's conversation
            new = next(c for c in h.fake.conversations if c != old)
            await other.service.handle_message(h.message("and on"), h.sink())
            assert h.fake.chat_calls[-1].body["conversationId"] == new
        # The place now remembers the new agent's conversation, and which agent owns it.
        key = conversation_key(h.message("x"), scope=h.settings.conversation_scope)
        state = json.loads(await h.store.redis.get(h.store.keys.conversation(key)))
        assert (state["c"], state["a"]) == (new, "agent-new")


async def test_the_fake_refuses_another_agents_conversation(
    redis_url: str, redis_prefix: str
) -> None:
    async with harness(redis_url, redis_prefix) as h:
        await _answered(h, "first")
        old = _only_conversation(h)
        h.fake.add_agent("agent-new")
        switched = h.settings.model_copy(update={"chatbase_agent_id": "agent-new"})
        async with aiohttp.ClientSession() as session:
            client = compose_chatbase(switched, session=session)
            for call in (
                client.submit_tool_result(conversation_id=old, tool_call_id="t", output=None),
                client.get_conversation(old),
            ):
                with pytest.raises(ChatbaseAPIError) as info:
                    await call
                assert info.value.code == "RESOURCE_NOT_FOUND" and info.value.status == 404
            with pytest.raises(ChatbaseAPIError) as info:
                async with client.chat_stream(message="hi", conversation_id=old):
                    pass
            assert info.value.code == "RESOURCE_NOT_FOUND"


async def test_not_ongoing_after_a_tool_result_starts_a_new_conversation(
    redis_url: str, redis_prefix: str
) -> None:
    async with harness(redis_url, redis_prefix) as h:
        await _answered(h, "first")
        h.fake.script(
            Answer(text="Let me look.", tool_calls=[FakeToolCall("lookup", {"id": 1})]),
            Answer(text="The answer, anew."),
        )
        h.fake.end_after_tool_result = True
        sink = await _answered(h, "look it up")
        assert len(h.fake.tool_results) == 1
        continuation, fresh = h.fake.chat_calls[2], h.fake.chat_calls[3]
        assert "message" not in continuation.body
        assert fresh.body["message"] == "look it up" and "conversationId" not in fresh.body
        assert sink.joined() == (
            f"Let me look.\n\nThe answer, anew.\n\n{notices.NEW_CONVERSATION}"
        )


async def test_a_tool_result_for_a_forgotten_conversation_starts_a_new_one(
    redis_url: str, redis_prefix: str
) -> None:
    async with harness(redis_url, redis_prefix) as h:
        h.fake.script(Answer(text="Checking.", tool_calls=[FakeToolCall("lookup")]))
        h.fake.fail_next(404, "RESOURCE_NOT_FOUND", endpoint="tool_result")
        sink = await _answered(h, "check")
        assert sink.joined().endswith(notices.NEW_CONVERSATION)
        assert h.fake.chat_calls[-1].body["message"] == "check"
        assert len(h.fake.chat_calls) == 2


# --------------------------------------------------------------------------- regenerate


async def test_regenerate_in_an_ended_conversation_answers_in_a_new_one(
    redis_url: str, redis_prefix: str
) -> None:
    async with harness(redis_url, redis_prefix) as h:
        latest = await _answered(h, "the question")
        old = _only_conversation(h)
        h.fake.end_conversation(old)
        opened: list[RecordingSink] = []
        await h.service.handle_reaction(
            h.reaction(latest.part_ids[0], "arrows_counterclockwise"), _opener(h, opened))
        assert len(h.fake.retry_calls) == 1
        fresh = h.fake.chat_calls[-1].body
        assert fresh["message"] == "the question" and fresh["userId"] == "slack.T1.U1"
        shown = h.shared.messages[latest.part_ids[0]]
        assert shown == f"Echo: the question\n\n{notices.NEW_CONVERSATION}"
        # The new conversation is the one remembered.
        new = next(c for c in h.fake.conversations if c != old)
        await _answered(h, "next")
        assert h.fake.chat_calls[-1].body["conversationId"] == new


async def test_regenerate_in_a_forgotten_conversation_says_so(
    redis_url: str, redis_prefix: str
) -> None:
    async with harness(redis_url, redis_prefix) as h:
        latest = await _answered(h, "the question")
        h.fake.forget_conversation(_only_conversation(h))
        opened: list[RecordingSink] = []
        await h.service.handle_reaction(
            h.reaction(latest.part_ids[0], "arrows_counterclockwise"), _opener(h, opened))
        assert [c.text for c in opened[0].calls if c.op == "post"] == [
            notices.CANNOT_REGENERATE]
        assert len(h.fake.chat_calls) == 1
        # Forgotten: the next message starts a new conversation without a failed call.
        await _answered(h, "next")
        assert "conversationId" not in h.fake.chat_calls[-1].body
        assert len(h.fake.chat_calls) == 2


async def test_regenerate_ending_in_a_client_action_posts_the_result(
    redis_url: str, redis_prefix: str
) -> None:
    registry = ToolRegistry()

    async def lookup(arguments: Any) -> Any:
        return {"found": arguments}

    registry.register("lookupOrder", lookup)
    async with harness(redis_url, redis_prefix, tools=registry) as h:
        latest = await _answered(h, "where is my order?")
        h.fake.script(
            Answer(text="Looking again.", tool_calls=[
                FakeToolCall("lookupOrder", {"orderId": "A1"}, id="call_r")]),
            Answer(text="It has shipped."),
        )
        opened: list[RecordingSink] = []
        await h.service.handle_reaction(
            h.reaction(latest.part_ids[0], "arrows_counterclockwise"), _opener(h, opened))
        assert [(t.tool_call_id, t.output) for t in h.fake.tool_results] == [
            ("call_r", {"found": {"orderId": "A1"}})]
        continuation = h.fake.chat_calls[-1].body
        assert "message" not in continuation and continuation["conversationId"]
        assert h.shared.messages[latest.part_ids[0]] == "Looking again.\n\nIt has shipped."


# --------------------------------------------------------------------------- honest endings


def _raw(*chunks: Any, end: str = "data: [DONE]\n\n") -> str:
    return "".join(f"data: {json.dumps(c)}\n\n" for c in chunks) + end


async def test_an_abort_half_way_is_shown_as_incomplete(
    redis_url: str, redis_prefix: str
) -> None:
    async with harness(redis_url, redis_prefix) as h:
        body = _raw(
            {"type": "start", "messageId": "m-abort"},
            {"type": "text-delta", "id": "t1", "delta": "Half of "},
            {"type": "text-delta", "id": "t1", "delta": "it"},
            {"type": "message-metadata", "messageMetadata": {"conversationId": "c-abort"}},
            {"type": "abort", "reason": "provider stopped"},
        )
        h.fake.fail_next(200, body=body, content_type="text/event-stream")
        sink = await _answered(h, "tell me")
        assert sink.joined() == "Half of it\n\n" + notices.INCOMPLETE.format(
            reason="the agent stopped before finishing")
        # The conversation id was known: it is remembered.
        await _answered(h, "more")
        assert h.fake.chat_calls[1].body["conversationId"] == "c-abort"


@pytest.mark.parametrize(("reason", "why"), [
    ("length", "it reached the agent's length limit"),
    ("content-filter", "the agent's content filter stopped it"),
    ("error", "the agent ran into an error"),
    ("other", "the agent stopped early"),
    ("unknown", "the agent stopped early"),
])
async def test_every_finish_reason_but_stop_is_incomplete(
    redis_url: str, redis_prefix: str, reason: str, why: str
) -> None:
    async with harness(redis_url, redis_prefix) as h:
        h.fake.script(Answer(text="Some of the answer", finish_reason=reason))
        sink = await _answered(h, "q")
        assert sink.joined() == "Some of the answer\n\n" + notices.INCOMPLETE.format(reason=why)
        await _answered(h, "follow")
        assert h.fake.chat_calls[-1].body.get("conversationId")


async def test_tool_rounds_beyond_the_limit_are_incomplete(
    redis_url: str, redis_prefix: str
) -> None:
    async with harness(redis_url, redis_prefix, BRIDGE_MAX_TOOL_ROUNDS=1) as h:
        h.fake.script(
            Answer(text="One.", tool_calls=[FakeToolCall("a")]),
            Answer(text="Two.", tool_calls=[FakeToolCall("b")]),
        )
        sink = await _answered(h, "q")
        assert sink.joined() == f"One.\n\nTwo.\n\n{notices.TOOL_ROUNDS}"
        assert notices.TOOL_ROUNDS.startswith("_(This answer is incomplete")


@pytest.mark.parametrize("end", [
    "data: [DONE] \n\n", "data:  [DONE]\t\r\n\r\n", "data: [DONE]\r\n\r\n", "[DONE] \n",
])
async def test_done_with_whitespace_and_crlf(redis_url: str, redis_prefix: str, end: str) -> None:
    async with harness(redis_url, redis_prefix) as h:
        body = _raw(
            {"type": "start", "messageId": "m1"},
            {"type": " text-delta ", "id": "t1", "delta": "Fine "},
            {"type": "future-chunk ", "x": 1},
            {"type": "text-delta", "id": "t1", "delta": "answer."},
            {"type": "finish", "finishReason": "stop",
             "messageMetadata": {"conversationId": "c-ws"}},
            end=end,
        ).replace("\n\n", "\r\n\r\n", 2)
        h.fake.fail_next(200, body=body, content_type="text/event-stream")
        sink = await _answered(h, "q")
        assert sink.joined() == "Fine answer."


# --------------------------------------------------------------------------- error codes

# Every code of the reference's §8 table with the status its examples give (400 where none).
CODES = [
    (400, "VALIDATION_INVALID_BODY"), (400, "VALIDATION_INVALID_JSON"),
    (401, "AUTH_MISSING_API_KEY"), (401, "AUTH_INVALID_API_KEY"),
    (401, "AUTH_EXPIRED_API_KEY"), (403, "AUTH_INSUFFICIENT_PERMISSIONS"),
    (402, "CHAT_CREDITS_EXHAUSTED"), (402, "CHAT_AGENT_CREDITS_EXHAUSTED"),
    (403, "SUBSCRIPTION_API_RESTRICTED_PLAN"), (400, "CHAT_MODEL_NOT_ALLOWED"),
    (404, "AGENT_NOT_FOUND"), (404, "RESOURCE_MESSAGE_NOT_FOUND"),
    (404, "RESOURCE_TOOL_CALL_NOT_FOUND"), (404, "CHAT_RETRY_MESSAGE_NOT_FOUND"),
    (400, "CHAT_RETRY_NO_USER_MESSAGE"), (422, "RESOURCE_MESSAGE_NOT_ASSISTANT"),
    (500, "INTERNAL_SERVER_ERROR"), (500, "CHAT_STREAMING_ERROR"),
    (503, "SERVICE_UNDER_MAINTENANCE"),
    # Recovered from on a stored conversation; on a new one they are plain errors.
    (400, "CHAT_CONVERSATION_MISMATCH"), (400, "CHAT_CONVERSATION_NOT_ONGOING"),
    (404, "RESOURCE_NOT_FOUND"),
]
SETTINGS_AT_FAULT = {
    "AUTH_MISSING_API_KEY": "CHATBASE_API_KEY", "AUTH_INVALID_API_KEY": "CHATBASE_API_KEY",
    "AUTH_EXPIRED_API_KEY": "CHATBASE_API_KEY",
    "AUTH_INSUFFICIENT_PERMISSIONS": "CHATBASE_API_KEY",
    "AGENT_NOT_FOUND": "CHATBASE_AGENT_ID", "CHAT_AGENT_CREDITS_EXHAUSTED": "CHATBASE_AGENT_ID",
    "CHAT_MODEL_NOT_ALLOWED": "CHATBASE_AGENT_ID",
    "RATE_LIMIT_TOO_MANY_REQUESTS": "CHATBASE_RATE_LIMIT",
}


@pytest.mark.parametrize(("status", "code"), CODES, ids=[c for _, c in CODES])
async def test_every_documented_error_code_has_its_own_lines(
    redis_url: str, redis_prefix: str, status: int, code: str
) -> None:
    async with harness(redis_url, redis_prefix) as h:
        h.fake.fail_next(status, code, "scripted", times=3)
        with recording() as logs:
            sink = await _answered(h, "hello")
        error = ChatbaseAPIError(code=code, message="scripted", status=status)
        line = notices.for_error(error)
        assert sink.joined() == line
        assert code not in line and "HTTP" not in line and "_" not in line
        if code not in ("INTERNAL_SERVER_ERROR", "CHAT_STREAMING_ERROR"):
            assert line != notices._FAILED, "a generic line"
        hint = operator_hint(error)
        assert code not in hint  # a sentence, not the code again
        records = logs.find("Chatbase call failed", hint, code,
                            h.fake.chat_calls[-1].request_id, level=logging.ERROR)
        assert records, logs.lines(logging.INFO)
        if code in SETTINGS_AT_FAULT:
            assert SETTINGS_AT_FAULT[code] in hint
        if status == 503:
            assert len(h.fake.chat_calls) == 3  # nothing was done: retried
        elif status >= 500:
            assert len(h.fake.chat_calls) == 1  # may have been recorded: not resent


def test_each_code_line_is_specific() -> None:
    lines = {code: notices.for_error(ChatbaseAPIError(code=code, message="m", status=s))
             for s, code in CODES}
    generic = {notices._FAILED, notices._UNREACHABLE}
    specific = {c for c, line in lines.items() if line not in generic}
    assert specific >= {c for _, c in CODES} - {"INTERNAL_SERVER_ERROR"}
    assert notices.busy(None) == notices.for_error(ChatbaseAPIError(
        code="RATE_LIMIT_TOO_MANY_REQUESTS", message="m", status=429))
    assert "CHATBASE_RATE_LIMIT" in operator_hint(ChatbaseAPIError(
        code="RATE_LIMIT_TOO_MANY_REQUESTS", message="m", status=429))
