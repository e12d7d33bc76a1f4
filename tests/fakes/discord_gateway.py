"""A fake Discord gateway: a websocket speaking HELLO / IDENTIFY / READY / heartbeats / DISPATCH.

Mounted on the fake REST server's app (``tests.fakes.discord_rest``), whose ``/gateway/bot``
points discord.py here. Sessions are per shard; events are routed to the shard Discord would
use (``(guild_id >> 22) % shard_count``; DMs to shard 0).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from aiohttp import WSMsgType, web

OP_DISPATCH = 0
OP_HEARTBEAT = 1
OP_IDENTIFY = 2
OP_RESUME = 6
OP_INVALID_SESSION = 9
OP_HELLO = 10
OP_HEARTBEAT_ACK = 11

INTENT_MESSAGE_CONTENT = 1 << 15
INTENT_GUILD_MEMBERS = 1 << 1
INTENT_GUILD_PRESENCES = 1 << 8
PRIVILEGED = INTENT_MESSAGE_CONTENT | INTENT_GUILD_MEMBERS | INTENT_GUILD_PRESENCES


@dataclass
class Session:
    ws: web.WebSocketResponse
    host: str = ""  # the address discord.py dialled (Host header)
    shard: tuple[int, int] = (0, 1)
    intents: int = 0
    session_id: str = field(default_factory=lambda: uuid.uuid4().hex)
    sequence: int = 0
    identified: asyncio.Event = field(default_factory=asyncio.Event)
    heartbeats: int = 0

    async def send(self, op: int, data: Any, event: str | None = None) -> None:
        payload: dict[str, Any] = {"op": op, "d": data, "s": None, "t": event}
        if op == OP_DISPATCH:
            self.sequence += 1
            payload["s"] = self.sequence
        await self.ws.send_str(json.dumps(payload))


class FakeGateway:
    """The websocket side. ``ready_payload`` and ``guild_payloads`` come from the REST fake."""

    def __init__(
        self,
        *,
        token: str,
        ready_payload: Callable[[Session], dict[str, Any]],
        guild_payloads: Callable[[Session], list[dict[str, Any]]],
        on_change: Callable[[], None],
    ) -> None:
        self.token = token
        self.allowed_intents = ~0 & ((1 << 30) - 1)  # everything, privileged included
        self._ready_payload = ready_payload
        self._guild_payloads = guild_payloads
        self._on_change = on_change
        self.sessions: list[Session] = []
        self.identifies: list[dict[str, Any]] = []
        self.closed_codes: list[int] = []
        self.url = ""

    def forbid_privileged(self, mask: int = INTENT_MESSAGE_CONTENT) -> None:
        """Act like a Developer Portal with these privileged intents switched off."""
        self.allowed_intents &= ~mask

    def live_sessions(self) -> list[Session]:
        return [s for s in self.sessions if not s.ws.closed and s.identified.is_set()]

    async def handle(self, request: web.Request) -> web.WebSocketResponse:
        ws = web.WebSocketResponse(autoping=True)
        await ws.prepare(request)
        session = Session(ws=ws, host=request.host)
        self.sessions.append(session)
        await session.send(OP_HELLO, {"heartbeat_interval": 41250})
        try:
            async for frame in ws:
                if frame.type is not WSMsgType.TEXT:
                    continue
                message = json.loads(frame.data)
                op = message.get("op")
                if op == OP_HEARTBEAT:
                    session.heartbeats += 1
                    await session.send(OP_HEARTBEAT_ACK, None)
                elif op == OP_IDENTIFY:
                    await self._identify(session, message["d"])
                elif op == OP_RESUME:
                    # A fresh fake has no session to resume: ask for a new IDENTIFY.
                    await session.send(OP_INVALID_SESSION, False)
        finally:
            self._on_change()
        return ws

    async def _identify(self, session: Session, data: dict[str, Any]) -> None:
        self.identifies.append(data)
        if data.get("token") != self.token:
            await self._close(session, 4004, "Authentication failed.")
            return
        intents = int(data.get("intents", 0))
        if intents & PRIVILEGED & ~self.allowed_intents:
            await self._close(session, 4014, "Disallowed intent(s).")
            return
        shard = data.get("shard") or [0, 1]
        session.shard = (int(shard[0]), int(shard[1]))
        session.intents = intents
        await session.send(OP_DISPATCH, self._ready_payload(session), "READY")
        for guild in self._guild_payloads(session):
            await session.send(OP_DISPATCH, guild, "GUILD_CREATE")
        session.identified.set()
        self._on_change()

    async def _close(self, session: Session, code: int, reason: str) -> None:
        self.closed_codes.append(code)
        await session.ws.close(code=code, message=reason.encode())
        self._on_change()

    def shard_of(self, guild_id: str | None, count: int) -> int:
        return 0 if guild_id is None else (int(guild_id) >> 22) % count

    async def dispatch(self, event: str, data: dict[str, Any]) -> int:
        """Send an event to every live session of the shard it belongs to; returns how many."""
        guild_id = data.get("guild_id")
        sent = 0
        for session in self.live_sessions():
            shard_id, count = session.shard
            if self.shard_of(guild_id, count) != shard_id:
                continue
            with contextlib.suppress(ConnectionError, RuntimeError):
                await session.send(OP_DISPATCH, data, event)
                sent += 1
        return sent

    async def close_all(self) -> None:
        for session in list(self.sessions):
            if not session.ws.closed:
                with contextlib.suppress(Exception):
                    await session.ws.close(code=1001)
