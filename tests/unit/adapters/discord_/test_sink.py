"""The Discord sinks against the fake Discord REST API, through discord.py's real HTTP client."""

from __future__ import annotations

from collections.abc import AsyncIterator

import discord
import pytest
from discord.http import HTTPClient

from adapters.discord.sink import DEFAULT_INTERVAL, ChannelSink, ThreadRequest
from adapters.discord.views import (
    NEGATIVE_ID,
    POSITIVE_ID,
    FeedbackView,
    layout_view,
    parse_stop,
    stop_custom_id,
    stop_view,
)
from bridge.app.metrics import Metrics
from bridge.core.errors import PlatformError, PlatformMessageGone, PlatformRateLimited
from bridge.core.models import Feedback
from bridge.core.ports import Budget
from tests.fakes.discord_rest import Channel, FakeDiscord

NONE = {"parse": []}


@pytest.fixture
async def fake() -> AsyncIterator[FakeDiscord]:
    async with FakeDiscord(rate_window=0.5) as server:
        yield server


async def login(fake: FakeDiscord) -> HTTPClient:
    import asyncio

    http = HTTPClient(asyncio.get_running_loop(), fake.connector(), max_ratelimit_timeout=30.0)
    await http.static_login(fake.token)
    return http


@pytest.fixture
async def http(fake: FakeDiscord) -> AsyncIterator[HTTPClient]:
    client = await login(fake)
    yield client
    await client.close()


@pytest.fixture
def channel(fake: FakeDiscord) -> Channel:
    return fake.add_channel(fake.add_guild())


def sink(http: HTTPClient, channel_id: str, **kwargs: object) -> ChannelSink:
    return ChannelSink(http=http, metrics=Metrics(), channel_id=channel_id, **kwargs)  # type: ignore[arg-type]


async def test_post_edit_delete_with_mentions_disabled(
    fake: FakeDiscord, http: HTTPClient, channel: Channel
) -> None:
    reply = sink(http, channel.id)
    first = await reply.post("Hello @everyone <@123>", final=False)
    second = await reply.post("part two", final=True)
    await reply.edit(first, "Hello world", final=True)
    await reply.delete(second)
    assert fake.messages[first]["content"] == "Hello world"
    assert second not in fake.messages
    writes = fake.message_calls(channel.id)
    assert [c.method for c in writes] == ["POST", "POST", "PATCH", "DELETE"]
    for call in writes[:3]:
        assert call.body["allowed_mentions"] == NONE
    # A plain channel answer does not reference anything.
    assert "message_reference" not in writes[0].body
    assert reply.budget("edit") == Budget(f"discord:{channel.id}", DEFAULT_INTERVAL)


async def test_inline_reply_references_the_question_once(
    fake: FakeDiscord, http: HTTPClient, channel: Channel
) -> None:
    question = await fake.send_message(fake.user("ann"), channel, "hi", mention_bot=True)
    reply = sink(http, channel.id, reply_to=question["id"])
    await reply.post("first", final=True)
    await reply.post("second", final=True)
    first, second = fake.calls_to("POST", "/channels/{channel_id}/messages")
    assert first.body["message_reference"]["message_id"] == int(question["id"])
    assert first.body["message_reference"]["fail_if_not_exists"] is False
    assert "message_reference" not in second.body


async def test_a_thread_is_opened_from_the_question_before_the_first_write(
    fake: FakeDiscord, http: HTTPClient, channel: Channel
) -> None:
    question = await fake.send_message(fake.user("ann"), channel, "hi", mention_bot=True)
    reply = sink(http, channel.id,
                 open_thread=ThreadRequest(channel.id, question["id"], "a question"))
    # The thread's id is the question's id: the budget is right before it exists.
    assert reply.budget("post") == Budget(f"discord:{question['id']}", DEFAULT_INTERVAL)
    message_id = await reply.post("answer", final=True)
    (opened,) = fake.calls_to("POST", "/channels/{channel_id}/messages/{message_id}/threads")
    assert opened.body["name"] == "a question"
    assert opened.body["auto_archive_duration"] == 1440
    assert fake.messages[message_id]["channel_id"] == question["id"]
    assert reply.channel_id == question["id"]


async def test_a_thread_made_by_another_process_is_reused(
    fake: FakeDiscord, http: HTTPClient, channel: Channel
) -> None:
    question = await fake.send_message(fake.user("ann"), channel, "hi", mention_bot=True)
    request = ThreadRequest(channel.id, question["id"], "q")
    await sink(http, channel.id, open_thread=request).post("one", final=True)
    second = sink(http, channel.id, open_thread=request)
    message_id = await second.post("two", final=True)
    statuses = [c.status for c in fake.calls_to(
        "POST", "/channels/{channel_id}/messages/{message_id}/threads")]
    assert statuses == [201, 400]
    assert fake.messages[message_id]["channel_id"] == question["id"]


async def test_without_thread_permission_it_answers_inline(
    fake: FakeDiscord, http: HTTPClient
) -> None:
    closed = fake.add_channel(fake.add_guild(), threads_allowed=False)
    question = await fake.send_message(fake.user("ann"), closed, "hi", mention_bot=True)
    reply = sink(http, closed.id, open_thread=ThreadRequest(closed.id, question["id"], "q"))
    message_id = await reply.post("answer", final=True)
    assert fake.messages[message_id]["channel_id"] == closed.id
    post = fake.calls_to("POST", "/channels/{channel_id}/messages")[-1]
    assert post.body["message_reference"]["message_id"] == int(question["id"])
    assert reply.budget("edit").key == f"discord:{closed.id}"


async def test_typing_runs_until_the_first_post(
    fake: FakeDiscord, http: HTTPClient, channel: Channel
) -> None:
    reply = sink(http, channel.id)
    await reply.working()
    await fake.wait_for(lambda: fake.calls_to("POST", "/channels/{channel_id}/typing"))
    await reply.post("text", final=True)
    assert reply._typing._task is None  # stopped, not left running
    await reply.finish(["x"], answered=False)


async def test_errors_are_translated(
    fake: FakeDiscord, http: HTTPClient, channel: Channel
) -> None:
    reply = sink(http, channel.id)
    with pytest.raises(PlatformMessageGone):
        await reply.edit("1234567890", "text", final=True)
    with pytest.raises(PlatformMessageGone):
        await sink(http, "999999999999").post("text", final=True)
    with pytest.raises(PlatformError) as too_long:
        await reply.post("x" * 2001, final=True)
    assert not isinstance(too_long.value, PlatformMessageGone)
    assert "50035" in str(too_long.value)
    await reply.delete("1234567890")  # already gone is fine


async def test_long_rate_limits_surface_instead_of_hanging(
    fake: FakeDiscord, http: HTTPClient, channel: Channel
) -> None:
    fake.rate_limit, fake.rate_window = 1, 120.0
    reply = sink(http, channel.id)
    await reply.post("one", final=True)
    # Discord answers 429 with retry_after 120 s: beyond max_ratelimit_timeout.
    with pytest.raises(PlatformRateLimited) as known:
        await reply.post("two", final=True)
    assert known.value.retry_after > 30
    # The same from another client (another replica).
    other = await login(fake)
    try:
        with pytest.raises(PlatformRateLimited) as answered:
            await sink(other, channel.id).post("three", final=True)
    finally:
        await other.close()
    assert answered.value.retry_after > 30
    assert len(fake.rate_limited) == 2


async def test_finish_adds_feedback_buttons_to_the_last_part_only_when_answered(
    fake: FakeDiscord, http: HTTPClient, channel: Channel
) -> None:
    reply = sink(http, channel.id, view_factory=layout_view)
    first = await reply.post("one", final=True)
    last = await reply.post("two", final=True)
    await reply.finish([first, last], answered=True)
    buttons = fake.messages[last]["components"][0]["components"]
    assert [b["custom_id"] for b in buttons] == [POSITIVE_ID, NEGATIVE_ID]
    assert fake.messages[first]["components"] == []
    assert fake.calls[-1].body["allowed_mentions"] == NONE

    notice = sink(http, channel.id, view_factory=layout_view)
    only = await notice.post("over quota", final=True)
    await notice.finish([only], answered=False)
    assert fake.messages[only]["components"] == []


async def test_finish_never_raises(fake: FakeDiscord, http: HTTPClient, channel: Channel) -> None:
    reply = sink(http, channel.id, view_factory=layout_view)
    await reply.finish(["1234567890"], answered=True)  # unknown message: logged, not raised
    assert fake.calls[-1].status == 404


async def test_a_locked_thread_counts_as_gone(
    fake: FakeDiscord, http: HTTPClient, channel: Channel
) -> None:
    reply = sink(http, channel.id)
    message_id = await reply.post("text", final=False)
    channel.locked = True
    with pytest.raises(PlatformMessageGone, match="160005"):
        await reply.edit(message_id, "more", final=True)


async def test_the_feedback_views() -> None:
    sent = layout_view()
    # Stopped: discord.py keeps no copy per message; the registered view dispatches.
    assert sent.is_finished()
    presses: list[Feedback] = []

    async def on_press(interaction: object, value: Feedback) -> None:
        presses.append(value)

    registered = FeedbackView(on_press)
    assert registered.is_persistent() and registered.timeout is None
    assert [item.custom_id for item in registered.children] == [POSITIVE_ID, NEGATIVE_ID]
    assert isinstance(registered.children[0], discord.ui.Button)


def test_channel_pacing_leaves_a_margin_under_five_writes_per_five_seconds() -> None:
    # Exactly 1.0 s fills the commonly observed 5-per-5-s bucket to its last token, so any
    # jitter costs a 429; the margin is what keeps the benchmark at zero.
    writes_per_window = 5.0 / DEFAULT_INTERVAL
    assert 4.5 <= writes_per_window <= 5.0 / 1.05


async def test_the_stop_button_rides_on_posts_and_goes_with_the_final_edit(
    fake: FakeDiscord, http: HTTPClient, channel: Channel
) -> None:
    reply = sink(http, channel.id, live_view=lambda: stop_view("11", "22"))
    first = await reply.post("Hel ▌", final=False)
    await reply.edit(first, "Hello ▌", final=False)
    sealed = await reply.post("done at once", final=True)
    await reply.edit(first, "Hello.", final=True)
    post, edit, final_post, final_edit = fake.message_calls(channel.id)
    (row,) = post.body["components"]
    assert [b["custom_id"] for b in row["components"]] == [stop_custom_id("11", "22")]
    # An edit in between leaves the button alone (no components field); the final one
    # removes it; a part posted final never had one.
    assert "components" not in edit.body
    assert "components" not in final_post.body
    assert final_edit.body["components"] == []
    assert fake.messages[first]["components"] == []
    assert fake.messages[sealed]["components"] == []


async def test_without_a_stop_button_edits_never_touch_components(
    fake: FakeDiscord, http: HTTPClient, channel: Channel
) -> None:
    # A regeneration rewrites an answer that may carry feedback buttons: left as they are.
    reply = sink(http, channel.id)
    first = await reply.post("Hel ▌", final=False)
    await reply.edit(first, "Hello.", final=True)
    for call in fake.message_calls(channel.id):
        assert "components" not in call.body


def test_stop_custom_ids_fit_discord_and_parse_back() -> None:
    longest = stop_custom_id("9" * 20, "9" * 20)
    assert len(longest) <= 100  # Discord's custom_id limit
    assert parse_stop(longest) == ("9" * 20, "9" * 20)
    assert parse_stop(stop_custom_id("123", "456")) == ("123", "456")
    for other in (POSITIVE_ID, NEGATIVE_ID, "cbb:stop:1", "cbb:stop:a:b", "cbb:stop:1:2:3",
                  None, 5):
        assert parse_stop(other) is None
