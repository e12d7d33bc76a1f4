"""SlackSink against Slack's limits: streams rolled over before they expire or grow too long,
and msg_too_long / message_not_in_streaming_state / streaming_state_conflict at any step
still ending with the exact answer across the thread (issue 13)."""

from __future__ import annotations

from typing import Any

import pytest

from adapters.slack.markup import escape
from adapters.slack.sink import ReplyTarget, SlackApi, SlackPacing, SlackSink
from bridge.core.errors import PlatformError, PlatformRateLimited
from bridge.core.ports import PROGRESS_MARK
from tests.fakes.slack import FakeSlack, SlackCall, Tiers

THREAD = "1700000000.000100"
PACING = SlackPacing()


class Now:
    """One clock for the sink and the fake Slack."""

    def __init__(self) -> None:
        self.t = 1000.0

    def __call__(self) -> float:
        return self.t


@pytest.fixture(autouse=True)
def no_tiers(slack: FakeSlack) -> None:
    """The renderer's pacing is not in these tests; Slack's tiers are (test_sink.py)."""
    slack.tiers = Tiers(limits={})


def make_sink(api: SlackApi, now: Now, *, thread: str | None = THREAD, buttons: bool = False,
              channel: str = "C0CHAN", rollover: float = 240.0) -> SlackSink:
    return SlackSink(
        api=api, retrying_api=api,
        target=ReplyTarget(workspace="T0TEAM", channel=channel, thread_ts=thread,
                           asker="U0ASKER"),
        stream=True, feedback_buttons=buttons, pacing=PACING, stream_rollover=rollover,
        now=now,
    )


async def write(sink: SlackSink, ts: str, text: str, *, final: bool) -> None:
    """One renderer step: the renderer calls again after a refused call (paced)."""
    for _ in range(10):
        try:
            await sink.edit(ts, text, final=final)
            return
        except PlatformRateLimited:
            raise
        except PlatformError:
            continue
    raise AssertionError("the sink never finished writing")


def assert_complete(slack: FakeSlack, channel: str, thread: str | None, answer: str) -> None:
    messages = slack.thread(channel, thread)
    assert "".join(m.text for m in messages) == answer
    assert all(m.text.strip() for m in messages), "a message was left empty"
    assert not any(PROGRESS_MARK in m.text for m in messages), "a progress mark was left"
    assert not any(m.streaming for m in messages), "a stream was left open"


def words(n: int) -> str:
    return "".join(f"word{i} " for i in range(n))


async def test_a_stream_is_rolled_over_before_slack_ends_it(
    slack: FakeSlack, api: SlackApi
) -> None:
    now = Now()
    slack.clock, slack.stream_ttl = now, 10.0  # a Slack that ends streams after 10 s
    sink = make_sink(api, now, rollover=6.0)
    answer = words(40)
    ts = await sink.post(answer[:30], final=False)
    now.t += 1
    await write(sink, ts, answer[:60], final=False)
    assert sink.budget("edit").key == "slack:T0TEAM:chat.appendStream"
    now.t += 6 - PACING.stop_stream  # due one stop slot before the rollover age
    # The next call is the stop, paced on the stop budget, with the text so far.
    assert sink.budget("edit").key == "slack:T0TEAM:chat.stopStream"
    await write(sink, ts, answer[:90], final=False)
    assert slack.messages[ts].text == answer[:90] and not slack.messages[ts].streaming
    # Then a new message in the thread, paced as a start.
    assert sink.budget("edit").key == "slack:T0TEAM:chat.startStream"
    now.t += 1
    await write(sink, ts, answer[:150], final=False)
    now.t += 2
    await write(sink, ts, answer, final=True)
    assert [c.error for c in slack.calls if not c.ok] == []
    assert len(slack.thread("C0CHAN", THREAD)) == 2
    assert_complete(slack, "C0CHAN", THREAD, answer)
    assert sink.part_ids == tuple(m.ts for m in slack.thread("C0CHAN", THREAD))


async def test_a_stream_stops_before_it_grows_past_a_safe_size(
    slack: FakeSlack, api: SlackApi
) -> None:
    now = Now()
    slack.clock = now
    sink = make_sink(api, now)
    answer = words(1200)  # about 10,000 characters in one renderer part
    ts = await sink.post(answer[:100], final=False)
    for end in range(1000, len(answer), 1500):
        await write(sink, ts, answer[:end], final=False)
    await write(sink, ts, answer, final=True)
    messages = slack.thread("C0CHAN", THREAD)
    assert len(messages) >= 3
    assert all(len(m.raw) <= 3_900 for m in messages)
    assert [c.error for c in slack.calls if not c.ok] == []
    assert_complete(slack, "C0CHAN", THREAD, answer)


@pytest.mark.parametrize("step", ["append", "stop"])
async def test_msg_too_long_on_a_stream_continues_in_new_messages(
    slack: FakeSlack, api: SlackApi, step: str
) -> None:
    now = Now()
    slack.clock, slack.max_message_chars = now, 1000
    sink = make_sink(api, now)
    answer = words(300) + "& <b> done."
    ts = await sink.post(answer[:200], final=False)
    if step == "append":
        await write(sink, ts, answer[:1500], final=False)
    await write(sink, ts, answer, final=True)
    assert slack.calls_to("chat.appendStream", ok=False) or slack.calls_to(
        "chat.stopStream", ok=False)
    assert any(c.error == "msg_too_long" for c in slack.calls)
    assert all(len(m.raw) <= 1000 for m in slack.thread("C0CHAN", THREAD))
    assert_complete(slack, "C0CHAN", THREAD, answer)


async def test_msg_too_long_on_post_and_update_leaves_no_progress_mark(
    slack: FakeSlack, api: SlackApi
) -> None:
    now = Now()
    slack.clock, slack.max_message_chars = now, 1000
    sink = make_sink(api, now, thread=None, channel="D0DM")
    answer = words(400)
    ts = await sink.post(answer[:300] + PROGRESS_MARK, final=False)
    await write(sink, ts, answer[:1800] + PROGRESS_MARK, final=False)
    await write(sink, ts, answer[:2500] + PROGRESS_MARK, final=False)
    await write(sink, ts, answer, final=True)
    assert any(c.error == "msg_too_long" for c in slack.calls_to("chat.update"))
    assert_complete(slack, "D0DM", None, answer)


async def test_msg_too_long_on_the_first_post_splits_it(
    slack: FakeSlack, api: SlackApi
) -> None:
    now = Now()
    slack.clock, slack.max_message_chars = now, 1000
    sink = make_sink(api, now, thread=None, channel="D0DM")
    answer = words(300)
    await sink.post(answer, final=True)
    assert slack.calls_to("chat.postMessage", ok=False)[0].error == "msg_too_long"
    assert_complete(slack, "D0DM", None, answer)
    assert len(sink.part_ids) >= 3


async def test_a_first_post_refused_half_way_is_continued_not_posted_again(
    slack: FakeSlack, api: SlackApi
) -> None:
    """A long first post goes out in several messages; when Slack refuses a later one, the
    renderer's next call must continue after the pieces already shown, not post them twice."""
    now = Now()
    slack.clock, slack.max_message_chars = now, 1000
    sink = make_sink(api, now, thread=None, channel="D0DM")
    answer = words(300)
    # Two calls are refused as too long (the cap halves twice); of the pieces, the second fails.
    slack.fail_next("chat.postMessage", "internal_error", after=3)
    with pytest.raises(PlatformError):
        await sink.post(answer, final=True)
    for _ in range(10):  # the renderer posts again after a refused call (paced)
        try:
            ts = await sink.post(answer, final=True)
            break
        except PlatformError:
            continue
    assert_complete(slack, "D0DM", None, answer)
    assert ts == slack.thread("D0DM", None)[0].ts


async def test_a_stop_that_keeps_failing_does_not_lose_the_final_text(
    slack: FakeSlack, api: SlackApi
) -> None:
    now = Now()
    slack.clock = now
    sink = make_sink(api, now, buttons=True)
    ts = await sink.post("The answer starts", final=False)
    slack.fail_next("chat.stopStream", "internal_error", times=10)
    await write(sink, ts, "The answer starts and ends here.", final=True)
    # chat.update on the still-live stream is refused (streaming_state_conflict), so the
    # rest went into a new message.
    assert slack.calls_to("chat.update", ok=False)[0].error == "streaming_state_conflict"
    await sink.finish(sink.part_ids[:1], answered=True)
    assert "".join(slack.thread_texts("C0CHAN", THREAD)) == "The answer starts and ends here."
    assert all(t.strip() for t in slack.thread_texts("C0CHAN", THREAD))
    assert slack.thread("C0CHAN", THREAD)[-1].has_feedback_buttons


async def test_an_expired_stream_at_any_step_still_ends_complete(
    slack: FakeSlack, api: SlackApi
) -> None:
    now = Now()
    slack.clock, slack.stream_ttl, slack.max_message_chars = now, 5.0, 1000
    sink = make_sink(api, now, rollover=240.0)  # rollover too late on purpose
    answer = words(200)
    ts = await sink.post(answer[:100], final=False)
    now.t += 6
    await write(sink, ts, answer[:900], final=False)  # append: not in streaming state
    await write(sink, ts, answer, final=True)  # update: too long -> new message
    assert slack.calls_to("chat.appendStream", ok=False)[0].error == (
        "message_not_in_streaming_state")
    assert_complete(slack, "C0CHAN", THREAD, answer)


async def test_feedback_buttons_ride_on_the_stop(slack: FakeSlack, api: SlackApi) -> None:
    now = Now()
    slack.clock = now
    sink = make_sink(api, now, buttons=True)
    ts = await sink.post("Hello", final=False)
    await write(sink, ts, "Hello, world.", final=True)
    await sink.finish([ts], answered=True)
    stop = slack.calls_to("chat.stopStream")[0].args
    assert stop["blocks"][0]["type"] == "context_actions"
    assert slack.calls_to("chat.update") == []
    assert slack.messages[ts].has_feedback_buttons
    assert slack.messages[ts].text == "Hello, world."


async def test_buttons_on_a_stop_are_taken_back_when_the_reply_was_not_an_answer(
    slack: FakeSlack, api: SlackApi
) -> None:
    now = Now()
    slack.clock = now
    sink = make_sink(api, now, buttons=True)
    ts = await sink.post("Half an answer", final=False)
    await write(sink, ts, "Half an answer\n\n(cut off)", final=True)
    await sink.finish([ts], answered=False)
    assert not slack.messages[ts].has_feedback_buttons
    assert slack.messages[ts].text == "Half an answer\n\n(cut off)"


async def test_escaped_text_counts_towards_the_size(slack: FakeSlack, api: SlackApi) -> None:
    now = Now()
    slack.clock = now
    sink = make_sink(api, now)
    answer = "&" * 3000  # 15,000 characters once escaped
    ts = await sink.post(answer[:10], final=False)
    await write(sink, ts, answer, final=True)
    assert all(len(m.raw) <= 3_900 for m in slack.thread("C0CHAN", THREAD))
    assert "".join(m.raw for m in slack.thread("C0CHAN", THREAD)) == escape(answer)
    assert_complete(slack, "C0CHAN", THREAD, answer)


async def test_unpaced_recovery_calls_only_follow_a_refusal_and_are_bounded(
    slack: FakeSlack, api: SlackApi
) -> None:
    """Every post()/edit() is one paced call; the calls a recovery adds inside it come only
    after Slack refused a call, at most two per refusal, and msg_too_long recurs at most
    three times per reply (the sink's comment on recovery calls and the budgets)."""
    now = Now()
    slack.clock, slack.max_message_chars = now, 1000
    answer = words(700)  # ~6,300 characters
    per_call: list[list[SlackCall]] = []

    async def step(call: Any) -> Any:
        before = len(slack.calls)
        try:
            return await call
        finally:
            per_call.append(slack.calls[before:])

    streamed = make_sink(api, now)
    ts = await step(streamed.post(answer[:50], final=False))
    slack.fail_next("chat.appendStream", "streaming_state_conflict")
    for end in [*range(400, len(answer), 400), len(answer)]:
        final = end == len(answer)
        for _ in range(10):
            try:
                await step(streamed.edit(ts, answer[:end], final=final))
                break
            except PlatformError:
                continue
    assert_complete(slack, "C0CHAN", THREAD, answer)

    posted = make_sink(api, now, thread=None, channel="D0DM")
    await step(posted.post(answer[:3_000], final=True))  # split after two refusals
    assert "".join(slack.thread_texts("D0DM", None)) == answer[:3_000]

    for calls in per_call:
        refused = [c for c in calls if not c.ok]
        posts = [c for c in calls if c.ok and c.method == "chat.postMessage"]
        extra = len(calls) - 1 - max(0, len(posts) - 1)
        assert extra <= 2 * len(refused), [(c.method, c.error) for c in calls]
        if calls and len(calls) > 1:
            assert not calls[0].ok or calls[0].method == "chat.postMessage"
        assert len(posts) <= 4
    too_long = [c for c in slack.calls if c.error == "msg_too_long"]
    assert 0 < len(too_long) <= 3 * 2  # three halvings per reply, two replies
