"""The SSE decoder and the stream assembler: every published stream shape and framing edge."""

from __future__ import annotations

import itertools
import json
from typing import Any

import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from bridge.chatbase import sse
from bridge.chatbase.sse import (
    DONE,
    SseDecoder,
    StreamAssembler,
    StreamParser,
    events_from_result,
    result_from_json,
)
from bridge.core.errors import (
    BridgeError,
    StreamErrorChunk,
    StreamInterrupted,
    StreamMalformed,
)
from bridge.core.models import (
    ChatResult,
    StreamEvent,
    StreamFinish,
    StreamMetadata,
    StreamStart,
    TextDelta,
    ToolCall,
    ToolInput,
)

META = {
    "messageId": "msg_abc123",
    "userMessageId": "msg_u1",
    "conversationId": "c-1",
    "userId": None,
    "usage": {"credits": 2},
}

# What the AI SDK itself emits (https://ai-sdk.dev/v5/docs/ai-sdk-ui/stream-protocol).
CANONICAL = (
    b'data: {"type":"start","messageId":"msg_abc123"}\n\n'
    b'data: {"type":"start-step"}\n\n'
    b'data: {"type":"text-start","id":"t1"}\n\n'
    b'data: {"type":"text-delta","id":"t1","delta":"Hello"}\n\n'
    b'data: {"type":"text-delta","id":"t1","delta":" world"}\n\n'
    b'data: {"type":"text-end","id":"t1"}\n\n'
    b'data: {"type":"finish-step"}\n\n'
    b'data: {"type":"finish","finishReason":"stop","messageMetadata":'
    b'{"messageId":"msg_abc123","userMessageId":"msg_u1","conversationId":"c-1",'
    b'"userId":null,"usage":{"credits":2}}}\n\n'
    b"data: [DONE]\n\n"
)


def parse(data: bytes, *, chunks: list[int] | None = None) -> tuple[list[StreamEvent],
                                                                    ChatResult]:
    """Feed ``data`` (cut at the given offsets), then EOF; return events and result."""
    parser = StreamParser(request_id="req-1")
    events: list[StreamEvent] = []
    last = 0
    for cut in sorted(chunks or []):
        events += parser.feed(data[last:cut])
        last = cut
    events += parser.feed(data[last:])
    events += parser.close()
    return events, parser.result()


def frames(*chunks: dict[str, Any] | str, eol: str = "\n") -> bytes:
    out = []
    for chunk in chunks:
        payload = chunk if isinstance(chunk, str) else json.dumps(chunk)
        out.append(f"data: {payload}{eol}{eol}")
    return "".join(out).encode()


# ---------------------------------------------------------------------- decoder


def test_decoder_reads_data_lines_with_and_without_space() -> None:
    decoder = SseDecoder()
    items = decoder.feed(b'data: {"a":1}\n\ndata:{"b":2}\n\ndata:  {"c":3}\n\n')
    assert items == [{"a": 1}, {"b": 2}, {"c": 3}]


def test_decoder_joins_multi_line_data_with_newlines() -> None:
    decoder = SseDecoder()
    assert decoder.feed(b'data: {"type":\ndata: "x",\ndata:"v":1}\n\n') == [
        {"type": "x", "v": 1}
    ]
    # Joined with "\n", not "": "[DO" + "\n" + "NE]" is neither [DONE] nor JSON.
    with pytest.raises(StreamMalformed):
        SseDecoder().feed(b"data: [DO\ndata: NE]\n\n")


def test_decoder_ignores_event_id_retry_and_comment_lines() -> None:
    decoder = SseDecoder()
    data = (
        b": stream-open\n\n"
        b"event: text-delta\nid: 7\nretry: 1000\ndata: {\"type\":\"text-delta\"}\n\n"
        b": keep-alive\n\n"
        b"event: finish\n\n"
        b"unknown-field: x\ndata: [DONE]\n\n"
    )
    assert decoder.feed(data) == [{"type": "text-delta"}, DONE]


@pytest.mark.parametrize("eol", ["\n", "\r\n", "\r"])
def test_decoder_accepts_every_line_ending(eol: str) -> None:
    data = frames({"type": "a"}, {"type": "b"}, "[DONE]", eol=eol)
    assert SseDecoder().feed(data) == [{"type": "a"}, {"type": "b"}, DONE]


def test_decoder_handles_crlf_split_between_chunks() -> None:
    decoder = SseDecoder()
    assert decoder.feed(b'data: {"a":1}\r') == []
    # The LF completes the CRLF of the data line; the next CRLF is the blank line.
    assert decoder.feed(b"\n\r") == [{"a": 1}]
    assert decoder.feed(b'\ndata: {"b":2}\r\n\r\n') == [{"b": 2}]


def test_decoder_lone_cr_at_chunk_end_then_data() -> None:
    decoder = SseDecoder()
    assert decoder.feed(b'data: {"a":1}\r\r') == [{"a": 1}]
    assert decoder.feed(b'data: {"b":2}\r\r') == [{"b": 2}]


def test_decoder_handles_utf8_split_inside_a_character() -> None:
    data = frames({"type": "text-delta", "delta": "héllo 👋"})
    raw = data.replace(b"\\u00e9", "é".encode()).replace(b"\\ud83d\\udc4b", "👋".encode())
    assert "👋".encode() in raw
    cut = raw.index("👋".encode()) + 2
    decoder = SseDecoder()
    items = decoder.feed(raw[:cut]) + decoder.feed(raw[cut:])
    assert items == [{"type": "text-delta", "delta": "héllo 👋"}]


def test_decoder_done_and_bom() -> None:
    assert SseDecoder().feed(b"\xef\xbb\xbfdata: [DONE]\n\n") == [DONE]


def test_decoder_bare_json_lines() -> None:
    assert SseDecoder().feed(b'{"type":"a"}\n{"type":"b"}\n') == [{"type": "a"}, {"type": "b"}]


def test_decoder_skips_non_objects_and_empty_data() -> None:
    assert SseDecoder().feed(b"data: 5\n\ndata: [1]\n\ndata:\n\ndata:  \n\n") == []


def test_decoder_malformed_json_is_typed_and_keeps_earlier_items() -> None:
    decoder = SseDecoder()
    items = decoder.feed(b'data: {"a":1}\n\ndata: {"type":\n\ndata: {"b":2}\n\n')
    assert items == [{"a": 1}]
    with pytest.raises(StreamMalformed):
        decoder.feed(b"")
    with pytest.raises(StreamMalformed):
        decoder.close()


def test_decoder_deeply_nested_json_is_malformed_not_recursion_error() -> None:
    with pytest.raises(StreamMalformed):
        SseDecoder().feed(b"data: " + b"[" * 100_000 + b"\n\n")


def test_decoder_refuses_endless_line(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(sse, "MAX_LINE_BYTES", 64)
    decoder = SseDecoder()
    decoder.feed(b"data: " + b"x" * 50)
    with pytest.raises(StreamMalformed, match="longer than"):
        decoder.feed(b"x" * 50)


def test_decoder_close_dispatches_complete_lines_and_drops_a_cut_line() -> None:
    decoder = SseDecoder()
    assert decoder.feed(b'data: {"a":1}\n') == []
    assert decoder.close() == [{"a": 1}]
    decoder = SseDecoder()
    assert decoder.feed(b'data: {"a":1') == []
    assert decoder.close() == []


# ---------------------------------------------------------------------- assembler


def test_canonical_stream() -> None:
    events, result = parse(CANONICAL)
    assert events[0] == StreamStart("msg_abc123")
    assert [e.delta for e in events if isinstance(e, TextDelta)] == ["Hello", " world"]
    expected_meta = StreamMetadata(
        message_id="msg_abc123", user_message_id="msg_u1", conversation_id="c-1",
        user_id=None, credits=2.0, finish_reason=None,
    )
    assert events[-1] == StreamFinish(finish_reason="stop", metadata=expected_meta)
    assert result == ChatResult(
        text="Hello world", message_id="msg_abc123", conversation_id="c-1",
        user_message_id="msg_u1", user_id=None, credits=2.0, finish_reason="stop",
        request_id="req-1",
    )


def test_message_start_with_flat_metadata_after_finish() -> None:
    # https://www.chatbase.co/docs/api-v2/streaming: message-start, finish {type}, separate
    # flat metadata.
    data = frames(
        {"type": "message-start", "messageId": "m1"},
        {"type": "text-start", "id": "t"},
        {"type": "text-delta", "id": "t", "delta": "Hi"},
        {"type": "text-end", "id": "t"},
        {"type": "finish"},
        {"type": "message-metadata", "messageId": "m1", "userMessageId": "u1",
         "conversationId": "c-9", "userId": "slack.T1.U2", "usage": {"credits": 0.5},
         "finishReason": "stop"},
        "[DONE]",
    )
    events, result = parse(data)
    assert events[0] == StreamStart("m1")
    finish = events[-1]
    assert isinstance(finish, StreamFinish)
    assert finish.finish_reason == "stop"
    assert finish.metadata.conversation_id == "c-9"
    assert finish.metadata.credits == 0.5
    assert (result.text, result.message_id, result.user_id) == ("Hi", "m1", "slack.T1.U2")


def test_nested_message_metadata_chunk() -> None:
    data = frames(
        {"type": "start", "messageId": "m1"},
        {"type": "text-delta", "id": "t", "delta": "x"},
        {"type": "message-metadata", "messageMetadata": META},
        {"type": "finish", "finishReason": "stop"},
        "[DONE]",
    )
    events, result = parse(data)
    metas = [e for e in events if type(e) is StreamMetadata]
    assert metas and metas[0].conversation_id == "c-1"
    assert (result.conversation_id, result.credits, result.finish_reason) == ("c-1", 2.0, "stop")
    # Metadata's messageId wins over the start's when both are present.
    assert result.message_id == "msg_abc123"


def test_legacy_finish_metadata_without_text_start() -> None:
    # That page's oldest version: text-delta without id, finish.metadata without messageId.
    data = frames(
        {"type": "start", "messageId": "m7"},
        {"type": "text-delta", "delta": "Hel"},
        {"type": "text-delta", "delta": "lo"},
        {"type": "finish", "metadata": {"conversationId": "c-2", "userId": "u",
                                        "usage": {"credits": 1}}},
        "[DONE]",
    )
    _, result = parse(data)
    assert (result.text, result.message_id, result.conversation_id, result.credits) == (
        "Hello", "m7", "c-2", 1.0)
    assert result.finish_reason is None


def test_finish_reason_inside_metadata() -> None:
    data = frames(
        {"type": "start", "messageId": "m"},
        {"type": "finish", "messageMetadata": {**META, "finishReason": "tool-calls"}},
        "[DONE]",
    )
    events, result = parse(data)
    assert result.finish_reason == "tool-calls"
    assert isinstance(events[-1], StreamFinish) and events[-1].finish_reason == "tool-calls"


def test_finish_reason_on_finish_beats_metadata() -> None:
    data = frames(
        {"type": "finish", "finishReason": "length",
         "messageMetadata": {**META, "finishReason": "stop"}},
        "[DONE]",
    )
    assert parse(data)[1].finish_reason == "length"


def test_first_non_null_conversation_id_wins() -> None:
    data = frames(
        {"type": "start", "messageId": "m", "messageMetadata": {"conversationId": None}},
        {"type": "message-metadata", "messageMetadata": {"conversationId": "first"}},
        {"type": "finish", "messageMetadata": {"conversationId": "second"}},
        "[DONE]",
    )
    assert parse(data)[1].conversation_id == "first"


def test_unknown_chunk_types_and_fields_are_ignored() -> None:
    data = frames(
        {"type": "start", "messageId": "m", "extra": {"x": 1}},
        {"type": "future-thing", "delta": "NO"},
        {"type": "reasoning-delta", "id": "r", "delta": "NO"},
        {"type": "data-weather", "data": {"t": 1}},
        {"no-type": True},
        {"type": 5},
        {"type": "text-delta", "id": "t", "delta": "yes", "providerMetadata": {}},
        {"type": "text-delta", "id": "t", "delta": 7},
        {"type": "finish", "finishReason": "stop"},
        "[DONE]",
    )
    events, result = parse(data)
    assert result.text == "yes"
    assert [type(e) for e in events] == [StreamStart, TextDelta, StreamFinish]


def test_tool_calls() -> None:
    data = frames(
        {"type": "start", "messageId": "m"},
        {"type": "tool-input-start", "toolCallId": "call_1", "toolName": "lookupOrder"},
        {"type": "tool-input-delta", "toolCallId": "call_1", "inputTextDelta": '{"o'},
        {"type": "tool-input-available", "toolCallId": "call_1", "toolName": "lookupOrder",
         "input": {"orderId": "ORD-123"}},
        {"type": "tool-input-available", "toolName": "no id"},
        {"type": "finish", "finishReason": "tool-calls", "messageMetadata": META},
        "[DONE]",
    )
    events, result = parse(data)
    call = ToolCall("call_1", "lookupOrder", {"orderId": "ORD-123"})
    assert ToolInput(call) in events
    assert result.tool_calls == (call,)
    assert result.finish_reason == "tool-calls"


@pytest.mark.parametrize(
    ("chunk", "text", "code"),
    [
        ({"type": "error", "errorText": "boom"}, "boom", None),
        ({"type": "error", "error": {"code": "CHAT_STREAMING_ERROR", "message": "bad"}},
         "bad", "CHAT_STREAMING_ERROR"),
        ({"type": "error", "error": "plain"}, "plain", None),
        ({"type": "error"}, "unspecified error", None),
    ],
)
def test_error_chunk(chunk: dict[str, Any], text: str, code: str | None) -> None:
    parser = StreamParser(request_id="req-9")
    events = parser.feed(frames({"type": "text-delta", "delta": "partial"}, chunk))
    # The delta before the error is not lost; the error follows on the next call.
    assert events == [TextDelta("partial")]
    with pytest.raises(StreamErrorChunk) as info:
        parser.close()
    assert info.value.error_text == text
    assert info.value.code == code
    assert info.value.request_id == "req-9"


def test_error_chunk_alone_raises_at_once() -> None:
    with pytest.raises(StreamErrorChunk):
        StreamParser().feed(frames({"type": "error", "errorText": "x"}))


def test_eof_without_finish_is_interrupted() -> None:
    parser = StreamParser(request_id="r")
    assert parser.feed(frames({"type": "text-delta", "delta": "a"})) == [TextDelta("a")]
    with pytest.raises(StreamInterrupted) as info:
        parser.close()
    assert info.value.request_id == "r"


def test_eof_after_finish_without_done_is_complete() -> None:
    events, result = parse(CANONICAL.replace(b"data: [DONE]\n\n", b""))
    assert isinstance(events[-1], StreamFinish)
    assert result.text == "Hello world"


def test_done_without_finish_ends_the_answer() -> None:
    events, result = parse(frames({"type": "text-delta", "delta": "a"}, "[DONE]"))
    assert events[-1] == StreamFinish(finish_reason=None, metadata=StreamMetadata())
    assert result.text == "a"


def test_nothing_after_done_is_read() -> None:
    parser = StreamParser()
    events = parser.feed(CANONICAL + frames({"type": "text-delta", "delta": "late"}))
    assert parser.done
    assert parser.feed(b"data: {broken\n\n") == []
    assert parser.close() == []
    assert parser.result().text == "Hello world"
    assert sum(isinstance(e, StreamFinish) for e in events) == 1


def test_assembler_alone() -> None:
    assembler = StreamAssembler()
    assert assembler.push({"type": "text-delta", "textDelta": "v4"}) == [TextDelta("v4")]
    assert not assembler.finished
    assembler.push({"type": "finish", "finishReason": "stop"})
    assert assembler.finished
    assert assembler.end(clean=False).finish_reason == "stop"


def test_result_from_json() -> None:
    body = {"data": {
        "id": "msg_abc123", "role": "assistant",
        "parts": [
            {"type": "text", "text": "Quantum "},
            {"type": "tool-call", "toolCallId": "call_1", "toolName": "look", "input": {"a": 1}},
            {"type": "text", "text": "computing"},
            {"type": "tool-result", "toolCallId": "call_1", "toolName": "look", "output": 1},
        ],
        "metadata": {"userMessageId": "msg_xyz789", "conversationId": "c", "userId": "u",
                     "finishReason": "stop", "usage": {"credits": 1.5}},
    }}
    result = result_from_json(body, request_id="r")
    assert result == ChatResult(
        text="Quantum computing", message_id="msg_abc123", conversation_id="c",
        user_message_id="msg_xyz789", user_id="u", credits=1.5, finish_reason="stop",
        tool_calls=(ToolCall("call_1", "look", {"a": 1}),), request_id="r",
    )
    assert result_from_json({"data": "junk"}).text == ""


def test_events_from_result_round_trip() -> None:
    result = ChatResult(text="hi", message_id="m", conversation_id="c", credits=1.0,
                        finish_reason="stop")
    events = events_from_result(result)
    assert events[0] == StreamStart("m")
    assert TextDelta("hi") in events
    finish = events[-1]
    assert isinstance(finish, StreamFinish) and finish.metadata.conversation_id == "c"


# ---------------------------------------------------------------------- properties

_FRAMINGS = st.sampled_from([
    ("data: ", "\n"), ("data:", "\n"), ("data: ", "\r\n"), ("data: ", "\r"),
    ("event: x\ndata: ", "\n"), (": keep-alive\ndata: ", "\n"), ("id: 3\r\ndata: ", "\r\n"),
])


@st.composite
def valid_streams(draw: st.DrawFn) -> bytes:
    prefix, eol = draw(_FRAMINGS)
    deltas = draw(st.lists(st.text(min_size=1, max_size=12), max_size=8))
    chunks: list[dict[str, Any] | str] = [{"type": "start", "messageId": "m"}]
    chunks += [{"type": "text-delta", "id": "t", "delta": d} for d in deltas]
    chunks.append({"type": "finish", "finishReason": "stop", "messageMetadata": META})
    if draw(st.booleans()):
        chunks.append("[DONE]")
    out = []
    for chunk in chunks:
        payload = chunk if isinstance(chunk, str) else json.dumps(
            chunk, ensure_ascii=draw(st.booleans()))
        out.append(f"{prefix}{payload}{eol}{eol}")
    return "".join(out).encode()


@settings(deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=valid_streams(), cuts=st.lists(st.integers(min_value=0, max_value=4000),
                                           max_size=12))
def test_rechunking_never_changes_the_events(data: bytes, cuts: list[int]) -> None:
    whole_events, whole_result = parse(data)
    cut_events, cut_result = parse(data, chunks=[c % (len(data) + 1) for c in cuts])
    assert cut_events == whole_events
    assert cut_result == whole_result
    assert isinstance(whole_events[-1], StreamFinish)


@settings(deadline=None)
@given(chunks=st.lists(st.binary(max_size=64), max_size=10))
def test_arbitrary_bytes_only_raise_bridge_errors(chunks: list[bytes]) -> None:
    parser = StreamParser()
    try:
        for chunk in chunks:
            parser.feed(chunk)
        parser.close()
    except BridgeError:
        pass


_json = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=5),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=5), inner,
                                                                max_size=3),
    max_leaves=8,
)
_TYPES = ["start", "message-start", "text-delta", "tool-input-available", "message-metadata",
          "finish", "error", "text-start", "abort"]
_KEYS = ["messageId", "delta", "toolCallId", "toolName", "input", "messageMetadata",
         "metadata", "finishReason", "usage", "credits", "conversationId", "errorText", "error"]


@settings(deadline=None)
@given(chunks=st.lists(
    st.fixed_dictionaries({"type": st.sampled_from(_TYPES)},
                          optional={k: _json for k in _KEYS}),
    max_size=8,
))
def test_odd_field_values_only_raise_bridge_errors(chunks: list[dict[str, Any]]) -> None:
    assembler = StreamAssembler()
    try:
        for chunk in chunks:
            assembler.push(chunk)
        assembler.end(clean=False)
    except BridgeError:
        pass
    result = assembler.result()
    assert isinstance(result.text, str)


# Source chunks as the AI SDK documents them (https://ai-sdk.dev/docs/ai-sdk-ui/stream-protocol,
# "Source Parts" and "File Part").
SOURCE_STREAM = (
    'data: {"type":"start","messageId":"msg_abc123"}\n\n'
    'data: {"type":"text-delta","id":"t1","delta":"See the docs."}\n\n'
    'data: {"type":"source-url","sourceId":"https://example.com",'
    '"url":"https://example.com"}\n\n'
    'data: {"type":"source-document","sourceId":"https://example.com",'
    '"mediaType":"file","title":"Title"}\n\n'
    'data: {"type":"file","url":"https://example.com/file.png","mediaType":"image/png"}\n\n'
    'data: {"type":"source-url","sourceId":"x","url":""}\n\n'
    'data: {"type":"finish","finishReason":"stop"}\n\n'
    "data: [DONE]\n\n"
)


def test_source_and_file_chunks_become_sources() -> None:
    from bridge.core.models import Source, SourceFound

    parser = StreamParser()
    events = parser.feed(SOURCE_STREAM.encode())
    found = [e.source for e in events if isinstance(e, SourceFound)]
    expected = (
        Source(kind="url", url="https://example.com"),
        Source(kind="document", title="Title", media_type="file"),
        Source(kind="file", url="https://example.com/file.png", media_type="image/png"),
    )
    # The chunk with an empty URL names nothing and is dropped.
    assert tuple(found) == expected
    assert parser.result().sources == expected
    assert parser.result().text == "See the docs."


# Lines of every kind the decoder tells apart; a stream is some of them, each ended by the
# same line end. LF-only chunks take the decoder's fast path, CR and CRLF the general one.
_LINES = st.sampled_from([
    b'data: {"type":"text-delta","delta":"a"}', b'data:{"type":"text-delta","delta":"b"}',
    b'data: {"type":"text-delta",', b'data: "delta":"c"}', b"data: [DONE]", b"data: [DONE] ",
    b"data", b"data: ", b"data:  two spaces", b"event: text-delta", b"id: 7", b"retry: 10",
    b": keep-alive", b"", b"", b'{"type":"text-delta","delta":"bare"}', b"[DONE]",
    b'data: {"type":"text-delta","delta":"\xff\xfe"}', b"data: not json", b"dat: x",
    b"\xef\xbb\xbfdata: {}",
])


def _decode(data: bytes, cuts: list[int]) -> tuple[list[Any], str | None]:
    decoder = SseDecoder()
    items: list[Any] = []
    # Cut after the first line too: the fast path starts once the first line is read.
    first = data.find(b"\n") + 1
    bounds = sorted({c % (len(data) + 1) for c in cuts} | {0, first, len(data)})
    try:
        for start, end in itertools.pairwise(bounds):
            items += decoder.feed(data[start:end])
        items += decoder.close()
    except StreamMalformed:
        return items, "malformed"
    return items, None


@settings(deadline=None, max_examples=400)
@example(lines=[b": hi", b'data: {"type":"text-delta","delta":"a"}',
                b'{"type":"text-delta","delta":"bare"}', b'data: {"type":"text-delta","delta":"b"}',
                b""], cuts=[], eol=b"\r\n")
@given(lines=st.lists(_LINES, max_size=14), cuts=st.lists(st.integers(0, 2000), max_size=8),
       eol=st.sampled_from([b"\r\n", b"\r"]))
def test_lf_fast_path_decodes_as_the_general_path(
    lines: list[bytes], cuts: list[int], eol: bytes
) -> None:
    lf = b"".join(line + b"\n" for line in lines)
    other = b"".join(line + eol for line in lines)
    assert _decode(lf, cuts) == _decode(other, [])
