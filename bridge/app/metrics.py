"""Prometheus metrics of one bridge process, in a registry of its own."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.exposition import CONTENT_TYPE_LATEST

__all__ = ["CONTENT_TYPE_LATEST", "Metrics"]


class Metrics:
    """Every metric the bridge exports. Labels never carry message content or user ids."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        self.answers = Counter(
            "bridge_answers", "Answers finished, by platform and outcome.",
            ["platform", "outcome"], registry=r,
        )
        self.first_text_seconds = Histogram(
            "bridge_time_to_first_text_seconds",
            "From receiving a message to the first platform call carrying answer text.",
            ["platform"], registry=r,
            buckets=(0.1, 0.25, 0.5, 1, 2, 3, 5, 8, 13, 21, 34, 60),
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
        self.feedback = Counter(
            "bridge_feedback", "Feedback sent to Chatbase, by value.", ["platform", "value"],
            registry=r,
        )
        self.in_flight = Gauge(
            "bridge_answers_in_flight", "Answers being rendered now.", ["platform"], registry=r,
        )
        self.events = Counter(
            "bridge_events", "Inbound platform events by what was done with them.",
            ["platform", "result"], registry=r,
        )

    def chatbase_request(self, endpoint: str, status: int | None, code: str | None, *,
                         agent: str = "") -> None:
        self.chatbase_requests.labels(
            agent=agent, endpoint=endpoint, status=str(status) if status is not None else "error",
            code=code or "",
        ).inc()

    def render(self) -> bytes:
        return generate_latest(self.registry)
