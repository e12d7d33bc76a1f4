"""BRIDGE_ROUTES from the command line: ``chatbase-bridge check`` and ``ask --agent`` as real
processes against the fake Chatbase serving two agents with their own keys."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.fakes import secrets
from tests.fakes.chatbase import Answer, FakeChatbase
from tests.fakes.slack import FakeSlack
from tests.integration.cli_process import bare_env, run_cli

AGENT_B, KEY_B, KEY_B_ENV = "agent-b", "sk-routing-cli-b-key", "CHATBASE_KEY_B"
# What a route must never quote back: a key pasted into BRIDGE_ROUTES by mistake (shaped
# like a Chatbase API key, a UUID).
PASTED = "3f6c1a9e-8b2d-4c7a-9e1f-5d0b7a2c4e68"

secrets.register(KEY_B, PASTED)


def b_routes() -> str:
    return json.dumps({"slack:T0TEAM/C0ROUTED": {"agent": AGENT_B, "api_key_env": KEY_B_ENV}})


async def test_check_has_a_line_per_agent_each_checked_with_its_own_key(
    tmp_path: Path, redis_url: str, redis_prefix: str
) -> None:
    async with FakeChatbase(api_key="sk-routing-cli-default") as chatbase, \
            FakeSlack() as slack:
        chatbase.add_agent(AGENT_B, api_key=KEY_B)
        env = bare_env(
            tmp_path,
            CHATBASE_API_KEY=chatbase.api_key, CHATBASE_AGENT_ID=chatbase.agent_id,
            CHATBASE_API_BASE=chatbase.base_url, BRIDGE_ROUTES=b_routes(),
            **{KEY_B_ENV: KEY_B},
            REDIS_URL=redis_url, BRIDGE_REDIS_PREFIX=redis_prefix,
            SLACK_BOT_TOKEN=slack.bot_token, SLACK_APP_TOKEN=slack.app_token,
            SLACK_API_URL=slack.api_url,
        )
        done = await run_cli("check", env=env, cwd=tmp_path)
        agent_calls = [(r.agent_id, r.api_key) for r in chatbase.requests
                       if r.endpoint == "list_conversations"]
    assert done.status == 0, done.out + done.err
    default, routed = done.line("chatbase"), done.line(f"chatbase:{AGENT_B}")
    assert default.split()[1] == "ok" and routed.split()[1] == "ok", done.out
    assert sorted(agent_calls) == sorted([(chatbase.agent_id, chatbase.api_key),
                                          (AGENT_B, KEY_B)])
    assert [line.split()[0] for line in done.lines].count("chatbase") == 1
    for secret in (chatbase.api_key, KEY_B):
        assert secret not in done.out + done.err


async def test_routes_alone_need_neither_the_default_agent_nor_its_key(
    tmp_path: Path, redis_url: str, redis_prefix: str
) -> None:
    async with FakeChatbase(api_key="sk-routing-cli-default") as chatbase, \
            FakeSlack() as slack:
        chatbase.add_agent(AGENT_B, api_key=KEY_B)
        env = bare_env(
            tmp_path, CHATBASE_API_BASE=chatbase.base_url, BRIDGE_ROUTES=b_routes(),
            **{KEY_B_ENV: KEY_B},
            REDIS_URL=redis_url, BRIDGE_REDIS_PREFIX=redis_prefix,
            SLACK_BOT_TOKEN=slack.bot_token, SLACK_APP_TOKEN=slack.app_token,
            SLACK_API_URL=slack.api_url,
        )
        done = await run_cli("check", env=env, cwd=tmp_path)
        checked = {(r.agent_id, r.api_key) for r in chatbase.requests
                   if r.endpoint == "list_conversations"}
        asked = await run_cli("ask", "first routed?", env=env, cwd=tmp_path)
        chats = chatbase.chat_calls
    assert done.status == 0, done.out + done.err
    assert done.line("chatbase").split()[1] == "ok"
    assert checked == {(AGENT_B, KEY_B)}
    # `ask` without --agent asks the first agent the routes name.
    assert asked.status == 0, asked.err
    assert [(c.agent_id, c.api_key) for c in chats] == [(AGENT_B, KEY_B)]


async def test_check_fails_the_agent_whose_key_is_refused(tmp_path: Path) -> None:
    async with FakeChatbase(api_key="sk-routing-cli-default") as chatbase:
        # Agent B's workspace key is not the one its route names.
        chatbase.add_agent(AGENT_B, api_key="sk-routing-cli-real-b")
        env = bare_env(
            tmp_path,
            CHATBASE_API_KEY=chatbase.api_key, CHATBASE_AGENT_ID=chatbase.agent_id,
            CHATBASE_API_BASE=chatbase.base_url, BRIDGE_ROUTES=b_routes(),
            **{KEY_B_ENV: KEY_B},
        )
        done = await run_cli("check", env=env, cwd=tmp_path)
    assert done.status == 2, done.out + done.err
    assert done.line("chatbase").split()[1] == "ok"
    routed = done.line(f"chatbase:{AGENT_B}")
    assert "FAIL" in routed and KEY_B_ENV in routed
    assert KEY_B not in done.out + done.err


@pytest.mark.parametrize("value", [
    pytest.param('{"slack:T0TEAM/C0ROUTED": "' + PASTED + '"', id="bad-json"),
    pytest.param(json.dumps({"teams:T0TEAM": PASTED}), id="unknown-place"),
    pytest.param(json.dumps({"slack:T0TEAM": {"agent": AGENT_B,
                                              "api_key_env": "CHATBASE_KEY_UNSET"},
                             "discord:dm": PASTED}),
                 id="key-variable-unset"),
    pytest.param(json.dumps({"slack:T0TEAM": {"agent": AGENT_B, "api_key": PASTED}}),
                 id="key-in-the-json"),
    pytest.param(json.dumps({"slack:T0TEAM": {"agent": AGENT_B, "api_key_env": PASTED}}),
                 id="key-as-the-variable-name"),
])
async def test_a_malformed_route_table_is_one_plain_error_without_its_value(
    tmp_path: Path, value: str
) -> None:
    env = bare_env(tmp_path, CHATBASE_API_KEY="sk-routing-cli-default",
                   CHATBASE_AGENT_ID="agent-test", BRIDGE_ROUTES=value,
                   SLACK_BOT_TOKEN="xoxb-unused-token", SLACK_SIGNING_SECRET="signing-secret")
    done = await run_cli("check", env=env, cwd=tmp_path)
    assert done.status == 2, done.out + done.err
    assert done.lines == [done.line("settings")], done.out
    assert "FAIL" in done.out and "BRIDGE_ROUTES" in done.out
    assert "Traceback" not in done.out + done.err
    assert PASTED not in done.out + done.err
    assert value not in done.out + done.err
    # `ask` refuses the same settings in one plain line too.
    asked = await run_cli("ask", "hello", env=env, cwd=tmp_path)
    assert asked.status != 0 and asked.out == ""
    assert "BRIDGE_ROUTES" in asked.err and "Traceback" not in asked.err
    assert PASTED not in asked.err


async def test_a_named_key_variable_that_is_unset_is_named(tmp_path: Path) -> None:
    routes = json.dumps({"slack:T0TEAM": {"agent": AGENT_B, "api_key_env": "KEY_NOT_SET"}})
    env = bare_env(tmp_path, CHATBASE_API_KEY="sk-routing-cli-default",
                   CHATBASE_AGENT_ID="agent-test", BRIDGE_ROUTES=routes)
    done = await run_cli("check", env=env, cwd=tmp_path)
    assert done.status == 2
    line = done.line("settings")
    assert "BRIDGE_ROUTES" in line and "KEY_NOT_SET" in line and "not set" in line


async def test_ask_agent_reaches_the_second_agent_with_its_key(tmp_path: Path) -> None:
    async with FakeChatbase(api_key="sk-routing-cli-default") as chatbase:
        chatbase.add_agent(AGENT_B, api_key=KEY_B)
        chatbase.script(Answer(text="Agent B answers."))
        env = bare_env(
            tmp_path,
            CHATBASE_API_KEY=chatbase.api_key, CHATBASE_AGENT_ID=chatbase.agent_id,
            CHATBASE_API_BASE=chatbase.base_url, BRIDGE_ROUTES=b_routes(),
            **{KEY_B_ENV: KEY_B},
        )
        done = await run_cli("ask", "who answers?", "--agent", AGENT_B, "--json",
                             env=env, cwd=tmp_path)
        requests = list(chatbase.requests)
        [conversation] = chatbase.conversations.values()
    assert done.status == 0, done.err
    [chat] = requests
    assert chat.endpoint == "chat" and chat.path == f"/agents/{AGENT_B}/chat"
    assert chat.api_key == KEY_B and chat.body["message"] == "who answers?"
    assert conversation.agent_id == AGENT_B
    answer = json.loads(done.out)
    assert answer["text"] == "Agent B answers."
    assert answer["conversationId"] == conversation.id
    assert KEY_B not in done.out + done.err


async def test_ask_without_agent_asks_the_default_one(tmp_path: Path) -> None:
    async with FakeChatbase(api_key="sk-routing-cli-default") as chatbase:
        chatbase.add_agent(AGENT_B, api_key=KEY_B)
        env = bare_env(
            tmp_path,
            CHATBASE_API_KEY=chatbase.api_key, CHATBASE_AGENT_ID=chatbase.agent_id,
            CHATBASE_API_BASE=chatbase.base_url, BRIDGE_ROUTES=b_routes(),
            **{KEY_B_ENV: KEY_B},
        )
        done = await run_cli("ask", "and you?", env=env, cwd=tmp_path)
        [chat] = chatbase.requests
    assert done.status == 0, done.err
    assert chat.agent_id == chatbase.agent_id and chat.api_key == chatbase.api_key
