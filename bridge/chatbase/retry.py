"""The retry policy of Chatbase calls: which failures are retried, how often, and how long apart.

The rules (https://www.chatbase.co/docs/api-reference/v2/error-handling and
/authentication; Chatbase's own CLI does the same, ``Chatbase-co/chatbase-cli``
``src/client/retry.ts``: 429 up to three times for any method, other 5xx only for GET, a POST
never), all in ``RetryPolicy``:

* 429 is retried for every call — a throttled request was never executed — after
  ``Retry-After`` seconds, else until ``X-RateLimit-Reset``, else an exponential backoff,
  as long as the total wait stays within ``max_wait``; then ``ChatbaseRateLimited``.
* A refused connection (nothing reached Chatbase) and 503 ``SERVICE_UNDER_MAINTENANCE``
  ("rejected before any data is read or written", the spec's 503) are retried for every call.
* Other 5xx, timeouts and connections dropped after the request was sent are retried only
  for idempotent calls (GETs, the feedback PATCH). A chat or retry POST, streamed or not, and a
  tool result are never sent again then: Chatbase may already have recorded the turn and
  charged its credits (reference §9), so a resend would duplicate the turn.
* Nothing is retried once a streamed body has started (the policy is only asked about
  failures before a 2xx answer's headers).

Written here rather than with tenacity or stamina: the backoff's jitter, two separate
budgets (transient failures, rate limiting with a total wait) and a give-up error that is not
the last attempt's own would all be custom callbacks there, and stamina cannot take the
injected clock's sleep.
"""

from __future__ import annotations

import email.utils
import enum
import logging
import random
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass

from bridge.chatbase.transport import Failure
from bridge.core.errors import ChatbaseAPIError, ChatbaseError, ChatbaseRateLimited

__all__ = ["RequestKind", "Retries", "RetryPolicy"]

log = logging.getLogger(__name__)

MAINTENANCE = "SERVICE_UNDER_MAINTENANCE"
RATE_LIMITED = "RATE_LIMIT_TOO_MANY_REQUESTS"


class RequestKind(enum.Enum):
    """What sending a request again may do, which decides what is retried."""

    IDEMPOTENT = "idempotent"  # GET, feedback PATCH: any transient failure is retried
    STREAM = "stream"  # streamed chat / retry POST: only when nothing was executed
    POST = "post"  # other POSTs: only retried when nothing was executed


@dataclass(frozen=True, kw_only=True)
class RetryPolicy:
    """Which failures are retried, how many times, and the waits between attempts."""

    max_wait: float = 30.0  # total wait on rate limiting before giving up
    transient_retries: int = 2
    max_rate_limited: int = 10
    backoff_base: float = 0.5
    backoff_cap: float = 8.0
    wall_clock: Callable[[], float] = time.time

    def start(self, endpoint: str, kind: RequestKind) -> Retries:
        """The retry budget of one request."""
        return Retries(self, endpoint, kind)

    @staticmethod
    def rate_limited(failure: Failure) -> bool:
        return failure.status == 429 or failure.code == RATE_LIMITED

    @staticmethod
    def transient(failure: Failure, kind: RequestKind) -> bool:
        """Whether a failure other than rate limiting may be retried for ``kind``."""
        if not failure.reached:
            return True  # nothing reached Chatbase: safe to send again whatever it is
        if failure.status == 503 or failure.code == MAINTENANCE:
            return True  # rejected before any data was read or written
        if failure.status is None or failure.status >= 500:
            # The request was sent: a POST may have been executed and charged.
            return kind is RequestKind.IDEMPOTENT
        return False

    def backoff(self, attempt: int) -> float:
        """Exponential backoff with ±50% jitter for retry number ``attempt`` (from 1)."""
        base = min(self.backoff_cap, self.backoff_base * 2.0 ** (attempt - 1))
        return base * (0.5 + random.random())

    def rate_limit_delay(self, headers: Mapping[str, str], attempt: int) -> float:
        """How long to wait after a 429: ``Retry-After`` (seconds or an HTTP date), else
        ``X-RateLimit-Reset``, else the backoff."""
        retry_after = headers.get("Retry-After")
        if retry_after:
            try:
                return max(0.0, float(retry_after))
            except ValueError:
                try:
                    when = email.utils.parsedate_to_datetime(retry_after)
                except (TypeError, ValueError, IndexError):
                    when = None
                if when is not None:
                    return max(0.0, when.timestamp() - self.wall_clock())
        reset = headers.get("X-RateLimit-Reset")
        if reset:
            try:
                value = float(reset)
            except ValueError:
                value = None
            if value is not None:
                # Docs disagree on the unit (ms vs s since the epoch, §9); small values can
                # only be a number of seconds to wait.
                if value > 1e12:
                    return max(0.0, value / 1000 - self.wall_clock())
                if value > 1e9:
                    return max(0.0, value - self.wall_clock())
                return max(0.0, value)
        return self.backoff(attempt)


class Retries:
    """The retry budget of one request: asked after each failed attempt, it returns the wait
    before the next one or raises the error the caller gets."""

    def __init__(self, policy: RetryPolicy, endpoint: str, kind: RequestKind) -> None:
        self._policy = policy
        self._endpoint = endpoint
        self._kind = kind
        self._retried = 0
        self._limited = 0
        self._waited = 0.0

    def after(self, failure: Failure) -> float:
        """Seconds to wait before trying again; raises when the request is given up."""
        if self._policy.rate_limited(failure):
            return self._after_rate_limited(failure)
        policy, error = self._policy, failure.error
        if not policy.transient(failure, self._kind) or self._retried >= policy.transient_retries:
            if policy.transient(failure, RequestKind.IDEMPOTENT) and not policy.transient(
                failure, self._kind
            ):
                log.warning(
                    "Chatbase %s not sent again: the request reached Chatbase, which may "
                    "have recorded and charged it [request id %s]",
                    self._endpoint, error.request_id,
                )
            _log_failure(self._endpoint, error)
            if error is failure.cause:
                raise error
            raise error from failure.cause
        self._retried += 1
        delay = policy.backoff(self._retried)
        log.warning(
            "Chatbase %s failed (%s); retry %d in %.2fs [request id %s]",
            self._endpoint, _summary(error), self._retried, delay, error.request_id,
        )
        return delay

    def _after_rate_limited(self, failure: Failure) -> float:
        policy, error = self._policy, failure.error
        self._limited += 1
        delay = policy.rate_limit_delay(failure.headers, self._limited)
        code = failure.code or RATE_LIMITED
        if self._waited + delay > policy.max_wait or self._limited > policy.max_rate_limited:
            log.warning(
                "Chatbase %s rate limited (%s), giving up after waiting %.1fs "
                "[request id %s]", self._endpoint, code, self._waited, error.request_id,
            )
            message = error.api_message if isinstance(error, ChatbaseAPIError) else str(error)
            raise ChatbaseRateLimited(
                retry_after=delay, message=message, status=failure.status or 429,
                code=code, request_id=error.request_id,
            )
        self._waited += delay
        log.warning(
            "Chatbase %s rate limited (%s); waiting %.2fs [request id %s]",
            self._endpoint, code, delay, error.request_id,
        )
        return delay


def _summary(error: ChatbaseError) -> str:
    if isinstance(error, ChatbaseAPIError):
        return f"{error.code}, HTTP {error.status}"
    return str(error)


def _log_failure(endpoint: str, error: ChatbaseError) -> None:
    if isinstance(error, ChatbaseAPIError):
        log.warning(
            "Chatbase %s answered %s (HTTP %d): %s [request id %s]",
            endpoint, error.code, error.status, error.api_message, error.request_id,
        )
    else:
        log.warning("Chatbase %s failed: %s", endpoint, error)
