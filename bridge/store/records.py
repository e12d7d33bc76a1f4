"""What the store remembers: conversation state per key, reply records, reaction memory."""

from __future__ import annotations

import json
import logging
from collections.abc import Iterable
from dataclasses import asdict
from typing import Any

from bridge.core.keys import Keys
from bridge.core.models import ConversationState, Platform, ReplyRecord
from bridge.store.connection import Link, text

__all__ = [
    "ConversationState",
    "Records",
    "dump_reply",
    "dump_state",
    "load_reply",
    "load_state",
]

log = logging.getLogger(__name__)


def dump_state(state: ConversationState) -> str:
    data: dict[str, Any] = {
        "c": state.conversation_id, "m": state.latest_message_id, "t": state.last_turn_at,
    }
    if state.agent is not None:
        data["a"] = state.agent
    return json.dumps(data)


def load_state(raw: Any) -> ConversationState | None:
    if raw is None:
        return None
    try:
        data = json.loads(raw)
        return ConversationState(
            conversation_id=str(data["c"]),
            latest_message_id=None if data.get("m") is None else str(data["m"]),
            last_turn_at=float(data.get("t", 0.0)),
            agent=None if data.get("a") is None else str(data["a"]),
        )
    except (ValueError, TypeError, KeyError):
        log.warning("ignoring an unreadable conversation record")
        return None


def dump_reply(record: ReplyRecord) -> str:
    data = asdict(record)
    data["platform"] = record.platform.value
    data["part_ids"] = list(record.part_ids)
    return json.dumps(data)


def load_reply(raw: Any) -> ReplyRecord | None:
    if raw is None:
        return None
    try:
        data = json.loads(raw)
        data["platform"] = Platform(data["platform"])
        data["part_ids"] = tuple(data.get("part_ids", ()))
        return ReplyRecord(**data)
    except (ValueError, TypeError, KeyError):
        log.warning("ignoring an unreadable reply record")
        return None


class Records:
    """Reads and writes of conversation state, reply records and reaction memory outside a
    turn (a turn writes its own with its release, see ``bridge.store.turns``)."""

    def __init__(self, *, link: Link, keys: Keys, reply_ttl: int) -> None:
        self._link = link
        self._keys = keys
        self._reply_ttl = reply_ttl

    async def get_conversation(self, key: str) -> ConversationState | None:
        async with self._link.trip():
            raw = await self._link.client.get(self._keys.conversation(key))
        return load_state(raw)

    async def has_conversation(self, key: str) -> bool:
        """A conversation is stored under ``key``, or its first turn is being answered now
        (its turn lease is held): a follow-up sent during the first answer belongs to it."""
        async with self._link.trip():
            return bool(await self._link.client.exists(self._keys.conversation(key),
                                                       self._keys.turn_lease(key)))

    async def forget_conversation(self, key: str) -> bool:
        async with self._link.trip():
            return bool(await self._link.client.delete(self._keys.conversation(key)))

    async def cached_history(self, key: str) -> str | None:
        async with self._link.trip():
            raw = await self._link.client.get(self._keys.history(key))
        return raw.decode() if isinstance(raw, bytes) else raw

    async def cache_history(self, key: str, page: str, ttl: float) -> None:
        async with self._link.trip():
            await self._link.client.set(self._keys.history(key), page,
                                        px=max(1, int(ttl * 1000)))

    async def find_reply(
        self, platform: Platform, channel: str, message_id: str
    ) -> ReplyRecord | None:
        async with self._link.trip():
            raw = await self._link.client.get(
                self._keys.reply(platform.value, channel, message_id)
            )
        return load_reply(raw)

    async def update_reply(
        self, record: ReplyRecord, *, stale_part_ids: Iterable[str] = ()
    ) -> None:
        """Point every part of ``record`` at it (after a regenerate), and unmap parts the
        reply no longer has."""
        body = dump_reply(record)
        stale = [p for p in stale_part_ids if p not in record.part_ids]
        if not record.part_ids and not stale:
            return
        pipe = self._link.client.pipeline(transaction=True)
        for part in record.part_ids:
            pipe.set(self._keys.reply(record.platform.value, record.channel, part), body,
                     ex=self._reply_ttl)
        for part in stale:
            pipe.delete(self._keys.reply(record.platform.value, record.channel, part))
        async with self._link.trip():
            await pipe.execute()

    async def feedback_reactions(
        self, *, assistant_message_id: str, user: str, add: str | None, remove: str | None
    ) -> frozenset[str]:
        """Track which feedback values ``user`` has on an answer; returns them after the
        change."""
        key = self._keys.feedback(assistant_message_id, user)
        pipe = self._link.client.pipeline(transaction=True)
        if remove is not None:
            pipe.srem(key, remove)
        if add is not None:
            pipe.sadd(key, add)
        pipe.expire(key, self._reply_ttl)
        pipe.smembers(key)
        async with self._link.trip():
            results = await pipe.execute()
        return frozenset(text(member) for member in results[-1])
