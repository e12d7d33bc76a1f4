"""Frozen data that crosses a boundary: inbound events, Chatbase stream events and results."""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any


class ConversationScope(StrEnum):
    """Who shares a conversation in a thread: each person apart, or everyone in it."""

    USER = "user"
    THREAD = "thread"


class FeedbackFrom(StrEnum):
    """Whose reactions count as feedback on an answer."""

    ASKER = "asker"
    ANYONE = "anyone"



class Platform(StrEnum):
    SLACK = "slack"
    DISCORD = "discord"


class Feedback(StrEnum):
    POSITIVE = "positive"
    NEGATIVE = "negative"


# --------------------------------------------------------------------------- inbound


@dataclass(frozen=True, slots=True)
class Place:
    """Where a message lives on its platform; enough to key a conversation and to reply.

    ``workspace`` is the Slack team or the Discord guild ("" for a Discord DM).
    ``thread`` is the Slack ``thread_ts`` or the Discord thread channel id, None when the
    message is not inside a thread. ``enterprise`` is the Slack Enterprise Grid id when present.
    """

    platform: Platform
    workspace: str
    channel: str
    thread: str | None = None
    is_dm: bool = False
    enterprise: str | None = None


@dataclass(frozen=True, slots=True)
class InboundMessage:
    """A platform message the adapter decided the bot should answer.

    ``text`` has the bot mention stripped. ``event_id`` is the platform's delivery id (Slack
    ``event_id``, Discord message id or interaction id) used for exactly-once handling.
    ``reply_thread`` is the thread the answer will go to when it differs from ``place.thread``
    (a channel mention opens a thread under itself): the conversation is keyed on it.
    """

    place: Place
    author: str
    text: str
    message_id: str
    event_id: str
    reply_thread: str | None = None

    @property
    def conversation_thread(self) -> str | None:
        return self.reply_thread if self.reply_thread is not None else self.place.thread


@dataclass(frozen=True, slots=True)
class InboundReaction:
    """A reaction added to or removed from a message, emoji name already normalised
    by the adapter (skin tones stripped, aliases folded to one name)."""

    platform: Platform
    workspace: str
    channel: str
    message_id: str
    user: str
    emoji: str
    added: bool
    event_id: str


@dataclass(frozen=True, slots=True)
class InboundFeedbackButton:
    """A press of a platform feedback button under an answer."""

    platform: Platform
    workspace: str
    channel: str
    message_id: str
    user: str
    feedback: Feedback
    event_id: str


# --------------------------------------------------------------------------- Chatbase


@dataclass(frozen=True, slots=True)
class Usage:
    credits: float | None = None


@dataclass(frozen=True, slots=True)
class ToolCall:
    tool_call_id: str
    tool_name: str
    input: Any = None


@dataclass(frozen=True, slots=True)
class StreamStart:
    message_id: str | None = None


@dataclass(frozen=True, slots=True)
class TextDelta:
    delta: str


@dataclass(frozen=True, slots=True)
class ToolInput:
    call: ToolCall


@dataclass(frozen=True, slots=True)
class StreamMetadata:
    message_id: str | None = None
    user_message_id: str | None = None
    conversation_id: str | None = None
    user_id: str | None = None
    credits: float | None = None
    finish_reason: str | None = None


@dataclass(frozen=True, slots=True)
class Source:
    """Where an answer came from: a ``source-url`` (``url``, ``title`` when given), a
    ``source-document`` (``title``, ``filename``, no URL) or a ``file`` (``url``,
    ``media_type``) chunk of the stream."""

    kind: str  # "url" | "document" | "file"
    url: str | None = None
    title: str | None = None
    filename: str | None = None
    media_type: str | None = None


@dataclass(frozen=True, slots=True)
class SourceFound:
    source: Source


@dataclass(frozen=True, slots=True)
class StreamFinish:
    finish_reason: str | None
    metadata: StreamMetadata


StreamEvent = (
    StreamStart | TextDelta | ToolInput | SourceFound | StreamMetadata | StreamFinish
)


@dataclass(frozen=True, slots=True)
class ChatResult:
    """The whole of one assistant answer, streamed or not."""

    text: str
    message_id: str | None
    conversation_id: str | None
    user_message_id: str | None = None
    user_id: str | None = None
    credits: float | None = None
    finish_reason: str | None = None
    tool_calls: tuple[ToolCall, ...] = field(default_factory=tuple)
    request_id: str | None = None
    sources: tuple[Source, ...] = ()


# --------------------------------------------------------------------------- store


@dataclass(frozen=True, slots=True)
class ReplyRecord:
    """What the store remembers about one platform message of a bot reply."""

    conversation_id: str
    assistant_message_id: str
    conversation_key: str
    asker: str
    platform: Platform
    workspace: str
    channel: str
    thread: str | None = None
    part_ids: tuple[str, ...] = ()
    agent: str | None = None  # the agent that wrote it (None: recorded before routing)


@dataclass(frozen=True, slots=True)
class Claim:
    """The outcome of claiming an event: ``first`` is False for a redelivery. The quota
    fields count this user's claimed messages in the current window (0 when not asked)."""

    first: bool
    quota_count: int = 0
    quota_reset_in: float = 0.0


@dataclass(frozen=True, slots=True)
class ConversationState:
    """What the store keeps per conversation key. ``last_turn_at`` is wall-clock seconds;
    ``agent`` is the Chatbase agent that owns the conversation (None: kept before the bridge
    recorded it)."""

    conversation_id: str
    latest_message_id: str | None
    last_turn_at: float
    agent: str | None = None
