"""Renders one answer into Slack: a native stream in threads, post + update elsewhere.

The core's renderer decides when to call and what each message part shows; this module
decides how. A threaded reply streams with ``chat.startStream`` / ``appendStream`` /
``stopStream`` (standard Markdown in ``markdown_text``); a top-level DM reply, a regenerated
answer and any reply whose stream cannot start are posted with ``chat.postMessage`` and
rewritten with ``chat.update`` (a ``markdown`` block plus a plain ``text`` fallback).
Everything sent is escaped (``&``, ``<``, ``>``), so model text can never ping.

Calls are never retried here (the client has no retry handlers): a 429 becomes
``PlatformRateLimited`` and the core's pacer waits; the budgets below keep the whole
workspace inside Slack's tiers.
"""

from __future__ import annotations

import asyncio
import logging
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Any

import aiohttp
from slack_sdk.errors import SlackApiError, SlackClientError
from slack_sdk.web.async_client import AsyncWebClient

from adapters.slack.markup import escape, escaped_length, escaped_prefix, split_for_escaped_limit
from adapters.slack.translate import FEEDBACK_ACTION_ID
from bridge.app.metrics import Metrics
from bridge.core.errors import PlatformError, PlatformMessageGone, PlatformRateLimited
from bridge.core.ports import Budget, Operation, SinkLimits

log = logging.getLogger(__name__)

# Per message part, in characters of the answer (before escaping).
# Streams: markdown_text takes at most 12,000 characters per call, and an expired stream is
# rewritten with chat.update as one markdown block, which shares 12,000 characters across
# the message; 8,000 leaves room for escaping (docs.slack.dev/reference/methods/chat.appendStream).
STREAM_MAX_CHARS = 8_000
# Post + update: `text` fails with msg_too_long from about 4,000 characters in practice,
# and production bots keep to 3,000-3,500 (github.com/seratch/ChatGPT-in-Slack/issues/102);
# the markdown block would allow more, but this path is the fallback and regenerate path, so
# it stays on the proven side.
POST_MAX_CHARS = 3_900
# markdown_text per call, and all markdown blocks of one message:
# https://docs.slack.dev/reference/block-kit/blocks/markdown-block
MARKDOWN_LIMIT = 12_000
# The plain `text` that accompanies blocks (notifications, accessibility) stays short so it
# can never be the reason a call fails.
FALLBACK_TEXT_LIMIT = 3_000
PROGRESS_MARK = " ▌"
STATUS_TEXT = "is thinking…"

# Errors meaning the message (or its channel/thread) can no longer be written.
GONE_CODES = frozenset({
    "message_not_found", "channel_not_found", "thread_not_found", "is_archived",
    "not_in_channel", "cant_update_message", "message_not_owned_by_app",
})
# Errors of chat.startStream after which posting the part normally is pointless too.
_NO_FALLBACK_CODES = frozenset({"channel_not_found", "is_archived", "not_in_channel",
                                "invalid_auth", "account_inactive", "token_revoked"})
_STREAM_ENDED = "message_not_in_streaming_state"
_STOPPED_BY_USER = "stopped_by_user"

_FENCE_LINE = re.compile(r"^ {0,3}(?:`{3,}|~{3,})")


@dataclass(frozen=True, slots=True)
class SlackPacing:
    """Seconds between two calls of one method in one workspace (per channel for
    chat.postMessage), shared by every reply on every replica.

    Slack's tiers (https://docs.slack.dev/apis/web-api/rate-limits), per app per workspace
    per method: chat.startStream and chat.stopStream Tier 2
    (20+/min) -> 18/min; chat.appendStream Tier 4 (100+/min) -> 90/min; chat.update and
    chat.delete Tier 3 (50+/min) -> 45/min; chat.postMessage "one message per second per
    channel" -> one per 1.1 s per channel.
    """

    start_stream: float = 60 / 18
    append_stream: float = 60 / 90
    stop_stream: float = 60 / 18
    update: float = 60 / 45
    delete: float = 60 / 45
    post_per_channel: float = 1.1

    def scaled(self, factor: float) -> SlackPacing:
        """Every interval multiplied by ``factor`` (tests run Slack's tiers faster)."""
        return replace(
            self,
            start_stream=self.start_stream * factor,
            append_stream=self.append_stream * factor,
            stop_stream=self.stop_stream * factor,
            update=self.update * factor,
            delete=self.delete * factor,
            post_per_channel=self.post_per_channel * factor,
        )


@dataclass(frozen=True, slots=True)
class ReplyTarget:
    """Where a reply goes. ``workspace`` is the rate-limit space and the stream's
    recipient team; ``asker`` the stream's recipient user."""

    workspace: str
    channel: str
    thread_ts: str | None
    asker: str | None = None


class SlackApiFailure(PlatformError):
    """Slack answered ``ok: false``; ``code`` is its ``error`` string."""

    def __init__(self, method: str, code: str) -> None:
        super().__init__(f"Slack {method} failed: {code}")
        self.method = method
        self.code = code


class SlackApi:
    """One Web API client with call counting and errors translated into bridge.core.errors."""

    def __init__(self, *, client: AsyncWebClient, metrics: Metrics, timeout: float) -> None:
        self._client = client
        self._metrics = metrics
        self._timeout = timeout

    async def call(self, method: str, **args: Any) -> Mapping[str, Any]:
        self._metrics.platform_calls.labels("slack", method).inc()
        body = {k: v for k, v in args.items() if v is not None}
        try:
            async with asyncio.timeout(self._timeout):
                response = await self._client.api_call(method, json=body)
        except SlackApiError as exc:
            raise self._failure(method, exc) from exc
        except (SlackClientError, aiohttp.ClientError, TimeoutError) as exc:
            raise PlatformError(f"Slack {method} failed: {type(exc).__name__}") from exc
        data = response.data
        if not isinstance(data, Mapping):
            raise PlatformError(f"Slack {method} answered without a JSON body")
        return data

    def _failure(self, method: str, exc: SlackApiError) -> PlatformError:
        response = exc.response
        status = getattr(response, "status_code", None)
        data = getattr(response, "data", None)
        code = data.get("error") if isinstance(data, Mapping) else None
        if status == 429 or code == "ratelimited":
            self._metrics.platform_rate_limited.labels("slack").inc()
            return PlatformRateLimited(_retry_after(getattr(response, "headers", None)),
                                       f"Slack {method} rate limited")
        return SlackApiFailure(method, str(code or f"HTTP {status}"))


def _retry_after(headers: Any) -> float:
    value = None
    if isinstance(headers, Mapping):
        value = headers.get("Retry-After") or headers.get("retry-after")
    try:
        return max(0.0, float(value)) if value is not None else 1.0
    except (TypeError, ValueError):
        return 1.0


def markdown_blocks(text: str, *, feedback: bool = False) -> list[dict[str, Any]]:
    """The blocks of a posted or updated answer part: its Markdown, escaped, and the
    feedback buttons when asked for."""
    if escaped_length(text) > MARKDOWN_LIMIT:
        raise PlatformError("the text is too long for one Slack message")
    blocks: list[dict[str, Any]] = []
    if text.strip():
        blocks.append({"type": "markdown", "text": escape(text)})
    if feedback:
        blocks.append(feedback_block())
    return blocks


def feedback_block() -> dict[str, Any]:
    """Slack's native 👍/👎 (context_actions + feedback_buttons); the values carry the verdict,
    the message ts finds the answer. Source:
    https://docs.slack.dev/reference/block-kit/block-elements/feedback-buttons-element"""
    return {
        "type": "context_actions",
        "elements": [{
            "type": "feedback_buttons",
            "action_id": FEEDBACK_ACTION_ID,
            "positive_button": {
                "text": {"type": "plain_text", "text": "👍"},
                "value": "positive",
                "accessibility_label": "This answer was helpful",
            },
            "negative_button": {
                "text": {"type": "plain_text", "text": "👎"},
                "value": "negative",
                "accessibility_label": "This answer was not helpful",
            },
        }],
    }


def fallback_text(text: str) -> str:
    shown = escaped_prefix(text, FALLBACK_TEXT_LIMIT)
    return shown if shown.strip() else "…"


def settled(text: str) -> str:
    """The part of an interim text that later texts will only extend.

    While an answer streams, the renderer closes a code block that is still open at the end
    of the text; the next text continues the block, so that closing fence line (and the line
    break before it) is held back: a native stream can only ever add text.
    """
    cut = text.rfind("\n")
    if _FENCE_LINE.match(text[cut + 1:]):
        return text[:cut] if cut >= 0 else ""
    return text


@dataclass(slots=True)
class _Part:
    ts: str
    shown: str | None  # what Slack shows (unescaped); None when not known
    streaming: bool


class _StreamEnded(Exception):
    """The stream is no longer open (expired after about five minutes)."""


class SlackSink:
    """Renders one reply (``bridge.core.ports.ReplySink``)."""

    def __init__(
        self,
        *,
        api: SlackApi,
        retrying_api: SlackApi,
        target: ReplyTarget,
        stream: bool,
        feedback_buttons: bool,
        pacing: SlackPacing,
    ) -> None:
        self._api = api
        self._retrying = retrying_api
        self._target = target
        # Native streams need a thread (invalid_thread_ts without one):
        # https://docs.slack.dev/reference/methods/chat.startStream
        self._stream_reply = stream and target.thread_ts is not None
        self._stream_ok = self._stream_reply
        self._buttons = feedback_buttons
        self._pacing = pacing
        self._parts: dict[str, _Part] = {}
        self._order: list[str] = []
        self._status_attempted = False
        self._halted = False

    # ------------------------------------------------------------------ port

    @property
    def limits(self) -> SinkLimits:
        if self._stream_reply:
            return SinkLimits(max_chars=STREAM_MAX_CHARS, progress_mark=None)
        return SinkLimits(max_chars=POST_MAX_CHARS, progress_mark=PROGRESS_MARK)

    @property
    def streaming(self) -> bool:
        """Whether new parts of this reply start as native streams."""
        return self._stream_ok

    @property
    def part_ids(self) -> tuple[str, ...]:
        """The messages this sink has posted, in order."""
        return tuple(self._order)

    def budget(self, op: Operation, *, final: bool = False) -> Budget:
        ws, pacing = self._target.workspace, self._pacing
        if op == "post":
            if self._stream_ok and not final:
                return Budget(f"slack:{ws}:chat.startStream", pacing.start_stream)
            return Budget(f"slack:{ws}:{self._target.channel}:chat.postMessage",
                          pacing.post_per_channel)
        latest = self._parts.get(self._order[-1]) if self._order else None
        if latest is not None and latest.streaming:
            if final:
                return Budget(f"slack:{ws}:chat.stopStream", pacing.stop_stream)
            return Budget(f"slack:{ws}:chat.appendStream", pacing.append_stream)
        return Budget(f"slack:{ws}:chat.update", pacing.update)

    async def working(self) -> None:
        thread = self._target.thread_ts
        if thread is None:
            return  # the status lives in a thread; a top-level DM reply has none
        self._status_attempted = True
        try:
            await self._api.call("assistant.threads.setStatus", channel_id=self._target.channel,
                                 thread_ts=thread, status=STATUS_TEXT)
        except PlatformError as exc:
            log.info("could not show the thinking status: %s", exc)

    async def post(self, text: str, *, final: bool) -> str:
        if self._halted and self._order:
            return self._order[-1]
        if self._stream_ok and not final:
            try:
                return await self._start_stream(text)
            except SlackApiFailure as exc:
                if exc.code in _NO_FALLBACK_CODES:
                    raise
                log.warning("chat.startStream failed (%s); this reply continues with "
                            "chat.postMessage", exc.code)
                self._stream_ok = False
        return await self._post_message(text)

    async def edit(self, message_id: str, text: str, *, final: bool) -> None:
        if self._halted:
            return
        part = self._parts.get(message_id)
        if part is None:
            part = _Part(ts=message_id, shown=None, streaming=False)
            self._parts[message_id] = part
        try:
            if part.streaming:
                await self._edit_stream(part, text, final=final)
            elif part.shown != text:
                await self._update(part, text)
        except SlackApiFailure as exc:
            if exc.code in GONE_CODES:
                raise PlatformMessageGone(str(exc)) from exc
            raise

    async def delete(self, message_id: str) -> None:
        part = self._parts.pop(message_id, None)
        if message_id in self._order:
            self._order.remove(message_id)
        if part is not None and part.streaming:
            await self._stop_quietly(part)
        try:
            await self._api.call("chat.delete", channel=self._target.channel, ts=message_id)
        except SlackApiFailure as exc:
            if exc.code not in GONE_CODES:
                raise

    async def finish(self, part_ids: Sequence[str], *, answered: bool) -> None:
        try:
            for part in list(self._parts.values()):
                if part.streaming:
                    await self._stop_quietly(part)
            if self._status_attempted:
                await self._clear_status()
            if answered and self._buttons and part_ids and not self._halted:
                await self._add_buttons(part_ids[-1])
        except Exception:
            log.exception("finishing a Slack reply failed")

    # ------------------------------------------------------------------ streams

    async def _start_stream(self, text: str) -> str:
        pieces = split_for_escaped_limit(settled(text), MARKDOWN_LIMIT) or [""]
        data = await self._api.call(
            "chat.startStream",
            channel=self._target.channel,
            thread_ts=self._target.thread_ts,
            markdown_text=escape(pieces[0]) or None,
            # Required outside DMs (missing_recipient_*); Bolt fills them the same way.
            # https://docs.slack.dev/reference/methods/chat.startStream
            recipient_team_id=self._target.workspace,
            recipient_user_id=self._target.asker,
        )
        ts = data.get("ts")
        if not isinstance(ts, str) or not ts:
            raise PlatformError("Slack chat.startStream answered without a ts")
        part = self._remember(ts, pieces[0], streaming=True)
        try:
            for piece in pieces[1:]:
                await self._append(part, piece)
        except (PlatformError, _StreamEnded) as exc:
            # The message exists: the next edit sends what is still missing.
            log.info("the rest of a long first text waits for the next edit: %s", exc)
        return ts

    async def _edit_stream(self, part: _Part, text: str, *, final: bool) -> None:
        target = text if final else settled(text)
        shown = part.shown or ""
        try:
            if target.startswith(shown):
                delta = target[len(shown):]
                if final:
                    await self._stop(part, delta)
                elif delta:
                    await self._append(part, delta)
                return
            if not final and shown.startswith(target):
                return  # only held-back text changed
            # The text no longer extends what the stream shows (the renderer moved a part
            # boundary): end the stream and rewrite the message.
            await self._stop(part, "")
            if self._halted:
                return
        except _StreamEnded:
            # Streams end about five minutes after they start; the message then
            # accepts chat.update, so it is rewritten whole and edited from here on.
            # Source: https://github.com/slackapi/python-slack-sdk/issues/1859
            log.info("a Slack stream ended before its answer; continuing with chat.update")
        part.streaming = False
        await self._update(part, text)

    async def _append(self, part: _Part, delta: str) -> None:
        for piece in split_for_escaped_limit(delta, MARKDOWN_LIMIT):
            await self._stream_call("chat.appendStream", part, markdown_text=escape(piece))
            part.shown = (part.shown or "") + piece

    async def _stop(self, part: _Part, delta: str) -> None:
        pieces = split_for_escaped_limit(delta, MARKDOWN_LIMIT)
        for piece in pieces[:-1]:
            await self._stream_call("chat.appendStream", part, markdown_text=escape(piece))
            part.shown = (part.shown or "") + piece
        last = pieces[-1] if pieces else ""
        await self._stream_call("chat.stopStream", part, markdown_text=escape(last) or None)
        part.shown = (part.shown or "") + last
        part.streaming = False

    async def _stream_call(self, method: str, part: _Part, **args: Any) -> None:
        try:
            await self._api.call(method, channel=self._target.channel, ts=part.ts, **args)
        except SlackApiFailure as exc:
            if exc.code == _STREAM_ENDED:
                part.streaming = False
                raise _StreamEnded(str(exc)) from exc
            if exc.code == _STOPPED_BY_USER:
                # The reader pressed stop: this reply writes nothing more.
                part.streaming = False
                self._halted = True
                log.info("the reader stopped this answer")
                return
            raise

    async def _stop_quietly(self, part: _Part) -> None:
        try:
            await self._stop(part, "")
        except (PlatformError, _StreamEnded) as exc:
            log.info("could not stop a Slack stream: %s", exc)
        part.streaming = False

    # ------------------------------------------------------------------ post + update

    async def _post_message(self, text: str) -> str:
        data = await self._api.call(
            "chat.postMessage",
            channel=self._target.channel,
            thread_ts=self._target.thread_ts,
            text=fallback_text(text),
            blocks=markdown_blocks(text),
            unfurl_links=False,
            unfurl_media=False,
        )
        ts = data.get("ts")
        if not isinstance(ts, str) or not ts:
            raise PlatformError("Slack chat.postMessage answered without a ts")
        self._remember(ts, text, streaming=False)
        return ts

    async def _update(self, part: _Part, text: str) -> None:
        await self._api.call(
            "chat.update",
            channel=self._target.channel,
            ts=part.ts,
            text=fallback_text(text),
            blocks=markdown_blocks(text),
        )
        part.shown = text

    def _remember(self, ts: str, shown: str, *, streaming: bool) -> _Part:
        part = _Part(ts=ts, shown=shown, streaming=streaming)
        self._parts[ts] = part
        self._order.append(ts)
        return part

    # ------------------------------------------------------------------ finishing

    async def _clear_status(self) -> None:
        try:
            await self._api.call("assistant.threads.setStatus", channel_id=self._target.channel,
                                 thread_ts=self._target.thread_ts, status="")
        except PlatformError as exc:
            log.info("could not clear the thinking status: %s", exc)

    async def _add_buttons(self, last_id: str) -> None:
        part = self._parts.get(last_id)
        if part is None or part.shown is None:
            return
        # The core does not pace finish(); this one call goes through the client that
        # honours Retry-After itself.
        try:
            await self._retrying.call(
                "chat.update",
                channel=self._target.channel,
                ts=part.ts,
                text=fallback_text(part.shown),
                blocks=markdown_blocks(part.shown, feedback=True),
            )
        except PlatformError as exc:
            log.warning("could not add feedback buttons: %s", exc)
