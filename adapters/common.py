"""The machinery both platform adapters share: owned event tasks, the catch-all, shutdown.

Each platform event (a message to answer, a reaction, a button press) is handled in a task
the adapter owns, so the platform's reader (Bolt's listener, discord.py's gateway) returns
at once and shutdown can wait for the work or cancel it. The one catch-all of an adapter is
:meth:`EventTasks.spawn`'s guard: it logs the failure (never the message text) and, for an
event that has someone to answer, tells that person that something went wrong.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Coroutine, Sequence
from typing import Any, Protocol

from bridge.core.errors import PlatformError

log = logging.getLogger(__name__)

SOMETHING_WENT_WRONG = "Sorry, something went wrong on my side. Please try again."

# Says "something went wrong" to the person an event came from; called by the catch-all.
Notice = Callable[[], Awaitable[None]]


class ShownReply(Protocol):
    """The part of a reply sink the catch-all needs: what it has shown, post and finish."""

    @property
    def part_ids(self) -> Sequence[str]: ...

    async def post(self, text: str, *, final: bool) -> str: ...

    async def finish(self, part_ids: Sequence[str], *, answered: bool) -> None: ...


async def apologise(sink: ShownReply) -> None:
    """Leave a failed reply finished: the notice when nothing was shown yet, never a bare
    placeholder, a stream left open or a working signal left up."""
    try:
        if not sink.part_ids:
            await sink.post(SOMETHING_WENT_WRONG, final=True)
    except PlatformError as exc:
        log.warning("could not tell the user that answering failed: %s", exc)
    await sink.finish(sink.part_ids, answered=False)


class EventTasks:
    """The tasks one adapter runs for platform events, and whether it takes new events.

    ``taking`` is the intake switch the adapter's listeners read; ``spawn`` runs work in an
    owned, guarded task; ``wait_idle``/``drain`` wait for the work; ``close`` stops intake,
    cancels what is left and refuses new work (idempotent).
    """

    def __init__(self, *, platform: str) -> None:
        self._platform = platform
        self._tasks: set[asyncio.Task[None]] = set()
        self._taking = False
        self._closed = False

    # ------------------------------------------------------------------ intake

    @property
    def taking(self) -> bool:
        """Whether new platform events are accepted (between ``open`` and ``stop_intake``)."""
        return self._taking and not self._closed

    @property
    def closed(self) -> bool:
        return self._closed

    def open(self) -> None:
        self._taking = True

    def stop_intake(self) -> None:
        """New events are refused; work already taken goes on."""
        self._taking = False

    # ------------------------------------------------------------------ work

    def spawn(
        self, work: Coroutine[Any, Any, None], *, name: str, notice: Notice | None = None
    ) -> None:
        """Run ``work`` in an owned task under the catch-all. After ``close`` the work is
        dropped unstarted."""
        if self._closed:
            work.close()
            return
        task = asyncio.create_task(self._guard(work, name, notice), name=name)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _guard(
        self, work: Coroutine[Any, Any, None], name: str, notice: Notice | None
    ) -> None:
        # The one catch-all: the core finishes every reply itself, so a failure reaching
        # here is a bug. Logged without message text; the person is told, never left
        # waiting for an answer that will not come.
        try:
            await work
        except asyncio.CancelledError:
            raise
        except Exception:
            log.exception("%s: handling %s failed", self._platform, name)
            if notice is not None:
                await _tell(notice, self._platform)

    @property
    def in_flight(self) -> int:
        """Events being handled now (answers rendering, reactions, button presses)."""
        return sum(1 for task in self._tasks if not task.done())

    async def wait_idle(self) -> None:
        """Wait until every event taken so far is fully handled, including work that
        handling spawned (for tests and tools that need a quiet point)."""
        while True:
            tasks = [task for task in self._tasks if not task.done()]
            if not tasks:
                return
            await asyncio.wait(tasks)

    async def drain(self, grace: float) -> bool:
        """Wait up to ``grace`` seconds for the work in flight; True when all finished."""
        try:
            async with asyncio.timeout(grace):
                await self.wait_idle()
        except TimeoutError:
            return False
        return True

    async def cancel(self) -> None:
        """Cancel the work in flight and wait until it has unwound."""
        while tasks := [task for task in self._tasks if not task.done()]:
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)

    async def close(self, *, grace: float = 0.0) -> None:
        """Stop intake, give the work ``grace`` seconds, cancel the rest and refuse new
        work from then on. Closing again does nothing."""
        if self._closed:
            return
        self.stop_intake()
        if grace > 0:
            await self.drain(grace)
        self._closed = True
        await self.cancel()


async def _tell(notice: Notice, platform: str) -> None:
    try:
        await notice()
    except asyncio.CancelledError:
        raise
    except Exception as exc:
        log.warning("%s: could not tell the user that handling failed: %s",
                    platform, type(exc).__name__)
