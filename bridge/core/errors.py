"""The bridge's exception tree; third-party exceptions are translated into it at the edge.

::

    BridgeError
    ├── ConfigError              a setting is missing or malformed (names the variable)
    ├── StoreError               Redis unreachable or failing (names REDIS_URL and the address)
    │   └── TurnTimeout          waited too long for a conversation's previous turn
    ├── InvalidUserId            a userId Chatbase would refuse
    ├── ChatbaseError            anything from talking to Chatbase; carries request_id
    │   ├── ChatbaseAPIError     an HTTP error answer: code, message, details, status
    │   │   └── ChatbaseRateLimited   429 beyond the wait budget (retry_after)
    │   ├── ChatbaseUnavailable  refused connection, timeout before the answer started
    │   └── StreamError          the answer started, then broke
    │       ├── StreamInterrupted    EOF or disconnect without a finish
    │       ├── StreamErrorChunk     an ``error`` chunk in the stream
    │       ├── StreamMalformed      a frame that is not valid JSON (or an absurdly long line)
    │       └── StreamIdleTimeout    no bytes for the idle timeout
    └── PlatformError            a Slack or Discord call failed (raised by sinks)
        ├── PlatformRateLimited  throttled; retry_after seconds
        └── PlatformMessageGone  the message to edit was deleted (or its thread closed)
"""

from __future__ import annotations

from typing import Any


class BridgeError(Exception):
    """Base of every error the bridge raises on purpose."""


class ConfigError(BridgeError):
    """An operator mistake in the settings; the message is one plain sentence."""


class StoreError(BridgeError):
    """Redis could not be reached or answered with an error."""


class TurnTimeout(StoreError):
    """The previous turn of a conversation did not finish within BRIDGE_LOCK_WAIT."""


class InvalidUserId(BridgeError, ValueError):
    """A userId outside Chatbase's ``^[a-zA-Z0-9._-]+$``, 1-128 characters."""


class ChatbaseError(BridgeError):
    """Base for failures talking to Chatbase."""

    def __init__(self, message: str, *, request_id: str | None = None) -> None:
        super().__init__(message)
        self.request_id = request_id


class ChatbaseAPIError(ChatbaseError):
    """Chatbase answered with an error envelope ``{"error": {code, message, details}}``."""

    def __init__(
        self,
        *,
        code: str,
        message: str,
        status: int,
        details: dict[str, Any] | None = None,
        request_id: str | None = None,
    ) -> None:
        text = f"Chatbase {code} (HTTP {status}): {message}"
        if request_id:
            text += f" [request id {request_id}]"
        super().__init__(text, request_id=request_id)
        self.code = code
        self.api_message = message
        self.status = status
        self.details = details or {}


class ChatbaseRateLimited(ChatbaseAPIError):
    """Chatbase kept answering 429 for longer than the bridge is willing to wait."""

    def __init__(
        self,
        *,
        retry_after: float | None,
        message: str = "Too many requests",
        status: int = 429,
        code: str = "RATE_LIMIT_TOO_MANY_REQUESTS",
        request_id: str | None = None,
    ) -> None:
        super().__init__(code=code, message=message, status=status, request_id=request_id)
        self.retry_after = retry_after


class ChatbaseUnavailable(ChatbaseError):
    """Chatbase could not be reached, or did not start answering in time."""


class StreamError(ChatbaseError):
    """A streamed answer broke after it started."""


class StreamInterrupted(StreamError):
    """The stream ended (EOF or disconnect) without a ``finish``."""


class StreamErrorChunk(StreamError):
    """The stream carried an ``error`` chunk."""

    def __init__(
        self, error_text: str, *, code: str | None = None, request_id: str | None = None
    ) -> None:
        super().__init__(f"Chatbase stream error: {error_text}", request_id=request_id)
        self.error_text = error_text
        self.code = code


class StreamMalformed(StreamError):
    """A ``data:`` frame of the stream could not be decoded."""


class StreamIdleTimeout(StreamError):
    """No bytes arrived for the idle timeout."""


# Chatbase's answers for want of message credits: the workspace's (402, reference §8) or
# the agent's own limit. Counted apart so an alert can name it.
CREDITS_EXHAUSTED = frozenset({"CHAT_CREDITS_EXHAUSTED", "CHAT_AGENT_CREDITS_EXHAUSTED"})


class PlatformError(BridgeError):
    """A Slack or Discord call made by a sink failed."""


class PlatformRateLimited(PlatformError):
    def __init__(self, retry_after: float, message: str = "rate limited") -> None:
        super().__init__(f"{message} (retry after {retry_after:.2f}s)")
        self.retry_after = retry_after


class PlatformMessageGone(PlatformError):
    """The message to edit no longer exists or can no longer be written to."""


class PlatformMessageFrozen(PlatformError):
    """The message exists but refuses further edits (Discord 30046: too many edits to a
    message older than an hour); new messages are still accepted."""


# What each documented Chatbase error code (reference §8) means for the operator: the setting
# or service at fault, in the words a log reader needs. Request ids are logged beside it.
_OPERATOR_HINTS: dict[str, str] = {
    "VALIDATION_INVALID_BODY": "Chatbase refused the request body (a bridge bug or an API "
                               "change; the details name the field)",
    "VALIDATION_INVALID_JSON": "Chatbase could not parse the request body as JSON (a bridge "
                               "bug or a proxy rewriting bodies)",
    "VALIDATION_INVALID_DATE_RANGE": "a conversation list was asked with startDate after "
                                     "endDate",
    "AUTH_MISSING_API_KEY": "CHATBASE_API_KEY is missing from the request (is it set, and "
                            "does a proxy strip the Authorization header?)",
    "AUTH_INVALID_API_KEY": "CHATBASE_API_KEY is invalid",
    "AUTH_EXPIRED_API_KEY": "CHATBASE_API_KEY has expired; create a new key in the Chatbase "
                            "dashboard",
    "AUTH_INSUFFICIENT_PERMISSIONS": "CHATBASE_API_KEY may not use this agent or endpoint "
                                     "(check CHATBASE_AGENT_ID and the key's workspace)",
    "CHAT_CREDITS_EXHAUSTED": "the Chatbase workspace has no message credits left (billing)",
    "CHAT_AGENT_CREDITS_EXHAUSTED": "the agent CHATBASE_AGENT_ID reached its own credit limit "
                                    "(agent settings in Chatbase)",
    "SUBSCRIPTION_API_RESTRICTED_PLAN": "the Chatbase plan of CHATBASE_API_KEY's workspace "
                                        "has no API access",
    "PLAN_FEATURE_NOT_AVAILABLE": "the Chatbase plan lacks a feature this call needs",
    "CHAT_MODEL_NOT_ALLOWED": "the AI model chosen for CHATBASE_AGENT_ID is not allowed on the "
                              "Chatbase plan (agent settings)",
    "CHAT_CONVERSATION_MISMATCH": "the stored conversation belongs to another agent or user; "
                                  "the bridge forgets it and starts a new one",
    "CHAT_CONVERSATION_NOT_ONGOING": "the conversation is no longer ongoing (ended or taken "
                                     "over in Chatbase); the bridge forgets it and starts a "
                                     "new one",
    "RESOURCE_NOT_FOUND": "Chatbase no longer has this conversation (deleted, expired, or "
                          "another CHATBASE_AGENT_ID's); the bridge forgets it",
    "AGENT_NOT_FOUND": "CHATBASE_AGENT_ID names no agent this CHATBASE_API_KEY can use",
    "AGENT_NOT_TRAINED": "the agent CHATBASE_AGENT_ID has not been trained yet",
    "RESOURCE_MESSAGE_NOT_FOUND": "the message is no longer in its Chatbase conversation",
    "RESOURCE_TOOL_CALL_NOT_FOUND": "the client action's tool call expired before its result "
                                    "was posted (a slow handler?)",
    "CHAT_RETRY_MESSAGE_NOT_FOUND": "the answer to regenerate is no longer in its Chatbase "
                                    "conversation",
    "CHAT_RETRY_NO_USER_MESSAGE": "the answer to regenerate has no user message before it",
    "RESOURCE_MESSAGE_NOT_ASSISTANT": "feedback or regenerate named a message that is not an "
                                      "assistant message",
    "RATE_LIMIT_TOO_MANY_REQUESTS": "Chatbase rate-limits CHATBASE_API_KEY; lower "
                                    "BRIDGE_CHATBASE_RATE_LIMIT to pace requests below it",
    "INTERNAL_SERVER_ERROR": "Chatbase failed internally; not resent (it may have been "
                             "recorded); quote the request id to Chatbase support",
    "CHAT_STREAMING_ERROR": "Chatbase's model provider failed during the answer; quote the "
                            "request id to Chatbase support",
    "SERVICE_UNDER_MAINTENANCE": "Chatbase is under maintenance (nothing was done; retried "
                                 "while the budget lasts)",
}


def operator_hint(error: BaseException) -> str:
    """One phrase for the operator log saying what is at fault for ``error``."""
    code = getattr(error, "code", None)
    if isinstance(code, str) and code in _OPERATOR_HINTS:
        return _OPERATOR_HINTS[code]
    if isinstance(error, ChatbaseAPIError):
        if error.status >= 500:
            return (f"Chatbase answered HTTP {error.status}; not resent (it may have been "
                    "recorded)")
        return f"Chatbase answered {error.code} (HTTP {error.status})"
    if isinstance(error, ChatbaseUnavailable):
        return "Chatbase (CHATBASE_API_BASE) did not answer"
    if isinstance(error, StreamError):
        return "the Chatbase answer stream broke"
    return type(error).__name__
