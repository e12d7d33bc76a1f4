"""Chatbase fault matrix through the real relay service (fake Chatbase over HTTP, real Redis).

Each fault is checked from both sides: what the person sees (the reply's final text on a
recording sink: an exact answer, a plain notice, or the text shown so far marked as cut off;
never a bare placeholder or a leftover progress mark) and what the operator sees (a log
record naming the Chatbase error code and request id, or the address that failed).
"""

from __future__ import annotations

import json
import logging
import socket
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import pytest

from bridge.core import notices
from tests.fakes.chatbase import Answer, FakeChatbase, StreamFault
from tests.fakes.clock import FakeClock
from tests.reliability.rig import Records, recording, rig

MARK = "▌"
CONFIG = notices._CONFIG
UNREACHABLE = notices._UNREACHABLE


def closed_port() -> int:
    """A loopback port nothing listens on (refuses connections)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def cut(text: str, reason: str) -> str:
    return f"{text}\n\n" + notices.CUT_OFF.format(reason=reason)


def last_request_id(fake: FakeChatbase) -> str:
    return fake.chat_calls[-1].request_id


def sse(*chunks: Any) -> str:
    return "".join(f"data: {json.dumps(c)}\n\n" for c in chunks)


@dataclass
class Case:
    name: str
    setup: Callable[[FakeChatbase], None] = lambda fake: None
    # What the reply must read in the end; a callable gets the fake (ids differ per run).
    text: str | Callable[[FakeChatbase], str] = "Echo: hello there"
    # Parts of one operator log record (WARNING or above unless ``level`` says otherwise).
    log: Callable[[FakeChatbase, str], tuple[str, ...]] = lambda fake, base: ()
    level: int = logging.WARNING
    outcome: str = "answered"
    answered: bool = True
    rig: dict[str, Any] = field(default_factory=dict)
    chat_calls: int | None = None  # how many chat calls must reach Chatbase, when it matters


PARTIAL = Answer(deltas=["The first ", "part, ", "then more"], fault_after=2)

CASES = [
    Case("refused connection", text=UNREACHABLE, outcome="error", answered=False,
         rig={"chatbase_url": "dead"},
         log=lambda fake, base: ("Chatbase call failed", base, "could not be reached")),
    Case("timeout before headers", setup=lambda f: f.stall_next(times=3), text=UNREACHABLE,
         outcome="error", answered=False, rig={"chatbase_timeout": 0.2},
         log=lambda fake, base: ("Chatbase call failed", base, "did not answer chat within")),
    Case("401 invalid key", text=CONFIG, outcome="error", answered=False,
         rig={"api_key": "wrong-api-key-value"},
         log=lambda f, b: ("AUTH_INVALID_API_KEY", "HTTP 401", last_request_id(f))),
    Case("402 credits", setup=lambda f: f.fail_next(402, "CHAT_CREDITS_EXHAUSTED", "No credits"),
         text=notices._CREDITS, outcome="error", answered=False,
         log=lambda f, b: ("CHAT_CREDITS_EXHAUSTED", "HTTP 402", last_request_id(f))),
    Case("403 permissions",
         setup=lambda f: f.fail_next(403, "AUTH_INSUFFICIENT_PERMISSIONS", "Not allowed"),
         text=notices._BY_CODE["AUTH_INSUFFICIENT_PERMISSIONS"], outcome="error", answered=False,
         log=lambda f, b: ("AUTH_INSUFFICIENT_PERMISSIONS", "HTTP 403", last_request_id(f))),
    Case("404 agent", text=notices._BY_CODE["AGENT_NOT_FOUND"], outcome="error", answered=False,
         rig={"agent_id": "no-such-agent"},
         log=lambda f, b: ("AGENT_NOT_FOUND", "HTTP 404", last_request_id(f))),
    Case("429 with Retry-After, waited out", setup=lambda f: f.rate_limit_next(retry_after=3),
         log=lambda f, b: ("RATE_LIMIT_TOO_MANY_REQUESTS", "waiting 3.00s",
                           f.chat_calls[0].request_id)),
    Case("429 with Retry-After beyond the wait budget",
         setup=lambda f: f.rate_limit_next(retry_after=120), text=notices.busy(120),
         outcome="error", answered=False,
         log=lambda f, b: ("RATE_LIMIT_TOO_MANY_REQUESTS", "giving up", last_request_id(f))),
    Case("429 without Retry-After, backed off", setup=lambda f: f.rate_limit_next(times=2),
         log=lambda f, b: ("RATE_LIMIT_TOO_MANY_REQUESTS", "waiting",
                           f.chat_calls[1].request_id)),
    Case("429 without Retry-After, for too long",
         setup=lambda f: f.rate_limit_next(times=11),
         text=lambda f: notices.busy(None).split(" Please")[0], outcome="error",
         answered=False,
         log=lambda f, b: ("RATE_LIMIT_TOO_MANY_REQUESTS", "giving up", last_request_id(f))),
    # A 500 after the call reached Chatbase is not resent (it may have been recorded and
    # charged): one line for the user, the request id for the operator.
    Case("500 once, not resent", setup=lambda f: f.fail_next(500, "INTERNAL_SERVER_ERROR"),
         text=notices._FAILED, outcome="error", answered=False, chat_calls=1,
         log=lambda f, b: ("not sent again", f.chat_calls[0].request_id)),
    Case("502 once, not resent", setup=lambda f: f.fail_next(502, body="Bad Gateway"),
         text=notices._FAILED, outcome="error", answered=False, chat_calls=1,
         log=lambda f, b: ("HTTP 502", "not resent", f.chat_calls[0].request_id)),
    Case("503 once, retried", chat_calls=2,
         setup=lambda f: f.fail_next(503, "SERVICE_UNDER_MAINTENANCE"),
         log=lambda f, b: ("SERVICE_UNDER_MAINTENANCE", "retry 1",
                           f.chat_calls[0].request_id)),
    Case("503 maintenance",
         setup=lambda f: f.fail_next(503, "SERVICE_UNDER_MAINTENANCE", times=3),
         text=notices._BY_CODE["SERVICE_UNDER_MAINTENANCE"], outcome="error", answered=False,
         log=lambda f, b: ("SERVICE_UNDER_MAINTENANCE", "HTTP 503", last_request_id(f))),
    Case("idle stream", setup=lambda f: f.script(Answer(
            deltas=PARTIAL.deltas, fault=StreamFault.STALL, fault_after=2)),
         text=cut("The first part, ", "the agent stopped responding"), outcome="cut_off",
         answered=False, rig={"BRIDGE_STREAM_IDLE_TIMEOUT": 0.3},
         log=lambda f, b: ("StreamIdleTimeout", last_request_id(f))),
    Case("disconnect mid-stream", setup=lambda f: f.script(Answer(
            deltas=PARTIAL.deltas, fault=StreamFault.DISCONNECT, fault_after=2)),
         text=cut("The first part, ", "the connection to the agent broke"),
         outcome="cut_off", answered=False,
         log=lambda f, b: ("StreamInterrupted", last_request_id(f))),
    Case("malformed frame", setup=lambda f: f.script(Answer(
            deltas=PARTIAL.deltas, fault=StreamFault.MALFORMED, fault_after=2)),
         text=cut("The first part, ", "the connection to the agent broke"),
         outcome="cut_off", answered=False,
         log=lambda f, b: ("StreamMalformed", last_request_id(f))),
    Case("error chunk", setup=lambda f: f.script(Answer(
            deltas=PARTIAL.deltas, fault=StreamFault.ERROR_OBJECT, fault_after=2,
            error_code="CHAT_STREAMING_ERROR")),
         text=cut("The first part, ", "the agent reported an error"),
         outcome="cut_off", answered=False,
         log=lambda f, b: ("CHAT_STREAMING_ERROR", last_request_id(f))),
    Case("error chunk before any text", setup=lambda f: f.script(Answer(
            deltas=PARTIAL.deltas, fault=StreamFault.ERROR_CHUNK, fault_after=0)),
         text=notices._BROKEN, outcome="error", answered=False,
         log=lambda f, b: ("Chatbase call failed", "The model provider failed",
                           last_request_id(f))),
    Case("unknown chunk types", setup=lambda f: f.fail_next(
            200, body=sse(
                {"type": "start", "messageId": "m1"},
                {"type": "reasoning-delta", "delta": "thinking hard"},
                {"type": "text-delta", "id": "t1", "delta": "Known "},
                {"type": "source-url", "url": "https://example.test/"},
                {"type": "data-custom", "data": {"x": 1}},
                {"type": "text-delta", "id": "t1", "delta": "text only."},
                {"type": "finish", "finishReason": "stop",
                 "messageMetadata": {"conversationId": "c-unknown"}},
            ) + "data: [DONE]\n\n", content_type="text/event-stream"),
         # The source-url chunk is known (BRIDGE_SHOW_SOURCES): listed under the answer.
         text="Known text only.\n\n**Sources**\n1. [example.test](https://example.test/)"),
    Case("EOF without finish", setup=lambda f: f.script(Answer(
            deltas=PARTIAL.deltas, fault=StreamFault.EOF, fault_after=2)),
         text=cut("The first part, ", "the connection to the agent broke"),
         outcome="cut_off", answered=False,
         log=lambda f, b: ("StreamInterrupted", last_request_id(f))),
]


@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
async def test_chatbase_fault(redis_url: str, redis_prefix: str, case: Case) -> None:
    """One fault: what the user sees and what the operator log says."""
    options = dict(case.rig)
    base = ""
    if options.get("chatbase_url") == "dead":
        base = f"http://127.0.0.1:{closed_port()}/api/v2"
        options["chatbase_url"] = base
    async with rig(redis_url, redis_prefix, **options) as r:
        base = base or r.fake.base_url
        case.setup(r.fake)
        sink = r.sink()
        with recording() as logs:
            await r.service.handle_message(r.message("hello there"), sink)
        expected = case.text(r.fake) if callable(case.text) else case.text
        shown = sink.joined()
        if callable(case.text):
            assert shown.startswith(expected), shown
        else:
            assert shown == expected
        assert MARK not in shown and shown.strip()
        assert sink.finished.is_set() and sink.answered is case.answered
        assert r.outcome(case.outcome) == 1
        if case.chat_calls is not None:
            assert len(r.fake.chat_calls) == case.chat_calls
        parts = case.log(r.fake, base)
        if parts:
            assert logs.find(*parts, level=case.level), _lines(logs)
        else:
            assert logs.lines(logging.WARNING) == []


async def test_conversation_not_ongoing_is_logged_with_its_request_id(
    redis_url: str, redis_prefix: str
) -> None:
    async with rig(redis_url, redis_prefix) as r:
        await r.service.handle_message(r.message("first"), r.sink())
        r.fake.end_conversation(next(iter(r.fake.conversations)))
        sink = r.sink()
        with recording() as logs:
            await r.service.handle_message(r.message("second"), sink)
        refused = r.fake.chat_calls[1].request_id
        assert sink.joined() == f"Echo: second\n\n{notices.NEW_CONVERSATION}"
        assert logs.find("no longer ongoing", refused, level=logging.INFO), _lines(logs)
        # The refused request is in the client's own log with its code.
        assert logs.find("CHAT_CONVERSATION_NOT_ONGOING", refused), _lines(logs)


async def test_a_429_wait_is_taken_on_the_clock_not_lost(
    redis_url: str, redis_prefix: str
) -> None:
    clock = FakeClock(auto=True)
    async with rig(redis_url, redis_prefix, clock=clock) as r:
        r.fake.rate_limit_next(retry_after=7)
        sink = r.sink()
        await r.service.handle_message(r.message("patience"), sink)
        assert sink.joined() == "Echo: patience"
        assert 7.0 in clock.slept
        assert len(r.fake.chat_calls) == 2


async def test_a_stream_fault_after_a_tool_round_keeps_both_rounds(
    redis_url: str, redis_prefix: str
) -> None:
    from tests.fakes.chatbase import FakeToolCall

    async with rig(redis_url, redis_prefix) as r:
        r.fake.script(
            Answer(text="Checking.", tool_calls=[FakeToolCall("lookup", {"id": 1})]),
            Answer(deltas=["Found ", "it ", "never"], fault=StreamFault.DISCONNECT,
                   fault_after=2),
        )
        sink = r.sink()
        with recording() as logs:
            await r.service.handle_message(r.message("find it"), sink)
        assert sink.joined() == cut("Checking.\n\nFound it ", "the connection to the agent broke")
        assert logs.find("StreamInterrupted", r.fake.chat_calls[-1].request_id)


def _lines(logs: Records) -> list[str]:
    return logs.lines(logging.INFO)

