"""Renders one answer into Slack: a native stream in threads, post + update elsewhere.

The core's renderer decides when to call and what each message part shows; this module
decides how. A threaded reply streams with ``chat.startStream`` / ``appendStream`` /
``stopStream`` (standard Markdown in ``markdown_text``); a top-level DM reply, a regenerated
answer and any reply whose stream cannot start are posted with ``chat.postMessage`` and
rewritten with ``chat.update`` (a ``markdown`` block plus a plain ``text`` fallback).
Everything sent is escaped (``&``, ``<``, ``>``), so model text can never ping. A threaded
reply runs in the thread's agent session (``adapters.slack.agent``): processing while it
works, active once finished; a stream the reader stops is reported to the adapter (which
stops the answer) and its message is finished with ``chat.update``.

Calls are never retried here (the client has no retry handlers): a 429 becomes
``PlatformRateLimited`` and the core's pacer waits; the budgets below keep the whole
workspace inside Slack's tiers.
"""

from __future__ import annotations

import asyncio
import logging
import re
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

import aiohttp
from slack_sdk.errors import SlackApiError, SlackClientError
from slack_sdk.web.async_client import AsyncWebClient

from adapters.slack.agent import AgentSessions
from adapters.slack.markup import escape, escaped_length, escaped_prefix, split_for_escaped_limit
from adapters.slack.translate import FEEDBACK_ACTION_ID
from bridge.app.metrics import Metrics
from bridge.core.errors import PlatformError, PlatformMessageGone, PlatformRateLimited
from bridge.core.ports import PROGRESS_MARK, Budget, Operation, SinkLimits

log = logging.getLogger(__name__)

# Per message part, in characters of the answer (before escaping); the renderer splits
# longer answers into continuation messages at paragraph or line boundaries.
# Streams: Slack documents no cap on a streamed message's total size, but long streamed
# answers fail at chat.stopStream with msg_too_long (github.com/lightdash/lightdash/issues/24512,
# fixed in PR #24534 by splitting answers into several thread messages), and 8,000 did here.
# A stream that expires is rewritten with chat.update, which refuses a message past about
# 4,000 characters (github.com/getnao/nao/issues/1323; seratch/ChatGPT-in-Slack#102, whose
# maintainer: "the platform now has a smaller limit"). So a streamed message stays where
# production bots keep theirs: 3,500 (ChatGPT-in-Slack and enechange/collmbo roll over to a
# new message at 3,500 bytes; Dust keeps 3,000, dust-tt/dust#5701).
STREAM_MAX_CHARS = 3_500
# Post + update: `text` fails with msg_too_long from about 4,000 characters in practice,
# and production bots keep to 3,000-3,500 (github.com/seratch/ChatGPT-in-Slack/issues/102);
# the markdown block would allow more, but this path is the fallback and regenerate path, so
# it stays on the proven side.
POST_MAX_CHARS = 3_900
# What one Slack message may hold as sent (escaped), on every path: under the ~4,000 wall
# above. A message refused as msg_too_long all the same halves this for the rest of the
# reply, down to MIN_MESSAGE_CHARS.
MESSAGE_MAX_CHARS = 3_900
MIN_MESSAGE_CHARS = 500
# Slack ends a stream about five minutes after chat.startStream, appends or not
# (github.com/slackapi/node-slack-sdk/issues/2702; measured 5.18-5.30 min). The bridge stops
# its streams sooner and continues in a new message; see Settings.slack_stream_rollover_seconds.
DEFAULT_STREAM_ROLLOVER = 240.0
# A chat.stopStream that failed this many times (not throttled) is given up: the message is
# finished with chat.update, or the rest of the answer goes into a new message.
MAX_STOP_FAILURES = 2
# markdown_text per call, and all markdown blocks of one message:
# https://docs.slack.dev/reference/block-kit/blocks/markdown-block
MARKDOWN_LIMIT = 12_000
# The plain `text` that accompanies blocks (notifications, accessibility) stays short so it
# can never be the reason a call fails.
FALLBACK_TEXT_LIMIT = 3_000
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
    recipient team; ``asker`` the stream's recipient user and the agent session's initiator;
    ``question`` titles the agent session (message text: kept out of ``repr``, so out of
    logs)."""

    workspace: str
    channel: str
    thread_ts: str | None
    asker: str | None = None
    question: str | None = field(default=None, repr=False)


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


_TOO_LONG = frozenset({"msg_too_long", "msg_blocks_too_long"})
_CONFLICT = "streaming_state_conflict"

# Recovery calls and the budgets. Each post()/edit() is one paced call; the few calls a
# recovery adds inside it (the quiet stop after msg_too_long or a conflict, the chat.update
# that freezes a message, the rewrite of an ended stream) are not paced again, because
# they happen only right after Slack refused the paced call, at most two per refusal, and
# each refusal can recur only a bounded number of times per reply: msg_too_long halves
# the message size (3,900 -> 1,950 -> 975 -> 500, so three times), and a conflict or an
# ended stream ends that message's stream (once per message, whose stream used a
# chat.startStream slot). Slack's tiers allow short bursts over the per-minute rate
# (https://docs.slack.dev/apis/web-api/rate-limits), and the budgets keep ten per cent
# under each tier, so these few calls cannot add up to a 429; tests/unit/adapters/slack/
# test_sink_limits.py holds the bound. A split first post (only after msg_too_long shrank
# the size below the renderer's part) posts its pieces in a row: chat.postMessage allows
# short bursts per channel, and the pieces are at most 3,900 / 975 = 4 in practice.


@dataclass(slots=True)
class _Message:
    """One Slack message of the reply."""

    ts: str
    shown: str | None  # what Slack shows (unescaped, with any progress mark); None: not known
    streaming: bool
    started: float = 0.0
    buttons: bool = False
    stop_failures: int = 0
    user_stopped: bool = False  # Slack stopped its stream at the reader's request


@dataclass(slots=True)
class _Part:
    """One part of the reply as the renderer sees it, named by its first message's ts.

    Usually one Slack message; more when a stream was rolled over (its age, its size) or a
    message was refused as too long: the earlier messages are then settled and the part's
    text continues in the last one. ``open`` is False when the next text starts a new
    message.
    """

    messages: list[_Message]
    open: bool = True

    @property
    def last(self) -> _Message:
        return self.messages[-1]

    def settled_text(self) -> str:
        done = self.messages if not self.open else self.messages[:-1]
        return "".join(m.shown or "" for m in done)


class _StreamEnded(Exception):
    """The stream is no longer open (expired after about five minutes)."""


class _Continues(PlatformError):
    """This part continues in a new message; the renderer calls again (paced) to write it."""


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
        stream_rollover: float = DEFAULT_STREAM_ROLLOVER,
        now: Callable[[], float] = time.monotonic,
        existing: Sequence[str] = (),
        sessions: AgentSessions | None = None,
        on_stopped: Callable[[], None] | None = None,
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
        # The stop of a rolled-over stream waits for a chat.stopStream slot like any other:
        # it is due one slot interval before the rollover age, so that wait (and the append
        # slot before it) ends inside the age, which itself leaves Slack's ~300 s minus the
        # age for a crowded stop budget (240 s: 60 s, 18 Tier 2 slots).
        self._rollover = max(0.0, stream_rollover - pacing.stop_stream)
        self._now = now
        self._cap = MESSAGE_MAX_CHARS
        self._parts: dict[str, _Part] = {}
        self._messages: list[_Message] = []
        for ts in existing:
            self._adopt(ts)
        self._status_attempted = False
        # The agent session of the thread (shared: whether the app is an agent is learnt
        # once per process); set active in finish() whenever processing was asked for.
        self._sessions = sessions
        self._session_attempted = False
        # Called once when Slack reports the stream stopped by the reader (its stop button):
        # the adapter stops the answer, and the sink finishes the message with chat.update.
        self._on_stopped = on_stopped
        self._stop_reported = False
        # The first message of a post that Slack refused after some of its messages went out.
        self._unfinished: str | None = None

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
        """Every message of this reply (those it was opened with, then those it posted), in
        order: more than the renderer's parts when a part continued in new messages."""
        return tuple(m.ts for m in self._messages)

    def budget(self, op: Operation, *, final: bool = False) -> Budget:
        ws, pacing = self._target.workspace, self._pacing
        start = Budget(f"slack:{ws}:chat.startStream", pacing.start_stream)
        post = Budget(f"slack:{ws}:{self._target.channel}:chat.postMessage",
                      pacing.post_per_channel)
        if op == "post":
            return start if self._stream_ok and not final else post
        part = next(reversed(self._parts.values()), None)
        if part is not None and not part.open:
            return start if self._stream_ok and not final else post
        latest = part.last if part is not None else None
        if latest is not None and latest.streaming:
            if final or self._due(latest):
                return Budget(f"slack:{ws}:chat.stopStream", pacing.stop_stream)
            return Budget(f"slack:{ws}:chat.appendStream", pacing.append_stream)
        return Budget(f"slack:{ws}:chat.update", pacing.update)

    async def working(self) -> None:
        thread = self._target.thread_ts
        if thread is None:
            return  # the status lives in a thread; a top-level DM reply has none
        sessions = self._sessions
        if sessions is not None and sessions.enabled is not False:
            # A processing session shows its own indicator and a stop button:
            # https://docs.slack.dev/ai/agent-sessions/
            self._session_attempted = True
            if await sessions.processing(self._api, channel=self._target.channel,
                                         thread_ts=thread, question=self._target.question,
                                         asker=self._target.asker):
                return
        self._status_attempted = True
        try:
            await self._api.call("assistant.threads.setStatus", channel_id=self._target.channel,
                                 thread_ts=thread, status=STATUS_TEXT)
        except PlatformError as exc:
            log.info("could not show the thinking status: %s", exc)

    async def post(self, text: str, *, final: bool) -> str:
        if self._unfinished is not None:
            # The renderer is posting again what a refused call left half shown: continue
            # after the messages already in the thread instead of posting them twice.
            ts = self._unfinished
            await self._write(self._parts[ts], text, final=final)
            self._unfinished = None
            return ts
        body, marked = _unmark(text, final)
        part = _Part(messages=[])
        if self._stream_ok and not final:
            try:
                await self._start_stream(part, body)
            except SlackApiFailure as exc:
                if exc.code in _NO_FALLBACK_CODES:
                    raise
                log.warning("chat.startStream failed (%s); this reply continues with "
                            "chat.postMessage", exc.code)
                self._stream_ok = False
        if not part.messages:
            try:
                await self._post_all(part, body, final=final, marked=marked)
            except BaseException:
                if part.messages:
                    self._parts[part.messages[0].ts] = part
                    self._unfinished = part.messages[0].ts
                raise
        ts = part.messages[0].ts
        self._parts[ts] = part
        return ts

    async def edit(self, message_id: str, text: str, *, final: bool) -> None:
        part = self._parts.get(message_id) or self._adopt(message_id)
        try:
            await self._write(part, text, final=final)
        except SlackApiFailure as exc:
            if exc.code in GONE_CODES:
                raise PlatformMessageGone(str(exc)) from exc
            raise

    async def delete(self, message_id: str) -> None:
        part = self._parts.pop(message_id, None)
        messages = part.messages if part is not None else [
            m for m in self._messages if m.ts == message_id]
        for message in messages:
            if message.streaming:
                await self._stop_quietly(message)
            await self._delete_message(message)

    async def finish(self, part_ids: Sequence[str], *, answered: bool) -> None:
        try:
            keep = answered and self._buttons
            last = self._last_message(part_ids)
            for message in list(self._messages):
                if message.streaming:
                    with_buttons = keep and message is last
                    await self._stop_quietly(message, buttons=with_buttons)
            if self._status_attempted:
                await self._clear_status()
            for message in list(self._messages):
                if message.buttons and not (keep and message is last):
                    await self._set_buttons(message, False)
            if keep and last is not None and not last.buttons:
                await self._set_buttons(last, True)
        except Exception:
            log.exception("finishing a Slack reply failed")
        finally:
            await self._end_session()

    async def _end_session(self) -> None:
        """Whatever happened (answered, failed, stopped, a notice), the session leaves
        processing: Slack never changes it by itself (https://docs.slack.dev/ai/agent-sessions/).
        Outside the paced path, through the client that honours Retry-After."""
        thread = self._target.thread_ts
        if not self._session_attempted or self._sessions is None or thread is None:
            return
        try:
            await self._sessions.active(self._retrying, channel=self._target.channel,
                                        thread_ts=thread)
        except Exception:
            log.exception("setting a Slack agent session active failed")

    # ------------------------------------------------------------------ one part

    def _adopt(self, ts: str) -> _Part:
        """A message of this reply the sink did not post (regenerate in place)."""
        message = _Message(ts=ts, shown=None, streaming=False)
        self._messages.append(message)
        part = _Part(messages=[message])
        self._parts[ts] = part
        return part

    def _due(self, message: _Message) -> bool:
        return self._now() - message.started >= self._rollover

    def _last_message(self, part_ids: Sequence[str]) -> _Message | None:
        part = self._parts.get(part_ids[-1]) if part_ids else None
        return part.last if part is not None and part.messages else None

    async def _write(self, part: _Part, text: str, *, final: bool) -> None:
        body, marked = _unmark(text, final)
        done = part.settled_text()
        if not body.startswith(done):
            await self._rewrite(part, body, final=final, marked=marked)
            return
        rest = body[len(done):]
        if not part.open:
            if rest.strip():
                await self._continue(part, rest, final=final, marked=marked)
            return
        message = part.last
        if message.streaming:
            await self._write_stream(part, message, rest, final=final)
        else:
            await self._write_update(part, message, rest, final=final, marked=marked)

    async def _continue(self, part: _Part, rest: str, *, final: bool, marked: bool) -> None:
        """The part goes on in a new message in the thread."""
        if self._stream_ok and not final:
            try:
                await self._start_stream(part, rest)
                return
            except SlackApiFailure as exc:
                if exc.code in _TOO_LONG:
                    self._shrink()
                    raise _Continues("a continuation was too long; trying a shorter one") from exc
                if exc.code in _NO_FALLBACK_CODES:
                    raise
                log.warning("chat.startStream failed (%s); this reply continues with "
                            "chat.postMessage", exc.code)
                self._stream_ok = False
        await self._post_all(part, rest, final=final, marked=marked)

    async def _rewrite(self, part: _Part, body: str, *, final: bool, marked: bool) -> None:
        """The part's text no longer extends what its settled messages show (a notice
        replaced the answer): lay it out again over the same messages."""
        for message in part.messages:
            if message.streaming:
                await self._stop_quietly(message)
        pieces = split_for_escaped_limit(body, self._cap) or [""]
        messages = list(part.messages)
        for index, message in enumerate(messages):
            if index >= len(pieces):
                await self._delete_message(message)
                continue
            last = index == len(pieces) - 1
            shown = pieces[index] + (PROGRESS_MARK if last and marked else "")
            if message.shown != shown and shown.strip():
                await self._update(message, shown, buttons=False)
        part.open = True
        if len(pieces) > len(messages):
            part.open = False
            await self._post_all(part, "".join(pieces[len(messages):]), final=final,
                                 marked=marked)
        if len(pieces) < len(messages):
            part.messages = messages[:len(pieces)]

    async def _delete_message(self, message: _Message) -> None:
        if message in self._messages:
            self._messages.remove(message)
        try:
            await self._api.call("chat.delete", channel=self._target.channel, ts=message.ts)
        except SlackApiFailure as exc:
            if exc.code not in GONE_CODES:
                raise

    # ------------------------------------------------------------------ streams

    async def _start_stream(self, part: _Part, text: str) -> None:
        pieces = split_for_escaped_limit(settled(text), self._cap) or [""]
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
        self._add(part, _Message(ts=ts, shown=pieces[0], streaming=True, started=self._now()))
        if len(pieces) > 1:
            # Longer than one message: the next call stops this stream and goes on.
            log.info("a first text longer than one Slack message continues in the next")

    async def _write_stream(self, part: _Part, message: _Message, rest: str, *,
                            final: bool) -> None:
        target = rest if final else settled(rest)
        shown = message.shown or ""
        try:
            if not target.startswith(shown):
                if not final and shown.startswith(target):
                    return  # only held-back text changed
                # The text no longer extends what the stream shows (the renderer moved a
                # part boundary): end the stream and rewrite the message.
                await self._stop(message, "")
                await self._write_update(part, message, rest, final=final, marked=False)
                return
            delta = target[len(shown):]
            room = self._cap - escaped_length(shown)
            fits = split_for_escaped_limit(delta, max(5, room)) if delta else []
            if fits and (room < 5 or len(fits) > 1):
                # Growing past a safe size: stop with what fits, continue in a new message.
                head = fits[0] if room >= 5 else ""
                await self._stop(message, head)
                part.open = False
                raise _Continues("a Slack message is full; the answer continues")
            if final:
                await self._stop(message, delta, buttons=self._buttons)
            elif self._due(message):
                # Before Slack ends it (about five minutes): stop with the text so far; the
                # next text starts a new message in the thread.
                await self._stop(message, delta)
                part.open = False
            elif delta:
                await self._append(message, delta)
        except _StreamEnded:
            await self._after_stream_ended(part, message, rest, final=final)
        except (_Continues, PlatformRateLimited):
            raise
        except PlatformError as exc:
            if isinstance(exc, SlackApiFailure) and exc.code in _TOO_LONG:
                self._shrink()
                await self._stop_quietly(message)
                part.open = False
                raise _Continues("Slack refused a message as too long; it continues") from exc
            if final and message.streaming:
                message.stop_failures += 1
                if message.stop_failures >= MAX_STOP_FAILURES:
                    # A stream that will not stop: finish the text another way.
                    log.warning("chat.stopStream keeps failing; finishing the message with "
                                "chat.update")
                    message.streaming = False
            raise

    async def _after_stream_ended(self, part: _Part, message: _Message, rest: str, *,
                                  final: bool) -> None:
        # Streams end about five minutes after they start; the message keeps what it was
        # sent and accepts chat.update, so it is rewritten whole and edited from here on.
        # Source: https://github.com/slackapi/python-slack-sdk/issues/1859
        log.info("a Slack stream ended before its answer; continuing with chat.update")
        message.streaming = False
        await self._write_update(part, message, rest, final=final, marked=False)

    async def _append(self, message: _Message, delta: str) -> None:
        await self._stream_call("chat.appendStream", message, markdown_text=escape(delta))
        message.shown = (message.shown or "") + delta

    async def _stop(self, message: _Message, delta: str, *, buttons: bool = False) -> None:
        await self._stream_call(
            "chat.stopStream", message, markdown_text=escape(delta) or None,
            # Feedback buttons ride on the stop (rendered under the answer):
            # https://docs.slack.dev/reference/methods/chat.stopStream
            blocks=[feedback_block()] if buttons else None,
        )
        message.shown = (message.shown or "") + delta
        message.streaming = False
        message.buttons = buttons

    async def _stream_call(self, method: str, message: _Message, **args: Any) -> None:
        try:
            await self._api.call(method, channel=self._target.channel, ts=message.ts, **args)
        except SlackApiFailure as exc:
            if exc.code == _STREAM_ENDED:
                message.streaming = False
                raise _StreamEnded(str(exc)) from exc
            if exc.code == _STOPPED_BY_USER:
                # The reader pressed stop (https://docs.slack.dev/ai/agent-sessions/): the
                # answer is stopped, and its last text (what was shown and a note) is
                # written over the stopped message with chat.update, like an ended stream.
                message.streaming = False
                message.user_stopped = True
                self._report_stop()
                raise _StreamEnded(str(exc)) from exc
            raise

    def _report_stop(self) -> None:
        if self._stop_reported:
            return
        self._stop_reported = True
        log.info("the reader stopped this answer")
        if self._on_stopped is not None:
            self._on_stopped()

    async def _stop_quietly(self, message: _Message, *, buttons: bool = False) -> None:
        try:
            await self._stop(message, "", buttons=buttons)
        except (PlatformError, _StreamEnded) as exc:
            log.info("could not stop a Slack stream: %s", exc)
        message.streaming = False

    # ------------------------------------------------------------------ post + update

    async def _write_update(self, part: _Part, message: _Message, rest: str, *, final: bool,
                            marked: bool) -> None:
        pieces = split_for_escaped_limit(rest, self._cap)
        if len(pieces) > 1:
            # Too long for one message: this one takes what fits, the rest follows.
            if message.shown != pieces[0]:
                await self._update_or_settle(part, message, pieces[0], rest)
            part.open = False
            raise _Continues("a Slack message is full; the answer continues")
        want = rest + (PROGRESS_MARK if marked else "")
        if message.shown != want:
            await self._update_or_settle(part, message, want, rest)

    async def _update_or_settle(self, part: _Part, message: _Message, want: str,
                                rest: str) -> None:
        """chat.update; when Slack refuses it (too long, or the message is still a live
        stream), the message keeps what it shows and the part continues in a new one."""
        try:
            await self._update(message, want, buttons=False)
        except SlackApiFailure as exc:
            if exc.code == _CONFLICT:
                # Still a live stream (undocumented: chat.update on a streaming message).
                await self._stop_quietly(message)
            elif exc.code in _TOO_LONG:
                self._shrink()
            elif not message.user_stopped:
                # A message the reader stopped that refuses edits keeps what it shows, and
                # the rest of the answer (the note) follows in the thread.
                raise
            await self._settle(part, message, rest)
            raise _Continues(f"Slack refused chat.update ({exc.code}); the answer "
                             "continues in a new message") from exc

    async def _settle(self, part: _Part, message: _Message, rest: str) -> None:
        """Freeze ``message`` at what it shows, never with the progress mark, never empty."""
        shown = message.shown or ""
        bare = shown[: -len(PROGRESS_MARK)] if shown.endswith(PROGRESS_MARK) else shown
        if not bare.strip() or not rest.startswith(bare):
            # What it shows is not the start of the answer: write a piece that fits.
            bare = split_for_escaped_limit(rest, self._cap)[0] if rest else ""
        if bare != shown and bare.strip():
            await self._update(message, bare, buttons=False)
        part.open = False

    async def _post_all(self, part: _Part, text: str, *, final: bool, marked: bool) -> None:
        """Post ``text`` as new messages of ``part`` (one unless it is too long for one)."""
        remaining = text
        while True:
            pieces = split_for_escaped_limit(remaining, self._cap) or [""]
            last = len(pieces) == 1
            shown = pieces[0] + (PROGRESS_MARK if last and marked else "")
            try:
                # Buttons on posted answers come in finish(): a final post may be a notice.
                await self._post_message(part, shown)
            except SlackApiFailure as exc:
                if exc.code not in _TOO_LONG or self._cap <= MIN_MESSAGE_CHARS:
                    raise
                self._shrink()
                continue
            if last:
                return
            part.last.shown = pieces[0]
            remaining = remaining[len(pieces[0]):]

    async def _post_message(self, part: _Part, text: str) -> None:
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
        self._add(part, _Message(ts=ts, shown=text, streaming=False))

    async def _update(self, message: _Message, text: str, *, buttons: bool) -> None:
        await self._api.call(
            "chat.update",
            channel=self._target.channel,
            ts=message.ts,
            text=fallback_text(text),
            blocks=markdown_blocks(text, feedback=buttons),
        )
        message.shown = text
        message.buttons = buttons

    def _add(self, part: _Part, message: _Message) -> None:
        if part.messages:
            part.open = True
        part.messages.append(message)
        self._messages.append(message)

    def _shrink(self) -> None:
        self._cap = max(MIN_MESSAGE_CHARS, self._cap // 2)

    # ------------------------------------------------------------------ finishing

    async def _clear_status(self) -> None:
        try:
            await self._api.call("assistant.threads.setStatus", channel_id=self._target.channel,
                                 thread_ts=self._target.thread_ts, status="")
        except PlatformError as exc:
            log.info("could not clear the thinking status: %s", exc)

    async def _set_buttons(self, message: _Message, on: bool) -> None:
        """The fallback (post + update replies, a stream already stopped, a later part):
        one chat.update. The core does not pace finish(); this call goes through the
        client that honours Retry-After itself."""
        if message.shown is None or not message.shown.strip():
            return
        try:
            await self._retrying.call(
                "chat.update",
                channel=self._target.channel,
                ts=message.ts,
                text=fallback_text(message.shown),
                blocks=markdown_blocks(message.shown, feedback=on),
            )
            message.buttons = on
        except PlatformError as exc:
            log.warning("could not %s feedback buttons: %s", "add" if on else "remove", exc)


def _unmark(text: str, final: bool) -> tuple[str, bool]:
    """The text without the renderer's progress mark, and whether it carried one."""
    if not final and text.endswith(PROGRESS_MARK):
        return text[: -len(PROGRESS_MARK)], True
    return text, False
