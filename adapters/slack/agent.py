"""Slack's agent experience: agent sessions (status, title, stop button) and suggested prompts.

Only apps declared as agents can create sessions (https://docs.slack.dev/ai/agent-sessions/).
Whether this app is one is learnt once per process, from Slack's first answer to
``agents.sessions.setStatus``; an app that is not gets today's "is thinking…" status
instead, without a session call on every message.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from typing import Any, Protocol

from bridge.core.errors import PlatformError, PlatformRateLimited
from bridge.core.split import one_line

log = logging.getLogger(__name__)

PROCESSING = "processing"
ACTIVE = "active"
# "Title for the agent session (max 200 characters). Only used when creating a new session."
# https://docs.slack.dev/reference/methods/agents.sessions.setStatus/
TITLE_MAX = 200
# While the app is not subscribed to agent_session_stopped, setStatus warns this and users
# see a loading indicator they cannot stop:
# https://docs.slack.dev/reference/events/agent_session_stopped/
MISSING_SUBSCRIPTION = "missing_agent_session_stopped_event_subscription"

# Refusals that say nothing about whether the app is an agent: Slack being unwell, or this
# one thread or channel. Any other refusal (missing_scope, not_allowed, unknown_method, …)
# means the app is not declared as an agent.
_NOT_A_VERDICT = frozenset({
    "internal_error", "fatal_error", "service_unavailable", "request_timeout",
    "team_added_to_org", "accesslimited", "ratelimited",
    "channel_not_found", "thread_not_found", "invalid_thread_ts", "message_not_found",
    "is_archived", "not_in_channel", "invalid_arguments", "user_not_in_channel",
})


class _Api(Protocol):
    async def call(self, method: str, **args: Any) -> Mapping[str, Any]: ...


def session_title(question: str | None) -> str | None:
    """The session's title: the question on one line, at most ``TITLE_MAX`` characters."""
    if question is None:
        return None
    return one_line(question, TITLE_MAX) or None


def _code(exc: PlatformError) -> str | None:
    code = getattr(exc, "code", None)
    return code if isinstance(code, str) else None


class AgentSessions:
    """Agent sessions for every reply of one adapter (one per process).

    ``enabled`` is None until Slack has answered a session call, then True (the app is an
    agent) or False (it is not: sessions are never tried again in this process)."""

    def __init__(self) -> None:
        self.enabled: bool | None = None
        self._warned = False

    async def processing(self, api: _Api, *, channel: str, thread_ts: str,
                         question: str | None, asker: str | None) -> bool:
        """Set the thread's session to processing (creating it, titled from the question);
        True when it now shows the work, False when the caller should show another status."""
        if self.enabled is False:
            return False
        try:
            data = await api.call(
                "agents.sessions.setStatus", channel_id=channel, thread_ts=thread_ts,
                status=PROCESSING, title=session_title(question), initiator_user_id=asker,
            )
        except PlatformRateLimited as exc:
            log.info("Slack throttled an agent session status: %s", exc)
            return False
        except PlatformError as exc:
            self._judge(exc)
            return False
        self.enabled = True
        self._check_warnings(data)
        return True

    async def active(self, api: _Api, *, channel: str, thread_ts: str) -> None:
        """Move the thread's session away from processing (idempotent). ``api`` should be the
        client that honours Retry-After: a session must never be left processing."""
        if self.enabled is False:
            return
        try:
            data = await api.call("agents.sessions.setStatus", channel_id=channel,
                                  thread_ts=thread_ts, status=ACTIVE)
        except PlatformError as exc:
            log.warning("could not set a Slack agent session active: %s", exc)
            return
        self._check_warnings(data)

    def _judge(self, exc: PlatformError) -> None:
        code = _code(exc)
        if code is None or code in _NOT_A_VERDICT:
            log.info("could not set a Slack agent session status: %s", exc)
            return
        if self.enabled is not False:
            self.enabled = False
            log.info(
                "Slack refused agent sessions (%s): the app is not declared as an agent, so "
                "answers show the 'is thinking…' status instead. To get sessions and a stop "
                "button, create the app from deploy/slack/manifest.yaml (features.agent_view, "
                "assistant:write); see docs/slack.md.", code)

    def _check_warnings(self, data: Mapping[str, Any]) -> None:
        warning = data.get("warning")
        if self._warned or not isinstance(warning, str):
            return
        if MISSING_SUBSCRIPTION in warning.split(","):
            self._warned = True
            log.warning(
                "Slack says the app is not subscribed to the agent_session_stopped event, so "
                "users cannot stop an answer: add agent_session_stopped to the app's bot "
                "events (Event Subscriptions; it is in deploy/slack/manifest.yaml).")


class SuggestedPrompts:
    """The prompts shown when someone opens the app's messages tab
    (https://docs.slack.dev/reference/methods/assistant.threads.setSuggestedPrompts/)."""

    def __init__(self, prompts: Sequence[Mapping[str, str]]) -> None:
        self._prompts = [{"title": p["title"], "message": p["message"]} for p in prompts]
        self._refused = False

    async def show(self, api: _Api, *, channel: str) -> None:
        if not self._prompts or self._refused:
            return
        try:
            # No thread_ts: with it, the call "will silently fail" for an agent app (same page).
            await api.call("assistant.threads.setSuggestedPrompts", channel_id=channel,
                           prompts=self._prompts)
        except PlatformRateLimited as exc:
            log.info("Slack throttled the suggested prompts: %s", exc)
        except PlatformError as exc:
            code = _code(exc)
            if code is None or code in _NOT_A_VERDICT:
                log.info("could not show the suggested prompts: %s", exc)
                return
            self._refused = True
            log.info("Slack refused the suggested prompts (%s); they are not tried again "
                     "until the bridge restarts (they need assistant:write, see "
                     "docs/slack.md).", code)
