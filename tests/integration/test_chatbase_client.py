"""The Chatbase client against the fake Chatbase over real HTTP on an ephemeral port."""

from __future__ import annotations

import fcntl
import logging
import struct
import termios
from collections.abc import AsyncIterator, Callable
from typing import Any

import aiohttp
import pytest

from bridge.chatbase import ChatbaseClient, LocalLimiter
from bridge.core.errors import (
    ChatbaseAPIError,
    ChatbaseRateLimited,
    ChatbaseUnavailable,
    InvalidUserId,
    StreamErrorChunk,
    StreamIdleTimeout,
    StreamInterrupted,
    StreamMalformed,
)
from bridge.core.models import (
    ChatResult,
    Feedback,
    StreamEvent,
    StreamFinish,
    StreamStart,
    TextDelta,
    ToolCall,
    ToolInput,
)
from tests.fakes.chatbase import (
    Answer,
    FakeChatbase,
    FakeToolCall,
    Gate,
    StreamFault,
    Variant,
)

SECRET = "sk-test-0123456789-do-not-log"
WALL = 1_800_000_000.0


class RecordingClock:
    """Sleeps return at once; the requested durations are kept for the test to check."""

    def __init__(self) -> None:
        self.t = 0.0
        self.sleeps: list[float] = []

    def now(self) -> float:
        return self.t

    async def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        self.t += seconds


class CountingLimiter:
    def __init__(self) -> None:
        self.acquired = 0

    async def acquire(self) -> None:
        self.acquired += 1


Hook = list[tuple[str, int | None, str | None]]
MakeClient = Callable[..., ChatbaseClient]


@pytest.fixture
async def fake() -> AsyncIterator[FakeChatbase]:
    async with FakeChatbase(api_key=SECRET) as server:
        yield server


@pytest.fixture
async def session() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as http:
        yield http


@pytest.fixture
def clock() -> RecordingClock:
    return RecordingClock()


@pytest.fixture
def hook() -> Hook:
    return []


@pytest.fixture
def make_client(
    fake: FakeChatbase, session: aiohttp.ClientSession, clock: RecordingClock, hook: Hook
) -> MakeClient:
    def make(**overrides: Any) -> ChatbaseClient:
        options: dict[str, Any] = {
            "session": session, "api_key": SECRET, "agent_id": fake.agent_id,
            "base_url": fake.base_url, "limiter": CountingLimiter(), "timeout": 5.0,
            "idle_timeout": 5.0, "max_wait": 30.0, "clock": clock,
            "on_request": lambda *args: hook.append(args), "wall_clock": lambda: WALL,
        }
        options.update(overrides)
        return ChatbaseClient(**options)

    return make


@pytest.fixture
def client(make_client: MakeClient) -> ChatbaseClient:
    return make_client()


async def stream_all(client: ChatbaseClient, **kwargs: Any) -> tuple[list[StreamEvent],
                                                                      ChatResult]:
    async with client.chat_stream(**kwargs) as stream:
        events = [event async for event in stream]
        return events, stream.result()


# ---------------------------------------------------------------------- chat


async def test_streamed_chat_new_conversation(
    fake: FakeChatbase, client: ChatbaseClient, session: aiohttp.ClientSession, hook: Hook
) -> None:
    fake.script(Answer(deltas=["Hel", "lo ", "wörld 👋"], credits=2.5))
    async with client.chat_stream(message="hi there", user_id="slack.T1.U2") as stream:
        assert stream.request_id == fake.chat_calls[0].request_id
        events = [event async for event in stream]
        result = stream.result()

    assert isinstance(events[0], StreamStart)
    assert [e.delta for e in events if isinstance(e, TextDelta)] == ["Hel", "lo ", "wörld 👋"]
    assert isinstance(events[-1], StreamFinish)
    (conv,) = fake.conversations.values()
    assert [m.role for m in conv.messages] == ["user", "assistant"]
    assert result == ChatResult(
        text="Hello wörld 👋", message_id=conv.messages[1].id, conversation_id=conv.id,
        user_message_id=conv.messages[0].id, user_id="slack.T1.U2", credits=2.5,
        finish_reason="stop", request_id=stream.request_id,
    )
    call = fake.chat_calls[0]
    assert call.body == {"message": "hi there", "userId": "slack.T1.U2", "stream": True}
    assert call.headers["Authorization"] == f"Bearer {SECRET}"
    assert call.headers["Accept"] == "text/event-stream"
    assert hook == [("chat", 200, None)]
    assert not session.closed


async def test_follow_up_continues_the_conversation(
    fake: FakeChatbase, client: ChatbaseClient
) -> None:
    _, first = await stream_all(client, message="one", user_id="u.1")
    assert first.conversation_id is not None
    _, second = await stream_all(client, message="two", conversation_id=first.conversation_id)
    assert second.conversation_id == first.conversation_id
    assert second.text == "Echo: two"
    assert fake.chat_calls[1].body == {
        "message": "two", "conversationId": first.conversation_id, "stream": True}
    conv = fake.conversations[first.conversation_id]
    assert [m.text for m in conv.messages] == ["one", "Echo: one", "two", "Echo: two"]


@pytest.mark.parametrize("variant", list(Variant))
async def test_every_stream_variant_gives_the_same_answer(
    fake: FakeChatbase, client: ChatbaseClient, variant: Variant
) -> None:
    fake.script(Answer(text="Same text, ünïcode ✓\nline two", variant=variant, credits=1.5))
    events, result = await stream_all(client, message="q", user_id="u.1")
    (conv,) = fake.conversations.values()
    assert result.text == "Same text, ünïcode ✓\nline two"
    assert result.message_id == conv.messages[1].id
    assert result.conversation_id == conv.id
    assert result.credits == 1.5
    assert result.finish_reason == "stop"
    assert isinstance(events[-1], StreamFinish)
    assert events[-1].metadata.conversation_id == conv.id


async def test_plain_chat(fake: FakeChatbase, client: ChatbaseClient) -> None:
    result = await client.chat(message="plain", user_id="u.2")
    (conv,) = fake.conversations.values()
    assert result.text == "Echo: plain"
    assert (result.message_id, result.conversation_id, result.user_id) == (
        conv.messages[1].id, conv.id, "u.2")
    assert result.request_id == fake.chat_calls[0].request_id
    assert fake.chat_calls[0].body == {"message": "plain", "userId": "u.2", "stream": False}
    assert fake.chat_calls[0].headers["Accept"] == "application/json"


async def test_tool_call_round(fake: FakeChatbase, client: ChatbaseClient) -> None:
    fake.script(Answer(text="", tool_calls=[FakeToolCall("lookupOrder", {"orderId": "O-1"},
                                                         id="call_1")]),
                Answer(text="Your order shipped."))
    events, first = await stream_all(client, message="where is my order", user_id="u.3")
    call = ToolCall("call_1", "lookupOrder", {"orderId": "O-1"})
    assert ToolInput(call) in events
    assert first.tool_calls == (call,)
    assert first.finish_reason == "tool-calls"
    assert first.conversation_id is not None

    await client.submit_tool_result(conversation_id=first.conversation_id,
                                    tool_call_id="call_1", output={"status": "shipped"})
    assert fake.tool_results[0].body == {"toolCallId": "call_1",
                                         "output": {"status": "shipped"}}
    _, second = await stream_all(client, message=None, conversation_id=first.conversation_id)
    assert second.text == "Your order shipped."
    assert fake.chat_calls[1].body == {"conversationId": first.conversation_id, "stream": True}

    with pytest.raises(ChatbaseAPIError) as info:
        await client.submit_tool_result(conversation_id=first.conversation_id,
                                        tool_call_id="call_1", output=None)
    assert (info.value.code, info.value.status) == ("RESOURCE_TOOL_CALL_NOT_FOUND", 404)


async def test_retry_regenerates(fake: FakeChatbase, client: ChatbaseClient) -> None:
    _, first = await stream_all(client, message="tell me", user_id="u.4")
    assert first.message_id is not None and first.conversation_id is not None
    fake.script(Answer(text="A better answer"))
    async with client.retry_stream(conversation_id=first.conversation_id,
                                   message_id=first.message_id) as stream:
        result = await stream.read_all()
    assert result.text == "A better answer"
    assert result.message_id != first.message_id
    assert fake.retry_calls[0].body == {"messageId": first.message_id, "stream": True}
    conv = fake.conversations[first.conversation_id]
    assert [m.text for m in conv.messages] == ["tell me", "A better answer"]

    with pytest.raises(ChatbaseAPIError) as info:
        async with client.retry_stream(conversation_id=first.conversation_id,
                                       message_id="msg_gone"):
            pass
    assert info.value.code == "CHAT_RETRY_MESSAGE_NOT_FOUND"


async def test_conversation_not_ongoing(fake: FakeChatbase, client: ChatbaseClient) -> None:
    _, first = await stream_all(client, message="hi", user_id="u.5")
    assert first.conversation_id is not None
    fake.end_conversation(first.conversation_id)
    with pytest.raises(ChatbaseAPIError) as info:
        await stream_all(client, message="again", conversation_id=first.conversation_id)
    assert info.value.code == "CHAT_CONVERSATION_NOT_ONGOING"
    assert len(fake.chat_calls) == 2  # an error answer of this kind is not retried


# ---------------------------------------------------------------------- feedback and reads


async def test_feedback(fake: FakeChatbase, client: ChatbaseClient) -> None:
    _, result = await stream_all(client, message="rate me", user_id="u.6")
    assert result.conversation_id is not None and result.message_id is not None
    conv = fake.conversations[result.conversation_id]
    for value, expected in ((Feedback.POSITIVE, "positive"), (Feedback.NEGATIVE, "negative"),
                            (None, None)):
        await client.set_feedback(conversation_id=conv.id, message_id=result.message_id,
                                  feedback=value)
        assert fake.feedback_calls[-1].body == {"feedback": expected}
        assert conv.messages[1].feedback == expected
    assert [r.method for r in fake.calls("feedback")] == ["PATCH"] * 3

    with pytest.raises(ChatbaseAPIError) as info:
        await client.set_feedback(conversation_id=conv.id, message_id="msg_nope",
                                  feedback=Feedback.POSITIVE)
    assert (info.value.code, info.value.status) == ("RESOURCE_MESSAGE_NOT_FOUND", 404)
    with pytest.raises(ChatbaseAPIError) as info:
        await client.set_feedback(conversation_id=conv.id, message_id=conv.messages[0].id,
                                  feedback=Feedback.POSITIVE)
    assert (info.value.code, info.value.status) == ("RESOURCE_MESSAGE_NOT_ASSISTANT", 422)


async def test_get_conversation_and_message_pages(
    fake: FakeChatbase, client: ChatbaseClient
) -> None:
    conv = fake.seed_conversation(
        user_id="u.7", messages=[("user" if i % 2 == 0 else "assistant", f"m{i}")
                                 for i in range(7)],
    )
    data = await client.get_conversation(conv.id)
    assert data["id"] == conv.id and data["userId"] == "u.7"
    assert [m["parts"][0]["text"] for m in data["messages"]] == [f"m{i}" for i in range(7)]

    texts = [m["parts"][0]["text"] async for m in client.list_messages(conv.id, limit=3)]
    # Newest page first, chronological within each page.
    assert texts == ["m4", "m5", "m6", "m1", "m2", "m3", "m0"]
    pages = fake.calls("list_messages")
    assert [r.query.get("limit") for r in pages] == ["3", "3", "3"]
    assert "cursor" not in pages[0].query and "cursor" in pages[1].query

    with pytest.raises(ChatbaseAPIError) as info:
        await client.get_conversation("no-such-conversation")
    assert (info.value.code, info.value.status) == ("RESOURCE_NOT_FOUND", 404)


async def test_conversation_lists(fake: FakeChatbase, client: ChatbaseClient) -> None:
    day = 86400
    jan1 = 1_704_067_200  # 2024-01-01T00:00:00Z
    for i in range(5):
        fake.seed_conversation(user_id="u.a" if i % 2 == 0 else "u.b",
                               created_at=jan1 + i * day, updated_at=jan1 + i * day,
                               conversation_id=f"c{i}")
    mine = [c["id"] async for c in client.list_user_conversations("u.a", limit=2)]
    assert mine == ["c4", "c2", "c0"]
    assert len(fake.calls("list_user_conversations")) == 2

    everything = [c["id"] async for c in client.list_conversations(limit=2)]
    assert everything == ["c4", "c3", "c2", "c1", "c0"]
    window = [c["id"] async for c in client.list_conversations(
        start_date="2024-01-02", end_date="2024-01-03")]
    assert window == ["c2", "c1"]
    assert fake.calls("list_conversations")[-1].query == {
        "limit": "100", "startDate": "2024-01-02", "endDate": "2024-01-03"}

    with pytest.raises(ChatbaseAPIError) as info:
        [c async for c in client.list_conversations(start_date="2024-02-01",
                                                     end_date="2024-01-01")]
    assert info.value.code == "VALIDATION_INVALID_DATE_RANGE"
    with pytest.raises(InvalidUserId):
        [c async for c in client.list_user_conversations("not/legal")]


async def test_health_needs_no_key(fake: FakeChatbase, client: ChatbaseClient) -> None:
    body = await client.health()
    assert body["status"] == "ok" and isinstance(body["timestamp"], int)
    assert "Authorization" not in fake.calls("health")[0].headers


# ---------------------------------------------------------------------- errors


async def test_error_answer_maps_code_status_and_request_id(
    fake: FakeChatbase, client: ChatbaseClient, hook: Hook, caplog: pytest.LogCaptureFixture
) -> None:
    fake.fail_next(402, "CHAT_CREDITS_EXHAUSTED", "Message limit reached")
    with caplog.at_level(logging.DEBUG), pytest.raises(ChatbaseAPIError) as info:
        await stream_all(client, message="a private question", user_id="u.8")
    error = info.value
    assert (error.code, error.status, error.api_message) == (
        "CHAT_CREDITS_EXHAUSTED", 402, "Message limit reached")
    assert error.request_id == fake.chat_calls[0].request_id
    assert len(fake.chat_calls) == 1
    assert hook == [("chat", 402, "CHAT_CREDITS_EXHAUSTED")]
    warnings = [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING]
    assert any("CHAT_CREDITS_EXHAUSTED" in m and error.request_id in m for m in warnings)
    assert not any("a private question" in m for m in warnings)
    assert SECRET not in caplog.text and SECRET not in str(error)


async def test_validation_details(fake: FakeChatbase, client: ChatbaseClient) -> None:
    with pytest.raises(ChatbaseAPIError) as info:
        await client.chat(message="")
    assert info.value.code == "VALIDATION_INVALID_BODY"
    assert info.value.details == {"message": "String must contain at least 1 character(s)"}


async def test_auth_and_agent_errors(fake: FakeChatbase, make_client: MakeClient) -> None:
    with pytest.raises(ChatbaseAPIError) as info:
        await make_client(api_key="wrong").chat(message="x")
    assert (info.value.code, info.value.status) == ("AUTH_INVALID_API_KEY", 401)
    with pytest.raises(ChatbaseAPIError) as info:
        await make_client(agent_id="other-agent").chat(message="x")
    assert info.value.code == "AGENT_NOT_FOUND"
    with pytest.raises(ChatbaseAPIError) as info:
        await make_client(api_key="").get_conversation("c")
    assert info.value.code in ("AUTH_MISSING_API_KEY", "AUTH_INVALID_API_KEY")
    assert len(fake.requests) == 3


async def test_non_json_error_body(fake: FakeChatbase, client: ChatbaseClient) -> None:
    fake.fail_next(502, body="<html><h1>502 Bad Gateway</h1></html>", content_type="text/html",
                   endpoint="get_conversation", times=3)
    with pytest.raises(ChatbaseAPIError) as info:
        await client.get_conversation("c")
    assert info.value.code == "HTTP_502"
    assert info.value.api_message == "<html><h1>502 Bad Gateway</h1></html>"
    assert info.value.request_id == fake.requests[-1].request_id
    assert len(fake.requests) == 3  # a GET is retried twice on 5xx


async def test_user_id_checked_before_sending(fake: FakeChatbase, client: ChatbaseClient) -> None:
    with pytest.raises(InvalidUserId):
        client.chat_stream(message="x", user_id="slack:T1/U2")
    with pytest.raises(InvalidUserId):
        await client.chat(message="x", user_id="x" * 129)
    assert fake.requests == []
    await client.chat(message="x", user_id="x" * 128)
    assert len(fake.chat_calls) == 1


# ---------------------------------------------------------------------- rate limits


async def test_429_honours_retry_after(
    fake: FakeChatbase, client: ChatbaseClient, clock: RecordingClock, hook: Hook
) -> None:
    fake.rate_limit_next(retry_after=3, reset=WALL + 50)
    _, result = await stream_all(client, message="x", user_id="u.1")
    assert result.text == "Echo: x"
    assert clock.sleeps == [3.0]
    assert hook == [("chat", 429, "RATE_LIMIT_TOO_MANY_REQUESTS"), ("chat", 200, None)]


@pytest.mark.parametrize(("reset", "expected"), [
    ((WALL + 4) * 1000, 4.0),  # milliseconds since the epoch
    (WALL + 7, 7.0),  # seconds since the epoch
])
async def test_429_uses_the_reset_header(
    fake: FakeChatbase, client: ChatbaseClient, clock: RecordingClock, reset: float,
    expected: float,
) -> None:
    fake.rate_limit_next(reset=reset, endpoint="tool_result")
    conv = fake.seed_conversation(user_id="u")
    conv.pending_tool_calls["call_9"] = "t"
    await client.submit_tool_result(conversation_id=conv.id, tool_call_id="call_9", output=1)
    assert clock.sleeps == [pytest.approx(expected)]
    assert len(fake.calls("tool_result")) == 2  # a throttled POST is safe to send again


async def test_429_without_headers_backs_off(
    fake: FakeChatbase, client: ChatbaseClient, clock: RecordingClock
) -> None:
    fake.rate_limit_next(times=2, endpoint="health")
    await client.health()
    assert len(clock.sleeps) == 2
    assert 0.25 <= clock.sleeps[0] <= 0.75
    assert 0.5 <= clock.sleeps[1] <= 1.5


async def test_429_gives_up_beyond_max_wait(
    fake: FakeChatbase, make_client: MakeClient, clock: RecordingClock
) -> None:
    client = make_client(max_wait=5.0)
    fake.rate_limit_next(retry_after=2, times=3)
    with pytest.raises(ChatbaseRateLimited) as info:
        await stream_all(client, message="x", user_id="u.1")
    assert clock.sleeps == [2.0, 2.0]  # a third wait would make 6 s > 5 s
    assert info.value.retry_after == 2.0
    assert info.value.code == "RATE_LIMIT_TOO_MANY_REQUESTS"
    assert info.value.request_id == fake.chat_calls[-1].request_id
    assert len(fake.chat_calls) == 3

    fake.rate_limit_next(retry_after=60)
    with pytest.raises(ChatbaseRateLimited):
        await client.chat(message="x")
    assert clock.sleeps == [2.0, 2.0]


# ---------------------------------------------------------------------- transient failures


async def test_stream_is_not_resent_after_a_5xx_that_reached_chatbase(
    fake: FakeChatbase, client: ChatbaseClient, clock: RecordingClock
) -> None:
    # The fake recorded the call before failing it: a resend could charge the turn twice.
    for status, code in ((500, "INTERNAL_SERVER_ERROR"), (502, "HTTP_502"), (504, "HTTP_504")):
        before = len(fake.chat_calls)
        fake.fail_next(status, code)
        with pytest.raises(ChatbaseAPIError) as info:
            await stream_all(client, message="x", user_id="u.1")
        assert info.value.status == status
        assert info.value.request_id == fake.chat_calls[-1].request_id
        assert len(fake.chat_calls) == before + 1
    assert clock.sleeps == []


async def test_stream_retries_503_and_429_before_the_body(
    fake: FakeChatbase, client: ChatbaseClient, clock: RecordingClock
) -> None:
    fake.fail_next(503, "SERVICE_UNDER_MAINTENANCE", times=1)
    fake.rate_limit_next(retry_after=1)
    _, result = await stream_all(client, message="x", user_id="u.1")
    assert result.text == "Echo: x"
    assert len(fake.chat_calls) == 3
    assert len(clock.sleeps) == 2
    assert len(fake.conversations) == 1


async def test_plain_chat_is_not_replayed_after_a_500(
    fake: FakeChatbase, client: ChatbaseClient
) -> None:
    fake.fail_next(500, "INTERNAL_SERVER_ERROR")
    with pytest.raises(ChatbaseAPIError) as info:
        await client.chat(message="x")
    assert info.value.code == "INTERNAL_SERVER_ERROR"
    assert len(fake.chat_calls) == 1
    # ... but maintenance (rejected before anything was done) is.
    fake.fail_next(503, "SERVICE_UNDER_MAINTENANCE")
    assert (await client.chat(message="y")).text == "Echo: y"
    assert len(fake.chat_calls) == 3


async def test_transient_failures_give_up_after_three_attempts(
    fake: FakeChatbase, client: ChatbaseClient
) -> None:
    fake.fail_next(503, "SERVICE_UNDER_MAINTENANCE", endpoint="feedback", times=5)
    with pytest.raises(ChatbaseAPIError) as info:
        await client.set_feedback(conversation_id="c", message_id="m", feedback=None)
    assert info.value.code == "SERVICE_UNDER_MAINTENANCE"
    assert len(fake.calls("feedback")) == 3


async def test_dropped_connection_before_headers(
    fake: FakeChatbase, client: ChatbaseClient
) -> None:
    fake.drop_next()
    with pytest.raises(ChatbaseUnavailable):
        await stream_all(client, message="x", user_id="u.1")
    assert len(fake.chat_calls) == 1  # it reached Chatbase: not sent again

    fake.drop_next(endpoint="tool_result")
    with pytest.raises(ChatbaseUnavailable) as info:
        await client.submit_tool_result(conversation_id="c", tool_call_id="t", output=None)
    assert fake.base_url in str(info.value)
    assert len(fake.calls("tool_result")) == 1  # it may have been executed: not replayed


async def test_timeout_before_headers(fake: FakeChatbase, make_client: MakeClient) -> None:
    client = make_client(timeout=0.3, idle_timeout=0.3)
    fake.stall_next()
    with pytest.raises(ChatbaseUnavailable, match="did not answer"):
        await stream_all(client, message="x", user_id="u.1")
    assert fake.stalls == 1 and len(fake.chat_calls) == 1  # sent: not sent again

    fake.stall_next()
    with pytest.raises(ChatbaseUnavailable, match="did not answer"):
        await client.chat(message="y")
    assert len(fake.chat_calls) == 2


async def test_connection_refused_names_the_url(
    session: aiohttp.ClientSession, clock: RecordingClock, caplog: pytest.LogCaptureFixture
) -> None:
    async with FakeChatbase() as gone:
        url = gone.base_url
    calls: Hook = []
    client = ChatbaseClient(session=session, api_key=SECRET, agent_id="a", base_url=url,
                            limiter=LocalLimiter(), clock=clock,
                            on_request=lambda *args: calls.append(args))
    with caplog.at_level(logging.DEBUG), pytest.raises(ChatbaseUnavailable) as info:
        await client.chat(message="x")
    assert url in str(info.value)
    assert calls == [("chat", None, None)] * 3  # refused: nothing was sent, so retried
    assert len(clock.sleeps) == 2
    assert SECRET not in caplog.text and SECRET not in str(info.value)


# ---------------------------------------------------------------------- broken streams


async def test_no_retry_once_the_body_started(fake: FakeChatbase, client: ChatbaseClient) -> None:
    fake.script(Answer(deltas=["a", "b", "c", "d"], fault=StreamFault.DISCONNECT, fault_after=2))
    seen: list[str] = []
    with pytest.raises(StreamInterrupted) as info:
        async with client.chat_stream(message="x", user_id="u.1") as stream:
            async for event in stream:
                if isinstance(event, TextDelta):
                    seen.append(event.delta)
    assert seen == ["a", "b"]
    assert stream.text == "ab"
    assert info.value.request_id == fake.chat_calls[0].request_id
    assert len(fake.chat_calls) == 1


@pytest.mark.parametrize(("fault", "error"), [
    (StreamFault.EOF, StreamInterrupted),
    (StreamFault.MALFORMED, StreamMalformed),
    (StreamFault.ERROR_CHUNK, StreamErrorChunk),
    (StreamFault.ERROR_OBJECT, StreamErrorChunk),
])
async def test_broken_streams(
    fake: FakeChatbase, client: ChatbaseClient, fault: StreamFault, error: type[Exception]
) -> None:
    fake.script(Answer(deltas=["x", "y"], fault=fault, fault_after=1,
                       error_text="provider down", error_code="CHAT_STREAMING_ERROR"))
    deltas: list[str] = []
    with pytest.raises(error) as info:
        async with client.chat_stream(message="q", user_id="u.1") as stream:
            async for event in stream:
                if isinstance(event, TextDelta):
                    deltas.append(event.delta)
    assert deltas == ["x"]
    if isinstance(info.value, StreamErrorChunk):
        assert info.value.error_text == "provider down"
        expected = "CHAT_STREAMING_ERROR" if fault is StreamFault.ERROR_OBJECT else None
        assert info.value.code == expected
    assert len(fake.chat_calls) == 1


async def test_idle_timeout(fake: FakeChatbase, make_client: MakeClient) -> None:
    client = make_client(idle_timeout=0.3)
    fake.script(Answer(deltas=["first", "never"], fault=StreamFault.STALL, fault_after=1))
    async with client.chat_stream(message="q", user_id="u.1") as stream:
        events = aiter(stream)
        while not isinstance(await anext(events), TextDelta):
            pass
        await fake.wait_for(lambda: fake.stalls == 1)
        with pytest.raises(StreamIdleTimeout) as info:
            await anext(events)
    assert info.value.request_id == stream.request_id
    await fake.wait_for(lambda: fake.streams_aborted == 1)


async def test_deltas_arrive_as_they_are_sent(
    fake: FakeChatbase, client: ChatbaseClient
) -> None:
    gate = Gate()
    fake.script(Answer(deltas=["one ", "two ", "three"], gate=gate))
    async with client.chat_stream(message="q", user_id="u.1") as stream:
        events = aiter(stream)
        assert isinstance(await anext(events), StreamStart)
        for expected in ("one ", "two "):
            gate.release()
            # The fake holds the next delta until released: each must arrive on its own.
            assert await anext(events) == TextDelta(expected)
            assert gate.sent == len(stream.text.split())
        gate.open()
        result = await stream.read_all()
    assert result.text == "one two three"


async def test_a_held_stream_leaves_what_arrives_in_the_socket(
    fake: FakeChatbase, make_client: MakeClient
) -> None:
    """``hold``: while the reader is held the connection is not read, so the deltas sent
    meanwhile wait in the socket's receive queue (the kernel's, not aiohttp's buffer) and
    the next read takes them in together; reading resumes after the hold."""
    responses: list[aiohttp.ClientResponse] = []

    async def on_request_end(_: Any, __: Any, params: aiohttp.TraceRequestEndParams) -> None:
        responses.append(params.response)

    trace = aiohttp.TraceConfig()
    trace.on_request_end.append(on_request_end)
    async with aiohttp.ClientSession(trace_configs=[trace]) as http:
        client = make_client(session=http)
        gate = Gate()
        deltas = [f"w{i} " for i in range(6)]
        fake.script(Answer(deltas=deltas, gate=gate))
        async with client.chat_stream(message="q", user_id="u.1") as stream:
            gate.release()
            while not stream.text:
                await stream.read_batch()
            transport = responses[0].connection.transport  # type: ignore[union-attr]
            sock = transport.get_extra_info("socket")  # type: ignore[union-attr]

            def unread() -> int:
                raw = fcntl.ioctl(sock.fileno(), termios.FIONREAD, b"\0\0\0\0")
                value: int = struct.unpack("i", raw)[0]
                return value

            seen: list[int] = []

            async def meanwhile() -> None:
                gate.release(5)
                await gate.wait_sent(6)
                # A round trip on another connection: the loop polls its sockets, and a
                # stream that was being read would take the deltas in now.
                await client.health()
                seen.append(unread())

            await stream.hold(meanwhile())
            assert seen[0] > 0 and stream.text == "w0 "
            events = await stream.read_batch()
            assert [e for e in events if isinstance(e, TextDelta)] == [
                TextDelta(d) for d in deltas[1:]]
            assert unread() == 0
            gate.open()
            result = await stream.read_all()
    assert result.text == "".join(deltas)


async def test_leaving_early_releases_the_response(
    fake: FakeChatbase, client: ChatbaseClient
) -> None:
    gate = Gate()
    fake.script(Answer(deltas=["a", "b", "c"], gate=gate))
    gate.release()
    async with client.chat_stream(message="q", user_id="u.1") as stream:
        async for event in stream:
            if isinstance(event, TextDelta):
                break
        with pytest.raises(RuntimeError):
            stream.result()
    await fake.wait_for(lambda: fake.streams_aborted == 1)
    assert fake.streams_finished == 0
    # The session is still usable.
    assert (await client.chat(message="again")).text == "Echo: again"


async def test_limiter_is_asked_for_every_request(
    fake: FakeChatbase, make_client: MakeClient
) -> None:
    limiter = CountingLimiter()
    client = make_client(limiter=limiter)
    fake.fail_next(503, "SERVICE_UNDER_MAINTENANCE")
    await client.chat(message="x")
    await client.health()
    assert limiter.acquired == 3 == len(fake.requests)


async def test_json_answer_to_a_streaming_request(
    fake: FakeChatbase, client: ChatbaseClient
) -> None:
    fake.script(Answer(text="All at once", json_answer=True, credits=3))
    events, result = await stream_all(client, message="q", user_id="u.1")
    (conv,) = fake.conversations.values()
    assert [type(e) for e in events][:2] == [StreamStart, TextDelta]
    assert isinstance(events[-1], StreamFinish)
    assert (result.text, result.message_id, result.conversation_id, result.credits) == (
        "All at once", conv.messages[1].id, conv.id, 3.0)


async def test_finish_without_done_on_an_open_connection(
    fake: FakeChatbase, make_client: MakeClient
) -> None:
    # Neither [DONE] nor EOF after finish: the answer still completes, after a short grace.
    client = make_client(idle_timeout=0.3)
    fake.script(Answer(text="Done anyway", variant=Variant.NO_DONE, hold_open=True))
    events, result = await stream_all(client, message="q", user_id="u.1")
    assert isinstance(events[-1], StreamFinish)
    assert result.text == "Done anyway" and result.finish_reason == "stop"
    await fake.wait_for(lambda: fake.streams_aborted == 1)
