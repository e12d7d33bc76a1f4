"""The retry policy alone: which failures are retried, the budgets, Retry-After parsing."""

from __future__ import annotations

import pytest

from bridge.chatbase.retry import RequestKind, RetryPolicy
from bridge.chatbase.transport import Failure
from bridge.core.errors import ChatbaseAPIError, ChatbaseRateLimited, ChatbaseUnavailable

WALL = 1_800_000_000.0
POLICY = RetryPolicy(max_wait=5.0, wall_clock=lambda: WALL)


def answered(status: int, code: str = "SOME_CODE", **headers: str) -> Failure:
    error = ChatbaseAPIError(code=code, message="m", status=status, request_id="r")
    return Failure(error, error, status=status, code=code, headers=headers)


def unanswered(*, reached: bool) -> Failure:
    cause = OSError("boom")
    return Failure(ChatbaseUnavailable("no answer"), cause, reached=reached)


@pytest.mark.parametrize(
    ("failure", "retried_for"),
    [
        (unanswered(reached=False), set(RequestKind)),
        (answered(503), set(RequestKind)),
        (answered(500, "SERVICE_UNDER_MAINTENANCE"), set(RequestKind)),
        # Sent, then no answer or a 5xx: only a GET or PATCH is resent; a chat or retry POST,
        # streamed or not, may have been recorded and charged (chatbase-cli retry.ts).
        (unanswered(reached=True), {RequestKind.IDEMPOTENT}),
        (answered(500), {RequestKind.IDEMPOTENT}),
        (answered(502), {RequestKind.IDEMPOTENT}),
        (answered(504), {RequestKind.IDEMPOTENT}),
        (answered(400), set()),
        (answered(404), set()),
    ],
)
def test_which_failures_are_transient(failure: Failure, retried_for: set[RequestKind]) -> None:
    assert {k for k in RequestKind if POLICY.transient(failure, k)} == retried_for


def test_transient_failures_are_retried_twice_with_growing_backoff() -> None:
    retries = POLICY.start("get_conversation", RequestKind.IDEMPOTENT)
    first, second = retries.after(answered(502)), retries.after(answered(502))
    assert 0.25 <= first <= 0.75 and 0.5 <= second <= 1.5
    with pytest.raises(ChatbaseAPIError) as info:
        retries.after(answered(502))
    assert info.value.status == 502


@pytest.mark.parametrize("kind", [RequestKind.POST, RequestKind.STREAM])
def test_a_post_is_not_replayed_after_no_answer(kind: RequestKind) -> None:
    failure = unanswered(reached=True)
    with pytest.raises(ChatbaseUnavailable) as info:
        POLICY.start("chat", kind).after(failure)
    assert info.value.__cause__ is failure.cause


@pytest.mark.parametrize("status", [500, 502, 504])
def test_a_streamed_chat_is_not_replayed_after_a_5xx(status: int) -> None:
    with pytest.raises(ChatbaseAPIError) as info:
        POLICY.start("chat", RequestKind.STREAM).after(answered(status))
    assert info.value.status == status


def test_a_streamed_chat_is_retried_after_429_and_503() -> None:
    retries = POLICY.start("chat", RequestKind.STREAM)
    assert retries.after(answered(503, "SERVICE_UNDER_MAINTENANCE")) > 0
    assert retries.after(answered(429, "RATE_LIMIT_TOO_MANY_REQUESTS")) > 0
    assert retries.after(unanswered(reached=False)) > 0


@pytest.mark.parametrize(
    ("headers", "expected"),
    [
        ({"Retry-After": "3"}, 3.0),
        ({"Retry-After": "Fri, 15 Jan 2027 08:00:04 GMT"}, 1_800_000_004.0 - WALL),
        ({"X-RateLimit-Reset": str(WALL + 2)}, 2.0),
        ({"X-RateLimit-Reset": str((WALL + 1.5) * 1000)}, 1.5),
        ({"X-RateLimit-Reset": "4"}, 4.0),
        ({"Retry-After": "-1"}, 0.0),
    ],
)
def test_rate_limit_delay(headers: dict[str, str], expected: float) -> None:
    assert POLICY.rate_limit_delay(headers, 1) == pytest.approx(expected)


def test_rate_limit_gives_up_beyond_max_wait() -> None:
    retries = POLICY.start("chat", RequestKind.POST)
    assert retries.after(answered(429, "RATE_LIMIT_TOO_MANY_REQUESTS", **{"Retry-After": "2"}))
    assert retries.after(answered(429, "RATE_LIMIT_TOO_MANY_REQUESTS", **{"Retry-After": "2"}))
    with pytest.raises(ChatbaseRateLimited) as info:
        retries.after(answered(429, "RATE_LIMIT_TOO_MANY_REQUESTS", **{"Retry-After": "2"}))
    assert info.value.retry_after == 2.0
