"""``chatbase-bridge ask`` as a real process against the fake Chatbase."""

from __future__ import annotations

import json
from pathlib import Path

from tests.fakes.chatbase import Answer, FakeChatbase
from tests.integration.cli_process import bare_env, run_cli


async def test_ask_prints_the_answer_as_json(tmp_path: Path) -> None:
    async with FakeChatbase(api_key="sk-ask-cli") as chatbase:
        chatbase.script(Answer(text="Forty-two.", deltas=["Forty", "-two."]))
        env = bare_env(
            tmp_path, CHATBASE_API_KEY=chatbase.api_key, CHATBASE_AGENT_ID=chatbase.agent_id,
            CHATBASE_API_BASE=chatbase.base_url,
        )
        done = await run_cli("ask", "What is it?", "--user", "ops.tester", "--json",
                             env=env, cwd=tmp_path)
        assert chatbase.chat_calls[0].body["message"] == "What is it?"
        assert chatbase.chat_calls[0].body["userId"] == "ops.tester"
    assert done.status == 0, done.err
    answer = json.loads(done.out)
    assert answer["text"] == "Forty-two." and answer["userId"] == "ops.tester"
    assert answer["conversationId"]
    assert "sk-ask-cli" not in done.out + done.err


async def test_ask_with_a_refused_key_fails_in_one_line(tmp_path: Path) -> None:
    async with FakeChatbase() as chatbase:
        env = bare_env(
            tmp_path, CHATBASE_API_KEY="sk-wrong-key", CHATBASE_AGENT_ID=chatbase.agent_id,
            CHATBASE_API_BASE=chatbase.base_url,
        )
        done = await run_cli("ask", "hello", env=env, cwd=tmp_path)
    assert done.status == 1
    assert done.out == ""
    assert done.err.strip().startswith("error: AUTH_INVALID_API_KEY")
    assert "Traceback" not in done.err and "sk-wrong-key" not in done.err


def _sse(*chunks: object, end: str) -> str:
    return "".join(f"data: {json.dumps(c)}\n\n" for c in chunks) + end


async def test_ask_shows_an_aborted_answer_with_a_note(tmp_path: Path) -> None:
    async with FakeChatbase() as chatbase:
        chatbase.fail_next(200, content_type="text/event-stream", body=_sse(
            {"type": "start", "messageId": "m1"},
            {"type": "text-delta", "id": "t1", "delta": "Half an "},
            {"type": "text-delta", "id": "t1", "delta": "answer"},
            {"type": "abort"},
            end="data: [DONE]\n\n",
        ))
        env = bare_env(tmp_path, CHATBASE_API_KEY=chatbase.api_key,
                       CHATBASE_AGENT_ID=chatbase.agent_id, CHATBASE_API_BASE=chatbase.base_url)
        done = await run_cli("ask", "tell me", env=env, cwd=tmp_path)
    assert done.status == 0, done.err
    assert done.out == "Half an answer\n"
    assert "note: This answer is incomplete: the agent stopped before finishing" in done.err


async def test_ask_reads_done_with_a_trailing_space(tmp_path: Path) -> None:
    async with FakeChatbase() as chatbase:
        chatbase.fail_next(200, content_type="text/event-stream", body=_sse(
            {"type": "start", "messageId": "m1"},
            {"type": "text-delta", "id": "t1", "delta": "Whole answer."},
            {"type": "finish", "finishReason": "stop",
             "messageMetadata": {"conversationId": "c-1", "messageId": "m1"}},
            end="data: [DONE] \r\n\r\n",
        ))
        env = bare_env(tmp_path, CHATBASE_API_KEY=chatbase.api_key,
                       CHATBASE_AGENT_ID=chatbase.agent_id, CHATBASE_API_BASE=chatbase.base_url)
        done = await run_cli("ask", "q", env=env, cwd=tmp_path)
    assert done.status == 0, done.err
    assert done.out == "Whole answer.\n"
    assert "conversationId: c-1" in done.err and "incomplete" not in done.err
