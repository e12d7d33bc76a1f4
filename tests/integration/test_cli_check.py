"""``chatbase-bridge check`` and ``--version`` as real processes with controlled environments."""

from __future__ import annotations

import socket
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.fakes.chatbase import FakeChatbase
from tests.fakes.discord_rest import FakeDiscord
from tests.fakes.slack import FakeSlack
from tests.integration.cli_process import CLI, bare_env, run_cli


class IntentDiscord(FakeDiscord):
    def _application(self) -> dict[str, Any]:
        return {**super()._application(), "flags": 1 << 18}


@pytest.fixture
def closed_port() -> Iterator[int]:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        yield sock.getsockname()[1]


def test_the_console_script_is_installed() -> None:
    assert CLI.is_file(), "pip install -e . should have created the chatbase-bridge script"


async def test_version(tmp_path: Path) -> None:
    done = await run_cli("--version", env=bare_env(tmp_path), cwd=tmp_path)
    assert done.status == 0
    assert done.out.strip() == "chatbase-bridge 0.1.0"


async def test_empty_environment_names_the_required_settings(tmp_path: Path) -> None:
    done = await run_cli("check", env=bare_env(tmp_path), cwd=tmp_path)
    assert done.status == 2
    chatbase = done.line("chatbase")
    assert "FAIL" in chatbase
    assert "CHATBASE_API_KEY" in chatbase and "CHATBASE_AGENT_ID" in chatbase
    assert "SLACK_BOT_TOKEN" in done.line("platform")
    assert "Traceback" not in done.out + done.err


async def test_a_malformed_value_names_its_variable(tmp_path: Path) -> None:
    done = await run_cli("check", env=bare_env(tmp_path, BRIDGE_HTTP_PORT="abc"), cwd=tmp_path)
    assert done.status == 2
    assert "BRIDGE_HTTP_PORT" in done.line("settings") and "'abc'" in done.out
    assert "Traceback" not in done.out + done.err


async def test_everything_configured_and_reachable_passes(
    tmp_path: Path, redis_url: str, redis_prefix: str
) -> None:
    async with FakeChatbase(api_key="sk-live-check") as chatbase, FakeSlack() as slack, \
            IntentDiscord() as discord_api:
        env = bare_env(
            tmp_path,
            CHATBASE_API_KEY=chatbase.api_key, CHATBASE_AGENT_ID=chatbase.agent_id,
            CHATBASE_API_BASE=chatbase.base_url,
            REDIS_URL=redis_url, BRIDGE_REDIS_PREFIX=redis_prefix,
            SLACK_BOT_TOKEN=slack.bot_token, SLACK_APP_TOKEN=slack.app_token,
            SLACK_API_URL=slack.api_url,
            DISCORD_BOT_TOKEN=discord_api.token, DISCORD_API_BASE=discord_api.api_base,
            BRIDGE_DISCORD_MESSAGE_CONTENT="true",
        )
        done = await run_cli("check", env=env, cwd=tmp_path)
        assert [r.endpoint for r in chatbase.requests] == ["health", "list_conversations"]
    assert done.status == 0, done.out + done.err
    for name in ("settings", "chatbase", "redis", "slack", "discord"):
        assert done.line(name).split()[1] == "ok", done.out
    assert "Message Content intent enabled" in done.line("discord")
    for secret in ("sk-live-check", slack.bot_token, slack.app_token, discord_api.token):
        assert secret not in done.out + done.err


async def test_refused_key_and_unreachable_redis_are_told_plainly(
    tmp_path: Path, closed_port: int
) -> None:
    async with FakeChatbase() as chatbase:
        env = bare_env(
            tmp_path,
            CHATBASE_API_KEY="sk-not-this-one", CHATBASE_AGENT_ID=chatbase.agent_id,
            CHATBASE_API_BASE=chatbase.base_url,
            REDIS_URL=f"redis://127.0.0.1:{closed_port}/0",
            SLACK_BOT_TOKEN="xoxb-unused", SLACK_SIGNING_SECRET="signing",
            SLACK_API_URL=f"http://127.0.0.1:{closed_port}/api/",
        )
        done = await run_cli("check", env=env, cwd=tmp_path)
    assert done.status != 0
    chatbase_line = done.line("chatbase")
    assert "FAIL" in chatbase_line and "refused the API key" in chatbase_line
    assert "CHATBASE_API_KEY" in chatbase_line
    redis_line = done.line("redis")
    assert "FAIL" in redis_line and "REDIS_URL" in redis_line
    assert f"127.0.0.1:{closed_port}" in redis_line
    assert "FAIL" in done.line("slack")
    assert "sk-not-this-one" not in done.out + done.err
    assert "Traceback" not in done.out + done.err
