"""``chatbase-bridge ask`` against the fake Chatbase over real HTTP."""

from __future__ import annotations

import io
import json
from collections.abc import AsyncIterator
from typing import Any

import pytest

from bridge.app.ask import CLI_TOOL_OUTPUT, ask, default_user_id
from bridge.app.settings import Settings, load_settings
from tests.fakes.chatbase import Answer, FakeChatbase, FakeToolCall, StreamFault, Variant

KEY = "sk-ask-secret"


@pytest.fixture
async def fake() -> AsyncIterator[FakeChatbase]:
    async with FakeChatbase(api_key=KEY) as server:
        yield server


def settings_for(fake: FakeChatbase, **extra: Any) -> Settings:
    values: dict[str, Any] = {
        "CHATBASE_API_KEY": KEY, "CHATBASE_AGENT_ID": fake.agent_id,
        "CHATBASE_API_BASE": fake.base_url, "BRIDGE_CHATBASE_TIMEOUT": 5,
        "BRIDGE_STREAM_IDLE_TIMEOUT": 5, **extra,
    }
    return load_settings(_env_file=None, **values)


async def run(fake: FakeChatbase, text: str, *, conversation_id: str | None = None,
              user_id: str | None = None, as_json: bool = False,
              **extra: Any) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    code = await ask(settings=settings_for(fake, **extra), text=text,
                     conversation_id=conversation_id, user_id=user_id, as_json=as_json,
                     out=out, err=err)
    return code, out.getvalue(), err.getvalue()


@pytest.mark.parametrize("variant", list(Variant))
async def test_every_variant_prints_the_same_answer(
    fake: FakeChatbase, variant: Variant
) -> None:
    fake.script(Answer(deltas=["The answer ", "is ", "42 ✓."], variant=variant, credits=2.5))
    code, out, err = await run(fake, "What is it?")
    assert code == 0
    assert out == "The answer is 42 ✓.\n"
    (conv,) = fake.conversations.values()
    assert err.splitlines() == [
        f"conversationId: {conv.id}",
        f"messageId: {conv.messages[1].id}",
        "credits: 2.5",
    ]
    assert fake.chat_calls[0].body == {
        "message": "What is it?", "userId": default_user_id(), "stream": True}


@pytest.mark.parametrize("variant", [Variant.CANONICAL, Variant.FINISH_METADATA,
                                     Variant.MESSAGE_START_FLAT])
async def test_json_output(fake: FakeChatbase, variant: Variant) -> None:
    fake.script(Answer(text="Hi\nthere", variant=variant, credits=1))
    code, out, err = await run(fake, "hello", user_id="tester.1", as_json=True)
    assert code == 0 and err == ""
    (conv,) = fake.conversations.values()
    assert json.loads(out) == {
        "text": "Hi\nthere", "conversationId": conv.id, "messageId": conv.messages[1].id,
        "userId": "tester.1", "credits": 1.0, "finishReason": "stop", "incomplete": False,
    }
    assert out.count("\n") == 1  # one JSON line


async def test_continues_a_conversation(fake: FakeChatbase) -> None:
    conv = fake.seed_conversation(user_id="someone", messages=[("user", "a"),
                                                               ("assistant", "b")])
    code, out, _ = await run(fake, "and then?", conversation_id=conv.id)
    assert code == 0 and out == "Echo: and then?\n"
    assert fake.chat_calls[0].body == {
        "message": "and then?", "conversationId": conv.id, "stream": True}
    assert len(conv.messages) == 4


async def test_error_answer(fake: FakeChatbase) -> None:
    fake.fail_next(402, "CHAT_CREDITS_EXHAUSTED", "Message limit reached")
    code, out, err = await run(fake, "hi")
    assert code == 1 and out == ""
    request_id = fake.chat_calls[0].request_id
    assert err == (f"error: CHAT_CREDITS_EXHAUSTED: Message limit reached (HTTP 402) "
                   f"[request id {request_id}]\n")
    assert KEY not in err


async def test_cut_off_answer_keeps_what_was_printed(fake: FakeChatbase) -> None:
    fake.script(Answer(deltas=["partial ", "text"], fault=StreamFault.ERROR_CHUNK,
                       fault_after=1, error_text="provider down"))
    code, out, err = await run(fake, "hi")
    assert code == 1
    assert out == "partial \n"
    assert "provider down" in err and fake.chat_calls[0].request_id in err


async def test_cut_off_json_prints_no_json(fake: FakeChatbase) -> None:
    fake.script(Answer(deltas=["a", "b"], fault=StreamFault.DISCONNECT, fault_after=1))
    code, out, err = await run(fake, "hi", as_json=True)
    assert code == 1 and out == ""
    assert "cut off" in err


async def test_client_action_is_answered_not_left_hanging(fake: FakeChatbase) -> None:
    fake.script(
        Answer(text="Let me look.", tool_calls=[FakeToolCall("lookupOrder", {"id": 1})],
               credits=1),
        Answer(text="I could not look it up.", credits=2),
    )
    code, out, err = await run(fake, "where is my order")
    assert code == 0
    assert out == "Let me look.\n\nI could not look it up.\n"
    assert fake.tool_results[0].output == CLI_TOOL_OUTPUT
    (conv,) = fake.conversations.values()
    assert fake.chat_calls[1].body == {"conversationId": conv.id, "stream": True}
    assert "lookupOrder" in err
    assert "credits: 3" in err
    assert f"messageId: {conv.messages[-1].id}" in err


async def test_client_action_rounds_are_bounded(fake: FakeChatbase) -> None:
    fake.script(*(Answer(text="", tool_calls=[FakeToolCall("again")]) for _ in range(3)))
    code, _, err = await run(fake, "loop", BRIDGE_MAX_TOOL_ROUNDS=1)
    assert code == 0
    assert len(fake.chat_calls) == 2 and len(fake.tool_results) == 1
    assert "waiting for a client action" in err


@pytest.mark.parametrize("user_id", ["bad/user", "x" * 129])
async def test_invalid_user_id(fake: FakeChatbase, user_id: str) -> None:
    code, out, err = await run(fake, "hi", user_id=user_id)
    assert code == 1 and out == "" and err.startswith("error: userId")
    assert fake.requests == []


async def test_refuses_empty_and_oversized_text(fake: FakeChatbase) -> None:
    assert (await run(fake, "   "))[0] == 1
    code, _, err = await run(fake, "x" * 11, BRIDGE_MAX_INPUT_CHARS=10)
    assert code == 1 and "BRIDGE_MAX_INPUT_CHARS" in err
    assert fake.requests == []


async def test_missing_settings() -> None:
    out, err = io.StringIO(), io.StringIO()
    settings = load_settings(_env_file=None, CHATBASE_API_KEY=None, CHATBASE_AGENT_ID=None)
    code = await ask(settings=settings, text="hi", conversation_id=None, user_id=None,
                     as_json=False, out=out, err=err)
    assert code == 1
    assert "CHATBASE_API_KEY" in err.getvalue() and "CHATBASE_AGENT_ID" in err.getvalue()


async def test_unreachable_chatbase() -> None:
    async with FakeChatbase(api_key=KEY) as gone:
        url, agent = gone.base_url, gone.agent_id
    out, err = io.StringIO(), io.StringIO()
    settings = load_settings(_env_file=None, CHATBASE_API_KEY=KEY, CHATBASE_AGENT_ID=agent,
                             CHATBASE_API_BASE=url)
    code = await ask(settings=settings, text="hi", conversation_id=None, user_id=None,
                     as_json=False, out=out, err=err)
    assert code == 1
    assert url in err.getvalue()


def test_default_user_id_is_legal(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("getpass.getuser", lambda: "Jane Doe@corp/x")
    assert default_user_id() == "cli.Jane_Doe_corp_x"

    def no_user() -> str:
        raise OSError("no user")

    monkeypatch.setattr("getpass.getuser", no_user)
    assert default_user_id() == "cli.user"
