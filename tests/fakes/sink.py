"""A ReplySink that records every platform call, for tests of the core without any SDK."""

from __future__ import annotations

import asyncio
import itertools
from collections.abc import Sequence
from dataclasses import dataclass, field

from bridge.core.errors import PlatformError, PlatformMessageGone, PlatformRateLimited
from bridge.core.ports import Budget, Clock, Operation, SinkLimits


@dataclass
class Call:
    op: str  # working | post | edit | delete | finish
    message_id: str | None
    text: str | None
    final: bool
    at: float


@dataclass
class Shared:
    """State shared by every sink of one fake platform (one rate-limit space)."""

    messages: dict[str, str] = field(default_factory=dict)
    order: list[str] = field(default_factory=list)
    ids: itertools.count = field(default_factory=lambda: itertools.count(1))


class RecordingSink:
    """Edit-in-place by default; ``append_only=True`` behaves like a native stream."""

    def __init__(
        self,
        *,
        clock: Clock,
        shared: Shared | None = None,
        max_chars: int = 2000,
        progress_mark: str | None = " ▌",
        interval: float = 1.0,
        key: str = "fake:channel",
        gate: asyncio.Event | None = None,
    ) -> None:
        self.clock = clock
        self.shared = shared or Shared()
        self._limits = SinkLimits(max_chars=max_chars, progress_mark=progress_mark)
        self.interval = interval
        self.key = key
        self.calls: list[Call] = []
        self.gate = gate
        self.in_flight = 0
        self.max_in_flight = 0
        self.entered = asyncio.Event()  # set when the first text call reaches the platform
        self.fail_next: list[PlatformError] = []
        self.finished = asyncio.Event()
        self.answered: bool | None = None
        self._changed = asyncio.Condition()
        self.part_ids: list[str] = []

    @property
    def limits(self) -> SinkLimits:
        return self._limits

    def budget(self, op: Operation, *, final: bool = False) -> Budget:
        return Budget(key=self.key, interval=self.interval)

    async def _record(self, call: Call) -> None:
        self.calls.append(call)
        async with self._changed:
            self._changed.notify_all()

    async def wait_calls(self, count: int, op: str | None = None) -> None:
        async with self._changed:
            await self._changed.wait_for(
                lambda: len([c for c in self.calls if op is None or c.op == op]) >= count
            )

    async def _enter(self) -> None:
        self.in_flight += 1
        self.max_in_flight = max(self.max_in_flight, self.in_flight)
        self.entered.set()
        try:
            if self.gate is not None:
                await self.gate.wait()
            if self.fail_next:
                raise self.fail_next.pop(0)
        except BaseException:
            self.in_flight -= 1
            raise

    async def working(self) -> None:
        await self._record(Call("working", None, None, False, self.clock.now()))

    async def post(self, text: str, *, final: bool) -> str:
        await self._enter()
        try:
            assert len(text) <= self._limits.max_chars, "post over the platform limit"
            message_id = f"m{next(self.shared.ids)}"
            self.shared.messages[message_id] = text
            self.shared.order.append(message_id)
            self.part_ids.append(message_id)
            await self._record(Call("post", message_id, text, final, self.clock.now()))
            return message_id
        finally:
            self.in_flight -= 1

    async def edit(self, message_id: str, text: str, *, final: bool) -> None:
        await self._enter()
        try:
            if message_id not in self.shared.messages:
                raise PlatformMessageGone(message_id)
            assert len(text) <= self._limits.max_chars, "edit over the platform limit"
            if self._limits.progress_mark is None:
                old = self.shared.messages[message_id]
                assert text.startswith(old), "an append-only stream cannot change sent text"
            self.shared.messages[message_id] = text
            await self._record(Call("edit", message_id, text, final, self.clock.now()))
        finally:
            self.in_flight -= 1

    async def delete(self, message_id: str) -> None:
        self.shared.messages.pop(message_id, None)
        await self._record(Call("delete", message_id, None, True, self.clock.now()))

    async def finish(self, part_ids: Sequence[str], *, answered: bool) -> None:
        self.answered = answered
        await self._record(Call("finish", None, None, True, self.clock.now()))
        self.finished.set()

    # ------------------------------------------------------------------ reading

    def visible(self) -> list[str]:
        """The current text of this reply's messages, in order."""
        return [self.shared.messages[m] for m in self.part_ids if m in self.shared.messages]

    def joined(self) -> str:
        return "".join(self.visible())

    def text_calls(self) -> list[Call]:
        return [c for c in self.calls if c.op in ("post", "edit")]


def rate_limited(retry_after: float) -> PlatformRateLimited:
    return PlatformRateLimited(retry_after)
