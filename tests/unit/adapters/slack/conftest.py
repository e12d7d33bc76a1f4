"""Fixtures for the Slack adapter's unit tests: a fake Slack Web API and real SDK clients."""

from __future__ import annotations

from collections.abc import AsyncIterator

import aiohttp
import pytest
from slack_sdk.web.async_client import AsyncWebClient

from adapters.slack.sink import SlackApi
from bridge.app.metrics import Metrics
from tests.fakes.slack import FakeSlack


@pytest.fixture
async def slack() -> AsyncIterator[FakeSlack]:
    async with FakeSlack() as fake:
        yield fake


@pytest.fixture
async def session() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as s:
        yield s


@pytest.fixture
def metrics() -> Metrics:
    return Metrics()


@pytest.fixture
def api(slack: FakeSlack, session: aiohttp.ClientSession, metrics: Metrics) -> SlackApi:
    client = AsyncWebClient(token=slack.bot_token, base_url=slack.api_url, session=session,
                            retry_handlers=[])
    return SlackApi(client=client, metrics=metrics, timeout=10.0)
