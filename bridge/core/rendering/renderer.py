"""Renders one streaming answer through a ReplySink: owns timing, splitting and the final write.

The stream reader only ever calls ``append`` (never awaits the platform); one writer task
per reply turns the latest text into at most one platform call at a time, each paced by
the sink's shared budget. Intermediate texts are coalesced (latest wins); the final text
is always written exactly, without the progress mark.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Sequence
from dataclasses import dataclass

from bridge.core.errors import (
    PlatformError,
    PlatformMessageFrozen,
    PlatformMessageGone,
    PlatformRateLimited,
)
from bridge.core.notices import CUT_OFF
from bridge.core.ports import Budget, Clock, Operation, ReplySink
from bridge.core.rendering.pacing import Pacer
from bridge.core.split import Fence, Part, fence_after, split_text

log = logging.getLogger(__name__)

# Consecutive failed platform calls after which a reply stops trying.
MAX_FAILURES = 6
# What the last shown part says when the platform refused every write and the bridge gave
# up: the text shown so far stays, without the progress mark, and says it is incomplete.
GAVE_UP_REASON = "this conversation stopped accepting the bridge's messages"
# While the writer waits for a paced slot, the stream reader holds its reads until just
# before the slot (READ_LEAD: its timer fires first, usually in the same turn of the event
# loop as the writer's), and at most READ_HOLD at a time: what streams in meanwhile waits in
# the connection's buffer and is taken in by one read (``Renderer.wanted``).
READ_LEAD = 0.002
READ_HOLD = 1.0


@dataclass(frozen=True, slots=True)
class _Want:
    """One part as it should look: its text, and where its body sits in the answer."""

    text: str
    start: int
    body: int


@dataclass(slots=True)
class _Step:
    index: int
    text: str
    op: Operation
    final: bool
    start: int = 0
    body: int = 0


class Renderer:
    """One reply. Use as ``async with Renderer(...) as r: r.append(...); await r.finish()``."""

    def __init__(
        self,
        *,
        sink: ReplySink,
        pacer: Pacer,
        clock: Clock,
        existing: Sequence[str] = (),
    ) -> None:
        self._sink = sink
        self._pacer = pacer
        self._clock = clock
        limits = sink.limits
        self._mark = limits.progress_mark or ""
        self._limit = limits.max_chars - len(self._mark)
        self._chunks: list[str] = []
        self._length = 0
        self._final: str | None = None
        self._answered = False
        # Parts that can no longer change (a later part exists), and where the rest starts.
        self._sealed: list[_Want] = []
        self._tail_start = 0
        self._tail_fence: Fence | None = None
        self._ids: list[str | None] = list(existing)
        self._shown: list[str | None] = [None] * len(existing)
        self._finalised: list[bool] = [False] * len(existing)
        # (start, body length) in the answer of the text last shown in each part.
        self._spans: list[tuple[int, int] | None] = [None] * len(existing)
        self._wake = asyncio.Event()
        # The soonest the writer can make its next call, while that is ahead: the paced slot
        # or the end of the edit budget's spacing it sleeps until, or, from a call's start,
        # one interval of the call's budget later. The reader holds its reads until then.
        self._due: float | None = None
        # Whether this reply counts in the pacer's edit budget (it shows text and streams),
        # when its last call set off, and the sleep spacing its next progress edit, if any.
        self._joined = False
        self._last_call_at = 0.0
        self._spaced: asyncio.Future[None] | None = None
        self._writer: asyncio.Task[None] | None = None
        self._working: asyncio.Task[None] | None = None
        self.first_text_at: float | None = None
        # When the first text arrived, and when the first call carrying text set off: the
        # time between them is what the bridge adds (bridge_added_time_to_first_text_seconds).
        self.first_delta_at: float | None = None
        self.first_call_at: float | None = None
        self.calls = 0
        self.failed = False

    # ------------------------------------------------------------------ feeding

    async def __aenter__(self) -> Renderer:
        self._working = asyncio.create_task(self._sink.working(), name="reply-working")
        self._writer = asyncio.create_task(self._run(), name="reply-writer")
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        self._leave()
        for task in (self._writer, self._working):
            if task is not None and not task.done():
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task

    @property
    def text(self) -> str:
        if len(self._chunks) > 1:
            self._chunks = ["".join(self._chunks)]
        return self._chunks[0] if self._chunks else ""

    @property
    def has_text(self) -> bool:
        return self._length > 0

    @property
    def part_ids(self) -> tuple[str, ...]:
        return tuple(i for i in self._ids if i is not None)

    def append(self, delta: str) -> None:
        """Add streamed text. Never blocks; the writer picks up the latest text."""
        if delta and self._final is None:
            if not self._length:
                self.first_delta_at = self._clock.now()
            self._chunks.append(delta)
            self._length += len(delta)
            self._wake.set()

    async def wanted(self) -> None:
        """Return when more streamed text is worth reading: at once, unless the writer
        cannot call the platform before a later time (asleep until a paced slot or the end
        of the edit budget's spacing, or a call of its budget made less than an interval
        ago); then just before it (READ_LEAD), or after READ_HOLD at most (a slot far off
        after a 429 or on a busy channel, a long spacing). The text read meanwhile could
        not be shown before then anyway, and reading many deltas at once costs far less
        than one read each. The first text is never held: until it comes the writer waits
        for text, not for a slot."""
        delay = self.hold()
        if delay > 0:
            await self._clock.sleep(delay)

    def hold(self) -> float:
        """How long ``wanted`` would wait now, in seconds; 0 when it returns at once."""
        due = self._due
        if due is None:
            return 0.0
        return max(0.0, min(due - READ_LEAD - self._clock.now(), READ_HOLD))

    async def finish(self, text: str | None = None, *, answered: bool = True) -> tuple[str, ...]:
        """Write the final text (by default everything appended) and wait until it is shown.

        Returns the platform message ids of every part of the reply."""
        self._final = self.text if text is None else text
        self._answered = answered
        self._leave()
        if self._spaced is not None:
            self._spaced.cancel()  # the final text is not spaced out
        self._wake.set()
        if self._writer is not None:
            with contextlib.suppress(asyncio.CancelledError):
                await asyncio.shield(self._writer)
        await self._close_working()
        with contextlib.suppress(Exception):
            await self._sink.finish(self.part_ids, answered=answered and not self.failed)
        return self.part_ids

    def _leave(self) -> None:
        if self._joined:
            self._joined = False
            self._pacer.leave()

    async def _close_working(self) -> None:
        task, self._working = self._working, None
        if task is not None and not task.done():
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task

    # ------------------------------------------------------------------ planning

    def _desired(self) -> tuple[list[_Want], bool]:
        final = self._final is not None
        text = self._final if self._final is not None else self.text
        tail = text[self._tail_start:]
        parts = split_text(tail, self._limit, fence=self._tail_fence)
        if len(parts) > 1 and not final:
            self._seal(parts[:-1], parts[-1])
            parts = parts[-1:]
        if not tail and self._sealed:
            parts = []  # everything is in the sealed parts (a part frozen at the very end)
        wants: list[_Want] = []
        at = self._tail_start
        for part in parts:
            wants.append(_Want(part.text, at, len(part.body)))
            at += len(part.body)
        if not final and wants:
            last = wants[-1]
            wants[-1] = _Want(last.text + self._mark, last.start, last.body)
        return self._sealed + wants, final

    def _seal(self, done: list[Part], rest: Part) -> None:
        for part in done:
            self._sealed.append(_Want(part.text, self._tail_start, len(part.body)))
            self._tail_start += len(part.body)
        self._tail_fence = fence_after(rest.prefix, None) if rest.prefix else None

    def _next_step(self, desired: list[_Want], final: bool) -> _Step | None:
        if not final and not self.text.strip():
            return None  # nothing worth showing yet: never post a bare placeholder
        last = len(desired) - 1
        for index, want in enumerate(desired):
            part_final = final or index < last
            if index >= len(self._ids) or self._ids[index] is None:
                return _Step(index, want.text, "post", part_final, want.start, want.body)
            if self._shown[index] != want.text or (part_final and not self._finalised[index]):
                return _Step(index, want.text, "edit", part_final, want.start, want.body)
        return None

    # ------------------------------------------------------------------ writing

    async def _run(self) -> None:
        failures = 0
        while True:
            desired, final = self._desired()
            step = self._next_step(desired, final)
            if step is None:
                if final:
                    await self._drop_stale(len(desired))
                    return
                await self._wake.wait()
                self._wake.clear()
                continue
            paced = await self._paced(step)
            if paced is None:
                continue
            failures = await self._write(*paced, failures)
            if failures >= MAX_FAILURES:
                log.error("giving up on this reply after %s failed platform calls", failures)
                self.failed = True
                self._leave()
                await self._last_word()
                return

    async def _paced(self, step: _Step) -> tuple[_Step, Budget] | None:
        """Wait for the budget of ``step``; then the step to take now, or None when the call
        changed kind while waiting (it is paced again on its own bucket)."""
        budget = self._sink.budget(step.op, final=step.final)
        if self._joined and step.op == "edit" and not step.final:
            # Many answers streaming: progress edits further apart than the platform's own
            # interval would make them (a slot is only taken once this is over).
            spacing = self._pacer.spacing()
            if spacing > budget.interval and self._last_call_at + spacing > self._clock.now():
                await self._space(self._last_call_at + spacing)
                return None
        slot = await self._pacer.reserve(budget)
        self._due = slot
        try:
            await self._pacer.until(slot)
        finally:
            self._due = None
        # Latest wins: what to send is decided after the wait, not before it.
        desired, final = self._desired()
        again = self._next_step(desired, final)
        if again is None or self._sink.budget(again.op, final=again.final) != budget:
            return None
        return again, budget

    async def _space(self, until: float) -> None:
        """Sleep until ``until`` unless ``finish`` comes first; the reader is held meanwhile."""
        self._spaced = asyncio.ensure_future(self._sleep_until(until))
        self._due = until
        try:
            await asyncio.wait((self._spaced,))
        finally:
            self._due = None
            self._spaced.cancel()
            self._spaced = None

    async def _sleep_until(self, until: float) -> None:
        # The delay is taken when the sleep starts, not when it is scheduled.
        await self._clock.sleep(until - self._clock.now())

    async def _write(self, step: _Step, budget: Budget, failures: int) -> int:
        """Make one platform call; returns the number of consecutive failed calls after it."""
        # Its budget takes no other call for an interval: when the next progress edit goes
        # on the same budget, what streams in meanwhile (this call out too) waits unread
        # until just before then. Not otherwise: on Slack a stream's start and its appends
        # are budgets of their own, and the first append may follow the start at once.
        if self._sink.budget("edit") == budget:
            self._due = self._clock.now() + budget.interval
        try:
            await self._call(step)
        except PlatformRateLimited as exc:
            # Pacing should prevent this; seeing it means another client shares the
            # token or the budgets are too generous for this workspace.
            log.warning("platform throttled a reply: %s", exc)
            await self._pacer.penalise(budget, exc.retry_after)
            return failures
        except PlatformMessageFrozen as exc:
            # Not a failure: the part keeps what it shows and the answer goes on below it.
            log.warning("reply message %s can no longer be edited, continuing in a new "
                        "message: %s", self._ids[step.index], exc)
            await self._freeze(step.index)
            return failures
        except PlatformMessageGone as exc:
            # Counted as a failure: a thread archived or locked under the reply refuses the
            # new post as well.
            failures += 1
            if step.op == "edit":
                log.warning("reply message %s is gone; posting it again", self._ids[step.index])
                self._ids[step.index] = None
            else:
                log.warning("platform call failed (%s of %s): %s", failures, MAX_FAILURES, exc)
            return failures
        except PlatformError as exc:
            failures += 1
            log.warning("platform call failed (%s of %s): %s", failures, MAX_FAILURES, exc)
            if failures < MAX_FAILURES:
                await self._clock.sleep(min(8.0, 0.25 * 2**failures))
            return failures
        return 0

    async def _call(self, step: _Step) -> None:
        self.calls += 1
        self._last_call_at = now = self._clock.now()
        if self.first_call_at is None and step.text.strip():
            self.first_call_at = now
        if step.op == "post":
            message_id = await self._sink.post(step.text, final=step.final)
            while len(self._ids) <= step.index:
                self._ids.append(None)
                self._shown.append(None)
                self._finalised.append(False)
                self._spans.append(None)
            self._ids[step.index] = message_id
        else:
            existing = self._ids[step.index]
            assert existing is not None
            await self._sink.edit(existing, step.text, final=step.final)
        if self.first_text_at is None and step.text.strip():
            self.first_text_at = self._clock.now()
            self._join()
        self._shown[step.index] = step.text
        self._finalised[step.index] = step.final
        self._spans[step.index] = (step.start, step.body)

    def _join(self) -> None:
        if self._final is None and not self._joined:
            self._joined = True
            self._pacer.join()

    async def _freeze(self, index: int) -> None:
        """Part ``index`` refuses edits for good (Discord: a message older than an hour,
        error 30046): it keeps the text it shows, and the rest of the answer follows in new
        messages after it."""
        span, shown, message_id = self._spans[index], self._shown[index], self._ids[index]
        text = self._final if self._final is not None else self.text
        ended_here = span is not None and self._final is not None and not text[sum(span):]
        if span is None or shown is None or (
            ended_here and bool(self._mark) and shown.endswith(self._mark)
        ):
            # Nothing of this answer is in it (an old reply being regenerated), or all of
            # the rest is but under the progress mark: the part is posted anew, and a
            # message of this answer that would look unfinished goes.
            if message_id is not None and span is not None:
                try:
                    await self._sink.delete(message_id)
                except PlatformError as exc:
                    log.warning("could not delete a reply message that cannot be edited: %s",
                                exc)
            self._ids[index] = None
            return
        start, body = span
        wants, _ = self._desired()
        self._sealed = [*wants[:index], _Want(shown, start, body)]
        self._tail_start = start + body
        self._tail_fence = _fence_at(text, self._tail_start)
        self._finalised[index] = True

    async def _last_word(self) -> None:
        """After giving up, one best-effort write per part still showing the progress mark:
        the text shown so far without the mark, saying the answer is incomplete. One attempt
        each; a platform that refuses it too is left alone."""
        if not self._mark:
            return
        for index, shown in enumerate(self._shown):
            message_id = self._ids[index]
            if (message_id is None or shown is None or self._finalised[index]
                    or not shown.endswith(self._mark)):
                continue
            body = shown[: -len(self._mark)]
            note = "\n\n" + CUT_OFF.format(reason=GAVE_UP_REASON)
            text = body + note if len(body) + len(note) <= self._limit else body
            await self._pacer.wait(self._sink.budget("edit", final=True))
            try:
                self.calls += 1
                await self._sink.edit(message_id, text, final=True)
            except PlatformError as exc:
                log.warning("the last attempt to finish this reply failed too: %s", exc)
                continue
            self._shown[index] = text
            self._finalised[index] = True

    async def _drop_stale(self, keep: int) -> None:
        """A regenerated answer with fewer parts than before: remove the leftover messages."""
        for index in range(len(self._ids) - 1, keep - 1, -1):
            message_id = self._ids[index]
            if message_id is None:
                continue
            await self._pacer.wait(self._sink.budget("edit", final=True))
            try:
                await self._sink.delete(message_id)
            except PlatformError as exc:
                log.warning("could not delete leftover reply message: %s", exc)
            self._ids[index] = None


def _fence_at(text: str, offset: int) -> Fence | None:
    """The code fence open at ``offset`` of ``text``."""
    fence: Fence | None = None
    for line in text[:offset].splitlines(keepends=True):
        fence = fence_after(line, fence)
    return fence
