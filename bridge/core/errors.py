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
