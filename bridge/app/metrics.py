"""Prometheus metrics of one bridge process, in a registry of its own."""

from __future__ import annotations

import re

from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    GCCollector,
    Histogram,
    ProcessCollector,
    generate_latest,
)
from prometheus_client.exposition import CONTENT_TYPE_LATEST

from bridge.core.errors import CREDITS_EXHAUSTED
from bridge.core.models import Platform

__all__ = ["ADDED_TIME_BUCKETS", "CONTENT_TYPE_LATEST", "FIRST_TEXT_BUCKETS", "Metrics"]

# What a person waits for the first text: Chatbase's time to first token (about 0.3-3 s)
# plus the bridge's and the platform's share, with room for slow answers.
FIRST_TEXT_BUCKETS = (0.05, 0.1, 0.25, 0.5, 0.75, 1, 1.5, 2, 3, 5, 8, 13, 21, 34, 60)
# What the bridge adds to it: about a millisecond when idle (docs/performance.md), tens of
# milliseconds under load; beyond a second something is wrong.
ADDED_TIME_BUCKETS = (0.0005, 0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.25, 0.5, 1, 2.5,
                      5)
# Chatbase's error codes are upper snake case (reference §8); anything else, and
# any code beyond the first MAX_CODES seen, is counted as OTHER so a misbehaving upstream
# cannot grow the label set without bound.
_CODE = re.compile(r"^[A-Z][A-Z0-9_]{0,63}$")
MAX_CODES = 64
# The stream's own error kinds (class names such as StreamIdleTimeout) as codes.
_CAMEL = re.compile(r"(?<!^)(?=[A-Z])")


class Metrics:
    """Every metric the bridge exports. Labels never carry message content or user ids."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        # The process's CPU, memory and collections: with bridge_stream_deltas_total the
        # benchmark's CPU per delta, live (docs/performance.md).
        ProcessCollector(registry=r)
        GCCollector(registry=r)
        self.answers = Counter(
            "bridge_answers", "Answers finished, by platform and outcome.",
            ["platform", "outcome"], registry=r,
        )
        self.first_text_seconds = Histogram(
            "bridge_time_to_first_text_seconds",
            "From receiving a message to the end of the first platform call carrying answer "
            "text (the text is visible).",
            ["platform"], registry=r, buckets=FIRST_TEXT_BUCKETS,
        )
        self.added_first_text_seconds = Histogram(
            "bridge_added_time_to_first_text_seconds",
            "From the first text delta received from Chatbase to the start of the first "
            "platform call carrying text: the time the bridge adds.",
            ["platform"], registry=r, buckets=ADDED_TIME_BUCKETS,
        )
        self.deltas = Counter(
            "bridge_stream_deltas",
            "Text deltas received from Chatbase streams (added per answer in batches).",
            ["platform"], registry=r,
        )
        self.platform_calls = Counter(
            "bridge_platform_calls", "Platform calls made for replies (post, edit, append...).",
            ["platform", "call"], registry=r,
        )
        self.platform_rate_limited = Counter(
            "bridge_platform_rate_limited", "Platform 429 answers.", ["platform"], registry=r,
        )
        self.chatbase_requests = Counter(
            "bridge_chatbase_requests",
            "Chatbase HTTP requests by agent, endpoint, status and code.",
            ["agent", "endpoint", "status", "code"], registry=r,
        )
        self.chatbase_rate_limited = Counter(
            "bridge_chatbase_rate_limited",
            "Chatbase 429 answers (each waited out and retried within BRIDGE_CHATBASE_MAX_WAIT).",
            ["agent"], registry=r,
        )
        self.chatbase_errors = Counter(
            "bridge_chatbase_errors",
            "Chatbase errors by code: error answers (their code, else HTTP_<status>), "
            "requests that got no answer (NO_ANSWER) and streams that broke after they "
            "started (the error chunk's code, else STREAM_<kind>).",
            ["agent", "endpoint", "code"], registry=r,
        )
        self.chatbase_credits_exhausted = Counter(
            "bridge_chatbase_credits_exhausted",
            "Chatbase refusals for want of message credits: CHAT_CREDITS_EXHAUSTED (the "
            "workspace) or CHAT_AGENT_CREDITS_EXHAUSTED (the agent's own limit).",
            ["agent", "code"], registry=r,
        )
        self.feedback = Counter(
            "bridge_feedback", "Feedback sent to Chatbase, by value (positive, negative, "
            "cleared).", ["platform", "value"], registry=r,
        )
        self.in_flight = Gauge(
            "bridge_answers_in_flight", "Answers being rendered now.", ["platform"], registry=r,
        )
        self.answers_stuck = Gauge(
            "bridge_answers_stuck",
            "Answers in flight without visible progress for BRIDGE_STUCK_AFTER seconds, at "
            "the watchdog's last check.",
            ["platform"], registry=r,
        )
        self.watchdog_ended = Counter(
            "bridge_watchdog_ended_answers",
            "Answers the watchdog ended after BRIDGE_STUCK_END_AFTER seconds without visible "
            "progress.",
            ["platform"], registry=r,
        )
        self.edit_spacing = Gauge(
            "bridge_edit_spacing_seconds",
            "Seconds between two progress edits of one answer that the process's edit budget "
            "(BRIDGE_LIVE_EDITS_PER_SECOND) asks for now; 0 while fewer answers stream than "
            "the budget. Above the platform's own interval, answers update less often.",
            registry=r,
        )
        self.events = Counter(
            "bridge_events", "Inbound platform events by what was done with them.",
            ["platform", "result"], registry=r,
        )
        # Series an alert or a panel reads before anything happened: present at 0.
        for platform in Platform:
            for family in (self.in_flight, self.answers_stuck, self.watchdog_ended,
                           self.platform_rate_limited):
                family.labels(platform.value)
        self._codes: set[str] = set()

    def chatbase_request(self, endpoint: str, status: int | None, code: str | None, *,
                         agent: str = "") -> None:
        """One Chatbase HTTP request's outcome (the client's ``on_request`` hook)."""
        known = self._code(code) if code else ""
        self.chatbase_requests.labels(
            agent=agent, endpoint=endpoint, status=str(status) if status is not None else "error",
            code=known,
        ).inc()
        if status is not None and 200 <= status < 300:
            return
        if status == 429:
            self.chatbase_rate_limited.labels(agent=agent).inc()
        if code in CREDITS_EXHAUSTED:
            self.chatbase_credits_exhausted.labels(agent=agent, code=code).inc()
        self.chatbase_errors.labels(
            agent=agent, endpoint=endpoint,
            code=known or ("NO_ANSWER" if status is None else f"HTTP_{status}"),
        ).inc()

    def chatbase_stream_error(self, endpoint: str, code: str, *, agent: str = "") -> None:
        """A Chatbase stream that broke after it started (the client's ``on_stream_error``
        hook): ``code`` is the error chunk's, or the kind of break (``StreamIdleTimeout``)."""
        if not _CODE.match(code):
            code = _CAMEL.sub("_", code).upper()
        self.chatbase_errors.labels(agent=agent, endpoint=endpoint, code=self._code(code)).inc()

    def _code(self, code: str) -> str:
        if code in self._codes:
            return code
        if not _CODE.match(code) or len(self._codes) >= MAX_CODES:
            return "OTHER"
        self._codes.add(code)
        return code

    def render(self) -> bytes:
        return generate_latest(self.registry)
