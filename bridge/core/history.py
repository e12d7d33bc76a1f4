"""A person's past conversations with the agent, for the history views (Slack's Home tab,
Discord's /history), and what a thread that continues one of them starts with.

Chatbase keeps every conversation by userId (``GET /agents/{id}/users/{userId}/
conversations``, most recently active first, cursor pages). The userId is the one the
bridge derives for the person on that platform (``identity.chatbase_user_id``), so the list
is exactly what that person said to the agent through the bridge, and nobody else's: a
conversation is only continued after Chatbase confirms it has that userId.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from typing import Any, Protocol

from bridge.core.errors import (
    ChatbaseAPIError,
    ChatbaseError,
    ChatbaseRateLimited,
    StoreError,
)
from bridge.core.identity import chatbase_user_id
from bridge.core.models import Place
from bridge.core.ports import ChatbaseLike
from bridge.core.routing import Agents
from bridge.core.split import one_line

log = logging.getLogger(__name__)

# A first page is read from Chatbase at most this often per person (every replica).
CACHE_SECONDS = 30.0
TITLE_CHARS = 80
EXCERPT_CHARS = 600

STATUS = {"ended": "ended", "taken_over": "taken over by a person", "paused": "paused"}

BUSY = "The agent is busy right now, so your conversations can't be listed. Try again in a minute."
UNAVAILABLE = "Your conversations couldn't be loaded just now. Please try again later."
NOT_YOURS = "Only the person who had this conversation can continue it."
GONE = "This conversation no longer exists, so it can't be continued."
ENDED = ("This conversation has {status}, so it can't be continued. You can start a new one "
         "about the same topic.")
UNTITLED = "Untitled conversation"
NO_AGENT = "No agent answers here, so there are no conversations to show."


class HistoryCache(Protocol):
    async def cached_history(self, key: str) -> str | None: ...

    async def cache_history(self, key: str, page: str, ttl: float) -> None: ...


@dataclass(frozen=True, slots=True)
class PastConversation:
    id: str
    title: str
    updated_at: float | None  # Unix seconds of the last activity
    status: str  # ongoing | ended | taken_over | paused

    @property
    def ongoing(self) -> bool:
        return self.status == "ongoing"

    @property
    def status_line(self) -> str | None:
        """How to name the status to a person; None while it is ongoing."""
        return None if self.ongoing else STATUS.get(self.status, self.status.replace("_", " "))


@dataclass(frozen=True, slots=True)
class HistoryPage:
    conversations: tuple[PastConversation, ...] = ()
    cursor: str | None = None  # the next page's
    problem: str | None = None  # a line to show instead, when Chatbase could not list them


@dataclass(frozen=True, slots=True)
class Resumption:
    """A conversation someone may continue, with its last exchange to head the thread."""

    conversation_id: str
    title: str
    question: str | None
    answer: str | None

    def heading(self, hint: str = "Reply in this thread to continue the conversation.") -> str:
        """The Markdown that heads the continuing thread; ``hint`` says how to go on there
        (a platform where a reply needs a mention, or a DM, says so)."""
        lines = [f"**Continuing: {self.title}**"]
        if self.question:
            lines.append("> " + _excerpt(self.question).replace("\n", "\n> "))
        if self.answer:
            lines.append(_excerpt(self.answer))
        lines.append(f"_{hint}_")
        return "\n\n".join(lines)


def _excerpt(text: str) -> str:
    """A message of the last exchange, its lines kept, cut to ``EXCERPT_CHARS``."""
    text = text.strip()
    return text if len(text) <= EXCERPT_CHARS else text[: EXCERPT_CHARS - 1].rstrip() + "…"


def ago(then: float | None, now: float) -> str:
    """When ``then`` was, as a person says it ("2 hours ago")."""
    if then is None:
        return "some time ago"
    seconds = max(0.0, now - then)
    for size, unit in ((86_400 * 365, "year"), (86_400 * 30, "month"), (86_400 * 7, "week"),
                       (86_400, "day"), (3_600, "hour"), (60, "minute")):
        count = int(seconds // size)
        if count >= 1:
            if unit == "day" and count == 1:
                return "yesterday"
            return f"{count} {unit}{'s' if count > 1 else ''} ago"
    return "just now"


def _text(message: Any) -> str:
    parts = message.get("parts") if isinstance(message, dict) else None
    return "".join(
        p["text"] for p in (parts if isinstance(parts, list) else ())
        if isinstance(p, dict) and p.get("type") == "text" and isinstance(p.get("text"), str)
    ).strip()


def _messages(data: dict[str, Any]) -> list[dict[str, Any]]:
    messages = data.get("messages")
    return [m for m in messages if isinstance(m, dict)] if isinstance(messages, list) else []


def _number(value: Any) -> float | None:
    return float(value) if isinstance(value, int | float) and not isinstance(value, bool) \
        else None


class History:
    """Lists a person's conversations and checks that one may be continued."""

    def __init__(
        self,
        *,
        agents: Agents,
        cache: HistoryCache,
        secret: str | None,
        page_size: int = 5,
        wall: Callable[[], float] = time.time,
    ) -> None:
        self._agents = agents
        self._cache = cache
        self._secret = secret
        self._page_size = page_size
        self._wall = wall

    def user_id(self, place: Place, author: str) -> str:
        return chatbase_user_id(place, author, secret=self._secret)

    async def page(self, place: Place, author: str, cursor: str | None = None) -> HistoryPage:
        """One page of ``author``'s conversations with the agent, newest activity first."""
        chatbase = self._agents.for_place(place)
        if chatbase is None:
            return HistoryPage(problem=NO_AGENT)
        user_id = self.user_id(place, author)
        cache_key = f"{chatbase.agent_id}/{user_id}"
        if cursor is None:
            cached = await self._cached(cache_key)
            if cached is not None:
                return cached
        try:
            items, following = await chatbase.user_conversations_page(
                user_id, cursor=cursor, limit=self._page_size)
        except ChatbaseRateLimited as exc:
            log.warning("listing conversations was rate limited: %s", exc)
            return HistoryPage(problem=BUSY)
        except ChatbaseError as exc:
            log.warning("listing conversations failed: %s", exc)
            return HistoryPage(problem=UNAVAILABLE)
        found = tuple(await asyncio.gather(*(self._past(chatbase, item) for item in items
                                             if isinstance(item.get("id"), str))))
        page = HistoryPage(conversations=found, cursor=following)
        if cursor is None:
            await self._keep(cache_key, page)
        return page

    async def resume(self, place: Place, author: str, conversation_id: str) -> Resumption | str:
        """The conversation ``author`` asks to continue, or the line that says why not."""
        chatbase = self._agents.for_place(place)
        if chatbase is None:
            return NO_AGENT
        try:
            data = await chatbase.get_conversation(conversation_id)
        except ChatbaseAPIError as exc:
            if exc.code == "RESOURCE_NOT_FOUND":
                return GONE
            log.warning("reading a conversation to continue failed: %s", exc)
            return UNAVAILABLE
        except ChatbaseError as exc:
            log.warning("reading a conversation to continue failed: %s", exc)
            return UNAVAILABLE
        if data.get("userId") != self.user_id(place, author):
            log.info("refused to continue a conversation of another user")
            return NOT_YOURS
        past = self._summary(data, data)
        if not past.ongoing:
            return ENDED.format(status=past.status_line or "ended")
        messages = _messages(data)
        question = next((_text(m) for m in reversed(messages)
                         if m.get("role") == "user" and _text(m)), None)
        answer = next((_text(m) for m in reversed(messages)
                       if m.get("role") == "assistant" and _text(m)), None)
        return Resumption(conversation_id=conversation_id, title=past.title,
                          question=question, answer=answer)

    async def _past(self, chatbase: ChatbaseLike, item: dict[str, Any]) -> PastConversation:
        title = item.get("title")
        if isinstance(title, str) and title.strip():
            return self._summary(item, None)
        # No title yet: name it by its first question, read from the conversation.
        try:
            data = await chatbase.get_conversation(item["id"])
        except ChatbaseError as exc:
            log.info("could not read an untitled conversation: %s", exc)
            data = {}
        return self._summary(item, data)

    @staticmethod
    def _summary(item: dict[str, Any], data: dict[str, Any] | None) -> PastConversation:
        title = item.get("title")
        if not (isinstance(title, str) and title.strip()):
            first = next((_text(m) for m in _messages(data or {})
                          if m.get("role") == "user" and _text(m)), None)
            title = first or UNTITLED
        status = item.get("status")
        return PastConversation(
            id=str(item.get("id")),
            title=one_line(title, TITLE_CHARS),
            updated_at=_number(item.get("updatedAt")),
            status=status if isinstance(status, str) and status else "ongoing",
        )

    async def _cached(self, key: str) -> HistoryPage | None:
        """The first page kept under ``key`` (agent and userId), if still there."""
        try:
            raw = await self._cache.cached_history(key)
            if raw is None:
                return None
            data = json.loads(raw)
            return HistoryPage(
                conversations=tuple(PastConversation(**c) for c in data["conversations"]),
                cursor=data.get("cursor"),
            )
        except (StoreError, ValueError, KeyError, TypeError) as exc:
            log.info("history cache unusable, reading Chatbase: %s", type(exc).__name__)
            return None

    async def _keep(self, key: str, page: HistoryPage) -> None:
        raw = json.dumps({"conversations": [asdict(c) for c in page.conversations],
                          "cursor": page.cursor})
        try:
            await self._cache.cache_history(key, raw, CACHE_SECONDS)
        except StoreError as exc:
            log.info("could not cache a history page: %s", exc)

    def now(self) -> float:
        return self._wall()
