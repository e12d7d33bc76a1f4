"""Pure incremental parsing of a Chatbase answer stream: SSE bytes → JSON chunks → events.

Three layers, none doing I/O:

* ``SseDecoder`` turns bytes, cut anywhere, into the JSON objects of ``data:`` frames and the
  ``[DONE]`` marker (SSE framing per the WHATWG spec, plus bare JSON lines as one legacy doc
  version described newline-delimited JSON).
* ``StreamAssembler`` turns those chunks (AI SDK UIMessage stream protocol) into the typed
  events of ``bridge.core.models`` and the final ``ChatResult``, tolerating every shape the
  Chatbase docs have published (https://www.chatbase.co/docs/api-reference/v2/streaming).
* ``StreamParser`` puts the two together for a client reading a response body.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Final, Literal

from bridge.core.errors import StreamError, StreamErrorChunk, StreamInterrupted, StreamMalformed
from bridge.core.models import (
    ChatResult,
    Source,
    SourceFound,
    StreamEvent,
    StreamFinish,
    StreamMetadata,
    StreamStart,
    TextDelta,
    ToolCall,
    ToolInput,
)

# The finish reason the bridge gives an answer ended by an ``abort`` chunk.
ABORT: Final = "abort"

Done = Literal["[DONE]"]
DONE: Final[Done] = "[DONE]"
SseItem = dict[str, Any] | Done

_EOL = re.compile(rb"\r\n|\r|\n")
_BOM = b"\xef\xbb\xbf"
# A single SSE line this long is not a chat chunk; refuse it rather than buffer without end.
MAX_LINE_BYTES: Final = 8 * 1024 * 1024


class SseDecoder:
    """Incremental SSE decoder yielding the JSON object of each ``data:`` event or ``DONE``.

    ``event:``, ``id:``, ``retry:`` and comment lines are ignored (Chatbase dispatches on the
    JSON ``type``); a frame whose data is not JSON raises ``StreamMalformed``; a JSON value
    that is not an object is skipped like an unknown chunk.
    """

    __slots__ = ("_buf", "_data", "_error", "_scan", "_skip_lf", "_started")

    def __init__(self) -> None:
        self._error: StreamMalformed | None = None
        self._buf = bytearray()
        self._scan = 0
        self._skip_lf = False
        self._started = False
        self._data: list[str] = []

    def feed(self, chunk: bytes) -> list[SseItem]:
        """Consume bytes; return the items completed by them, in order.

        A malformed frame raises ``StreamMalformed``; when items came before it in the same
        call they are returned first and the error is raised by the next call.
        """
        self.check()
        out: list[SseItem] = []
        if not chunk:
            return out
        try:
            self._feed(chunk, out)
        except StreamMalformed as exc:
            self._error = exc
            self._buf.clear()
            self._data = []
            if out:
                return out
            raise
        return out

    def check(self) -> None:
        """Raise the error a previous call deferred, if any."""
        if self._error is not None:
            raise self._error

    def _feed(self, chunk: bytes, out: list[SseItem]) -> None:
        if not self._buf and self._started and not self._skip_lf and b"\r" not in chunk:
            self._feed_lf(chunk, out)
            return
        if self._skip_lf:
            # The previous chunk ended in CR; an LF here belongs to the same CRLF.
            self._skip_lf = False
            if chunk[:1] == b"\n":
                chunk = chunk[1:]
        buf = self._buf
        buf += chunk
        pos = 0
        end = len(buf)
        while True:
            match = _EOL.search(buf, max(pos, self._scan))
            if match is None:
                break
            self._line(bytes(buf[pos : match.start()]), out)
            pos = match.end()
            self._scan = pos
            if pos == end and buf[pos - 1] == 0x0D:
                self._skip_lf = True
        if pos:
            del buf[:pos]
        self._scan = len(buf)
        if len(buf) > MAX_LINE_BYTES:
            raise StreamMalformed(f"stream line longer than {MAX_LINE_BYTES} bytes")

    def _feed_lf(self, chunk: bytes, out: list[SseItem]) -> None:
        """``_feed`` for the usual chunk: nothing left over from the last one, and only LF
        line ends (so no CR to pair across chunks). Same items, one split per chunk instead
        of a search per line; ``data:`` lines, all but a few, are handled inline."""
        lines = chunk.split(b"\n")
        rest = lines.pop()
        data = self._data
        for raw in lines:
            if raw.startswith(b"data:"):
                value = raw[6:] if raw[5:6] == b" " else raw[5:]
                data.append(value.decode("utf-8", errors="replace"))
            elif raw:
                self._line(raw, out)
                data = self._data  # a bare JSON line dispatches, which starts a new list
            elif data:
                self._dispatch(out)
                data = self._data
        if rest:
            self._buf += rest
            self._scan = len(self._buf)
            if len(self._buf) > MAX_LINE_BYTES:
                raise StreamMalformed(f"stream line longer than {MAX_LINE_BYTES} bytes")

    def close(self) -> list[SseItem]:
        """End of input: dispatch an event whose lines were complete but had no blank line
        after them. An unterminated last line is dropped (it may be cut short)."""
        self.check()
        out: list[SseItem] = []
        self._buf.clear()
        self._scan = 0
        self._dispatch(out)
        return out

    def _line(self, raw: bytes, out: list[SseItem]) -> None:
        if not self._started:
            self._started = True
            if raw.startswith(_BOM):
                raw = raw[len(_BOM) :]
        if not raw:
            self._dispatch(out)
            return
        first = raw[0]
        if first == 0x3A:  # ":" comment, e.g. ": keep-alive"
            return
        line = raw.decode("utf-8", errors="replace")
        if first == 0x7B or raw.strip() == b"[DONE]":
            # A bare JSON line (newline-delimited JSON framing) or a bare end marker.
            self._dispatch(out)
            self._data.append(line)
            self._dispatch(out)
            return
        name, sep, value = line.partition(":")
        if name != "data":
            return
        if sep and value.startswith(" "):
            value = value[1:]
        self._data.append(value)

    def _dispatch(self, out: list[SseItem]) -> None:
        if not self._data:
            return
        data = self._data[0] if len(self._data) == 1 else "\n".join(self._data)
        self._data = []
        stripped = data.strip()
        # ``data: [DONE] `` (trailing whitespace, or a CR left by odd line endings) is the end
        # marker all the same.
        if stripped == DONE:
            out.append(DONE)
            return
        if not stripped:
            return
        try:
            value = json.loads(data)
        except (ValueError, RecursionError) as exc:
            raise StreamMalformed(f"stream frame is not valid JSON ({exc})") from exc
        if isinstance(value, dict):
            out.append(value)


@dataclass(slots=True)
class _Meta:
    message_id: str | None = None
    user_message_id: str | None = None
    conversation_id: str | None = None
    user_id: str | None = None
    credits: float | None = None
    finish_reason: str | None = None

    def merge(self, raw: Mapping[str, Any]) -> bool:
        """Fold one metadata object in; ids keep their first non-null value. True when
        something changed."""
        changed = False
        for attr, key in (
            ("message_id", "messageId"),
            ("user_message_id", "userMessageId"),
            ("conversation_id", "conversationId"),
            ("user_id", "userId"),
        ):
            value = raw.get(key)
            if getattr(self, attr) is None and isinstance(value, str) and value:
                setattr(self, attr, value)
                changed = True
        credits = _credits(raw)
        if credits is not None and credits != self.credits:
            self.credits = credits
            changed = True
        reason = raw.get("finishReason")
        if isinstance(reason, str) and reason and self.finish_reason is None:
            self.finish_reason = reason
            changed = True
        return changed

    def freeze(self) -> StreamMetadata:
        return StreamMetadata(
            message_id=self.message_id,
            user_message_id=self.user_message_id,
            conversation_id=self.conversation_id,
            user_id=self.user_id,
            credits=self.credits,
            finish_reason=self.finish_reason,
        )


def _credits(raw: Mapping[str, Any]) -> float | None:
    usage = raw.get("usage")
    value = usage.get("credits") if isinstance(usage, Mapping) else raw.get("credits")
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    return float(value)


_FLAT_META_KEYS = frozenset(
    {"messageId", "userMessageId", "conversationId", "userId", "usage", "credits",
     "finishReason"}
)


# Chunks naming where an answer came from (reference §11.1: `source-url` {sourceId, url,
# title?}, `source-document` {sourceId, mediaType, title, filename?}, `file` {url, mediaType}).
_SOURCE_KINDS: Final = {"source-url": "url", "source-document": "document", "file": "file"}


def _text(chunk: Mapping[str, Any], name: str) -> str | None:
    value = chunk.get(name)
    return value.strip() or None if isinstance(value, str) else None


def _source(kind: str, chunk: Mapping[str, Any]) -> Source | None:
    """The ``Source`` a source chunk names, or None when it names nothing usable."""
    source = Source(
        kind=_SOURCE_KINDS[kind],
        url=_text(chunk, "url") if kind != "source-document" else None,
        title=_text(chunk, "title"),
        filename=_text(chunk, "filename"),
        media_type=_text(chunk, "mediaType"),
    )
    if source.url is None and source.title is None and source.filename is None:
        return None
    return source


class StreamAssembler:
    """Turns UIMessage stream chunks into typed events and, at the end, a ``ChatResult``.

    ``push`` returns the events a chunk produces. The ``finish`` chunk is remembered and its
    ``StreamFinish`` is only returned by ``end`` — one legacy shape sends the metadata in a
    separate chunk *after* ``finish``, so the final event waits for ``[DONE]`` or EOF.
    Whenever metadata becomes known or changes a ``StreamMetadata`` with everything known so
    far is emitted.
    """

    __slots__ = (
        "_aborted", "_deltas", "_ended", "_finish_reason", "_finished", "_meta",
        "_request_id", "_sources", "_start_message_id", "_tool_calls",
    )

    def __init__(self, *, request_id: str | None = None) -> None:
        self._request_id = request_id
        self._deltas: list[str] = []
        self._meta = _Meta()
        self._start_message_id: str | None = None
        self._finish_reason: str | None = None
        self._finished = False
        self._ended = False
        self._aborted = False
        self._tool_calls: list[ToolCall] = []
        self._sources: list[Source] = []

    @property
    def finished(self) -> bool:
        """A ``finish`` chunk has been seen."""
        return self._finished

    @property
    def text(self) -> str:
        return "".join(self._deltas)

    def push(self, chunk: Mapping[str, Any]) -> list[StreamEvent]:
        kind = chunk.get("type")
        if isinstance(kind, str):
            kind = kind.strip()
        if kind == "text-delta":
            delta = chunk.get("delta")
            if not isinstance(delta, str):
                delta = chunk.get("textDelta")  # AI SDK v4 spelling
            if isinstance(delta, str) and delta:
                self._deltas.append(delta)
                return [TextDelta(delta)]
            return []
        if kind in ("start", "message-start"):
            message_id = chunk.get("messageId")
            events: list[StreamEvent] = []
            if isinstance(message_id, str) and message_id and self._start_message_id is None:
                self._start_message_id = message_id
            events.append(StreamStart(message_id if isinstance(message_id, str) else None))
            self._merge(chunk.get("messageMetadata"), events)
            return events
        if kind == "tool-input-available":
            call_id = chunk.get("toolCallId")
            name = chunk.get("toolName")
            if not isinstance(call_id, str) or not call_id:
                return []
            call = ToolCall(call_id, name if isinstance(name, str) else "", chunk.get("input"))
            self._tool_calls.append(call)
            return [ToolInput(call)]
        if kind in _SOURCE_KINDS:
            source = _source(kind, chunk)
            if source is None:
                return []
            self._sources.append(source)
            return [SourceFound(source)]
        if kind == "message-metadata":
            events = []
            nested = chunk.get("messageMetadata")
            if isinstance(nested, Mapping):
                self._merge(nested, events)
            else:
                self._merge({k: v for k, v in chunk.items() if k in _FLAT_META_KEYS}, events)
            return events
        if kind == "finish":
            events = []
            reason = chunk.get("finishReason")
            if isinstance(reason, str) and reason:
                self._finish_reason = reason
            self._merge(chunk.get("messageMetadata"), events)
            self._merge(chunk.get("metadata"), events)
            self._finished = True
            return events
        if kind == "abort":
            # The AI SDK's "the stream was aborted" (reference §11.1): the answer ends here,
            # incomplete, whatever a later chunk says.
            self._aborted = True
            self._finished = True
            return []
        if kind == "error":
            raise self._error(chunk)
        return []

    def end(self, *, clean: bool) -> StreamFinish:
        """The stream is over: ``clean`` after ``[DONE]``, not clean on EOF. Raises
        ``StreamInterrupted`` when EOF came before any ``finish``."""
        if not self._finished and not clean:
            raise StreamInterrupted(
                "Chatbase stream ended before the answer finished", request_id=self._request_id
            )
        self._ended = True
        meta = self._meta.freeze()
        return StreamFinish(finish_reason=self.finish_reason, metadata=meta)

    @property
    def finish_reason(self) -> str | None:
        """Chatbase's finish reason; ``"abort"`` after an ``abort`` chunk."""
        if self._aborted:
            return ABORT
        return self._finish_reason or self._meta.finish_reason

    def result(self) -> ChatResult:
        meta = self._meta
        return ChatResult(
            text="".join(self._deltas),
            message_id=meta.message_id or self._start_message_id,
            conversation_id=meta.conversation_id,
            user_message_id=meta.user_message_id,
            user_id=meta.user_id,
            credits=meta.credits,
            finish_reason=self.finish_reason,
            tool_calls=tuple(self._tool_calls),
            request_id=self._request_id,
            sources=tuple(self._sources),
        )

    def _merge(self, raw: object, events: list[StreamEvent]) -> None:
        if isinstance(raw, Mapping) and self._meta.merge(raw):
            events.append(self._meta.freeze())

    def _error(self, chunk: Mapping[str, Any]) -> StreamErrorChunk:
        code: str | None = None
        text: str | None = None
        error = chunk.get("error")
        if isinstance(error, Mapping):
            raw_code = error.get("code")
            raw_message = error.get("message")
            code = raw_code if isinstance(raw_code, str) else None
            text = raw_message if isinstance(raw_message, str) else None
        elif isinstance(error, str):
            text = error
        error_text = chunk.get("errorText")
        if isinstance(error_text, str) and error_text:
            text = error_text
        return StreamErrorChunk(
            text or code or "unspecified error", code=code, request_id=self._request_id
        )


class StreamParser:
    """Bytes of a streamed answer in, typed events out.

    ``feed`` raises ``StreamErrorChunk`` or ``StreamMalformed``; ``close`` (at EOF) raises
    ``StreamInterrupted`` when no ``finish`` came. The events before an error are never
    lost: when one call has both, it returns the events and the next call (or ``check``)
    raises. After ``[DONE]`` (``done``) nothing more is read; the last event returned is
    always the ``StreamFinish``.
    """

    __slots__ = ("_assembler", "_decoder", "_done", "_error")

    def __init__(self, *, request_id: str | None = None) -> None:
        self._decoder = SseDecoder()
        self._assembler = StreamAssembler(request_id=request_id)
        self._done = False
        self._error: StreamError | None = None

    def check(self) -> None:
        """Raise the error a previous call deferred, if any."""
        if self._error is not None:
            raise self._error
        self._decoder.check()

    @property
    def done(self) -> bool:
        return self._done

    @property
    def finished(self) -> bool:
        return self._assembler.finished

    @property
    def text(self) -> str:
        """The answer text so far."""
        return self._assembler.text

    def feed(self, chunk: bytes) -> list[StreamEvent]:
        self.check()
        if self._done:
            return []
        return self._consume(self._decoder.feed(chunk))

    def close(self) -> list[StreamEvent]:
        self.check()
        if self._done:
            return []
        events = self._consume(self._decoder.close())
        if not self._done:
            self._done = True
            events.append(self._assembler.end(clean=False))
        return events

    def result(self) -> ChatResult:
        return self._assembler.result()

    def _consume(self, items: list[SseItem]) -> list[StreamEvent]:
        events: list[StreamEvent] = []
        push = self._assembler.push
        for item in items:
            if item == DONE:
                self._done = True
                events.append(self._assembler.end(clean=True))
                break
            assert not isinstance(item, str)
            try:
                events.extend(push(item))
            except StreamError as exc:
                if not events:
                    raise
                self._error = exc
                break
        return events


def result_from_json(body: Mapping[str, Any], *, request_id: str | None = None) -> ChatResult:
    """The ``ChatResult`` of a non-streamed answer ``{"data": ChatResponse}``."""
    data = body.get("data")
    if not isinstance(data, Mapping):
        data = {}
    texts: list[str] = []
    calls: list[ToolCall] = []
    parts = data.get("parts")
    for part in parts if isinstance(parts, list) else ():
        if not isinstance(part, Mapping):
            continue
        if part.get("type") == "text" and isinstance(part.get("text"), str):
            texts.append(part["text"])
        elif part.get("type") == "tool-call" and isinstance(part.get("toolCallId"), str):
            name = part.get("toolName")
            calls.append(
                ToolCall(part["toolCallId"], name if isinstance(name, str) else "",
                         part.get("input"))
            )
    meta = _Meta()
    raw_meta = data.get("metadata")
    if isinstance(raw_meta, Mapping):
        meta.merge(raw_meta)
    message_id = data.get("id")
    return ChatResult(
        text="".join(texts),
        message_id=message_id if isinstance(message_id, str) else meta.message_id,
        conversation_id=meta.conversation_id,
        user_message_id=meta.user_message_id,
        user_id=meta.user_id,
        credits=meta.credits,
        finish_reason=meta.finish_reason,
        tool_calls=tuple(calls),
        request_id=request_id,
    )


def events_from_result(result: ChatResult) -> list[StreamEvent]:
    """The events a streamed answer with this result would have produced (for a server that
    answers a streaming request with JSON)."""
    meta = StreamMetadata(
        message_id=result.message_id,
        user_message_id=result.user_message_id,
        conversation_id=result.conversation_id,
        user_id=result.user_id,
        credits=result.credits,
        finish_reason=result.finish_reason,
    )
    events: list[StreamEvent] = [StreamStart(result.message_id)]
    if result.text:
        events.append(TextDelta(result.text))
    events.extend(ToolInput(call) for call in result.tool_calls)
    events.append(meta)
    events.append(StreamFinish(finish_reason=result.finish_reason, metadata=meta))
    return events
