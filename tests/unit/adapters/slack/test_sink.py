"""SlackSink against the fake Slack Web API over real HTTP, through the real SDK client."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from adapters.slack.agent import AgentSessions
from adapters.slack.sink import (
    POST_MAX_CHARS,
    STREAM_MAX_CHARS,
    ReplyTarget,
    SlackApi,
    SlackPacing,
    SlackSink,
    settled,
)
from bridge.app.metrics import Metrics
from bridge.core.errors import PlatformError, PlatformMessageGone, PlatformRateLimited
from tests.fakes.slack import FakeSlack, Tiers

THREAD = "1700000000.000100"


def make_sink(
    api: SlackApi, *, thread: str | None = THREAD, stream: bool = True, buttons: bool = False,
    channel: str = "C0CHAN", sessions: AgentSessions | None = None,
    on_stopped: Callable[[], None] | None = None, question: str | None = None,
    retrying: SlackApi | None = None,
) -> SlackSink:
    return SlackSink(
        api=api, retrying_api=retrying or api,
        target=ReplyTarget(workspace="T0TEAM", channel=channel, thread_ts=thread,
                           asker="U0ASKER", question=question),
        stream=stream, feedback_buttons=buttons, pacing=SlackPacing(),
        sessions=sessions, on_stopped=on_stopped,
    )


def methods(slack: FakeSlack) -> list[str]:
    return [c.method for c in slack.calls]


def counter(metrics: Metrics, name: str, **labels: str) -> float:
    value = metrics.registry.get_sample_value(name, labels)
    return value or 0.0


async def test_stream_start_append_stop_shows_the_exact_text(
    slack: FakeSlack, api: SlackApi
) -> None:
    sink = make_sink(api)
    assert sink.limits.max_chars == STREAM_MAX_CHARS and sink.limits.progress_mark is None
    ts = await sink.post("Hello", final=False)
    await sink.edit(ts, "Hello, **world**", final=False)
    await sink.edit(ts, "Hello, **world**.\n\n- one\n- two", final=True)
    assert methods(slack) == ["chat.startStream", "chat.appendStream", "chat.stopStream"]
    start = slack.calls[0].args
    assert start["thread_ts"] == THREAD and start["channel"] == "C0CHAN"
    assert start["recipient_team_id"] == "T0TEAM" and start["recipient_user_id"] == "U0ASKER"
    assert start["markdown_text"] == "Hello"
    assert slack.calls[1].args["markdown_text"] == ", **world**"
    message = slack.messages[ts]
    assert message.text == "Hello, **world**.\n\n- one\n- two"
    assert not message.streaming and message.thread_ts == THREAD


async def test_interim_closing_fence_is_held_back_until_the_block_grows(
    slack: FakeSlack, api: SlackApi
) -> None:
    sink = make_sink(api)
    ts = await sink.post("Look:\n```py\nx = 1\n```", final=False)
    await sink.edit(ts, "Look:\n```py\nx = 1\ny = 2\n```", final=False)
    await sink.edit(ts, "Look:\n```py\nx = 1\ny = 2\n```\nDone.", final=True)
    assert methods(slack) == ["chat.startStream", "chat.appendStream", "chat.stopStream"]
    assert slack.messages[ts].text == "Look:\n```py\nx = 1\ny = 2\n```\nDone."
    assert settled("a\n```") == "a" and settled("plain") == "plain"


async def test_a_moved_part_boundary_ends_the_stream_and_rewrites(
    slack: FakeSlack, api: SlackApi
) -> None:
    sink = make_sink(api)
    ts = await sink.post("First paragraph.\n\nSecond para", final=False)
    # The renderer sealed this part at the paragraph break: shorter than what was streamed.
    await sink.edit(ts, "First paragraph.\n\n", final=True)
    assert methods(slack) == ["chat.startStream", "chat.stopStream", "chat.update"]
    assert slack.messages[ts].text == "First paragraph.\n\n"


async def test_an_expired_stream_is_recovered_with_update(
    slack: FakeSlack, api: SlackApi
) -> None:
    now = [1000.0]
    slack.clock = lambda: now[0]
    sink = make_sink(api)
    ts = await sink.post("Part one", final=False)
    now[0] += 301  # Slack ends streams about five minutes after they start
    await sink.edit(ts, "Part one, part two", final=False)
    assert sink.budget("edit").key == "slack:T0TEAM:chat.update"
    await sink.edit(ts, "Part one, part two, end.", final=True)
    assert methods(slack) == [
        "chat.startStream", "chat.appendStream", "chat.update", "chat.update",
    ]
    assert slack.calls[1].error == "message_not_in_streaming_state"
    assert slack.messages[ts].text == "Part one, part two, end."


async def test_stream_ended_on_stop_is_recovered(slack: FakeSlack, api: SlackApi) -> None:
    sink = make_sink(api)
    ts = await sink.post("Alpha", final=False)
    slack.fail_next("chat.stopStream", "message_not_in_streaming_state")
    await sink.edit(ts, "Alpha beta", final=True)
    assert methods(slack)[-1] == "chat.update"
    assert slack.messages[ts].text == "Alpha beta"


async def test_start_stream_failure_falls_back_to_post_and_update(
    slack: FakeSlack, api: SlackApi
) -> None:
    sink = make_sink(api)
    slack.fail_next("chat.startStream", "invalid_thread_ts")
    ts = await sink.post("Hi there", final=False)
    assert not sink.streaming
    assert sink.budget("post").key == "slack:T0TEAM:C0CHAN:chat.postMessage"
    assert sink.budget("edit").key == "slack:T0TEAM:chat.update"
    await sink.edit(ts, "Hi there, friend", final=True)
    assert methods(slack) == ["chat.startStream", "chat.postMessage", "chat.update"]
    posted = slack.calls[1].args
    assert posted["thread_ts"] == THREAD
    assert posted["blocks"][0] == {"type": "markdown", "text": "Hi there"}
    assert posted["text"] == "Hi there"
    assert slack.thread_texts("C0CHAN", THREAD) == ["Hi there, friend"]


async def test_rate_limit_raises_with_retry_after_and_nothing_is_lost(
    slack: FakeSlack, api: SlackApi, metrics: Metrics
) -> None:
    sink = make_sink(api)
    ts = await sink.post("One", final=False)
    slack.fail_next("chat.appendStream", "ratelimited", retry_after=7)
    with pytest.raises(PlatformRateLimited) as caught:
        await sink.edit(ts, "One two", final=False)
    assert caught.value.retry_after == 7
    assert counter(metrics, "bridge_platform_rate_limited_total", platform="slack") == 1
    await sink.edit(ts, "One two three", final=True)
    assert slack.messages[ts].text == "One two three"
    # The throttled delta was not lost: the stop carries all of it.
    assert slack.calls_to("chat.stopStream")[0].args["markdown_text"] == " two three"
    assert counter(metrics, "bridge_platform_calls_total", platform="slack",
                   call="chat.appendStream") == 1


async def test_editing_a_deleted_message_says_it_is_gone(
    slack: FakeSlack, api: SlackApi
) -> None:
    sink = make_sink(api, thread=None, channel="D0DM")
    ts = await sink.post("Hello ▌", final=False)
    slack.messages[ts].deleted = True
    with pytest.raises(PlatformMessageGone):
        await sink.edit(ts, "Hello again", final=True)


async def test_top_level_dm_uses_post_and_update_with_a_progress_mark(
    slack: FakeSlack, api: SlackApi
) -> None:
    sink = make_sink(api, thread=None, channel="D0DM")
    assert sink.limits.max_chars == POST_MAX_CHARS and sink.limits.progress_mark == " ▌"
    await sink.working()
    ts = await sink.post("Hello ▌", final=False)
    await sink.edit(ts, "Hello, you ▌", final=False)
    await sink.edit(ts, "Hello, you.", final=True)
    await sink.edit(ts, "Hello, you.", final=True)  # unchanged: no call
    await sink.finish([ts], answered=True)
    assert methods(slack) == ["chat.postMessage", "chat.update", "chat.update"]
    assert "thread_ts" not in slack.calls[0].args
    assert slack.thread_texts("D0DM", None) == ["Hello, you."]
    assert sink.budget("edit", final=True).key == "slack:T0TEAM:chat.update"


async def test_model_text_can_never_ping(slack: FakeSlack, api: SlackApi) -> None:
    nasty = "Hey <!channel> and <!here>, ask <@U123> in <#C9|ops> or <!subteam^S1|@team> & co"
    stream = make_sink(api)
    ts = await stream.post(nasty[:20], final=False)
    await stream.edit(ts, nasty, final=True)
    posted = make_sink(api, thread=None, channel="D0DM")
    ts2 = await posted.post(nasty, final=False)
    await posted.edit(ts2, nasty + " <@U9>", final=True)
    assert slack.live_tokens() == []
    assert slack.messages[ts].text == nasty
    assert slack.messages[ts2].text == nasty + " <@U9>"


async def test_thinking_status_is_set_and_cleared(slack: FakeSlack, api: SlackApi) -> None:
    sink = make_sink(api)
    await sink.working()
    ts = await sink.post("Answer", final=True)
    await sink.finish([ts], answered=True)
    statuses = [c.args for c in slack.calls_to("assistant.threads.setStatus")]
    assert [s["status"] for s in statuses] == ["is thinking…", ""]
    assert all(s["thread_ts"] == THREAD and s["channel_id"] == "C0CHAN" for s in statuses)
    # A complete short answer is one chat.postMessage in the thread.
    assert slack.calls_to("chat.postMessage")[0].args["thread_ts"] == THREAD


async def test_status_failure_is_harmless(slack: FakeSlack, api: SlackApi) -> None:
    sink = make_sink(api)
    slack.fail_next("assistant.threads.setStatus", "invalid_thread_ts")
    await sink.working()
    ts = await sink.post("Fine", final=True)
    await sink.finish([ts], answered=False)
    assert slack.thread_texts("C0CHAN", THREAD) == ["Fine"]


async def test_feedback_buttons_go_on_the_last_part_of_an_answer_only(
    slack: FakeSlack, api: SlackApi
) -> None:
    sink = make_sink(api, buttons=True)
    first = await sink.post("Part one", final=False)
    await sink.edit(first, "Part one\n\n", final=True)
    second = await sink.post("Part two", final=False)
    await sink.edit(second, "Part two, end.", final=True)
    await sink.finish([first, second], answered=True)
    assert not slack.messages[first].has_feedback_buttons
    assert slack.messages[second].has_feedback_buttons
    assert slack.messages[second].text == "Part two, end."
    buttons = slack.messages[second].blocks[-1]["elements"][0]
    assert buttons["positive_button"]["value"] == "positive"
    assert buttons["negative_button"]["value"] == "negative"


async def test_no_feedback_buttons_on_a_notice(slack: FakeSlack, api: SlackApi) -> None:
    sink = make_sink(api, buttons=True)
    ts = await sink.post("Sorry, that did not work.", final=True)
    await sink.finish([ts], answered=False)
    assert not slack.messages[ts].has_feedback_buttons
    assert slack.calls_to("chat.update") == []


async def test_a_reader_stopping_the_stream_stops_the_answer_and_its_end_still_lands(
    slack: FakeSlack, api: SlackApi
) -> None:
    stops: list[str] = []
    sink = make_sink(api, buttons=True, on_stopped=lambda: stops.append("stop"))
    ts = await sink.post("Start", final=False)
    await slack.press_stop("C0CHAN", THREAD, deliver=False)
    await sink.edit(ts, "Start more", final=False)  # appendStream: stopped_by_user
    assert stops == ["stop"]
    await sink.edit(ts, "Start more\n\n_(Stopped.)_", final=True)
    await sink.finish([ts], answered=True)
    assert stops == ["stop"]  # reported once
    assert slack.thread_texts("C0CHAN", THREAD) == ["Start more\n\n_(Stopped.)_"]
    message = slack.messages[ts]
    assert message.has_feedback_buttons and message.source == "stream"
    assert [c.method for c in slack.calls_to("chat.appendStream")] == ["chat.appendStream"]
    assert slack.calls_to("chat.update", ok=True)


async def test_a_stopped_message_that_refuses_edits_gets_the_rest_in_the_thread(
    slack: FakeSlack, api: SlackApi
) -> None:
    sink = make_sink(api, on_stopped=lambda: None)
    ts = await sink.post("Partial", final=False)
    await slack.press_stop("C0CHAN", THREAD, deliver=False)
    slack.fail_next("chat.update", "cant_update_message")
    final = "Partial\n\n_(Stopped.)_"
    for _ in range(3):  # the renderer calls again when a part continues in a new message
        try:
            await sink.edit(ts, final, final=True)
            break
        except PlatformError:
            continue
    await sink.finish(sink.part_ids, answered=True)
    assert "".join(slack.thread_texts("C0CHAN", THREAD)) == final
    assert slack.thread_texts("C0CHAN", THREAD)[0] == "Partial"


async def test_text_over_one_call_is_sent_in_several_calls(
    slack: FakeSlack, api: SlackApi
) -> None:
    sink = make_sink(api)
    slack.tiers = Tiers(limits={})  # unpaced here: the renderer's pacing is not in this test
    text = "&" * 5000  # 25,000 characters once escaped: over 12,000 per call
    ts = await sink.post(text, final=False)
    for _ in range(10):  # the renderer calls again while the answer continues
        try:
            await sink.edit(ts, text + "<" * 3000, final=True)
            break
        except PlatformError:
            continue
    assert all(len(c.args.get("markdown_text", "")) <= 12_000 for c in slack.calls)
    # No Slack message holds more than a safe size: the answer spans several.
    assert all(len(m.raw) <= 3_900 for m in slack.thread("C0CHAN", THREAD))
    assert "".join(slack.thread_texts("C0CHAN", THREAD)) == text + "<" * 3000
    assert all(c.ok for c in slack.calls)


async def test_budgets_follow_slack_tiers_per_workspace(api: SlackApi) -> None:
    sink = make_sink(api)
    assert sink.budget("post").key == "slack:T0TEAM:chat.startStream"
    assert sink.budget("post").interval == pytest.approx(60 / 18)
    assert sink.budget("post", final=True).key == "slack:T0TEAM:C0CHAN:chat.postMessage"
    assert sink.budget("post", final=True).interval == pytest.approx(1.1)
    ts = await sink.post("x", final=False)
    assert sink.budget("edit").key == "slack:T0TEAM:chat.appendStream"
    assert sink.budget("edit").interval == pytest.approx(60 / 90)
    assert sink.budget("edit", final=True).key == "slack:T0TEAM:chat.stopStream"
    await sink.edit(ts, "xy", final=True)
    assert sink.budget("edit").key == "slack:T0TEAM:chat.update"
    assert sink.budget("edit").interval == pytest.approx(60 / 45)


async def test_finish_stops_a_stream_left_open(slack: FakeSlack, api: SlackApi) -> None:
    sink = make_sink(api)
    ts = await sink.post("Half an answer", final=False)
    await sink.finish([ts], answered=False)
    assert not slack.messages[ts].streaming
    assert methods(slack)[-1] == "chat.stopStream"


async def test_delete_removes_a_part_and_tolerates_a_gone_one(
    slack: FakeSlack, api: SlackApi
) -> None:
    sink = make_sink(api, stream=False)
    ts = await sink.post("Old part", final=True)
    await sink.delete(ts)
    assert slack.messages[ts].deleted
    await sink.delete(ts)  # already gone: not an error
    assert sink.part_ids == ()


async def test_regenerate_edits_existing_messages_it_did_not_post(
    slack: FakeSlack, api: SlackApi
) -> None:
    original = make_sink(api, stream=False)
    ts = await original.post("First answer", final=True)
    again = make_sink(api, stream=False)
    await again.edit(ts, "Second answer ▌", final=False)
    await again.edit(ts, "Second answer", final=True)
    assert slack.messages[ts].text == "Second answer"
