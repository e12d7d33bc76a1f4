"""Exactly once and in order: redeliveries and replicas seeing the same events, rapid messages
in one conversation, and shutdown with many answers in flight."""

from __future__ import annotations

import asyncio
import random
from collections import defaultdict

from bridge.core import notices
from tests.fakes.chatbase import Answer, Gate
from tests.fakes.harness import counter_value
from tests.fakes.sink import RecordingSink
from tests.fakes.slack import event_envelope, message_event
from tests.reliability.keyspace import turn_queue_watch
from tests.reliability.rig import rig
from tests.reliability.slack_rig import slack_rig

EVENTS = 1000


async def test_a_thousand_events_delivered_two_to_four_times_across_two_replicas(
    redis_url: str, redis_prefix: str
) -> None:
    chance = random.Random(8)
    async with rig(redis_url, redis_prefix, replicas=2, BRIDGE_USER_QUOTA=0,
                   BRIDGE_CHATBASE_RATE_LIMIT=100_000) as r:
        messages = [r.message(f"question {n}", user=f"U{n}", event_id=f"Ev{n:05d}")
                    for n in range(EVENTS)]
        deliveries = [(m, chance.randrange(2)) for m in messages
                      for _ in range(chance.randint(2, 4))]
        chance.shuffle(deliveries)
        sinks: dict[str, list[RecordingSink]] = defaultdict(list)
        # A bounded number of deliveries in flight at once, like a busy event loop.
        queue: asyncio.Queue[int] = asyncio.Queue()
        for index in range(len(deliveries)):
            queue.put_nowait(index)

        async def worker() -> None:
            while not queue.empty():
                message, replica = deliveries[queue.get_nowait()]
                sink = r.sink()
                sinks[message.event_id].append(sink)
                await r.replicas[replica].service.handle_message(message, sink)

        await asyncio.gather(*(worker() for _ in range(64)))

        assert len(r.fake.chat_calls) == EVENTS
        for message in messages:
            answered = [s for s in sinks[message.event_id] if s.calls]
            assert len(answered) == 1, message.event_id
            assert answered[0].joined() == f"Echo: {message.text}"
        duplicates = sum(counter_value(rep.metrics, "bridge_events", platform="slack",
                                       result="duplicate")
                         for rep in r.replicas)
        assert duplicates == len(deliveries) - EVENTS


async def test_slack_redeliveries_to_two_replicas_over_http_are_answered_once(
    redis_url: str, redis_prefix: str
) -> None:
    chance = random.Random(3)
    async with slack_rig(redis_url, redis_prefix, replicas=2) as r:
        bodies = [event_envelope(message_event(text=f"once {n}", ts=f"17000000{n:02d}.000100",
                                               channel=f"D0DM{n:02d}", user=f"U0U{n:02d}"))
                  for n in range(20)]
        sends = []
        for body in bodies:
            for attempt in range(chance.randint(2, 4)):
                # Slack numbers its retries 1-3; the first delivery has no header.
                sends.append(r.deliver(body, replica=chance.randrange(2),
                                       retry_num=attempt or None))
        chance.shuffle(sends)
        delivered = await asyncio.gather(*sends)
        assert {d.status for d in delivered} == {200}
        await r.idle()
        assert len(r.chatbase.chat_calls) == len(bodies)
        for n in range(20):
            assert r.slack.thread_texts(f"D0DM{n:02d}", None) == [f"Echo: once {n}"]
        assert r.slack.rate_limited == []


async def test_rapid_messages_in_one_conversation_are_answered_in_order(
    redis_url: str, redis_prefix: str
) -> None:
    async with turn_queue_watch(redis_url, redis_prefix) as queued, \
            slack_rig(redis_url, redis_prefix, replicas=2) as r:
        gate = Gate()
        r.chatbase.script(Answer(text="first answer", gate=gate))
        texts = [f"message {n}" for n in range(8)]
        for n, text in enumerate(texts):
            body = event_envelope(message_event(text=text, ts=f"1700000{n:03d}.000100"))
            await r.deliver(body, replica=n % 2)
            # Sent as a person types: each is in line before the next one is written.
            await queued.wait(n + 1)
        assert [c.body["message"] for c in r.chatbase.chat_calls] == ["message 0"]
        gate.open()
        await r.idle()
        calls = r.chatbase.chat_calls
        assert [c.body["message"] for c in calls] == texts
        conversation = next(iter(r.chatbase.conversations))
        assert all(c.body.get("conversationId") == conversation for c in calls[1:])
        assert r.slack.thread_texts("D0DM", None) == [
            "first answer", *(f"Echo: {t}" for t in texts[1:])]


async def test_drain_with_twenty_answers_in_flight_finishes_or_marks_every_one(
    redis_url: str, redis_prefix: str
) -> None:
    async with rig(redis_url, redis_prefix, BRIDGE_USER_QUOTA=0) as r:
        gates = [Gate() for _ in range(20)]
        r.fake.script(*(Answer(deltas=[f"Answer {i} begins ", "and ends."], gate=g)
                        for i, g in enumerate(gates)))
        sinks = [r.sink(key=f"fake:{i}") for i in range(20)]
        tasks = []
        for i, sink in enumerate(sinks):
            tasks.append(asyncio.create_task(
                r.service.handle_message(r.message(f"q{i}", user=f"U{i}"), sink)))
            await r.fake.wait_requests(i + 1, endpoint="chat")
            gates[i].release(1)
            await sink.wait_calls(1, "post")
        assert r.service.in_flight == 20

        drained = asyncio.create_task(r.service.drain(1.0))
        for gate in gates[:10]:  # these finish within the grace period
            gate.open()
        await drained
        await asyncio.gather(*tasks, return_exceptions=True)

        cut = notices.CUT_OFF.format(reason=notices.SHUTTING_DOWN)
        finished = [s.joined() for s in sinks[:10]]
        stopped = [s.joined() for s in sinks[10:]]
        assert finished == [f"Answer {i} begins and ends." for i in range(10)]
        assert stopped == [f"Answer {i} begins \n\n{cut}" for i in range(10, 20)]
        assert [s.answered for s in sinks] == [True] * 10 + [False] * 10
        assert all(s.finished.is_set() and "▌" not in s.joined() for s in sinks)
        assert r.service.in_flight == 0 and r.outcome("cut_off") == 10
        # Once draining, a new message is told to come back rather than dropped silently.
        late = r.sink()
        await r.service.handle_message(r.message("too late"), late)
        assert "restarting" in late.joined() and len(r.fake.chat_calls) == 20
