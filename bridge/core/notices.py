"""Every sentence the bridge says to a chat user on its own behalf."""

from __future__ import annotations

import math

from bridge.core.errors import (
    ChatbaseAPIError,
    ChatbaseError,
    ChatbaseRateLimited,
    ChatbaseUnavailable,
    StreamErrorChunk,
    StreamIdleTimeout,
)

EMPTY_MESSAGE = "Hi! What would you like to ask? Write your question after the mention."
NEW_CONVERSATION = "_(The previous conversation had ended, so this answer starts a new one.)_"
EMPTY_ANSWER = "_(The agent sent an empty answer. Please try rephrasing your question.)_"
CUT_OFF = "_(The answer was cut off: {reason}. Please ask again.)_"
SHUTTING_DOWN = "the bridge is restarting"
RESTARTING = "The bridge is restarting. Please send your message again in a minute."
RESTARTED_BEFORE_ANSWER = (
    "The bridge restarted before it could answer this. Please send your message again."
)
TOOL_ROUNDS = "_(The agent asked for more actions than the bridge runs in one answer.)_"

_CONFIG = (
    "I can't answer right now because of a configuration problem on the bridge. "
    "An admin can see the details in the logs."
)
_CREDITS = (
    "I can't answer right now: the agent has run out of message credits. "
    "Please let your workspace admin know."
)
_UNREACHABLE = "I couldn't reach the agent just now. Please try again in a moment."
_BROKEN = "Something went wrong while the agent was answering. Please try again."
_STALLED = "The agent stopped responding. Please try again."

# Chatbase error codes, by what the user can do about them.
CONFIG_CODES = frozenset({
    "AUTH_MISSING_API_KEY", "AUTH_INVALID_API_KEY", "AUTH_EXPIRED_API_KEY",
    "AUTH_INSUFFICIENT_PERMISSIONS", "SUBSCRIPTION_API_RESTRICTED_PLAN",
    "PLAN_FEATURE_NOT_AVAILABLE", "AGENT_NOT_FOUND", "AGENT_NOT_TRAINED",
    "CHAT_MODEL_NOT_ALLOWED", "VALIDATION_INVALID_BODY", "VALIDATION_INVALID_JSON",
})
CREDIT_CODES = frozenset({"CHAT_CREDITS_EXHAUSTED", "CHAT_AGENT_CREDITS_EXHAUSTED"})


def too_long(limit: int, length: int) -> str:
    return (
        f"Your message is {length:,} characters long; I can take at most {limit:,}. "
        "Please shorten it and send it again."
    )


def over_quota(quota: int, reset_in: float) -> str:
    minutes = max(1, math.ceil(reset_in / 60))
    when = "in about a minute" if minutes == 1 else f"in about {minutes} minutes"
    return (
        f"You've reached the limit of {quota} questions for now. Please come back {when}."
    )


def busy(retry_after: float | None) -> str:
    if retry_after:
        return (
            "The agent is getting too many questions right now. "
            f"Please try again in about {max(1, math.ceil(retry_after))} seconds."
        )
    return "The agent is getting too many questions right now. Please try again shortly."


def for_error(exc: ChatbaseError) -> str:
    """The line a user sees when no answer text could be shown."""
    if isinstance(exc, ChatbaseRateLimited):
        return busy(exc.retry_after)
    if isinstance(exc, ChatbaseAPIError):
        if exc.code in CREDIT_CODES:
            return _CREDITS
        if exc.code in CONFIG_CODES or exc.status in (401, 403):
            return _CONFIG
        if exc.code == "RATE_LIMIT_TOO_MANY_REQUESTS":
            return busy(None)
        return _UNREACHABLE
    if isinstance(exc, ChatbaseUnavailable):
        return _UNREACHABLE
    if isinstance(exc, StreamIdleTimeout):
        return _STALLED
    return _BROKEN


def cut_off_reason(exc: BaseException) -> str:
    if isinstance(exc, StreamIdleTimeout):
        return "the agent stopped responding"
    if isinstance(exc, StreamErrorChunk):
        return "the agent reported an error"
    if isinstance(exc, ChatbaseError):
        return "the connection to the agent broke"
    return "something went wrong"
