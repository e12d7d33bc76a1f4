"""Slack's preflight for ``chatbase-bridge check``: the tokens' shapes, then ``auth.test``
(and ``apps.connections.open`` for Socket Mode) through slack_sdk."""

from __future__ import annotations

from collections.abc import Awaitable
from typing import Any

import aiohttp
from slack_sdk.errors import SlackApiError
from slack_sdk.web.async_client import AsyncWebClient
from slack_sdk.web.async_slack_response import AsyncSlackResponse

from bridge.app.checks import (
    CHECK_TIMEOUT,
    CheckResult,
    Refused,
    Status,
    client_reason,
    fail,
    host_of,
    ok,
)
from bridge.app.settings import Settings

__all__ = ["BAD_TOKEN", "check_slack"]

NAME = "slack"
# Web API errors meaning the operator's token is wrong, not that Slack is unwell
# (https://api.slack.com/methods/auth.test#errors).
BAD_TOKEN = frozenset({
    "invalid_auth", "not_authed", "account_inactive", "token_revoked", "token_expired",
    "not_allowed_token_type",
})


async def check_slack(settings: Settings, session: aiohttp.ClientSession) -> CheckResult:
    if settings.slack_bot_token is None:
        return CheckResult(NAME, Status.SKIPPED, "SLACK_BOT_TOKEN is unset")
    bot_token = settings.slack_bot_token.get_secret_value()
    app_token = settings.slack_app_token.get_secret_value() if settings.slack_app_token else ""
    mistake = _token_mistake(settings, bot_token, app_token)
    if mistake:
        return fail(NAME, mistake, config=True)
    url = settings.slack_api_url
    try:
        bot = _client(url, session, bot_token)
        identity = await _call(url, "auth.test", "SLACK_BOT_TOKEN", bot.auth_test())
        if app_token:
            app = _client(url, session, app_token)
            await _call(url, "apps.connections.open", "SLACK_APP_TOKEN",
                        app.apps_connections_open(app_token=app_token))
    except Refused as exc:
        return fail(NAME, str(exc), config=exc.config)
    who = f"bot {identity.get('user') or identity.get('user_id') or '?'}"
    team = identity.get("team") or identity.get("team_id")
    if team:
        who += f" in {team}"
    if app_token:
        mode = "Socket Mode connection allowed"
    else:
        mode = (f"HTTP events: set the Request URL to https://<your host>/slack/events "
                f"(served on port {settings.http_port})")
    return ok(NAME, f"{who}; {mode}")


def _token_mistake(settings: Settings, bot_token: str, app_token: str) -> str | None:
    """What is wrong with the tokens' shapes, found without the network."""
    if not bot_token.startswith("xoxb-"):
        kind = " (it looks like a user token)" if bot_token.startswith("xoxp-") else ""
        if bot_token.startswith("xapp-"):
            kind = " (it looks like the app-level token; that one goes in SLACK_APP_TOKEN)"
        return (f"SLACK_BOT_TOKEN must be a bot token starting with xoxb-{kind}; "
                "copy the Bot User OAuth Token from OAuth & Permissions.")
    if app_token and not app_token.startswith("xapp-"):
        return ("SLACK_APP_TOKEN must be an app-level token starting with xapp- "
                "(Basic Information → App-Level Tokens, scope connections:write).")
    if not app_token and settings.slack_signing_secret is None:
        return ("set SLACK_APP_TOKEN (Socket Mode) or SLACK_SIGNING_SECRET "
                "(HTTP events); Slack cannot deliver events with neither.")
    return None


def _client(url: str, session: aiohttp.ClientSession, token: str) -> AsyncWebClient:
    return AsyncWebClient(
        token=token, base_url=url, session=session, timeout=int(CHECK_TIMEOUT),
        # One attempt: `check` reports what it sees rather than waiting out retries.
        retry_handlers=[],
    )


async def _call(
    url: str, method: str, variable: str, request: Awaitable[AsyncSlackResponse]
) -> dict[str, Any]:
    """The answer to ``request`` (a call of ``method``), or ``Refused`` in plain words."""
    try:
        response = await request
    except SlackApiError as exc:
        raise _refusal(exc, method, variable) from exc
    except aiohttp.ClientError as exc:
        raise Refused(f"cannot reach Slack at {host_of(url)} (SLACK_API_URL): "
                      f"{client_reason(exc)}.") from exc
    except TimeoutError as exc:
        raise Refused(f"Slack at {host_of(url)} did not answer {method} within "
                      f"{CHECK_TIMEOUT:.0f}s.") from exc
    body = response.data
    if not isinstance(body, dict):
        raise Refused(f"Slack's {method} answered HTTP {response.status_code} without JSON; "
                      "check SLACK_API_URL.")
    return body


def _refusal(exc: SlackApiError, method: str, variable: str) -> Refused:
    response = exc.response
    if response.status_code == 429:
        retry = response.headers.get("Retry-After", "a few")
        return Refused(f"Slack is rate limiting {method}; try again in {retry} seconds.")
    body = response.data
    if not isinstance(body, dict) or "ok" not in body:
        return Refused(f"Slack's {method} answered HTTP {response.status_code} without JSON; "
                       "check SLACK_API_URL.")
    error = str(body.get("error") or "unknown_error")
    if error in BAD_TOKEN:
        hint = "it is wrong, revoked or belongs to another app"
        if error == "not_allowed_token_type":
            hint = "it is the wrong kind of token for this call"
        return Refused(f"Slack refused {variable} ({error}): {hint}.", config=True)
    if error == "missing_scope":
        needed = body.get("needed")
        return Refused(f"{variable} lacks a scope {method} needs"
                       + (f" ({needed})" if needed else "") + "; add it and reinstall the app.",
                       config=True)
    return Refused(f"Slack's {method} failed: {error}.")
