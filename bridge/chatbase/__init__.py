"""Chatbase API v2: endpoints, transport and retry policy, stream parser, request pacing."""

from bridge.chatbase.client import ChatbaseClient, check_user_id
from bridge.chatbase.limiter import LocalLimiter, RequestLimiter
from bridge.chatbase.retry import RequestKind, RetryPolicy
from bridge.chatbase.sse import (
    DONE,
    SseDecoder,
    StreamAssembler,
    StreamParser,
    events_from_result,
    result_from_json,
)
from bridge.chatbase.stream import ChatStream
from bridge.chatbase.transport import RequestHook, api_error

__all__ = [
    "DONE",
    "ChatStream",
    "ChatbaseClient",
    "LocalLimiter",
    "RequestHook",
    "RequestKind",
    "RequestLimiter",
    "RetryPolicy",
    "SseDecoder",
    "StreamAssembler",
    "StreamParser",
    "api_error",
    "check_user_id",
    "events_from_result",
    "result_from_json",
]
