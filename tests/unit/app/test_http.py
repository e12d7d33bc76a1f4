"""The operations HTTP server over real HTTP: liveness, readiness, Prometheus metrics."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager

import pytest
from aiohttp.test_utils import TestClient, TestServer

from bridge.app import http
from bridge.app.http import create_app
from bridge.app.metrics import CONTENT_TYPE_LATEST, Metrics


@asynccontextmanager
async def served(
    readiness: Callable[[], Awaitable[dict[str, bool]]], metrics: Metrics | None = None
) -> AsyncIterator[TestClient]:
    app = create_app(metrics=metrics or Metrics(), readiness=readiness)
    async with TestClient(TestServer(app)) as client:
        yield client


def checks(**values: bool) -> Callable[[], Awaitable[dict[str, bool]]]:
    async def readiness() -> dict[str, bool]:
        return dict(values)

    return readiness


async def test_healthz_answers_ok_even_when_not_ready() -> None:
    async with served(checks(redis=False)) as client:
        response = await client.get("/healthz")
        assert response.status == 200
        assert await response.json() == {"status": "ok"}


async def test_readyz_is_200_when_every_check_passes() -> None:
    async with served(checks(redis=True, slack=True, discord=True)) as client:
        response = await client.get("/readyz")
        assert response.status == 200
        assert await response.json() == {"redis": True, "slack": True, "discord": True}


async def test_readyz_is_503_and_names_the_failing_check() -> None:
    async with served(checks(redis=True, slack=False)) as client:
        response = await client.get("/readyz")
        assert response.status == 503
        assert await response.json() == {"redis": True, "slack": False}


async def test_readyz_is_503_when_a_check_raises() -> None:
    async def broken() -> dict[str, bool]:
        raise ConnectionError("redis down")

    async with served(broken) as client:
        response = await client.get("/readyz")
        assert response.status == 503
        body = await response.json()
        assert body == {"readiness": False}


async def test_readyz_is_503_when_a_check_hangs(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(http, "READINESS_TIMEOUT", 0.05)
    never = asyncio.Event()

    async def hanging() -> dict[str, bool]:
        await never.wait()
        return {"redis": True}

    async with served(hanging) as client:
        response = await client.get("/readyz")
        assert response.status == 503
        assert await response.json() == {"readiness": False}


async def test_metrics_is_prometheus_text() -> None:
    metrics = Metrics()
    metrics.chatbase_request("chat", 200, None, agent="agent-test")
    metrics.answers.labels(platform="slack", outcome="ok").inc()
    async with served(checks(), metrics) as client:
        response = await client.get("/metrics")
        assert response.status == 200
        assert response.headers["Content-Type"] == CONTENT_TYPE_LATEST
        text = await response.text()
    assert "# TYPE bridge_answers_total counter" in text
    assert 'bridge_answers_total{outcome="ok",platform="slack"} 1.0' in text
    assert ('bridge_chatbase_requests_total{agent="agent-test",code="",endpoint="chat",'
            'status="200"} 1.0') in text
    assert "bridge_time_to_first_text_seconds" in text


async def test_unknown_path_is_404() -> None:
    async with served(checks()) as client:
        response = await client.get("/slack/events")
        assert response.status == 404
