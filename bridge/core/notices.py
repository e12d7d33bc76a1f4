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
NEW_CONVERSATION = (
    "_(The previous conversation could not be continued, so this answer starts a new one.)_"
)
EMPTY_ANSWER = "_(The agent sent an empty answer. Please try rephrasing your question.)_"
CUT_OFF = "_(The answer was cut off: {reason}. Please ask again.)_"
INCOMPLETE = "_(This answer is incomplete: {reason}.)_"
SHUTTING_DOWN = "the bridge is restarting"
STOPPED = "_(Stopped.)_"
# Why the watchdog ended an answer that showed no progress for BRIDGE_STUCK_END_AFTER.
STUCK = "the answer stopped making progress"
RESTARTING = "The bridge is restarting. Please send your message again in a minute."
RESTARTED_BEFORE_ANSWER = (
    "The bridge restarted before it could answer this. Please send your message again."
)
TOOL_ROUNDS = INCOMPLETE.format(
    reason="the agent asked for more actions than the bridge runs in one answer"
)
CANNOT_REGENERATE = (
    "This conversation can no longer be continued, so this answer can't be regenerated. "
    "Send your question again to start a new conversation."
)

_CONFIG = (
    "I can't answer right now because of a configuration problem on the bridge. "
    "An admin can see the details in the logs."
)
_CREDITS = (
    "I can't answer right now: the agent has run out of message credits. "
    "Please let your workspace admin know."
)
_UNREACHABLE = "I couldn't reach the agent just now. Please try again in a moment."
_FAILED = (
    "The agent ran into a problem and no answer came back. "
    "You can send your message again."
)
_BROKEN = "Something went wrong while the agent was answering. Please try again."
_STALLED = "The agent stopped responding. Please try again."
_ADMIN = " Please let your workspace admin know."

# The line for each documented Chatbase error code (reference §8), by what the user can do.
# A code that means "this conversation cannot be continued" is normally recovered from by the
# service (a new conversation); its line here is for when that, too, failed.
_BY_CODE: dict[str, str] = {
    "VALIDATION_INVALID_BODY": (
        "The agent couldn't accept this message because of a problem on the bridge. "
        "An admin can see the details in the logs."
    ),
    "VALIDATION_INVALID_JSON": (
        "The agent couldn't accept this message because of a problem on the bridge. "
        "An admin can see the details in the logs."
    ),
    "VALIDATION_INVALID_DATE_RANGE": (
        "The agent couldn't accept this request because of a problem on the bridge. "
        "An admin can see the details in the logs."
    ),
    "AUTH_MISSING_API_KEY": _CONFIG,
    "AUTH_INVALID_API_KEY": _CONFIG,
    "AUTH_EXPIRED_API_KEY": (
        "I can't answer right now: the bridge's access to the agent has expired." + _ADMIN
    ),
    "AUTH_INSUFFICIENT_PERMISSIONS": (
        "I can't answer right now: the bridge isn't allowed to use this agent." + _ADMIN
    ),
    "CHAT_CREDITS_EXHAUSTED": _CREDITS,
    "CHAT_AGENT_CREDITS_EXHAUSTED": (
        "I can't answer right now: this agent has used up its message credits." + _ADMIN
    ),
    "SUBSCRIPTION_API_RESTRICTED_PLAN": (
        "I can't answer right now: the agent's plan doesn't allow answering from chat apps."
        + _ADMIN
    ),
    "PLAN_FEATURE_NOT_AVAILABLE": (
        "I can't answer right now: the agent's plan doesn't include this feature." + _ADMIN
    ),
    "CHAT_MODEL_NOT_ALLOWED": (
        "I can't answer right now: the agent is set to an AI model its plan doesn't include."
        + _ADMIN
    ),
    "AGENT_NOT_FOUND": (
        "I can't answer right now: the agent I'm set up to use doesn't exist anymore." + _ADMIN
    ),
    "AGENT_NOT_TRAINED": "I can't answer yet: the agent hasn't finished learning." + _ADMIN,
    "CHAT_CONVERSATION_MISMATCH": (
        "This conversation can't be continued. Please send your message again to start a "
        "new one."
    ),
    "CHAT_CONVERSATION_NOT_ONGOING": (
        "This conversation has ended. Please send your message again to start a new one."
    ),
    "RESOURCE_NOT_FOUND": (
        "This conversation no longer exists. Please send your message again to start a "
        "new one."
    ),
    "RESOURCE_MESSAGE_NOT_FOUND": (
        "That answer no longer exists, so it can't be changed. Please ask again."
    ),
    "RESOURCE_TOOL_CALL_NOT_FOUND": (
        "The agent gave up waiting for an action the bridge ran for it. Please ask again."
    ),
    "CHAT_RETRY_MESSAGE_NOT_FOUND": (
        "That answer can no longer be regenerated. Please ask your question again."
    ),
    "CHAT_RETRY_NO_USER_MESSAGE": (
        "There's no question before this answer to regenerate it from. Please ask your "
        "question again."
    ),
    "RESOURCE_MESSAGE_NOT_ASSISTANT": (
        "Only the agent's own answers can be rated or regenerated."
    ),
    "INTERNAL_SERVER_ERROR": _FAILED,
    "CHAT_STREAMING_ERROR": _BROKEN,
    "SERVICE_UNDER_MAINTENANCE": (
        "The agent is down for maintenance right now. Please try again in a few minutes."
    ),
}

# Why an answer that finished without ``stop`` is incomplete, by finish reason (AI SDK
# UIMessage stream ``finish.finishReason``, reference §11.1; "abort" for an ``abort`` chunk).
_INCOMPLETE_BY_REASON = {
    "length": "it reached the agent's length limit",
    "content-filter": "the agent's content filter stopped it",
    "error": "the agent ran into an error",
    "abort": "the agent stopped before finishing",
    "tool-calls": "the agent asked for an action that did not run",
    "interrupted": "the agent was interrupted",
}


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
        if exc.code == "RATE_LIMIT_TOO_MANY_REQUESTS":
            return busy(None)
        line = _BY_CODE.get(exc.code)
        if line is not None:
            return line
        if exc.status in (401, 403):
            return _CONFIG
        if exc.status == 503:
            return _BY_CODE["SERVICE_UNDER_MAINTENANCE"]
        return _FAILED
    if isinstance(exc, StreamErrorChunk) and exc.code in _BY_CODE:
        return _BY_CODE[exc.code]
    if isinstance(exc, ChatbaseUnavailable):
        return _UNREACHABLE
    if isinstance(exc, StreamIdleTimeout):
        return _STALLED
    return _BROKEN


def incomplete(finish_reason: str | None) -> str | None:
    """The note under an answer that ended without ``stop``; None for a complete one."""
    if finish_reason in (None, "stop"):
        return None
    reason = _INCOMPLETE_BY_REASON.get(finish_reason, "the agent stopped early")
    return INCOMPLETE.format(reason=reason)


def cut_off_reason(exc: BaseException) -> str:
    if isinstance(exc, StreamIdleTimeout):
        return "the agent stopped responding"
    if isinstance(exc, StreamErrorChunk):
        return "the agent reported an error"
    if isinstance(exc, ChatbaseError):
        return "the connection to the agent broke"
    return "something went wrong"
