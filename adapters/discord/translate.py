"""Pure translation of Discord gateway payloads into the core's inbound models (no I/O).

Every decision here takes the JSON fields of a gateway dispatch (``MESSAGE_CREATE``,
``MESSAGE_REACTION_ADD``/``REMOVE``) or plain values, and returns ``None`` for anything the
bot should not act on, including payloads that are truncated or malformed: a bad event is
dropped, never a crash. ``message_payload`` and ``reaction_payload`` give those fields back
from the objects discord.py's public events carry.
"""

from __future__ import annotations

import re
from collections.abc import Collection, Mapping
from dataclasses import dataclass
from enum import StrEnum
from typing import TYPE_CHECKING, Any

from bridge.core.models import InboundMessage, InboundReaction, Place, Platform

# Discord message types a person writes (DEFAULT, REPLY); joins, pins, boosts, thread
# starters and the like are system messages.
_USER_MESSAGE_TYPES = frozenset({0, 19})

# Channel name limit (threads included): 1-100 characters.
THREAD_NAME_LIMIT = 100

# Fitzpatrick skin-tone modifiers and the emoji/text presentation selectors: 👍🏽 and 👍️
# must count as 👍.
_EMOJI_NOISE = re.compile("[\U0001f3fb-\U0001f3ff\ufe0e\ufe0f]")

if TYPE_CHECKING:
    import discord

_SNOWFLAKE = re.compile(r"^[0-9]{1,20}$")
_WHITESPACE = re.compile(r"\s+")


class ChannelKind(StrEnum):
    """What the adapter's cache knows about the channel a message arrived in."""

    TEXT = "text"  # a guild text or announcement channel: a mention may open a thread
    THREAD = "thread"  # a thread (public, private, announcement or forum post)
    OTHER = "other"  # voice/stage text chat, or a channel the cache does not know


class ReplyMode(StrEnum):
    OPEN_THREAD = "open_thread"  # create a thread from the asker's message, answer inside
    INLINE = "inline"  # reply in the channel, referencing the asker's message
    IN_PLACE = "in_place"  # answer in the channel itself (a thread or a DM)


@dataclass(frozen=True, slots=True)
class ChannelFacts:
    kind: ChannelKind
    parent_id: str | None = None  # the thread's parent channel
    can_open_thread: bool = False  # the bot may create a public thread and write in it


@dataclass(frozen=True, slots=True)
class Filters:
    """``BRIDGE_DISCORD_ALLOWED_*``: empty means everywhere. DMs are never filtered."""

    guilds: frozenset[str] = frozenset()
    channels: frozenset[str] = frozenset()

    @classmethod
    def of(cls, guilds: Collection[str], channels: Collection[str]) -> Filters:
        return cls(frozenset(guilds), frozenset(channels))

    def allows(self, guild: str | None, channel: str, parent: str | None = None) -> bool:
        if guild is None:
            return True
        if self.guilds and guild not in self.guilds:
            return False
        if self.channels:
            # Threads count by their parent, so allowing a channel allows its threads.
            return channel in self.channels or (parent is not None and parent in self.channels)
        return True


@dataclass(frozen=True, slots=True)
class MessageDecision:
    """What to do with a message the bot may answer."""

    message: InboundMessage
    mode: ReplyMode
    # False for a thread message without a mention: answered only when it continues a
    # conversation the asker has with the bot (``Relay.has_conversation``).
    mentioned: bool
    # Where the answer is written: the thread to create (its id equals the message id),
    # the channel or thread itself.
    target_channel: str
    thread_name: str | None = None


def snowflake(value: Any) -> str | None:
    """A Discord id as a string, or None when ``value`` is not one."""
    if isinstance(value, bool):
        return None
    if isinstance(value, int) and value >= 0:
        value = str(value)
    if isinstance(value, str) and _SNOWFLAKE.match(value):
        return value
    return None


def guild_of(payload: Any) -> str | None:
    """The payload's guild id; None for a DM (or a payload without one)."""
    if not isinstance(payload, Mapping):
        return None
    return snowflake(payload.get("guild_id"))


def strip_bot_mention(content: str, bot_id: str) -> str:
    """The text with every ``<@bot>``/``<@!bot>`` removed and surrounding space trimmed."""
    return re.sub(rf"<@!?{re.escape(bot_id)}>", " ", content).strip()


def mentions_user(payload: Mapping[str, Any], user_id: str) -> bool:
    """Whether the message mentions ``user_id`` itself (not @everyone, @here or a role)."""
    mentions = payload.get("mentions")
    if not isinstance(mentions, list):
        return False
    return any(isinstance(m, Mapping) and snowflake(m.get("id")) == user_id for m in mentions)


def thread_name(text: str, *, fallback: str = "Question") -> str:
    """A thread name from the question: one line, at most 100 UTF-16 units."""
    name = _WHITESPACE.sub(" ", text).strip() or fallback
    if _utf16_len(name) <= THREAD_NAME_LIMIT:
        return name
    out: list[str] = []
    used = 0
    budget = THREAD_NAME_LIMIT - 1  # room for the ellipsis
    for char in name:
        size = _utf16_len(char)
        if used + size > budget:
            break
        out.append(char)
        used += size
    return "".join(out).rstrip() + "…"


def _utf16_len(text: str) -> int:
    # Discord counts name length in UTF-16 code units (JavaScript string length).
    return len(text.encode("utf-16-le")) // 2


def message_decision(
    payload: Any,
    *,
    bot_id: str,
    facts: ChannelFacts,
    filters: Filters,
) -> MessageDecision | None:
    """Decide whether and how to answer a ``MESSAGE_CREATE`` payload."""
    written = _written_by_a_person(payload, bot_id)
    if written is None:
        return None
    message_id, channel_id, author_id = written
    content = payload.get("content")
    text = strip_bot_mention(content if isinstance(content, str) else "", bot_id)
    mentioned = mentions_user(payload, bot_id)
    guild_id = guild_of(payload)
    if guild_id is None and payload.get("guild_id") is not None:
        return None  # a guild id that is not a snowflake: malformed, not a DM
    if guild_id is None:
        place = Place(platform=Platform.DISCORD, workspace="", channel=channel_id, is_dm=True)
        return MessageDecision(
            message=_inbound(place, author_id, text, message_id),
            mode=ReplyMode.IN_PLACE,
            mentioned=True,
            target_channel=channel_id,
        )
    parent = facts.parent_id if facts.kind is ChannelKind.THREAD else None
    if not filters.allows(guild_id, channel_id, parent):
        return None
    asked = _Asked(guild_id, channel_id, author_id, message_id, text)
    if parent is not None:
        return _in_thread(asked, parent, mentioned=mentioned)
    return _in_channel(asked, facts) if mentioned else None


def _written_by_a_person(payload: Any, bot_id: str) -> tuple[str, str, str] | None:
    """(message, channel, author) ids of a message a person wrote; None for the bot's own,
    other bots', webhooks', system messages and malformed payloads."""
    if not isinstance(payload, Mapping):
        return None
    message_id = snowflake(payload.get("id"))
    channel_id = snowflake(payload.get("channel_id"))
    author = payload.get("author")
    if message_id is None or channel_id is None or not isinstance(author, Mapping):
        return None
    author_id = snowflake(author.get("id"))
    if (
        author_id is None
        or author_id == bot_id
        or author.get("bot") is True
        or author.get("system") is True
        or payload.get("webhook_id") is not None
        or not _is_user_message_type(payload.get("type", 0))
    ):
        return None
    return message_id, channel_id, author_id


@dataclass(frozen=True, slots=True)
class _Asked:
    """A guild message a person wrote, allowed by the filters."""

    guild_id: str
    channel_id: str
    author_id: str
    message_id: str
    text: str


def _in_thread(asked: _Asked, parent: str, *, mentioned: bool) -> MessageDecision | None:
    if not mentioned and not asked.text:
        return None  # no text to answer (or no message-content intent)
    place = Place(
        platform=Platform.DISCORD, workspace=asked.guild_id, channel=parent,
        thread=asked.channel_id,
    )
    return MessageDecision(
        message=_inbound(place, asked.author_id, asked.text, asked.message_id),
        mode=ReplyMode.IN_PLACE,
        mentioned=mentioned,
        target_channel=asked.channel_id,
    )


def _in_channel(asked: _Asked, facts: ChannelFacts) -> MessageDecision:
    place = Place(platform=Platform.DISCORD, workspace=asked.guild_id, channel=asked.channel_id)
    if facts.kind is ChannelKind.TEXT and facts.can_open_thread:
        # A thread created from a message has the message's id, so the conversation can be
        # keyed on it before the thread exists.
        return MessageDecision(
            message=_inbound(place, asked.author_id, asked.text, asked.message_id,
                             reply_thread=asked.message_id),
            mode=ReplyMode.OPEN_THREAD,
            mentioned=True,
            target_channel=asked.message_id,
            thread_name=thread_name(asked.text),
        )
    return MessageDecision(
        message=_inbound(place, asked.author_id, asked.text, asked.message_id),
        mode=ReplyMode.INLINE,
        mentioned=True,
        target_channel=asked.channel_id,
    )


def _is_user_message_type(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value in _USER_MESSAGE_TYPES


def _inbound(
    place: Place,
    author: str,
    text: str,
    message_id: str,
    *,
    reply_thread: str | None = None,
) -> InboundMessage:
    return InboundMessage(
        place=place,
        author=author,
        text=text,
        message_id=message_id,
        event_id=message_id,
        reply_thread=reply_thread,
    )


def _standard_emoji(emoji: Any) -> str | None:
    """The name of a standard (Unicode) emoji; None for a custom guild emoji, whose name
    is free text and never feedback."""
    if not isinstance(emoji, Mapping) or emoji.get("id") is not None:
        return None
    name = emoji.get("name")
    return name if isinstance(name, str) and name else None


def normalise_emoji(name: str) -> str:
    """👍🏽, 👍️ and 👍 alike become 👍."""
    return _EMOJI_NOISE.sub("", name)


def reaction_event(
    payload: Any,
    *,
    added: bool,
    bot_id: str,
    filters: Filters,
    received_at: float = 0.0,
) -> InboundReaction | None:
    """Translate a ``MESSAGE_REACTION_ADD``/``REMOVE`` payload (no message cache needed).

    ``channel`` is where the reaction happened; inside a thread the adapter swaps in the
    parent, under which the core files the conversation's replies.
    """
    if not isinstance(payload, Mapping):
        return None
    message_id = snowflake(payload.get("message_id"))
    channel_id = snowflake(payload.get("channel_id"))
    user_id = snowflake(payload.get("user_id"))
    if message_id is None or channel_id is None or user_id is None or user_id == bot_id:
        return None
    name = _standard_emoji(payload.get("emoji"))
    if name is None:
        return None
    author = payload.get("message_author_id")
    if author is not None and snowflake(author) != bot_id:
        return None  # only present on add; a reaction on someone else's message
    guild_id = guild_of(payload)
    if payload.get("guild_id") is not None and guild_id is None:
        return None
    if guild_id is not None and filters.guilds and guild_id not in filters.guilds:
        return None
    normalised = normalise_emoji(name)
    if not normalised:
        return None
    action = "add" if added else "remove"
    # Discord gives reaction events no id. Two processes handling the same shard see the
    # same event within milliseconds, so the second of the same reaction by the same person
    # in the same second is the duplicate; a real toggle back and forth takes longer.
    event_id = f"r:{message_id}:{user_id}:{normalised}:{action}:{int(received_at)}"
    return InboundReaction(
        platform=Platform.DISCORD,
        workspace=guild_id or "",
        channel=channel_id,
        message_id=message_id,
        user=user_id,
        emoji=normalised,
        added=added,
        event_id=event_id,
    )


def command_place(
    *, guild_id: str | None, channel_id: str, facts: ChannelFacts
) -> Place:
    """Where a slash command was used: a thread keys on its parent and itself."""
    if guild_id is None:
        return Place(platform=Platform.DISCORD, workspace="", channel=channel_id, is_dm=True)
    if facts.kind is ChannelKind.THREAD and facts.parent_id is not None:
        return Place(
            platform=Platform.DISCORD,
            workspace=guild_id,
            channel=facts.parent_id,
            thread=channel_id,
        )
    return Place(platform=Platform.DISCORD, workspace=guild_id, channel=channel_id)


def ask_message(
    *,
    interaction_id: str,
    user_id: str,
    question: str,
    place: Place,
) -> InboundMessage:
    """``/ask``: answered in the interaction's own response, so no new thread."""
    return InboundMessage(
        place=place,
        author=user_id,
        text=question.strip(),
        message_id=interaction_id,
        event_id=interaction_id,
    )


def message_payload(message: discord.Message) -> dict[str, Any]:
    """The ``MESSAGE_CREATE`` fields ``message_decision`` reads, from discord.py's message
    (``on_message``). A guild the cache does not hold still counts by its id."""
    guild = message.guild
    guild_id = guild.id if guild is not None else getattr(message.channel, "guild_id", None)
    author = message.author
    return {
        "id": message.id,
        "channel_id": message.channel.id,
        "guild_id": guild_id,
        "author": {"id": author.id, "bot": author.bot, "system": author.system},
        "webhook_id": message.webhook_id,
        "type": message.type.value,
        "content": message.content,
        "mentions": [{"id": user.id} for user in message.mentions],
    }


def reaction_payload(event: discord.RawReactionActionEvent) -> dict[str, Any]:
    """The ``MESSAGE_REACTION_ADD``/``REMOVE`` fields ``reaction_event`` reads, from
    discord.py's raw reaction event (no message cache needed)."""
    return {
        "message_id": event.message_id,
        "channel_id": event.channel_id,
        "user_id": event.user_id,
        "guild_id": event.guild_id,
        "emoji": {"id": event.emoji.id, "name": event.emoji.name},
        "message_author_id": event.message_author_id,
    }
