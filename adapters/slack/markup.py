"""Slack text markup both ways: inbound tokens to plain text, outbound text made inert."""

from __future__ import annotations

import re

# Slack's storage format escapes these three characters; a message whose text contains a raw
# ``<`` can carry live tokens (``<!channel>``, ``<@U…>``, ``<#C…>``, ``<!subteam^…>``), so
# everything the bridge sends is escaped and model text can never ping anyone.
# Source: https://docs.slack.dev/messaging/formatting-message-text#escaping
_ESCAPES = {"&": "&amp;", "<": "&lt;", ">": "&gt;"}
_ESCAPE_RE = re.compile(r"[&<>]")

_TOKEN_RE = re.compile(r"<([^<>\n]*)>")


def escape(text: str) -> str:
    """Escape ``&``, ``<`` and ``>`` so Slack shows them literally."""
    return _ESCAPE_RE.sub(lambda m: _ESCAPES[m.group(0)], text)


def escaped_length(text: str) -> int:
    """Length of ``escape(text)`` without building it."""
    return len(text) + 4 * text.count("&") + 3 * (text.count("<") + text.count(">"))


def split_for_escaped_limit(text: str, limit: int) -> list[str]:
    """Cut ``text`` into consecutive pieces whose escaped forms are each at most ``limit``.

    Joined, the pieces equal ``text``; an empty text gives no pieces.
    """
    if limit < 5:
        raise ValueError("limit must leave room for one escaped character")
    pieces: list[str] = []
    start = 0
    size = 0
    for index, char in enumerate(text):
        width = len(_ESCAPES.get(char, char))
        if size + width > limit:
            pieces.append(text[start:index])
            start, size = index, 0
        size += width
    if start < len(text):
        pieces.append(text[start:])
    return pieces


def escaped_prefix(text: str, limit: int, *, ellipsis: str = "…") -> str:
    """``escape(text)`` cut to at most ``limit`` characters, never inside an entity; a cut
    text ends with ``ellipsis``."""
    if escaped_length(text) <= limit:
        return escape(text)
    pieces = split_for_escaped_limit(text, max(5, limit - len(ellipsis)))
    return escape(pieces[0]) + ellipsis if pieces else ""


def _unescape(text: str) -> str:
    return text.replace("&lt;", "<").replace("&gt;", ">").replace("&amp;", "&")


def _token_to_plain(body: str) -> str:
    target, _, label = body.partition("|")
    if target.startswith("@"):
        return "@" + (label or target[1:])
    if target.startswith("#"):
        return "#" + (label or target[1:])
    if target.startswith("!subteam^"):
        return label or "@" + target[len("!subteam^"):]
    if target.startswith("!date^"):
        return label
    if target.startswith("!"):
        return "@" + target[1:]
    if target.startswith("mailto:"):
        return label or target[len("mailto:"):]
    if label and label != target:
        return f"{label} ({target})"
    return target


def to_plain(text: str, *, bot_user_id: str | None = None) -> str:
    """A user's Slack message text as plain text for the agent: the bot's own mention
    removed, other tokens (users, channels, links) turned into readable words, entities
    decoded."""
    if bot_user_id:
        mention = re.compile(rf"[ \t]*<@{re.escape(bot_user_id)}(?:\|[^<>]*)?>[ \t]*")
        text = mention.sub(" ", text)
    text = _TOKEN_RE.sub(lambda m: _token_to_plain(m.group(1)), text)
    return _unescape(text).strip()


def mentions_user(text: str, user_id: str) -> bool:
    """Whether Slack message text carries a mention token of ``user_id``."""
    return f"<@{user_id}>" in text or f"<@{user_id}|" in text
