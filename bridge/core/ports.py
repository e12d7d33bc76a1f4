"""The few interfaces between the platform-neutral core and a platform adapter.

A platform gives the core a ``ReplySink`` for each answer it renders; the renderer owns
timing (what to send and when), the sink owns platform mechanics (how a message is posted,
edited, appended to, or streamed). Both mechanics fit the same two calls:

* edit-in-place platforms (Discord, Slack post+update) replace a message's whole text on
  ``edit``;
* append-only native streaming (Slack ``chat.startStream``/``appendStream``/``stopStream``)
  sends, on ``edit``, the part of the new text that follows what it already sent, and stops
  the stream when ``final`` is set. Its ``limits.progress_mark`` is ``None``: the text only
  ever grows, so no "still writing" mark is added and later removed.

The sink raises ``bridge.core.errors.PlatformRateLimited`` with the platform's retry-after when
it is throttled, ``PlatformMessageGone`` when the message it should edit no longer exists,
and ``PlatformError`` for anything else; it never retries on its own.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Iterable, Sequence
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass
from typing import Any, Literal, Protocol

from bridge.core.models import (
    Claim,
    ConversationScope,
    ConversationState,
    Feedback,
    FeedbackFrom,
    InboundFeedbackButton,
    InboundMessage,
    InboundReaction,
    Place,
    Platform,
    ReplyRecord,
)

Operation = Literal["post", "edit"]


@dataclass(frozen=True, slots=True)
class Budget:
    """A platform rate-limit bucket: every call on ``key`` (from any reply, any replica)
    is spaced at least ``interval`` seconds from the previous one."""

    key: str
    interval: float


# Appended to the visible text while an answer is still streaming; gone at the end.
PROGRESS_MARK = " ▌"


@dataclass(frozen=True, slots=True)
class SinkLimits:
    max_chars: int
    progress_mark: str | None = PROGRESS_MARK


class ReplySink(Protocol):
    """Renders one answer on one platform."""

    @property
    def limits(self) -> SinkLimits: ...

    def budget(self, op: Operation, *, final: bool = False) -> Budget:
        """The rate-limit bucket a call of this kind is charged to (a final edit may be a
        different platform method, e.g. Slack's ``chat.stopStream``)."""
        ...

    async def working(self) -> None:
        """Show that work started (typing, "is thinking…"). Best effort, never raises."""
        ...

    async def post(self, text: str, *, final: bool) -> str:
        """Post a new message of this reply (the first part or a continuation); returns its
        platform message id. ``final`` means no further edit of it will follow."""
        ...

    async def edit(self, message_id: str, text: str, *, final: bool) -> None:
        """Make ``message_id`` show exactly ``text``."""
        ...

    async def delete(self, message_id: str) -> None:
        """Remove a message of this reply (a regenerated answer that got shorter)."""
        ...

    async def finish(self, part_ids: Sequence[str], *, answered: bool) -> None:
        """The reply is complete: clear the working signal and, when ``answered`` (a real
        Chatbase answer, not a notice), add what a finished answer carries (feedback
        buttons). Best effort, never raises."""
        ...


# Opens a sink that renders into an existing reply (regenerate in place).
SinkOpener = Callable[[ReplyRecord], ReplySink]


class Relay(Protocol):
    """What an adapter asks of the core."""

    async def handle_message(self, message: InboundMessage, sink: ReplySink) -> None: ...

    async def has_conversation(self, message: InboundMessage) -> bool:
        """Whether the message sits in a conversation the bot is part of (thread
        follow-ups without a new mention)."""
        ...

    async def handle_reaction(self, reaction: InboundReaction, open_sink: SinkOpener) -> None: ...

    async def handle_feedback_button(self, press: InboundFeedbackButton) -> None: ...

    async def reset(self, place: Place, author: str) -> bool:
        """Forget the conversation of ``author`` at ``place``; True when there was one."""
        ...

    async def adopt(self, place: Place, author: str, conversation_id: str) -> None:
        """Bind ``author``'s conversation at ``place`` (a new thread) to
        ``conversation_id``, checked to be theirs (``bridge.core.history.History.resume``)."""
        ...

    def answers_at(self, place: Place) -> bool:
        """Whether an agent answers at ``place`` (BRIDGE_ROUTES, CHATBASE_AGENT_ID)."""
        ...

    async def stop(self, handle: str) -> bool:
        """Stop the answer(s) running under ``handle`` (``bridge.core.identity.thread_handle``
        or ``event_handle``), on this replica and the others; True when one was running
        here."""
        ...


class Clock(Protocol):
    """Time as the renderer and pacer see it; tests substitute a controllable one."""

    def now(self) -> float: ...

    def sleep(self, seconds: float) -> Awaitable[None]: ...


class PlatformAdapter(Protocol):
    """One platform's bot inside the runtime: started, stopped in two steps on shutdown."""

    @property
    def name(self) -> str: ...

    async def start(self) -> None:
        """Connect and begin taking events; returns once connected (loops run in owned
        tasks)."""
        ...

    async def stop_intake(self) -> None:
        """Stop taking new messages (in-flight answers keep rendering)."""
        ...

    async def close(self) -> None:
        """Close platform connections; called after in-flight answers are done."""
        ...

    def is_ready(self) -> bool:
        """Connected and able to answer (feeds /readyz)."""
        ...


# ---------------------------------------------------------------------- what the core reads
# The core reads its settings, stores its memory and counts its work through these; the
# application shell passes the real ones (pydantic settings, the Redis store, Prometheus
# metrics), which fit them structurally. So the core imports no I/O library and nothing of
# the shell.


class Secret(Protocol):
    def get_secret_value(self) -> str: ...


class FeedbackSettings(Protocol):
    """The settings that say which reactions mean what, and whose count."""

    @property
    def feedback_positive(self) -> Sequence[str]: ...
    @property
    def feedback_negative(self) -> Sequence[str]: ...
    @property
    def regenerate_reactions(self) -> Sequence[str]: ...
    @property
    def feedback_from(self) -> FeedbackFrom: ...


class RelaySettings(FeedbackSettings, Protocol):
    """The settings the relay service reads (``bridge.app.settings.Settings`` has them)."""

    @property
    def conversation_scope(self) -> ConversationScope: ...
    @property
    def dm_idle_reset(self) -> int: ...
    @property
    def max_input_chars(self) -> int: ...
    @property
    def max_tool_rounds(self) -> int: ...
    @property
    def show_sources(self) -> bool: ...
    @property
    def user_id_secret(self) -> Secret | None: ...
    @property
    def user_quota(self) -> int: ...
    @property
    def user_quota_window(self) -> int: ...


class Turn(Protocol):
    """One held turn of a conversation: what was remembered, and what to remember at the end."""

    state: ConversationState | None

    def remember(
        self, conversation_id: str, latest_message_id: str | None, reply: ReplyRecord | None,
        *, agent: str | None = None,
    ) -> None: ...

    def forget(self) -> None: ...


class ConversationStore(Protocol):
    """The relay's memory, shared by every replica (``bridge.store.Store``)."""

    async def claim(
        self, event_id: str, *, quota_subject: str | None = None, quota_window: int = 3600
    ) -> Claim: ...

    def turn(
        self, conversation_key: str, *, on_wait: Callable[[int], None] | None = None
    ) -> AbstractAsyncContextManager[Turn]: ...

    async def has_conversation(self, key: str) -> bool: ...

    async def forget_conversation(self, key: str) -> bool: ...

    async def find_reply(
        self, platform: Platform, channel: str, message_id: str
    ) -> ReplyRecord | None: ...

    async def update_reply(
        self, record: ReplyRecord, *, stale_part_ids: Iterable[str] = ()
    ) -> None: ...

    async def feedback_reactions(
        self, *, assistant_message_id: str, user: str, add: str | None, remove: str | None
    ) -> frozenset[str]: ...

    async def announce_stop(self, handle: str) -> None:
        """Tell the other replicas to stop the answer running under ``handle``."""
        ...


class _Count(Protocol):
    def inc(self, amount: float = 1) -> None: ...


class _Level(_Count, Protocol):
    def dec(self, amount: float = 1) -> None: ...

    def set(self, value: float) -> None: ...


class _Observe(Protocol):
    def observe(self, amount: float) -> None: ...


class _Counter(Protocol):
    def labels(self, *values: str) -> _Count: ...


class _Gauge(Protocol):
    def labels(self, *values: str) -> _Level: ...


class _Histogram(Protocol):
    def labels(self, *values: str) -> _Observe: ...


class RelayMetrics(Protocol):
    """The figures the relay keeps (``bridge.app.metrics.Metrics``, Prometheus)."""

    @property
    def events(self) -> _Counter: ...
    @property
    def answers(self) -> _Counter: ...
    @property
    def feedback(self) -> _Counter: ...
    @property
    def in_flight(self) -> _Gauge: ...
    @property
    def first_text_seconds(self) -> _Histogram: ...
    @property
    def added_first_text_seconds(self) -> _Histogram: ...
    @property
    def deltas(self) -> _Counter: ...
    @property
    def answers_stuck(self) -> _Gauge: ...
    @property
    def watchdog_ended(self) -> _Counter: ...


class ChatbaseLike(Protocol):
    """The Chatbase API as the relay uses it (``bridge.chatbase.client.ChatbaseClient``)."""

    @property
    def agent_id(self) -> str: ...

    def chat_stream(
        self, *, message: str | None, conversation_id: str | None = None,
        user_id: str | None = None,
    ) -> Any: ...

    def retry_stream(self, *, conversation_id: str, message_id: str) -> Any: ...

    async def submit_tool_result(
        self, *, conversation_id: str, tool_call_id: str, output: Any
    ) -> None: ...

    async def set_feedback(
        self, *, conversation_id: str, message_id: str, feedback: Feedback | None
    ) -> None: ...

    async def get_conversation(self, conversation_id: str) -> dict[str, Any]: ...

    async def user_conversations_page(
        self, user_id: str, *, cursor: str | None = None, limit: int = 5
    ) -> tuple[list[dict[str, Any]], str | None]: ...


class SlotStore(Protocol):
    """Shared bucket state (``bridge.store.Store`` in production)."""

    async def reserve(self, key: str, interval: float, now: float) -> float: ...

    async def push_back(self, key: str, until: float) -> None: ...
