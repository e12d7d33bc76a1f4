"""/metrics after a real answer (fake Chatbase, real Redis): counts it, never shows content."""

from __future__ import annotations

from aiohttp.test_utils import TestClient, TestServer

from bridge.app.http import create_app
from bridge.app.metrics import CONTENT_TYPE_LATEST
from tests.fakes.chatbase import Answer
from tests.fakes.harness import harness

QUESTION = "zebra-question about my invoice 4711"
ANSWER = "octopus-answer: your invoice is paid"


async def test_metrics_count_the_answer_and_carry_no_message_text(
    redis_url: str, redis_prefix: str
) -> None:
    async with harness(redis_url, redis_prefix) as h:
        h.fake.script(Answer(text=ANSWER))
        sink = h.sink()
        await h.service.handle_message(h.message(QUESTION, user="U0SECRETUSER"), sink)
        assert sink.joined() == ANSWER

        async def readiness() -> dict[str, bool]:
            await h.store.ping()
            return {"redis": True}

        app = create_app(metrics=h.replicas[0].metrics, readiness=readiness)
        async with TestClient(TestServer(app)) as client:
            assert (await client.get("/readyz")).status == 200
            response = await client.get("/metrics")
            assert response.status == 200
            assert response.headers["Content-Type"] == CONTENT_TYPE_LATEST
            text = await response.text()
    assert ('bridge_chatbase_requests_total{agent="agent-test",code="",endpoint="chat",'
            'status="200"} 1.0') in text
    assert "bridge_answers_total{" in text
    assert "bridge_time_to_first_text_seconds_count" in text
    for content in ("zebra", "4711", "octopus", "invoice", "U0SECRETUSER"):
        assert content not in text
