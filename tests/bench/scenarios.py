"""The benchmark's scenarios; each returns the numbers behind one or more figures."""

from __future__ import annotations

import asyncio
import contextlib
import gc
import itertools
import json
import os
import statistics
import time
import tracemalloc
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import aiohttp
import psutil
import redis.asyncio as aioredis

from adapters.discord.adapter import DiscordAdapter
from adapters.discord.sink import DEFAULT_INTERVAL
from adapters.slack.sink import SlackPacing
from tests.bench.answers import answer_for, answer_text, question
from tests.bench.instrument import AnswerRecord, DeltaCounter, percentile
from tests.bench.load import Bridge, Floor, Window, ask, closed_loop
from tests.bench.procs import StreamSource, helper_process
from tests.fakes.chatbase import Answer
from tests.fakes.discord_stack import RATE_WINDOW, DiscordStack, discord_stack
from tests.fakes.harness import counter_value
from tests.fakes.slack import FakeSlack, Tiers, event_envelope, mention_event
from tests.fakes.slack_stack import JITTER as SLACK_JITTER
from tests.fakes.slack_stack import slack_stack

# The Discord test stack's fake counts 5 writes per RATE_WINDOW (5 s scaled down).
DISCORD_SCALE = RATE_WINDOW / 5.0


@dataclass(frozen=True)
class Profile:
    """Sizes of one run. ``full`` is the documented run; ``smoke`` checks the harness."""

    name: str
    rounds: int = 3  # each timing figure is measured this many times (median or worst)
    platform_runs: int = 10  # consecutive runs of each 429 scenario
    ttft: float = 0.3  # time to the first token, seconds
    delay: float = 0.02  # between two deltas of one answer: 50 deltas/s, a model's pace
    words: int = 200  # deltas per answer (about 1,300 characters)
    latency: float = 0.05  # platform call latency, seconds
    interval: float = 1.0  # platform budget per channel (Discord: 5 writes per 5 s)
    cpu_users: int = 100
    cpu_measure: float = 8.0
    single_answers: int = 10
    single_words: int = 20
    many_users: int = 1000
    many_delay: float = 0.2  # 5 deltas/s each: 5,000 deltas/s in all
    many_words: int = 60
    many_measure: float = 6.0
    # Streams at 100 deltas/s each, stepped up until the loop lags or the rate is not met.
    tput_steps: tuple[int, ...] = (100, 150, 220, 330, 500, 750)
    tput_delay: float = 0.01
    tput_words: int = 300
    tput_measure: float = 5.0
    mem_answers: int = 1000
    mem_hold: int = 30
    mem_spread: float = 3.0  # seconds over which the parked answers arrive
    turns_users: int = 20
    platform_answers: int = 50
    platform_words: int = 200
    cadence_words: int = 160
    cadence_delay: float = 0.05
    replica_counts: tuple[int, ...] = (1, 2, 3)
    replica_answers: int = 48  # one Slack workspace: the platform's budget is the bound
    replica_cpu_answers: int = 600  # a workspace each, streamed at once: CPU is the bound
    replica_cpu_words: int = 60


FULL = Profile(name="full")
SMOKE = Profile(
    name="smoke", rounds=1, platform_runs=1, words=40, delay=0.01, cpu_users=8,
    cpu_measure=1.0, single_answers=3, single_words=10, many_users=30, many_words=20,
    many_delay=0.02, many_measure=1.0, tput_steps=(10, 20), tput_words=40, tput_measure=1.0,
    mem_answers=10, mem_hold=5, mem_spread=0.2, turns_users=4, platform_answers=5,
    platform_words=20, cadence_words=30, replica_counts=(1, 2), replica_answers=6,
    replica_cpu_answers=12, replica_cpu_words=10,
)


@dataclass
class Tally:
    """Every answer the benchmark checked against the agent's text."""

    checked: int = 0
    wrong: int = 0
    problems: list[str] = field(default_factory=list)

    def check(self, scenario: str, final: str | None, expected: str,
              problem: str | None = None) -> None:
        self.checked += 1
        if problem is None and final != expected:
            problem = "final text differs from the agent's answer"
        if problem is None and final is not None and "▌" in final:
            problem = "progress mark left in the final text"
        if problem is not None:
            self.wrong += 1
            if len(self.problems) < 20:
                shown = (final or "")[-80:]
                self.problems.append(f"{scenario}: {problem} (ends with {shown!r})")

    def records(self, scenario: str, records: list[AnswerRecord]) -> None:
        for record in records:
            self.check(scenario, record.final, record.expected, record.problem())


@dataclass
class Context:
    bridge: Bridge
    redis_url: str
    profile: Profile
    tally: Tally
    progress: Callable[[str], None]
    uvloop: bool = False


_round = itertools.count()


def _fresh() -> int:
    """The first of a range of people nobody asked as yet: each round starts new
    conversations, as the first did (the fake forgets its conversations between rounds)."""
    return 2_000_000 + next(_round) * 100_000


def _ms(value: float | None) -> float | None:
    return None if value is None else round(value * 1000, 2)


def _answer_seconds(p: Profile, words: int, delay: float) -> float:
    return p.ttft + words * delay


async def _configure(ctx: Context, **settings: Any) -> None:
    server = ctx.bridge.server
    await server.reset()
    await server.configure(**{"first_token_delay": ctx.profile.ttft,
                              "platform_latency": ctx.profile.latency, **settings})


def _in_window(records: list[AnswerRecord], window: Window) -> list[AnswerRecord]:
    return [r for r in records
            if r.first_delta_at is not None and window.start <= r.first_delta_at <= window.end]


def _latency(records: list[AnswerRecord]) -> dict[str, Any]:
    values = [r.added_latency for r in records if r.added_latency is not None]
    return {"answers": len(values), "p50_ms": _ms(percentile(values, 0.5)),
            "p99_ms": _ms(percentile(values, 0.99)), "max_ms": _ms(max(values, default=None))}


def _calls(records: list[AnswerRecord]) -> float | None:
    """Platform calls carrying text per answer."""
    return round(statistics.mean(len(r.text_calls) for r in records), 1) if records else None


def _update_gap(records: list[AnswerRecord]) -> float | None:
    """The median time between two text calls of one answer while it streams (the final
    call, made once the stream ends, apart): how often a reader saw the answer grow."""
    gaps = [later - earlier for r in records
            for earlier, later in itertools.pairwise(r.text_calls[:-1])]
    return percentile(gaps, 0.5) if gaps else None


def _load(window: Window) -> dict[str, Any]:
    seconds = window.seconds or 1e-9
    return {
        "window_s": round(window.seconds, 2),
        "deltas_per_s": round(window.deltas / seconds),
        "cpu_util": round(window.cpu / seconds, 3),
        "cpu_us_per_delta": round(window.cpu / max(1, window.deltas) * 1e6, 1),
        "loop_lag_p50_ms": _ms(percentile(window.lag, 0.5)),
        "loop_lag_p99_ms": _ms(percentile(window.lag, 0.99)),
        "loop_lag_max_ms": _ms(max(window.lag, default=None)),
    }


# --------------------------------------------------------------------------- round trips


async def round_trips(ctx: Context) -> dict[str, Any]:
    """Whole turns, counted: Store round trips minus the pacer's, and the pacer's per call."""
    p, b = ctx.profile, ctx.bridge
    await _configure(ctx, first_token_delay=0.0, delta_delay=0.0)
    # Scripts load on first use (one extra trip each, once per Redis server): not a turn cost.
    ctx.tally.records("warm-up", [await ask(b, _fresh(), 10, interval=p.interval)])
    trips, paced = b.round_trips, b.slots.calls
    records: list[AnswerRecord] = []
    first = _fresh()
    users = range(first, first + p.turns_users)
    for _ in range(2):  # a new conversation, then a follow-up in it
        records += await asyncio.gather(*(ask(b, u, 30, interval=p.interval) for u in users))
    ctx.tally.records("round trips", records)
    turns = len(records)
    pacing = b.slots.calls - paced
    store_trips = b.round_trips - trips - pacing
    paced_calls = sum(len(r.text_calls) for r in records)
    return {
        "turns": turns,
        "per_turn": round(store_trips / turns, 2),
        "pacing_per_turn": round(pacing / turns, 2),
        "pacing_per_platform_call": round(pacing / max(1, paced_calls), 2),
        "platform_text_calls_per_turn": round(paced_calls / turns, 2),
    }


# --------------------------------------------------------------------------- memory


async def memory(ctx: Context) -> dict[str, Any]:
    """``mem_answers`` answers parked mid-stream (text shown, stream open, turn held)."""
    p, b = ctx.profile, ctx.bridge
    n, hold = p.mem_answers, p.mem_hold
    await _configure(ctx, first_token_delay=0.0, delta_delay=0.0, hold_count=n,
                     hold_after=hold)
    process = psutil.Process()
    gc.collect()
    rss0 = process.memory_info().rss
    tracemalloc.start()
    traced0 = tracemalloc.get_traced_memory()[0]
    overhead0 = tracemalloc.get_tracemalloc_memory()
    records: list[AnswerRecord] = []
    tasks: list[asyncio.Task[AnswerRecord]] = []
    first = _fresh()
    try:
        # Questions arrive over a couple of seconds, as they would: a burst of n at once
        # would also measure connection pools grown for the burst, not answers.
        for i in range(n):
            tasks.append(asyncio.create_task(ask(b, first + i, p.words, interval=p.interval,
                                                 started=records)))
            await asyncio.sleep(p.mem_spread / n)
        deadline = time.monotonic() + 120
        while not (len(records) == n and all(
                r.deltas >= hold and r.first_text_at is not None for r in records)):
            if time.monotonic() > deadline or any(t.done() for t in tasks):
                parked = sum(1 for r in records if r.deltas >= hold)
                raise RuntimeError(f"only {parked} of {n} answers parked mid-stream")
            # Polling what the answers have shown: nothing in the product says "parked".
            await asyncio.sleep(0.05)
        await asyncio.sleep(p.latency * 4)  # let the first posts' responses arrive
        gc.collect()
        traced = tracemalloc.get_traced_memory()[0] - traced0
        overhead = tracemalloc.get_tracemalloc_memory() - overhead0
        rss = process.memory_info().rss - rss0 - overhead
    finally:
        tracemalloc.stop()
        await b.server.release()
        await asyncio.gather(*tasks)
    ctx.tally.records("memory", records)
    return {
        "answers": n,
        "deltas_shown_each": hold,
        "python_heap_kib_per_answer": round(traced / n / 1024, 1),
        "rss_kib_per_answer": round(rss / n / 1024, 1),
    }


# --------------------------------------------------------------------------- CPU


async def cpu(ctx: Context) -> dict[str, Any]:
    """One round: a bridge window, then a floor window right after it (same machine weather)
    under the same load from the same Chatbase; also the latency at that load."""
    p, b = ctx.profile, ctx.bridge
    await _configure(ctx, delta_delay=p.delay)
    seconds = _answer_seconds(p, p.words, p.delay)

    async def snapshot() -> dict[str, float]:
        return {"platform_calls": b.counter.platform_calls, "pacing": b.slots.calls,
                "store_trips": b.round_trips}

    ctx.progress("cpu: bridge")
    first = _fresh()
    bw = await closed_loop(
        users=p.cpu_users, answer_seconds=seconds, warm=seconds, measure=p.cpu_measure,
        one=lambda u: ask(b, first + u, p.words, interval=p.interval), counter=b.counter,
        snapshot=snapshot,
    )
    ctx.tally.records("cpu", bw.records)
    ctx.progress("cpu: floor")
    counter = DeltaCounter()
    floor = Floor(b.composed.session, b.source, counter)

    async def floor_one(user: int) -> None:
        await floor.answer(first + user, p.words)

    fw = await closed_loop(
        users=p.cpu_users, answer_seconds=seconds, warm=seconds, measure=p.cpu_measure,
        one=floor_one, counter=counter, cancel_tail=True,
    )
    bridge_us = bw.cpu / max(1, bw.deltas) * 1e6
    floor_us = fw.cpu / max(1, fw.deltas) * 1e6
    deltas = max(1, bw.deltas)
    totals = {k: bw.extra[k] for k in ("platform_calls", "pacing", "store_trips")}
    totals["store_trips"] -= totals["pacing"]
    # Calls per second of streaming (per 1/delay deltas) of one answer, besides the deltas.
    per_stream_second = {k: round(v / deltas / p.delay, 2) for k, v in totals.items()}
    return {
        "users": p.cpu_users,
        "bridge_us_per_delta": round(bridge_us, 1),
        "floor_us_per_delta": round(floor_us, 1),
        "ratio": round(bridge_us / floor_us, 2) if floor_us else None,
        "bridge": _load(bw),
        "floor": _load(fw),
        "calls_per_stream_second": {"platform": per_stream_second["platform_calls"],
                                    "pacing_redis": per_stream_second["pacing"],
                                    "turn_redis": per_stream_second["store_trips"]},
        "latency": _latency(_in_window(bw.records, bw)),
        "platform_calls_per_answer": _calls(bw.records),
        "rate_limited": sum(r.rate_limited for r in bw.records),
    }


# Request headers that differ between any two requests, whoever makes them.
_VOLATILE = frozenset({"content-length"})


async def floor_check(ctx: Context) -> dict[str, Any]:
    """The floor reads what the bridge reads: the same questions (a new conversation and a
    follow-up) asked by the bridge and by the floor, over the same session to the same
    Chatbase; the requests as the server received them (headers, body fields) must be alike
    and every answer must bring the same number of text deltas to both."""
    p, b = ctx.profile, ctx.bridge
    await _configure(ctx, first_token_delay=0.0, delta_delay=0.0)
    seeds = [1_000_001, 1_000_002]
    asker = _fresh()
    bridge_deltas: dict[int, int] = {}
    for seed in seeds:
        record = await ask(b, asker, p.words, interval=p.interval, seed=seed)
        ctx.tally.records("floor check", [record])
        bridge_deltas[seed] = record.deltas
    bridge_seen = await b.server.requests()
    await _configure(ctx, first_token_delay=0.0, delta_delay=0.0)
    floor = Floor(b.composed.session, b.source, DeltaCounter())
    for seed in seeds:
        await floor.answer(asker + 1, p.words, seed=seed)
    floor_seen = await b.server.requests()

    def shape(seen: dict[str, Any]) -> list[dict[str, Any]]:
        return [{"headers": {k: v for k, v in r["headers"].items()
                             if k.lower() not in _VOLATILE},
                 "fields": r["fields"], "path": r["path"]} for r in seen["chat"]]

    bridge_shape, floor_shape = shape(bridge_seen), shape(floor_seen)
    for one in (*bridge_shape, *floor_shape):
        # The userId names the asker (a different one each) and the conversation is each
        # one's own: the fields are compared, not their values.
        one["headers"].pop("Authorization", None)
    same_requests = bridge_shape == floor_shape
    same_deltas = bridge_deltas == floor.answers
    return {
        "same_requests": same_requests,
        "same_deltas": same_deltas,
        "ok": same_requests and same_deltas,
        "bridge_requests": bridge_shape,
        "floor_requests": floor_shape,
        "deltas": {"bridge": bridge_deltas, "floor": floor.answers},
    }


# --------------------------------------------------------------------------- latency


async def latency_single(ctx: Context) -> dict[str, Any]:
    """One answer at a time: the added latency on an idle bridge."""
    p, b = ctx.profile, ctx.bridge
    await _configure(ctx, delta_delay=p.delay)
    user = _fresh()
    records = [await ask(b, user, p.single_words, interval=p.interval)
               for _ in range(p.single_answers)]
    ctx.tally.records("latency@1", records)
    return _latency(records)


async def latency_many(ctx: Context) -> dict[str, Any]:
    """``many_users`` answers in flight at once, each at ``many_delay`` between deltas."""
    p, b = ctx.profile, ctx.bridge
    await _configure(ctx, delta_delay=p.many_delay)
    seconds = _answer_seconds(p, p.many_words, p.many_delay)
    first = _fresh()
    window = await closed_loop(
        users=p.many_users, answer_seconds=seconds, warm=seconds, measure=p.many_measure,
        one=lambda u: ask(b, first + u, p.many_words, interval=p.interval), counter=b.counter,
    )
    ctx.tally.records(f"latency@{p.many_users}", window.records)
    return {"users": p.many_users, **_latency(_in_window(window.records, window)),
            "load": _load(window), "platform_calls_per_answer": _calls(window.records),
            "update_gap_p50_ms": _ms(_update_gap(window.records))}


# --------------------------------------------------------------------------- throughput


# A step's offered rate counts as achieved when the bridge received this share of it.
ACHIEVED = 0.95
LAG_LIMIT_MS = 50.0
# Per-core throughput is only taken where the bridge used at least this much of a core.
MIN_CORE = 0.5
# The stream source at this share of a core or more may be what limits the step.
SOURCE_BUSY = 0.85


async def throughput(ctx: Context, source: StreamSource) -> dict[str, Any]:
    """Steps of more and more streams at 100 deltas/s each from the stream source (its own
    process), until the loop lag p99 exceeds 50 ms or the bridge receives less than 95 % of
    what the source offered. Per step: offered (the deltas the source's clock made due on the
    open streams) and achieved (the deltas the service received) per second, the CPU share
    of the bridge, the source and the platform process, and the loop lag. The figure is the
    best step within the lag limit that achieved its offered rate, per core of the bridge's
    CPU, taken only where the bridge used at least half a core."""
    p, b = ctx.profile, ctx.bridge
    await b.server.reset()
    await b.server.configure(platform_latency=p.latency)
    await source.configure(first_token_delay=p.ttft, delta_delay=p.tput_delay)
    seconds = _answer_seconds(p, p.tput_words, p.tput_delay)
    source_pid, server_pid = source.proc.pid, b.server.proc.pid
    steps: list[dict[str, Any]] = []
    stopped = "all steps ran"
    for users in p.tput_steps:
        ctx.progress(f"throughput: {users} streams ({round(users / p.tput_delay):,} deltas/s "
                     "nominal)")

        async def snapshot() -> dict[str, float]:
            stats = await source.stats()
            return {"source_cpu": _proc_cpu(source_pid), "server_cpu": _proc_cpu(server_pid),
                    "scheduled": stats["deltas_scheduled"], "written": stats["deltas_written"],
                    "held_back": stats["held_back"]}

        first = _fresh()

        async def one(user: int, first: int = first) -> AnswerRecord:
            return await ask(b, first + user, p.tput_words, interval=p.interval)

        window = await closed_loop(
            users=users, answer_seconds=seconds, warm=seconds, measure=p.tput_measure,
            one=one, counter=b.counter, snapshot=snapshot,
        )
        ctx.tally.records("throughput", window.records)
        load = _load(window)
        secs = window.seconds or 1e-9
        offered = window.extra["scheduled"] / secs
        written = window.extra["written"] / secs
        step = {
            "streams": users,
            "nominal_per_s": round(users / p.tput_delay),
            "offered_per_s": round(offered),
            "source_written_per_s": round(written),
            "achieved_per_s": load["deltas_per_s"],
            "bridge_cores": load["cpu_util"],
            "source_cores": round(window.extra["source_cpu"] / secs, 3),
            "platform_server_cores": round(window.extra["server_cpu"] / secs, 3),
            "source_held_back": window.extra["held_back"],
            **load,
        }
        step["achieved"] = step["achieved_per_s"] >= ACHIEVED * max(1, step["offered_per_s"])
        step["within_lag"] = (step["loop_lag_p99_ms"] or 0.0) <= LAG_LIMIT_MS
        step["per_core"] = (round(step["achieved_per_s"] / step["bridge_cores"])
                            if step["bridge_cores"] >= MIN_CORE else None)
        steps.append(step)
        if not step["within_lag"]:
            stopped = f"loop lag p99 over {LAG_LIMIT_MS:g} ms"
            break
        if not step["achieved"]:
            stopped = "offered rate not achieved"
            break
    good = [s for s in steps if s["within_lag"] and s["achieved"]]
    counted = [s for s in good if s["per_core"] is not None]
    best = max(counted, key=lambda s: s["per_core"], default=None)
    last = steps[-1]
    return {
        "steps": steps,
        "stopped": stopped,
        "best": best,
        "best_achieved_per_s": max((s["achieved_per_s"] for s in good), default=None),
        "per_core": best["per_core"] if best else None,
        # The source is the limit when it, not the bridge, was near a full core at the end.
        "source_was_limit": last["source_cores"] >= SOURCE_BUSY
        and last["bridge_cores"] < SOURCE_BUSY,
        "max_source_cores": max(s["source_cores"] for s in steps),
    }


# --------------------------------------------------------------------------- platforms


@contextlib.asynccontextmanager
async def _prefix(redis_url: str) -> AsyncIterator[str]:
    """A key prefix of its own, whose keys are deleted afterwards (REDIS_URL may be shared)."""
    name = f"bench:{uuid.uuid4().hex[:8]}:"
    try:
        yield name
    finally:
        client = aioredis.Redis.from_url(redis_url)
        try:
            keys = [k async for k in client.scan_iter(match=f"{name}*", count=1000)]
            for i in range(0, len(keys), 1000):
                await client.delete(*keys[i:i + 1000])
        finally:
            await client.aclose()


async def slack_pacing(ctx: Context, *, scale: float, answers: int) -> dict[str, Any]:
    """``answers`` mentions at once in one Slack workspace, through the real Slack adapter
    (Bolt, SlackSink) against the fake Web API enforcing the tiers (time scaled)."""
    p = ctx.profile
    async with _prefix(ctx.redis_url) as prefix, \
            slack_stack(ctx.redis_url, prefix, scale=scale) as st:
        st.chatbase.answer_text_for = answer_for
        st.chatbase.default_answer = Answer(delta_delay=p.delay,
                                            first_token_delay=p.ttft)
        expected: dict[str, str] = {}
        started = time.perf_counter()
        for i in range(answers):
            seed = 60_000 + i
            ts = f"17{i:08d}.000100"
            expected[ts] = answer_text(seed, p.platform_words)
            await st.deliver(event_envelope(mention_event(
                text=f"<@UBOT> {question(seed, p.platform_words)}", ts=ts, user=f"U0B{i:05d}",
            )))
        await st.chatbase.wait_for(lambda: len(st.chatbase.chat_calls) >= answers, within=60)
        await st.idle()
        elapsed = time.perf_counter() - started
        for ts, text in expected.items():
            ctx.tally.check("slack", "".join(st.slack.thread_texts("C0CHAN", ts)), text)
        calls = [c for c in st.slack.calls if c.method.startswith("chat.")]
        return {
            "answers": answers,
            "time_scale": scale,
            "seconds": round(elapsed, 1),
            "rate_limited": len(st.slack.rate_limited),
            "rate_limited_seen_by_bridge": counter_value(
                st.metrics, "bridge_platform_rate_limited", platform="slack"),
            "calls": {m: sum(1 for c in calls if c.method == m)
                      for m in sorted({c.method for c in calls})},
        }


async def discord_pacing(ctx: Context, *, answers: int) -> dict[str, Any]:
    """``answers`` mentions at once in one Discord channel (no threads: one budget), through
    the real Discord adapter (discord.py, ChannelSink) against the fake REST API enforcing
    5 writes per window per channel, time scaled by ``DISCORD_SCALE`` on both sides."""
    p = ctx.profile
    async with _prefix(ctx.redis_url) as prefix, \
            discord_stack(ctx.redis_url, prefix, start=False) as s:
        busy = s.discord.add_channel(s.guild, "busy", threads_allowed=False)
        await _start_discord(s, DEFAULT_INTERVAL * DISCORD_SCALE)
        s.chatbase.answer_text_for = answer_for
        s.chatbase.default_answer = Answer(delta_delay=p.delay, first_token_delay=p.ttft)
        expected: dict[str, str] = {}
        started = time.perf_counter()
        for i in range(answers):
            seed = 70_000 + i
            asker = s.discord.user(f"asker{i}")
            sent = await s.discord.send_message(asker, busy, question(seed, p.platform_words),
                                                mention_bot=True)
            expected[sent["id"]] = answer_text(seed, p.platform_words)
        await s.chatbase.wait_for(lambda: len(s.chatbase.chat_calls) >= answers, within=60)
        await s.adapter.wait_idle()
        elapsed = time.perf_counter() - started
        replies: dict[str, list[str]] = {}
        for message in s.discord.messages_in(busy.id):
            if message["author"]["id"] != s.discord.bot_id:
                continue
            reference = (message.get("message_reference") or {}).get("message_id")
            if reference is not None:
                replies.setdefault(str(reference), []).append(message["content"])
        for question_id, text in expected.items():
            parts = replies.get(question_id)
            ctx.tally.check("discord", "".join(parts) if parts else None, text)
        return {
            "answers": answers,
            "seconds": round(elapsed, 1),
            "rate_limited": len(s.discord.rate_limited),
            "rate_limited_seen_by_bridge": s.rate_limited_count(),
            "writes": len(s.discord.message_calls(busy.id)),
        }


async def _start_discord(stack: DiscordStack, interval: float) -> DiscordAdapter:
    """The real adapter with the product's pacing (``DEFAULT_INTERVAL``, scaled like the
    fake's window) rather than the test stack's own constant."""
    adapter = DiscordAdapter(settings=stack.settings, relay=stack.service,
                             metrics=stack.metrics, edit_interval=interval,
                             guild_ready_timeout=0.05, ready_timeout=10.0,
                             connector=stack.discord.connector)
    await adapter.start()
    stack.adapters.append(adapter)
    return adapter


def _max_gap(times: list[float]) -> float | None:
    gaps = [b - a for a, b in itertools.pairwise(times)]
    return max(gaps, default=None)


async def slack_cadence(ctx: Context) -> dict[str, Any]:
    """One answer streaming alone in a Slack thread, on Slack's real tiers."""
    p = ctx.profile
    async with _prefix(ctx.redis_url) as prefix, \
            slack_stack(ctx.redis_url, prefix, scale=1.0) as st:
        st.chatbase.answer_text_for = answer_for
        st.chatbase.default_answer = Answer(delta_delay=p.cadence_delay,
                                            first_token_delay=p.ttft)
        seed, ts = 80_000, "1800000000.000100"
        await st.deliver(event_envelope(mention_event(
            text=f"<@UBOT> {question(seed, p.cadence_words)}", ts=ts)))
        await st.chatbase.wait_for(lambda: len(st.chatbase.chat_calls) >= 1, within=30)
        await st.idle()
        ctx.tally.check("slack cadence", "".join(st.slack.thread_texts("C0CHAN", ts)),
                        answer_text(seed, p.cadence_words))
        parts = {m.ts for m in st.slack.thread("C0CHAN", ts)}
        times = [c.at for c in st.slack.calls
                 if c.ok and c.args.get("ts") in parts | {None}
                 and c.method in ("chat.startStream", "chat.appendStream", "chat.stopStream",
                                  "chat.postMessage", "chat.update")
                 and (c.method != "chat.startStream" or c.args.get("thread_ts") == ts)]
        allowed = SlackPacing().append_stream
        gap = _max_gap(times)
        return {"updates": len(times), "max_gap_ms": _ms(gap), "allowed_ms": _ms(allowed),
                "limit_ms": _ms(allowed + 0.1),
                "met": gap is not None and gap <= allowed + 0.1}


async def discord_cadence(ctx: Context) -> dict[str, Any]:
    """One answer streaming alone in a Discord thread, at the product's per-channel pace."""
    p = ctx.profile
    # Discord allows 5 writes per 5 s per channel; the sink keeps a margin under it.
    interval = DEFAULT_INTERVAL
    async with _prefix(ctx.redis_url) as prefix, \
            discord_stack(ctx.redis_url, prefix, start=False) as s:
        adapter = await _start_discord(s, DEFAULT_INTERVAL)
        s.chatbase.answer_text_for = answer_for
        s.chatbase.default_answer = Answer(delta_delay=p.cadence_delay,
                                           first_token_delay=p.ttft)
        seed = 90_000
        asker = s.discord.user("cadence")
        sent = await s.discord.send_message(asker, s.channel,
                                            question(seed, p.cadence_words), mention_bot=True)
        await s.chatbase.wait_for(lambda: len(s.chatbase.chat_calls) >= 1, within=30)
        await adapter.wait_idle()
        thread = sent["id"]
        final = "".join(m["content"] for m in s.discord.messages_in(thread)
                        if m["author"]["id"] == s.discord.bot_id)
        ctx.tally.check("discord cadence", final, answer_text(seed, p.cadence_words))
        times = [c.at for c in s.discord.message_calls(thread)
                 if c.status == 200 and c.body and "content" in c.body]
        gap = _max_gap(times)
        return {"updates": len(times), "max_gap_ms": _ms(gap), "allowed_ms": _ms(interval),
                "limit_ms": _ms(interval + 0.1),
                "met": gap is not None and gap <= interval + 0.1}


def _busy() -> float:
    t = psutil.cpu_times()
    return float(t.user + t.nice + t.system + getattr(t, "irq", 0.0) + getattr(t, "softirq", 0.0)
                 + getattr(t, "steal", 0.0))


def _proc_cpu(pid: int | None) -> float:
    if pid is None:
        return 0.0
    try:
        t = psutil.Process(pid).cpu_times()
    except psutil.Error:
        return 0.0
    return float(t.user + t.system)


async def timed(progress: Callable[[str], None], name: str, run: Awaitable[dict[str, Any]],
                *, server_pid: int | None = None, source_pid: int | None = None
                ) -> dict[str, Any]:
    """Runs a scenario and notes where the machine's CPU went meanwhile (cores in use):
    this process, the fake server process, the stream source process, and everything else
    (Redis, replicas, other programs)."""
    progress(name)
    started = time.perf_counter()
    busy, mine = _busy(), time.process_time()
    server, source = _proc_cpu(server_pid), _proc_cpu(source_pid)
    result = await run
    seconds = time.perf_counter() - started
    used_mine = time.process_time() - mine
    used_server = _proc_cpu(server_pid) - server
    used_source = _proc_cpu(source_pid) - source
    result["_seconds"] = round(seconds, 1)
    result["_cores"] = {
        "bench_process": round(used_mine / seconds, 2),
        "fake_server": round(used_server / seconds, 2),
        "stream_source": round(used_source / seconds, 2),
        "everything_else": round(max(0.0, _busy() - busy - used_mine - used_server
                                     - used_source) / seconds, 2),
    }
    return result


def machine() -> dict[str, Any]:
    load = os.getloadavg()
    return {"cpus": os.cpu_count(), "loadavg": [round(x, 2) for x in load]}


# --------------------------------------------------------------------------- replicas

_REPLICA_START = 60.0  # seconds; a healthy start takes a second or two


async def _deliver(session: aiohttp.ClientSession, url: str, slack: FakeSlack,
                   payload: dict[str, Any]) -> None:
    body = json.dumps(payload)
    async with session.post(url, data=body.encode(), headers={
            **slack.signed_headers(body), "content-type": "application/json"}) as response:
        await response.read()
        if response.status != 200:
            raise RuntimeError(f"a replica answered an event with HTTP {response.status}")


async def replicas(ctx: Context, source: StreamSource, *, count: int,
                   variant: str) -> dict[str, Any]:
    """``count`` bridge replicas (``tests.bench.replica``: each its own process, built by the
    product's composition, the real Slack adapter) on one Redis, one fake Slack and one
    Chatbase (the stream source); a fixed set of questions dealt round-robin to them.

    ``shared``: every question a mention in one channel of one workspace, whose per-method
    tiers the fake enforces (429 + Retry-After), time scaled 10× like the 429 scenario: the
    platform's budget is the bound, shared through Redis, so answers/s stays flat and no
    call may get a 429. ``cpu``: every question from a workspace of its own (its own budget;
    the fake enforces none) and the answer streamed at once: the bridge's CPU is the bound."""
    p = ctx.profile
    shared = variant == "shared"
    answers = p.replica_answers if shared else p.replica_cpu_answers
    words = p.platform_words if shared else p.replica_cpu_words
    scale = 0.1
    if shared:
        await source.configure(first_token_delay=p.ttft, delta_delay=p.delay)
    else:
        await source.configure(first_token_delay=0.0, delta_delay=0.0)
    tiers = Tiers().scaled(scale, jitter=SLACK_JITTER) if shared else Tiers(limits={})
    async with _prefix(ctx.redis_url) as prefix, FakeSlack(tiers=tiers) as slack, \
            aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0)) as session, \
            contextlib.AsyncExitStack() as stack:
        values = {
            "CHATBASE_API_KEY": source.api_key, "CHATBASE_AGENT_ID": source.agent_id,
            "CHATBASE_API_BASE": source.chatbase_url, "REDIS_URL": ctx.redis_url,
            "BRIDGE_REDIS_PREFIX": prefix, "BRIDGE_USER_QUOTA": 0,
            "BRIDGE_CHATBASE_RATE_LIMIT": 1_000_000,
            "SLACK_BOT_TOKEN": slack.bot_token, "SLACK_API_URL": slack.api_url,
            "SLACK_SIGNING_SECRET": slack.signing_secret, "BENCH_SCALE": scale,
        }
        ctx.progress(f"replicas ({variant}): starting {count}")
        started = await asyncio.gather(*(
            stack.enter_async_context(helper_process("tests.bench.replica", json.dumps(values)))
            for _ in range(count)))
        procs = [proc for proc, _ in started]
        urls = [info["events"] for _, info in started]
        controls = [info["control"] for _, info in started]
        expected: dict[tuple[str, str], str] = {}
        events = []
        for i in range(answers):
            seed = 200_000 + i
            ts = f"17{i:08d}.000200"
            team = "T0TEAM" if shared else f"T0W{i:05d}"
            channel = "C0CHAN" if shared else f"C0W{i:05d}"
            expected[(channel, ts)] = answer_text(seed, words)
            events.append((urls[i % count], event_envelope(mention_event(
                text=f"<@UBOT> {question(seed, words)}", ts=ts, user=f"U0R{i:05d}",
                channel=channel, team=team), team_id=team)))
        gate = asyncio.Semaphore(50)

        async def send(url: str, payload: dict[str, Any]) -> None:
            async with gate:
                await _deliver(session, url, slack, payload)

        async def finished(n: int, since: int) -> None:
            deadline = time.monotonic() + 300
            while (await source.stats())["streams_finished"] - since < n:
                if time.monotonic() > deadline:
                    raise RuntimeError("the replicas did not finish their answers in 300 s")
                # The answers are in other processes: their progress is read, not awaited.
                await asyncio.sleep(0.05)
            for control in controls:
                async with session.get(f"{control}/idle") as response:
                    response.raise_for_status()

        if not shared:
            # A fresh process's first answers pay for connections, scripts and first calls;
            # only warm replicas are timed. (Not in one workspace: the warm-up would spend
            # the budget the timed answers share.)
            warm = (await source.stats())["streams_finished"]
            await asyncio.gather(*(send(url, event_envelope(mention_event(
                text=f"<@UBOT> {question(300_000 + k, 10)}", ts=f"18{k:08d}.000300",
                user=f"U0WARM{k:03d}", channel=f"C0WARM{k:03d}", team=f"T0WARM{k:03d}"),
                team_id=f"T0WARM{k:03d}")) for k, url in enumerate(urls)))
            await finished(len(urls), warm)
            for k in range(len(urls)):
                ctx.tally.check("replicas warm-up", "".join(slack.thread_texts(
                    f"C0WARM{k:03d}", f"18{k:08d}.000300")), answer_text(300_000 + k, 10))
        before = await source.stats()
        cpu0 = [_proc_cpu(proc.pid) for proc in procs]
        ctx.progress(f"replicas ({variant}): {answers} answers over {count}")
        t0 = time.perf_counter()
        await asyncio.gather(*(send(url, payload) for url, payload in events))
        await finished(answers, before["streams_finished"])
        elapsed = time.perf_counter() - t0
        cores = sum(_proc_cpu(proc.pid) - c for proc, c in zip(procs, cpu0, strict=True))
        wrong_before = ctx.tally.wrong
        for (channel, ts), text in expected.items():
            ctx.tally.check(f"replicas {variant} x{count}",
                            "".join(slack.thread_texts(channel, ts)), text)
        calls = [c for c in slack.calls if c.method.startswith("chat.")]
        return {
            "replicas": count,
            "variant": variant,
            "answers": answers,
            "seconds": round(elapsed, 2),
            "answers_per_s": round(answers / elapsed, 2),
            "rate_limited": len(slack.rate_limited),
            "exact": ctx.tally.wrong == wrong_before,
            "replica_cores": round(cores / elapsed, 2),
            "calls": {m: sum(1 for c in calls if c.method == m)
                      for m in sorted({c.method for c in calls})},
        }
