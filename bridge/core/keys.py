"""Redis key names and the reversible escaping that keeps ids from breaking them."""

from __future__ import annotations

import re

# ':' separates the parts of a key and '_' starts an escape, so neither may appear raw in a
# part. '.' is kept: Slack thread timestamps are full of them and nothing splits on it here.
_UNSAFE_IN_KEY = re.compile(r"[^A-Za-z0-9.-]+")
_UNSAFE_IN_NAME = re.compile(r"[^A-Za-z0-9-]+")

# Stands for "no value" (no thread, anyone in the thread): an '_' without two hex digits
# after it never comes out of ``escape``, so it cannot be mistaken for an escaped id.
NONE = "_"


def _hex_bytes(match: re.Match[str]) -> str:
    # surrogatepass keeps the mapping total (lone surrogates still encode, and never to the
    # bytes of another code point), so escaping stays injective for every Python str.
    return "".join(f"_{byte:02x}" for byte in match.group().encode("utf-8", "surrogatepass"))


def escape(value: str, *, keep_dot: bool = True) -> str:
    """Reversibly map ``value`` onto ``[A-Za-z0-9.-]`` plus ``_xx`` escapes (one per UTF-8
    byte, lowercase hex). With ``keep_dot=False`` '.' is escaped too, for names that use '.'
    as their own separator (Chatbase userIds)."""
    pattern = _UNSAFE_IN_KEY if keep_dot else _UNSAFE_IN_NAME
    return pattern.sub(_hex_bytes, value)


def unescape(value: str) -> str:
    """The inverse of ``escape``."""
    out = bytearray()
    i = 0
    while i < len(value):
        char = value[i]
        if char == "_":
            out.append(int(value[i + 1 : i + 3], 16))
            i += 3
        else:
            out.extend(char.encode("ascii"))
            i += 1
    return out.decode("utf-8", "surrogatepass")


class Keys:
    """Every Redis key the bridge writes, under one prefix.

    Parts that come from outside (channel and message ids) are escaped where another part
    follows them, so two different tuples never share a key. Conversation keys come from
    ``bridge.core.identity`` already escaped.
    """

    def __init__(self, prefix: str) -> None:
        self.prefix = prefix

    def event(self, event_id: str) -> str:
        return f"{self.prefix}event:{event_id}"

    def quota(self, subject: str) -> str:
        return f"{self.prefix}quota:{subject}"

    def conversation(self, conversation_key: str) -> str:
        return f"{self.prefix}conv:{conversation_key}"

    def turn_queue(self, conversation_key: str) -> str:
        return f"{self.prefix}turnq:{conversation_key}"

    def turn_lease(self, conversation_key: str) -> str:
        return f"{self.prefix}turnl:{conversation_key}"

    def turn_notify_prefix(self, conversation_key: str) -> str:
        """Waiter wake-up lists are this plus the waiter's token (hex, no ':')."""
        return f"{self.prefix}turnw:{conversation_key}:"

    def turn_notify(self, conversation_key: str, token: str) -> str:
        return self.turn_notify_prefix(conversation_key) + token

    def reply(self, platform: str, channel: str, message_id: str) -> str:
        if platform == "discord":
            # Snowflakes are unique across Discord, and a reaction on an answer in a thread
            # reports the thread as its channel while the answer's record may name the
            # parent channel: keying on the channel would lose the match.
            return f"{self.prefix}reply:{platform}:{message_id}"
        # Slack message timestamps are unique only within their channel.
        return f"{self.prefix}reply:{platform}:{escape(channel)}:{message_id}"

    def feedback(self, assistant_message_id: str, user: str) -> str:
        return f"{self.prefix}fb:{escape(assistant_message_id)}:{user}"

    def pace(self, bucket: str) -> str:
        return f"{self.prefix}pace:{bucket}"

    def limit(self, name: str) -> str:
        return f"{self.prefix}limit:{name}"

    def stops(self) -> str:
        """The pub/sub channel on which replicas tell each other to stop an answer."""
        return f"{self.prefix}stops"

    def history(self, key: str) -> str:
        """A person's first page of past conversations with one agent (``key``: agent and
        userId), cached for a short time."""
        return f"{self.prefix}hist:{escape(key)}"
