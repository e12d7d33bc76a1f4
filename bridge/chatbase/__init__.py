"""Chatbase API v2: the HTTP client, its stream parser and request pacing."""

from bridge.chatbase.client import ChatbaseClient, ChatStream, RequestHook, api_error, check_user_id
from bridge.chatbase.limiter import LocalLimiter, RequestLimiter
from bridge.chatbase.sse import (
    DONE,
    SseDecoder,
    StreamAssembler,
    StreamParser,
    events_from_result,
    result_from_json,
)

__all__ = [
    "DONE",
    "ChatStream",
    "ChatbaseClient",
    "LocalLimiter",
    "RequestHook",
    "RequestLimiter",
    "SseDecoder",
    "StreamAssembler",
    "StreamParser",
    "api_error",
    "check_user_id",
    "events_from_result",
    "result_from_json",
]
