"""Slack's limits end to end (issue 13): signed ``/slack/events`` → Bolt → RelayService (real
Redis) → the real SlackAdapter's sinks → a fake Slack that ends streams after a few seconds,
or refuses messages over a size with ``msg_too_long``; the fake Chatbase streams a long
answer one paragraph at a time. Each ends with the agent's exact answer across the thread,
and feedback still reaches Chatbase from a later message of that answer."""

from __future__ import annotations

import time

from tests.fakes.chatbase import Answer, Gate
from tests.fakes.slack import block_action, event_envelope, mention_event, reaction_event
from tests.fakes.slack_stack import SlackStack, slack_stack

TS = "1700000001.000100"
PARAGRAPHS = [f"Paragraph {i}: " + "lorem ipsum dolor sit amet & <more> " * 7
              for i in range(24)]
ANSWER = "\n\n".join(PARAGRAPHS)  # about 6,800 characters, ~8,000 escaped
DELTAS = [p + "\n\n" for p in PARAGRAPHS[:-1]] + [PARAGRAPHS[-1]]


class SteppedClock:
    """Monotonic time that the test can move forward (never back): stream ages on both sides
    of the wire jump at once, while the renderer's pacing keeps running on real time."""

    def __init__(self) -> None:
        self.offset = 0.0

    def __call__(self) -> float:
        return time.monotonic() + self.offset

    def advance(self, seconds: float) -> None:
        self.offset += seconds


def shown(stack: SlackStack) -> str:
    return "".join(stack.slack.thread_texts("C0CHAN", TS))


async def ask_and_stream(stack: SlackStack, *, step: float = 0.0,
                         clock: SteppedClock | None = None,
                         stall_at: int | None = None) -> None:
    """Ask; let the answer out one paragraph at a time, each shown before the next leaves
    (and, with a clock, ``step`` seconds of stream age between them; ``stall_at`` a pause
    longer than Slack keeps a stream)."""
    gate = Gate()
    stack.chatbase.script(Answer(text=ANSWER, deltas=DELTAS, gate=gate))
    await stack.deliver(event_envelope(mention_event(text="<@UBOT> tell me all", ts=TS)))
    for index in range(len(DELTAS)):
        if clock is not None and index:
            clock.advance(30.0 if index == stall_at else step)
        gate.release(1)
        await stack.slack.wait_for(
            lambda n=index: f"Paragraph {n}:" in shown(stack), within=15.0)
    await stack.idle()


def assert_complete(stack: SlackStack) -> list[str]:
    messages = stack.slack.thread("C0CHAN", TS)
    texts = [m.text for m in messages]
    assert "".join(texts) == ANSWER
    assert all(t.strip() for t in texts), "a message was left empty"
    assert not any("▌" in t for t in texts), "a progress mark was left"
    assert not any(m.streaming for m in messages), "a stream was left open"
    assert stack.slack.rate_limited == []
    return [m.ts for m in messages]


async def assert_feedback_on_later_messages(stack: SlackStack, parts: list[str]) -> None:
    """The last message carries the buttons and a press counts; a 👎 on a middle message
    counts too: every message of the answer maps to the same Chatbase message."""
    last = stack.slack.messages[parts[-1]]
    assert last.has_feedback_buttons
    assert not any(stack.slack.messages[ts].has_feedback_buttons for ts in parts[:-1])
    pressed = await stack.interact(block_action(value="positive", channel="C0CHAN",
                                                message_ts=parts[-1]))
    assert pressed.status == 200
    await stack.idle()
    await stack.deliver(event_envelope(reaction_event(reaction="-1", channel="C0CHAN",
                                                      ts=parts[1])))
    await stack.idle()
    assert [c.feedback for c in stack.chatbase.feedback_calls] == ["positive", "negative"]
    [conversation] = stack.chatbase.conversations.values()
    answer = [m for m in conversation.messages if m.role == "assistant"][-1]
    assert {c.message_id for c in stack.chatbase.feedback_calls} == {answer.id}


async def test_streams_that_slack_ends_after_seconds_are_rolled_over(
    redis_url: str, redis_prefix: str
) -> None:
    # Slack ends these streams 3 s after they start; the bridge rolls over at 2 s (the
    # setting has no lower bound beyond > 0). One pause outlives a stream all the same.
    clock = SteppedClock()
    async with slack_stack(redis_url, redis_prefix, fake={"stream_ttl": 3.0},
                           stream_clock=clock, BRIDGE_SLACK_FEEDBACK_BUTTONS="true",
                           BRIDGE_SLACK_STREAM_ROLLOVER_SECONDS="2") as stack:
        await ask_and_stream(stack, step=0.5, clock=clock, stall_at=len(DELTAS) // 2)
        parts = assert_complete(stack)
        slack = stack.slack
        # Rolled over by age, not only by size (~8,000 escaped characters fit in 3 parts).
        assert len(slack.calls_to("chat.startStream", ok=True)) >= 5
        # The stall: Slack had ended that stream; the bridge finished it with chat.update.
        assert [c.error for c in slack.calls if c.error == "message_not_in_streaming_state"]
        assert slack.calls_to("chat.update", ok=True)
        await assert_feedback_on_later_messages(stack, parts)


async def test_a_slack_that_refuses_long_messages_gets_the_answer_in_shorter_ones(
    redis_url: str, redis_prefix: str
) -> None:
    async with slack_stack(redis_url, redis_prefix, fake={"max_message_chars": 1_000},
                           BRIDGE_SLACK_FEEDBACK_BUTTONS="true") as stack:
        await ask_and_stream(stack)
        parts = assert_complete(stack)
        slack = stack.slack
        assert [c for c in slack.calls if c.error == "msg_too_long"]
        assert all(len(m.raw) <= 1_000 for m in slack.thread("C0CHAN", TS))
        await assert_feedback_on_later_messages(stack, parts)
