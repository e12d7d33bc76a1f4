"""How an answer appears on Discord: a thread or channel message posted then edited, or the
response of a slash command; typing until the first text; a Stop button while it is written;
feedback buttons at the end.

The Stop button (``live_view``) costs no call of its own: it rides on the post of each part
that is still being written, stays through the edits that follow (an edit without
``components`` leaves them as they are,
https://discord.com/developers/docs/resources/message#edit-message), and the part's final
edit sends an empty components list, which removes it.

The core's renderer decides when to call and what each part says. A call here may sit inside
discord.py's rate-limit sleep (it pre-empts the bucket it read from the headers); that is
fine because the renderer never awaits a sink inside the stream reader. Longer waits than
``max_ratelimit_timeout`` surface as ``discord.RateLimited`` and leave as
``PlatformRateLimited``.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Final, NoReturn

import aiohttp
import discord
from discord.http import handle_message_parameters

from bridge.app.metrics import Metrics
from bridge.core.errors import (
    PlatformError,
    PlatformMessageFrozen,
    PlatformMessageGone,
    PlatformRateLimited,
)
from bridge.core.ports import Budget, Operation, SinkLimits

log = logging.getLogger(__name__)

MAX_CHARS = 2000  # message content limit
# Discord shows a typing indicator for about 10 s after each trigger.
TYPING_EVERY = 8.0
# Message writes share one bucket per channel (a thread is a channel), commonly observed at
# 5 per 5 s; Discord does not publish per-route numbers and says to follow the headers
# (https://discord.com/developers/docs/topics/rate-limits). Spacing calls exactly 1.0 s
# apart fills the bucket to the last token: a call that leaves late or arrives early (the
# network, discord.py's own pre-emptive sleep, Discord counting from its first arrival) puts
# six in one window and costs a 429. 1.1 s keeps 0.5 s of slack per window for 9 % less
# cadence (docs/discord.md, "Pacing").
DEFAULT_INTERVAL = 1.1
ARCHIVE_AFTER_MINUTES: Final = 1440

NO_MENTIONS = discord.AllowedMentions.none()
LIMITS = SinkLimits(max_chars=MAX_CHARS)

# Error codes that mean the message, channel or thread can no longer be written:
# unknown channel/message/webhook, missing access, invalid webhook token (an interaction
# older than 15 minutes), thread archived, thread locked.
_GONE_CODES = frozenset({10003, 10008, 10015, 50001, 50027, 50083, 160005})
THREAD_ALREADY_CREATED = 160004
# "Maximum number of edits to messages older than 1 hour reached": the message stays as it
# is; new messages are still accepted (https://discord.com/developers/docs/topics/opcodes-and-status-codes#json).
OLD_MESSAGE_EDITS = 30046

ViewFactory = Callable[[], discord.ui.View]


def _live(live_view: ViewFactory | None, *, final: bool) -> dict[str, Any]:
    """The ``view`` argument of a write: the live view on a part still being written, none
    (components removed) on its final write, nothing (left alone) without a live view."""
    if live_view is None:
        return {}
    return {"view": None if final else live_view()}


def translate_error(exc: BaseException, what: str) -> NoReturn:
    """Re-raise a discord.py or transport failure as the bridge's platform error."""
    if isinstance(exc, discord.RateLimited):
        raise PlatformRateLimited(exc.retry_after, f"Discord {what} rate limited") from exc
    if isinstance(exc, discord.HTTPException) and exc.code == OLD_MESSAGE_EDITS:
        raise PlatformMessageFrozen(f"Discord {what}: {_describe(exc)}") from exc
    if isinstance(exc, discord.NotFound) or (
        isinstance(exc, discord.HTTPException) and exc.code in _GONE_CODES
    ):
        raise PlatformMessageGone(f"Discord {what}: {_describe(exc)}") from exc
    if isinstance(exc, discord.HTTPException):
        raise PlatformError(f"Discord {what} failed: {_describe(exc)}") from exc
    if isinstance(exc, aiohttp.ClientError | OSError | TimeoutError):
        raise PlatformError(f"Discord {what} failed: {type(exc).__name__}") from exc
    raise exc


def _describe(exc: discord.HTTPException) -> str:
    # Discord's error text names the problem ("Unknown Message"), never the content.
    return f"HTTP {exc.status}, code {exc.code} ({exc.text[:120]})"


class _Typing:
    """The typing indicator of one reply, in a task the sink owns."""

    def __init__(self) -> None:
        self._task: asyncio.Task[None] | None = None
        self._stop = asyncio.Event()

    def start(self, send: Callable[[], Any]) -> None:
        if self._task is None and not self._stop.is_set():
            self._task = asyncio.create_task(self._run(send), name="discord-typing")

    async def _run(self, send: Callable[[], Any]) -> None:
        while not self._stop.is_set():
            try:
                await send()
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # a cosmetic signal: never fail a reply over it
                log.debug("typing indicator failed: %s", type(exc).__name__)
                return
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._stop.wait(), TYPING_EVERY)

    async def stop(self) -> None:
        self._stop.set()
        task, self._task = self._task, None
        if task is not None and not task.done():
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task


@dataclass(frozen=True, slots=True)
class ThreadRequest:
    """Open a public thread from the asker's message before the first write."""

    parent_id: str
    message_id: str
    name: str


class ChannelSink:
    """Writes a reply as messages in a channel, a thread (created on first use) or a DM."""

    def __init__(
        self,
        *,
        http: discord.http.HTTPClient,
        metrics: Metrics,
        channel_id: str,
        interval: float = DEFAULT_INTERVAL,
        reply_to: str | None = None,
        open_thread: ThreadRequest | None = None,
        view_factory: ViewFactory | None = None,
        live_view: ViewFactory | None = None,
    ) -> None:
        """``view_factory`` makes the buttons of a finished answer, ``live_view`` those of a
        part still being written (the Stop button)."""
        self._http = http
        self._metrics = metrics
        # A thread created from a message gets the message's id, so the target is known
        # (and the budget keyed correctly) before the thread exists.
        self._channel = open_thread.message_id if open_thread else channel_id
        self._interval = interval
        self._reply_to = reply_to
        self._thread = open_thread
        self._thread_lock = asyncio.Lock()
        self._view_factory = view_factory
        self._live_view = live_view
        self._typing = _Typing()
        self._part_ids: list[str] = []

    @property
    def limits(self) -> SinkLimits:
        return LIMITS

    @property
    def part_ids(self) -> tuple[str, ...]:
        """The messages of this reply posted so far."""
        return tuple(self._part_ids)

    @property
    def channel_id(self) -> str:
        """Where the reply is written (after a failed thread creation: the channel)."""
        return self._channel

    def budget(self, op: Operation, *, final: bool = False) -> Budget:
        return Budget(f"discord:{self._channel}", self._interval)

    async def working(self) -> None:
        self._typing.start(self._send_typing)

    async def _send_typing(self) -> None:
        await self._ensure_channel()
        self._count("typing")
        await self._http.send_typing(self._channel)

    async def _ensure_channel(self) -> None:
        request = self._thread
        if request is None:
            return
        async with self._thread_lock:
            if self._thread is None:
                return
            try:
                self._count("thread")
                await self._http.start_thread_with_message(
                    request.parent_id,
                    request.message_id,
                    name=request.name,
                    auto_archive_duration=ARCHIVE_AFTER_MINUTES,
                )
            except discord.HTTPException as exc:
                if exc.code != THREAD_ALREADY_CREATED:
                    # No permission after all, the message is gone, or Discord refused the
                    # name: answer inline rather than not at all.
                    log.info("could not open a thread, answering inline: %s", _describe(exc))
                    self._channel = request.parent_id
                    self._reply_to = request.message_id
            except (discord.RateLimited, aiohttp.ClientError, OSError, TimeoutError) as exc:
                log.info("could not open a thread, answering inline: %s", type(exc).__name__)
                self._channel = request.parent_id
                self._reply_to = request.message_id
            self._thread = None

    async def post(self, text: str, *, final: bool) -> str:
        await self._ensure_channel()
        await self._typing.stop()
        extra: dict[str, Any] = {}
        if not self._part_ids and self._reply_to is not None:
            # An inline answer replies to the question; if the question was deleted
            # meanwhile, the answer is posted anyway.
            extra["message_reference"] = discord.MessageReference(
                message_id=int(self._reply_to),
                channel_id=int(self._channel),
                fail_if_not_exists=False,
            ).to_message_reference_dict()
        if not final:
            extra.update(_live(self._live_view, final=False))
        self._count("post")
        try:
            with handle_message_parameters(
                content=text, allowed_mentions=NO_MENTIONS, **extra
            ) as params:
                data = await self._http.send_message(self._channel, params=params)
        except Exception as exc:
            translate_error(exc, "post")
        self._part_ids.append(str(data["id"]))
        return self._part_ids[-1]

    async def edit(self, message_id: str, text: str, *, final: bool) -> None:
        # The Stop button came with the post; only the final edit touches it (removes it).
        extra = _live(self._live_view, final=True) if final else {}
        self._count("edit")
        try:
            with handle_message_parameters(
                content=text, allowed_mentions=NO_MENTIONS, **extra
            ) as params:
                await self._http.edit_message(self._channel, message_id, params=params)
        except Exception as exc:
            translate_error(exc, "edit")

    async def delete(self, message_id: str) -> None:
        self._count("delete")
        try:
            await self._http.delete_message(self._channel, message_id)
        except discord.NotFound:
            pass  # already gone: the goal
        except Exception as exc:
            translate_error(exc, "delete")
        self._forget(message_id)

    def _forget(self, message_id: str) -> None:
        if message_id in self._part_ids:
            self._part_ids.remove(message_id)

    async def finish(self, part_ids: Sequence[str], *, answered: bool) -> None:
        await self._typing.stop()
        if not (answered and part_ids and self._view_factory is not None):
            return
        self._count("buttons")
        try:
            with handle_message_parameters(
                view=self._view_factory(), allowed_mentions=NO_MENTIONS
            ) as params:
                await self._http.edit_message(self._channel, part_ids[-1], params=params)
        except Exception as exc:
            log.info("could not add feedback buttons: %s", type(exc).__name__)

    async def close(self) -> None:
        """Stop the typing task (the adapter's last resort if the reply never finished)."""
        await self._typing.stop()

    def _count(self, call: str) -> None:
        self._metrics.platform_calls.labels("discord", call).inc()


class InteractionSink:
    """Writes a slash command's answer into its deferred response, continuing in follow-ups.

    Interaction responses go through the interaction webhook, whose rate limit is its own,
    not the channel's.
    """

    def __init__(
        self,
        *,
        interaction: discord.Interaction[Any],
        metrics: Metrics,
        interval: float = DEFAULT_INTERVAL,
        view_factory: ViewFactory | None = None,
        live_view: ViewFactory | None = None,
    ) -> None:
        self._interaction = interaction
        self._metrics = metrics
        self._interval = interval
        self._view_factory = view_factory
        self._live_view = live_view
        self._original: str | None = None
        self._part_ids: list[str] = []

    @property
    def limits(self) -> SinkLimits:
        return LIMITS

    @property
    def part_ids(self) -> tuple[str, ...]:
        """The messages of this reply posted so far (the original response first)."""
        return tuple(self._part_ids)

    def budget(self, op: Operation, *, final: bool = False) -> Budget:
        # Keyed on the interaction id: the webhook token is a credential for 15 minutes.
        return Budget(f"discord:interaction:{self._interaction.id}", self._interval)

    async def working(self) -> None:
        """The deferred response already shows "… is thinking"."""

    async def post(self, text: str, *, final: bool) -> str:
        live = _live(self._live_view, final=False) if not final else {}
        self._count("post")
        try:
            if self._original is None:
                message = await self._interaction.edit_original_response(
                    content=text, allowed_mentions=NO_MENTIONS, **live
                )
                self._original = str(message.id)
                self._part_ids.append(self._original)
                return self._original
            sent = await self._interaction.followup.send(
                content=text, allowed_mentions=NO_MENTIONS, wait=True, **live
            )
        except Exception as exc:
            translate_error(exc, "post")
        self._part_ids.append(str(sent.id))
        return self._part_ids[-1]

    async def edit(self, message_id: str, text: str, *, final: bool) -> None:
        extra = _live(self._live_view, final=True) if final else {}
        self._count("edit")
        try:
            if message_id == self._original:
                await self._interaction.edit_original_response(
                    content=text, allowed_mentions=NO_MENTIONS, **extra
                )
            else:
                await self._interaction.followup.edit_message(
                    int(message_id), content=text, allowed_mentions=NO_MENTIONS, **extra
                )
        except Exception as exc:
            translate_error(exc, "edit")

    async def delete(self, message_id: str) -> None:
        self._count("delete")
        try:
            if message_id == self._original:
                await self._interaction.delete_original_response()
                self._original = None
            else:
                await self._interaction.followup.delete_message(int(message_id))
        except discord.NotFound:
            pass  # already gone: the goal
        except Exception as exc:
            translate_error(exc, "delete")
        if message_id in self._part_ids:
            self._part_ids.remove(message_id)

    async def finish(self, part_ids: Sequence[str], *, answered: bool) -> None:
        try:
            if self._original is None and not part_ids:
                # Nothing was shown: do not leave "… is thinking" up for 15 minutes.
                self._count("delete")
                await self._interaction.delete_original_response()
                return
            if not (answered and part_ids and self._view_factory is not None):
                return
            self._count("buttons")
            last = part_ids[-1]
            if last == self._original:
                await self._interaction.edit_original_response(
                    view=self._view_factory(), allowed_mentions=NO_MENTIONS
                )
            else:
                await self._interaction.followup.edit_message(
                    int(last), view=self._view_factory(), allowed_mentions=NO_MENTIONS
                )
        except Exception as exc:
            log.info("could not finish the interaction response: %s", type(exc).__name__)

    async def close(self) -> None:
        """Nothing runs in the background."""

    def _count(self, call: str) -> None:
        self._metrics.platform_calls.labels("discord", call).inc()
