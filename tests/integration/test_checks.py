"""``check``'s probes against the fake Chatbase, Slack and Discord over real HTTP, real Redis."""

from __future__ import annotations

import socket
from collections.abc import AsyncIterator, Iterator
from typing import Any

import aiohttp
import pytest

from adapters.discord.checks import MESSAGE_CONTENT_FLAGS, check_discord, shard_problem
from adapters.slack.checks import check_slack
from bridge.app.checks import (
    CheckResult,
    Status,
    check_chatbase,
    check_redis,
    exit_status,
    run_checks,
)
from bridge.app.settings import Settings, load_settings
from tests.fakes.chatbase import FakeChatbase
from tests.fakes.discord_rest import FakeDiscord
from tests.fakes.slack import FakeSlack


class IntentDiscord(FakeDiscord):
    """The fake Discord with the Message Content intent toggled on in the 'portal'."""

    def _application(self) -> dict[str, Any]:
        return {**super()._application(), "flags": 1 << 19}


def settings(**values: Any) -> Settings:
    return load_settings(_env_file=None, **values)


@pytest.fixture
async def session() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as client:
        yield client


@pytest.fixture
def closed_port() -> Iterator[int]:
    """A loopback port that refuses connections: bound, never listening."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        yield sock.getsockname()[1]


# ---------------------------------------------------------------------------- Chatbase


async def test_chatbase_ok_makes_one_authorised_call(session: aiohttp.ClientSession) -> None:
    async with FakeChatbase() as fake:
        [result] = await check_chatbase(settings(
            CHATBASE_API_KEY=fake.api_key, CHATBASE_AGENT_ID=fake.agent_id,
            CHATBASE_API_BASE=fake.base_url), session)
        assert result.status is Status.OK, result
        assert [call.endpoint for call in fake.requests] == ["health", "list_conversations"]
        assert fake.requests[1].query == {"limit": "1"}


async def test_chatbase_refused_key_and_unknown_agent(session: aiohttp.ClientSession) -> None:
    async with FakeChatbase() as fake:
        [refused] = await check_chatbase(settings(
            CHATBASE_API_KEY="sk-wrong", CHATBASE_AGENT_ID=fake.agent_id,
            CHATBASE_API_BASE=fake.base_url), session)
        [unknown] = await check_chatbase(settings(
            CHATBASE_API_KEY=fake.api_key, CHATBASE_AGENT_ID="someone-else",
            CHATBASE_API_BASE=fake.base_url), session)
    assert refused.status is Status.FAIL and refused.config
    assert "refused the API key" in refused.detail and "CHATBASE_API_KEY" in refused.detail
    assert "sk-wrong" not in refused.detail
    assert unknown.status is Status.FAIL and "CHATBASE_AGENT_ID" in unknown.detail


async def test_chatbase_unreachable_names_the_base_url(
    session: aiohttp.ClientSession, closed_port: int
) -> None:
    [result] = await check_chatbase(settings(
        CHATBASE_API_KEY="k", CHATBASE_AGENT_ID="a",
        CHATBASE_API_BASE=f"http://127.0.0.1:{closed_port}"), session)
    assert result.status is Status.FAIL and not result.config
    assert "CHATBASE_API_BASE" in result.detail


async def test_chatbase_missing_settings_are_a_config_failure(
    session: aiohttp.ClientSession,
) -> None:
    [result] = await check_chatbase(settings(CHATBASE_API_KEY="k"), session)
    assert result.status is Status.FAIL and result.config
    assert "CHATBASE_AGENT_ID" in result.detail and "CHATBASE_API_KEY" not in result.detail


# ---------------------------------------------------------------------------- Redis


async def test_redis_ok_and_unreachable(redis_url: str, closed_port: int) -> None:
    ok = await check_redis(settings(REDIS_URL=redis_url))
    assert ok.status is Status.OK, ok
    down = await check_redis(settings(REDIS_URL=f"redis://:hunter2@127.0.0.1:{closed_port}/0"))
    assert down.status is Status.FAIL
    assert f"127.0.0.1:{closed_port} (REDIS_URL)" in down.detail
    assert "refused" in down.detail and "hunter2" not in down.detail


# ---------------------------------------------------------------------------- Slack


async def test_slack_socket_mode_ok(session: aiohttp.ClientSession) -> None:
    async with FakeSlack() as slack:
        result = await check_slack(settings(
            SLACK_BOT_TOKEN=slack.bot_token, SLACK_APP_TOKEN=slack.app_token,
            SLACK_API_URL=slack.api_url), session)
        assert result.status is Status.OK, result
        assert "Socket Mode" in result.detail and "Fake Team" in result.detail
        assert [call.method for call in slack.calls] == ["auth.test", "apps.connections.open"]


async def test_slack_http_mode_ok_points_at_the_events_path(
    session: aiohttp.ClientSession,
) -> None:
    async with FakeSlack() as slack:
        result = await check_slack(settings(
            SLACK_BOT_TOKEN=slack.bot_token, SLACK_SIGNING_SECRET="s",
            SLACK_API_URL=slack.api_url), session)
    assert result.status is Status.OK, result
    assert "/slack/events" in result.detail


async def test_slack_refused_tokens(session: aiohttp.ClientSession) -> None:
    async with FakeSlack() as slack:
        bad_bot = await check_slack(settings(
            SLACK_BOT_TOKEN="xoxb-revoked", SLACK_APP_TOKEN=slack.app_token,
            SLACK_API_URL=slack.api_url), session)
        bad_app = await check_slack(settings(
            SLACK_BOT_TOKEN=slack.bot_token, SLACK_APP_TOKEN="xapp-other",
            SLACK_API_URL=slack.api_url), session)
    assert bad_bot.status is Status.FAIL and "SLACK_BOT_TOKEN (invalid_auth)" in bad_bot.detail
    assert bad_app.status is Status.FAIL and "SLACK_APP_TOKEN (invalid_auth)" in bad_app.detail
    assert "xoxb-revoked" not in bad_bot.detail and "xapp-other" not in bad_app.detail


@pytest.mark.parametrize(("values", "expected"), [
    ({"SLACK_BOT_TOKEN": "xoxp-user-1", "SLACK_SIGNING_SECRET": "sig-1"}, "user token"),
    ({"SLACK_BOT_TOKEN": "xapp-1-A-2", "SLACK_SIGNING_SECRET": "sig-2"}, "SLACK_APP_TOKEN"),
    ({"SLACK_BOT_TOKEN": "xoxb-bot-3", "SLACK_APP_TOKEN": "xoxb-app-3"}, "starting with xapp-"),
    ({"SLACK_BOT_TOKEN": "xoxb-bot-4"}, "SLACK_SIGNING_SECRET"),
])
async def test_slack_token_mistakes_need_no_network(
    session: aiohttp.ClientSession, closed_port: int, values: dict[str, str], expected: str
) -> None:
    result = await check_slack(settings(
        SLACK_API_URL=f"http://127.0.0.1:{closed_port}/api/", **values), session)
    assert result.status is Status.FAIL and result.config
    assert expected in result.detail
    for value in values.values():
        assert value not in result.detail


# ---------------------------------------------------------------------------- Discord


async def test_discord_ok_reports_the_intent(session: aiohttp.ClientSession) -> None:
    async with IntentDiscord() as discord_api:
        result = await check_discord(settings(
            DISCORD_BOT_TOKEN=discord_api.token, DISCORD_API_BASE=discord_api.api_base,
            BRIDGE_DISCORD_MESSAGE_CONTENT=True), session)
    assert result.status is Status.OK, result
    assert "Message Content intent enabled" in result.detail


async def test_discord_intent_off_in_the_portal_fails(session: aiohttp.ClientSession) -> None:
    async with FakeDiscord() as discord_api:
        on = await check_discord(settings(
            DISCORD_BOT_TOKEN=discord_api.token, DISCORD_API_BASE=discord_api.api_base,
            BRIDGE_DISCORD_MESSAGE_CONTENT=True), session)
        off = await check_discord(settings(
            DISCORD_BOT_TOKEN=discord_api.token, DISCORD_API_BASE=discord_api.api_base),
            session)
    assert on.status is Status.FAIL and "Privileged Gateway Intents" in on.detail
    assert off.status is Status.OK and "BRIDGE_DISCORD_MESSAGE_CONTENT off" in off.detail


async def test_discord_refused_token(session: aiohttp.ClientSession) -> None:
    async with FakeDiscord() as discord_api:
        result = await check_discord(settings(
            DISCORD_BOT_TOKEN="wrong.token.value", DISCORD_API_BASE=discord_api.api_base),
            session)
    assert result.status is Status.FAIL and result.config
    assert "DISCORD_BOT_TOKEN" in result.detail and "wrong.token.value" not in result.detail


def test_message_content_flags() -> None:
    assert MESSAGE_CONTENT_FLAGS & (1 << 18) and MESSAGE_CONTENT_FLAGS & (1 << 19)
    assert not MESSAGE_CONTENT_FLAGS & (1 << 17)


def test_shard_problems() -> None:
    assert shard_problem([], None) is None
    assert shard_problem([0, 1], 2) is None
    assert "BRIDGE_DISCORD_SHARD_COUNT" in (shard_problem([0], None) or "")
    assert "outside 0 to 1" in (shard_problem([1, 2], 2) or "")


# ---------------------------------------------------------------------------- together


def test_exit_status() -> None:
    ok = CheckResult("a", Status.OK)
    skipped = CheckResult("b", Status.SKIPPED)
    down = CheckResult("c", Status.FAIL, "down")
    wrong = CheckResult("d", Status.FAIL, "wrong", config=True)
    assert exit_status([ok, skipped]) == 0
    assert exit_status([ok, down]) == 1
    assert exit_status([down, wrong]) == 2


async def test_run_checks_without_a_platform_fails(redis_url: str) -> None:
    async with FakeChatbase() as fake:
        results = await run_checks(settings(
            CHATBASE_API_KEY=fake.api_key, CHATBASE_AGENT_ID=fake.agent_id,
            CHATBASE_API_BASE=fake.base_url, REDIS_URL=redis_url))
    by_name = {result.name: result for result in results}
    assert by_name["chatbase"].status is Status.OK
    assert by_name["redis"].status is Status.OK
    assert by_name["slack"].status is Status.SKIPPED
    assert by_name["platform"].status is Status.FAIL
    assert exit_status(results) == 2
