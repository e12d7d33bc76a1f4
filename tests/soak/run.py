"""Soak run: many conversations answered for minutes with faults injected at every layer.

    python -m tests.soak.run --turns 10000 --conversations 200 [--seed 1] [--json out.json]

Two bridge replicas (the real SlackAdapter over the HTTP Events API, RelayService, Store) share
a private redis-server behind a proxy that cuts every connection now and then (Redis blips),
a fake Chatbase that fails chosen turns (errors before the answer, broken and stalled
streams) and a fake Slack that throttles, fails and loses messages on demand. Each
conversation sends its turns one after another (some redelivered, to either replica), waits
until every delivery is handled and checks what Slack now shows for that turn:

* every message answered or told why (one reply per turn; two only when a Redis blip took
  the de-duplication away, which the bridge logs),
* the exact answer whenever no fault hit the answer's stream, the exact notice or the exact
  text-so-far plus the cut-off note when one did,
* no placeholder left (no progress mark, no empty message, no open stream),
* no asyncio task or file-descriptor growth between the warmed-up start and the end, RSS
  sampled over time, no known secret in any log line.

Exit status 0 when every check holds. The figures go into docs/reliability.md (Soak).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import gc
import json
import logging
import random
import statistics
import sys
import time
from collections import Counter, defaultdict
from collections.abc import AsyncIterator, Sequence
from contextlib import AsyncExitStack, asynccontextmanager
from dataclasses import asdict, dataclass, field
from typing import Any

import aiohttp
import psutil
from aiohttp import web
from aiohttp.test_utils import TestServer

from adapters.slack.adapter import SlackAdapter
from adapters.slack.sink import SlackPacing, SlackSink
from bridge.app.compose import compose
from bridge.app.settings import Settings
from bridge.core import notices
from bridge.core.clock import SystemClock
from bridge.core.context import current as log_context
from bridge.core.models import InboundFeedbackButton, InboundMessage, InboundReaction, Place
from bridge.core.ports import ReplySink, SinkOpener
from bridge.core.service import RelayService
from tests.fakes import secrets
from tests.fakes.chatbase import _JSON, Answer, FakeChatbase, Gate, StreamFault, _Fault, split_words
from tests.fakes.harness import Replica, counter_value
from tests.fakes.slack import FakeSlack, Tiers, event_envelope, mention_event, message_event
from tests.reliability.redis_tools import DedicatedRedis, RedisProxy

log = logging.getLogger("soak")

WORDS = [
    "alpha", "bravo", "charlie", "delta", "echo", "foxtrot", "golf", "hotel", "india",
    "juliet", "kilo", "lima", "mike", "november", "oscar", "papa", "quebec", "romeo",
    "sierra", "tango", "uniform", "victor", "whiskey", "xray", "yankee", "zulu",
]

TIMEOUT = 1.0  # BRIDGE_CHATBASE_TIMEOUT and BRIDGE_STREAM_IDLE_TIMEOUT in the run
KEEPALIVE = 2.0  # seconds an idle pooled HTTP connection is kept
CUT_BROKE = "the connection to the agent broke"
CUT_ERROR = "the agent reported an error"
CUT_STALLED = "the agent stopped responding"

# Chatbase fault kinds and their share among faulted turns.
CHATBASE_FAULTS = {
    "503-once": 3, "429-once": 2,  # retried (nothing was done): the answer stays exact
    # Reached Chatbase, then failed: never resent (it may have been charged), a notice.
    "500-always": 1, "stall-headers": 1, "drop-once": 2,
    "disconnect": 2, "malformed": 1, "error-chunk": 1, "eof": 1, "idle-stall": 1,  # cut off
}
PLATFORM_FAULTS = {"429": 2, "5xx": 2, "gone": 1}
SLACK_WRITES = ("chat.startStream", "chat.appendStream", "chat.stopStream",
                "chat.postMessage", "chat.update")


@dataclass
class Config:
    turns: int = 10_000
    conversations: int = 200
    seed: int = 1
    workspaces: int = 20
    chatbase_fault_rate: float = 0.10
    platform_fault_rate: float = 0.05
    duplicate_rate: float = 0.15
    long_rate: float = 0.05
    blip_every: tuple[float, float] = (3.0, 8.0)
    blip_for: tuple[float, float] = (0.05, 0.3)
    turn_timeout: float = 120.0
    pacing_scale: float = 0.01


# --------------------------------------------------------------------------- plans


class StallAfter(Gate):
    """Sends ``k`` deltas, then nothing for ``pause`` seconds (longer than the idle timeout),
    then the rest: a bounded stall, so the fake's handler ends by itself."""

    def __init__(self, k: int, pause: float) -> None:
        super().__init__()
        self._k = k
        self._pause = pause
        self.open()

    async def _take(self) -> None:
        if self.sent == self._k:
            await asyncio.sleep(self._pause)


@dataclass
class Plan:
    """What Chatbase does with one turn's message and what Slack must then show."""

    kind: str
    expected: str
    k: int = 0

    def pre_fault(self, attempt: int) -> _Fault | tuple[str, float] | None:
        if self.kind == "503-once" and attempt == 0:
            return _Fault("respond", status=503, code="SERVICE_UNDER_MAINTENANCE")
        if self.kind == "500-always":
            return _Fault("respond", status=500, code="INTERNAL_SERVER_ERROR")
        if self.kind == "429-once" and attempt == 0:
            return _Fault("respond", status=429, code="RATE_LIMIT_TOO_MANY_REQUESTS",
                          headers={"Retry-After": "0.2"})
        if self.kind == "drop-once" and attempt == 0:
            return _Fault("drop")
        if self.kind == "stall-headers":
            return ("stall", TIMEOUT + 0.5)
        return None

    def answer(self) -> Answer | None:
        faults = {"disconnect": StreamFault.DISCONNECT, "malformed": StreamFault.MALFORMED,
                  "error-chunk": StreamFault.ERROR_CHUNK, "eof": StreamFault.EOF}
        if self.kind in faults:
            return Answer(fault=faults[self.kind], fault_after=self.k)
        if self.kind == "idle-stall":
            return Answer(gate=StallAfter(self.k, TIMEOUT + 1.5))
        if self.kind == "gone":
            # Slow enough to delete its first message mid-answer, each pause well inside
            # the idle timeout.
            return Answer(delta_delay=TIMEOUT / 5)
        return None


def plan_for(kind: str, message: str, rng: random.Random) -> Plan:
    answer = f"Echo: {message}"
    deltas = split_words(answer)
    k = rng.randint(1, max(1, min(len(deltas) - 1, 6)))
    partial = "".join(deltas[:k])
    if kind in ("ok", "503-once", "429-once", "gone"):
        return Plan(kind, answer)
    if kind in ("stall-headers", "drop-once"):
        return Plan(kind, notices._UNREACHABLE)
    if kind == "500-always":
        return Plan(kind, notices._FAILED)
    reason = {"error-chunk": CUT_ERROR, "idle-stall": CUT_STALLED}.get(kind, CUT_BROKE)
    return Plan(kind, partial + "\n\n" + notices.CUT_OFF.format(reason=reason), k=k)


class SoakChatbase(FakeChatbase):
    """The fake Chatbase following each message's plan."""

    def __init__(self) -> None:
        super().__init__(api_key="soak-chatbase-api-key")
        self.plans: dict[str, Plan] = {}
        self.attempts: Counter[str] = Counter()
        self.chat_requests = 0

    async def _answer(self, request: web.Request, handler: Any,
                      endpoint: str | None) -> web.StreamResponse:
        if endpoint == "chat":
            self.chat_requests += 1
            body = request[_JSON]
            message = body.get("message") if isinstance(body, dict) else None
            plan = self.plans.get(message) if isinstance(message, str) else None
            if plan is not None:
                attempt = self.attempts[message]  # type: ignore[index]
                self.attempts[message] += 1  # type: ignore[index]
                fault = plan.pre_fault(attempt)
                if isinstance(fault, tuple):
                    await asyncio.sleep(fault[1])  # longer than the client waits
                    return web.Response(status=503)
                if fault is not None:
                    return await self._fault(request, fault)
        return await super()._answer(request, handler, endpoint)

    async def _respond(self, request: web.Request, conv: Any, user_message: Any,
                       message: str | None, stream: bool) -> web.StreamResponse:
        plan = self.plans.get(message) if message is not None else None
        answer = plan.answer() if plan is not None else None
        if answer is not None:
            self._script.appendleft(answer)  # taken at once, before anything is awaited
        return await super()._respond(request, conv, user_message, message, stream)

    def trim(self) -> None:
        self.requests.clear()
        for conversation in self.conversations.values():
            del conversation.messages[:-2]


# --------------------------------------------------------------------------- tracking


class Tracking:
    """The relay as the adapter sees it, noting every handled delivery and its sink."""

    def __init__(self, inner: RelayService, board: Board) -> None:
        self._inner = inner
        self._board = board

    async def handle_message(self, message: InboundMessage, sink: ReplySink) -> None:
        try:
            await self._inner.handle_message(message, sink)
        except Exception:
            self._board.crashed += 1
            raise
        finally:
            await self._board.handled(message.event_id, sink)

    async def has_conversation(self, message: InboundMessage) -> bool:
        return await self._inner.has_conversation(message)

    async def handle_reaction(self, reaction: InboundReaction, open_sink: SinkOpener) -> None:
        await self._inner.handle_reaction(reaction, open_sink)

    async def handle_feedback_button(self, press: InboundFeedbackButton) -> None:
        await self._inner.handle_feedback_button(press)

    async def reset(self, place: Place, author: str) -> bool:
        return await self._inner.reset(place, author)

    async def adopt(self, place: Place, author: str, conversation_id: str) -> None:
        await self._inner.adopt(place, author, conversation_id)

    def answers_at(self, place: Place) -> bool:
        return self._inner.answers_at(place)

    async def stop(self, handle: str) -> bool:
        return await self._inner.stop(handle)


@dataclass
class Board:
    done: Counter[str] = field(default_factory=Counter)
    sinks: dict[str, list[SlackSink]] = field(default_factory=lambda: defaultdict(list))
    crashed: int = 0
    changed: asyncio.Condition = field(default_factory=asyncio.Condition)

    async def handled(self, event_id: str, sink: ReplySink) -> None:
        async with self.changed:
            self.done[event_id] += 1
            if isinstance(sink, SlackSink):
                self.sinks[event_id].append(sink)
            self.changed.notify_all()

    async def wait(self, event_id: str, deliveries: int, within: float) -> bool:
        try:
            async with asyncio.timeout(within), self.changed:
                await self.changed.wait_for(lambda: self.done[event_id] >= deliveries)
        except TimeoutError:
            return False
        return True

    def forget(self, event_id: str) -> None:
        self.done.pop(event_id, None)
        self.sinks.pop(event_id, None)


class LogWatch(logging.Handler):
    """Counts log records; notes events answered without de-duplication; looks for secrets."""

    def __init__(self) -> None:
        super().__init__(logging.INFO)
        self.levels: Counter[str] = Counter()
        self.kinds: Counter[str] = Counter()
        self.undeduplicated: set[str] = set()
        self.secret_leaks = 0

    def emit(self, record: logging.LogRecord) -> None:
        self.levels[record.levelname] += 1
        if record.levelno < logging.WARNING:
            return
        try:
            text = record.getMessage()
        except Exception:
            text = str(record.msg)
        if any(value in text for value in secrets._known):
            self.secret_leaks += 1
        if text.startswith("answering without de-duplication"):
            event = log_context().get("event")
            if event:
                self.undeduplicated.add(event)
        self.kinds[f"{record.levelname} {record.name}: {_shape(text)}"] += 1


def _shape(text: str) -> str:
    """A log line without its variable parts, to count lines of one kind together."""
    out = []
    for word in text.split()[:9]:
        out.append("#" if any(c.isdigit() for c in word) else word)
    return " ".join(out)


# --------------------------------------------------------------------------- the bridge


@dataclass
class World:
    slack: FakeSlack
    chatbase: SoakChatbase
    proxy: RedisProxy
    replicas: list[Replica]
    board: Board
    session: aiohttp.ClientSession


def _session() -> aiohttp.ClientSession:
    """As the runtime's session, except that idle pooled connections close after 2 s
    instead of 15-30 s, so that the quiet points of the run really are quiet."""
    return aiohttp.ClientSession(connector=aiohttp.TCPConnector(keepalive_timeout=KEEPALIVE))


@asynccontextmanager
async def world(config: Config) -> AsyncIterator[World]:
    async with AsyncExitStack() as stack:
        redis = await stack.enter_async_context(DedicatedRedis())
        proxy = await stack.enter_async_context(RedisProxy(redis.url))
        slack = await stack.enter_async_context(FakeSlack(tiers=Tiers(limits={})))
        chatbase = await stack.enter_async_context(SoakChatbase())
        settings = Settings(
            _env_file=None,  # type: ignore[call-arg]
            CHATBASE_API_KEY=chatbase.api_key, CHATBASE_AGENT_ID=chatbase.agent_id,
            CHATBASE_API_BASE=chatbase.base_url, REDIS_URL=proxy.url,
            BRIDGE_REDIS_PREFIX="soak:", BRIDGE_USER_QUOTA=0,
            BRIDGE_CHATBASE_TIMEOUT=TIMEOUT, BRIDGE_STREAM_IDLE_TIMEOUT=TIMEOUT,
            BRIDGE_CHATBASE_MAX_WAIT=5, BRIDGE_CHATBASE_RATE_LIMIT=20000,
            SLACK_BOT_TOKEN=slack.bot_token, SLACK_API_URL=slack.api_url,
            SLACK_SIGNING_SECRET=slack.signing_secret,
        )
        secrets.register_settings(settings)
        session = await stack.enter_async_context(_session())
        board = Board()
        replicas = []
        for _ in range(2):
            # The bridge exactly as the runtime composes it (its Redis client, the Redis-shared
            # Chatbase budget), except for the HTTP session's keep-alive.
            web_session = await stack.enter_async_context(_session())
            bridge = await stack.enter_async_context(
                compose(settings, session=web_session, clock=SystemClock())
            )
            service, metrics = bridge.service, bridge.metrics
            app = web.Application()
            adapter = SlackAdapter(settings=settings, relay=Tracking(service, board),
                                   metrics=metrics, http_app=app, session=web_session,
                                   pacing=SlackPacing().scaled(config.pacing_scale))
            server = TestServer(app, host="127.0.0.1", port=0)
            await server.start_server()
            stack.push_async_callback(server.close)

            async def shut_down(adapter: SlackAdapter = adapter,
                                service: RelayService = service) -> None:
                await adapter.stop_intake()
                await service.drain(5.0)
                await adapter.close()

            stack.push_async_callback(shut_down)
            await adapter.start()
            replicas.append(Replica(bridge, adapter=adapter, server=server))
        yield World(slack, chatbase, proxy, replicas, board, session)


# --------------------------------------------------------------------------- one turn


@dataclass
class Tally:
    turns: int = 0
    exact: int = 0
    notices: int = 0
    cut_off: int = 0
    mismatched: int = 0
    unanswered: int = 0
    doubled: int = 0
    doubled_unexplained: int = 0
    placeholders: int = 0
    hung: int = 0
    refused_deliveries: int = 0
    gone_skipped: int = 0
    deliveries: int = 0
    chatbase_faults: Counter[str] = field(default_factory=Counter)
    platform_faults: Counter[str] = field(default_factory=Counter)
    examples: list[str] = field(default_factory=list)
    seconds: dict[str, list[float]] = field(default_factory=lambda: defaultdict(list))

    def example(self, text: str) -> None:
        if len(self.examples) < 12:
            self.examples.append(text)


class Conversation:
    def __init__(self, index: int, config: Config, w: World, rng: random.Random,
                 tally: Tally, stamps: Counter[str]) -> None:
        self.index = index
        self.config = config
        self.w = w
        self.rng = rng
        self.tally = tally
        self._stamps = stamps
        self.dm = index % 2 == 1
        self.team = f"T{index % config.workspaces:02d}"
        self.user = f"U{index:04d}"
        self.channel = f"D{index:04d}" if self.dm else f"C{index % config.workspaces:02d}"
        self.thread = self._ts()
        self.turn = 0

    def _ts(self) -> str:
        self._stamps["ts"] += 1
        n = self._stamps["ts"]
        return f"{1_700_000_000 + n}.{n % 1_000_000:06d}"

    def _message(self) -> str:
        rng = self.rng
        size = rng.randint(380, 420) if rng.random() < self.config.long_rate else rng.randint(3, 9)
        return f"c{self.index} t{self.turn} " + " ".join(rng.choice(WORDS) for _ in range(size))

    def _payload(self, text: str, ts: str, event_id: str) -> dict[str, Any]:
        if self.dm:
            event = message_event(text=text, ts=ts, channel=self.channel, user=self.user,
                                  team=self.team)
        else:
            first = self.turn == 0
            event = mention_event(text=f"<@UBOT> {text}", ts=self.thread if first else ts,
                                  channel=self.channel, user=self.user, team=self.team,
                                  thread_ts=None if first else self.thread)
        return event_envelope(event, team_id=self.team, event_id=event_id)

    async def _deliver(self, payload: dict[str, Any], replica: int,
                       retry: int | None) -> bool:
        body = json.dumps(payload)
        headers = self.w.slack.signed_headers(body)
        if retry is not None:
            headers["x-slack-retry-num"] = str(retry)
        url = self.w.replicas[replica].server.make_url("/slack/events")
        for _ in range(5):
            async with self.w.session.post(url, data=body.encode(), headers=headers) as resp:
                await resp.read()
                if resp.status == 200:
                    return True
            self.tally.refused_deliveries += 1
        return False

    async def run_turn(self) -> None:
        rng, config, w, tally = self.rng, self.config, self.w, self.tally
        text = self._message()
        kind = "ok"
        if rng.random() < config.chatbase_fault_rate:
            kind = rng.choices(list(CHATBASE_FAULTS), list(CHATBASE_FAULTS.values()))[0]
            tally.chatbase_faults[kind] += 1
        platform = None
        if kind == "ok" and rng.random() < config.platform_fault_rate:
            platform = rng.choices(list(PLATFORM_FAULTS), list(PLATFORM_FAULTS.values()))[0]
            tally.platform_faults[platform] += 1
            if platform == "gone":
                kind = "gone"
        if kind == "gone":
            text += " " + " ".join(rng.choice(WORDS) for _ in range(12))
        plan = plan_for(kind, text, rng)
        w.chatbase.plans[text] = plan
        if platform in ("429", "5xx"):
            # At most one waiting fault per method: faults queued on a method short answers
            # rarely call would otherwise pile up and all hit the next long answer.
            free = [m for m in SLACK_WRITES if not w.slack._faults.get(m)]
            if not free:
                tally.platform_faults[platform] -= 1
            elif platform == "429":
                w.slack.fail_next(rng.choice(free), "ratelimited", retry_after=0.2)
            else:
                w.slack.fail_next(rng.choice(free), "internal_error", status=500)

        began = time.monotonic()
        event_id = f"Ev{self.index:04d}x{self.turn:05d}"
        payload = self._payload(text, self._ts(), event_id)
        copies = 1 + (rng.randint(1, 2) if rng.random() < config.duplicate_rate else 0)
        sends = [self._deliver(payload, rng.randrange(2), n or None) for n in range(copies)]
        delivered = sum(await asyncio.gather(*sends))
        tally.deliveries += copies
        if kind == "gone":
            await self._lose_first_part()
        # The id the bridge claims the message by: a channel mention's is its place in the
        # channel, so the app_mention and message.* deliveries of it are answered once.
        event = payload["event"]
        answer_id = event_id if self.dm else f"mention:{event['channel']}:{event['ts']}"
        finished = await w.board.wait(answer_id, delivered, config.turn_timeout)
        tally.seconds[plan.kind].append(time.monotonic() - began)
        TURNS_DONE[0] += 1
        self._check(answer_id, plan, finished, delivered)
        w.board.forget(answer_id)
        w.chatbase.plans.pop(text, None)
        w.chatbase.attempts.pop(text, None)
        self.turn += 1
        tally.turns += 1

    async def _lose_first_part(self) -> None:
        """Delete this turn's first message while the answer is still being written, as a
        person would; never a finished one (that would leave the answer with nothing)."""
        where = None if self.dm else self.thread
        deleted: list[str] = []

        def delete_one_in_progress() -> bool:
            # Checked and changed in one step: no request can slip in between.
            for message in self.w.slack.messages.values():
                if (message.channel == self.channel and message.thread_ts == where
                        and not message.deleted and message.text.startswith("Echo: ")
                        and (message.streaming or message.text.endswith("▌"))):
                    message.deleted = True
                    deleted.append(message.ts)
                    return True
            return False

        try:
            await self.w.slack.wait_for(delete_one_in_progress, within=3 * TIMEOUT)
        except TimeoutError:
            self.tally.gone_skipped += 1

    def _check(self, event_id: str, plan: Plan, finished: bool, delivered: int) -> None:
        tally, slack = self.tally, self.w.slack
        if not finished:
            tally.hung += 1
            tally.example(f"{event_id} ({plan.kind}) not finished within the turn timeout")
            return
        rendered = [s for s in self.w.board.sinks.get(event_id, []) if s.part_ids]
        if not rendered:
            tally.unanswered += 1
            tally.example(f"{event_id} ({plan.kind}) got no reply at all")
            return
        if len(rendered) > 1:
            tally.doubled += 1
            if event_id not in LOGS.undeduplicated:
                tally.doubled_unexplained += 1
                tally.example(f"{event_id} answered {len(rendered)} times")
        for sink in rendered:
            parts = [slack.messages[ts] for ts in sink.part_ids if ts in slack.messages]
            live = [m for m in parts if not m.deleted]
            shown = "".join(m.text for m in live)
            if not live or any(m.streaming or "▌" in m.text or not m.text.strip()
                               for m in live):
                tally.placeholders += 1
                tally.example(f"{event_id} ({plan.kind}) left a placeholder: {shown[-60:]!r}")
            elif shown == plan.expected:
                if plan.expected in (notices._UNREACHABLE, notices._FAILED):
                    tally.notices += 1
                elif plan.expected.endswith(". Please ask again.)_"):
                    tally.cut_off += 1
                else:
                    tally.exact += 1
            else:
                tally.mismatched += 1
                tally.example(f"{event_id} ({plan.kind}) shows {shown[-80:]!r}, expected "
                              f"{plan.expected[-80:]!r}")
            for message in parts:
                slack.messages.pop(message.ts, None)


LOGS = LogWatch()


# --------------------------------------------------------------------------- the run


@dataclass
class Sample:
    at: float
    rss_mb: float
    tasks: int
    fds: int


# Tasks the bridge names (renderer, turn lock, Slack adapter): none may outlive its answer.
BRIDGE_TASKS = frozenset({"reply-writer", "reply-working", "turn-heartbeat", "slack-answer",
                          "slack-reaction", "slack-feedback"})


@dataclass
class Checkpoint:
    turns: int
    tasks: int
    bridge_tasks: int
    fds: int
    connections: int
    redis_links: int
    rss_mb: float


async def checkpoint(w: World) -> Checkpoint:
    for replica in w.replicas:
        await replica.adapter.wait_idle()
    # Idle pooled connections close within two keep-alive periods (the fakes' handlers and
    # bounded stalls end with them), and the Redis pools are emptied: what is left open at
    # two quiet points can then be compared one to one.
    await asyncio.sleep(2 * KEEPALIVE + 1.0)
    for replica in w.replicas:
        await replica.redis.connection_pool.disconnect()
    for _ in range(100):  # the proxy sees the closed connections a moment later
        if not w.proxy._links:
            break
        await asyncio.sleep(0.02)
    gc.collect()
    process = psutil.Process()
    tasks = asyncio.all_tasks()
    return Checkpoint(
        turns=TURNS_DONE[0], tasks=len(tasks),
        bridge_tasks=sum(1 for t in tasks if t.get_name() in BRIDGE_TASKS),
        fds=process.num_fds(), connections=len(process.net_connections(kind="all")),
        redis_links=len(w.proxy._links), rss_mb=round(process.memory_info().rss / 2**20, 1),
    )


TURNS_DONE = [0]


async def sampler(samples: list[Sample], started: float) -> None:
    process = psutil.Process()
    while True:
        samples.append(Sample(round(time.monotonic() - started, 1),
                              round(process.memory_info().rss / 2**20, 1),
                              len(asyncio.all_tasks()), process.num_fds()))
        await asyncio.sleep(2.0)


async def blips(proxy: RedisProxy, config: Config, rng: random.Random,
                windows: list[float]) -> None:
    while True:
        await asyncio.sleep(rng.uniform(*config.blip_every))
        length = rng.uniform(*config.blip_for)
        windows.append(length)
        proxy.cut(length)


async def soak(config: Config) -> dict[str, Any]:
    rng = random.Random(config.seed)
    tally = Tally()
    stamps: Counter[str] = Counter()
    logging.getLogger().addHandler(LOGS)
    logging.getLogger().setLevel(logging.INFO)
    started = time.monotonic()
    samples: list[Sample] = []
    blip_windows: list[float] = []
    async with world(config) as w:
        conversations = [Conversation(i, config, w, random.Random(rng.random()), tally, stamps)
                         for i in range(config.conversations)]
        per = max(1, config.turns // config.conversations)

        async def drive(conversation: Conversation, turns: int) -> None:
            for _ in range(turns):
                await conversation.run_turn()
                if tally.turns % 500 == 0:
                    w.chatbase.trim()
                    w.slack.calls.clear()

        # Warm-up: one turn each, so pools and caches reach their working size. Then two
        # equal halves under faults, each ending at a quiet point: a leak shows as growth
        # from the first quiet point to the second.
        await asyncio.gather(*(drive(c, 1) for c in conversations))
        sample_task = asyncio.create_task(sampler(samples, time.monotonic()))
        blip_task = asyncio.create_task(blips(w.proxy, config, rng, blip_windows))
        run_started = time.monotonic()
        first_half = (per - 1) // 2
        paused = 0.0
        await asyncio.gather(*(drive(c, first_half) for c in conversations))
        blip_task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await blip_task
        quiet = time.monotonic()
        middle = await checkpoint(w)
        paused += time.monotonic() - quiet
        blip_task = asyncio.create_task(blips(w.proxy, config, rng, blip_windows))
        await asyncio.gather(*(drive(c, per - 1 - first_half) for c in conversations))
        run_seconds = time.monotonic() - run_started - paused
        for task in (blip_task, sample_task):
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        end = await checkpoint(w)
        outcomes: Counter[str] = Counter()
        for replica in w.replicas:
            for metric in replica.metrics.answers.collect():
                for s in metric.samples:
                    if s.name.endswith("_total"):
                        outcomes[s.labels["outcome"]] += int(s.value)
        rate_limited = sum(int(counter_value(r.metrics, "bridge_platform_rate_limited",
                                             platform="slack"))
                           for r in w.replicas)
        report = {
            "config": asdict(config),
            "wall_seconds": round(time.monotonic() - started, 1),
            "run_seconds": round(run_seconds, 1),
            "turns_per_second": round((tally.turns - config.conversations) / run_seconds, 1),
            # (dataclasses.asdict would rebuild a Counter from pairs, counting the pairs.)
            "tally": {k: dict(v) if isinstance(v, Counter) else v
                      for k, v in vars(tally).items() if k not in ("examples", "seconds")},
            "turn_seconds": {kind: _spread(values) for kind, values in tally.seconds.items()},
            "examples": tally.examples,
            "bridge_outcomes": dict(outcomes),
            "platform_429s_seen_by_bridge": rate_limited,
            "chatbase_requests": w.chatbase.chat_requests,
            "redis_blips": {"count": len(blip_windows),
                            "total_seconds": round(sum(blip_windows), 2),
                            "connections_cut_or_refused": w.proxy.refused + w.proxy.cuts},
            "answered_without_dedup": len(LOGS.undeduplicated),
            "crashed_handlers": w.board.crashed,
            "secret_leaks_in_logs": LOGS.secret_leaks,
            "log_levels": dict(LOGS.levels),
            "top_warnings": LOGS.kinds.most_common(15),
            "leaks": {"middle": asdict(middle), "end": asdict(end)},
            "rss_mb": _rss_summary(samples),
        }
    logging.getLogger().removeHandler(LOGS)
    report["ok"] = _verdict(report)
    return report


def _spread(values: list[float]) -> dict[str, float]:
    ordered = sorted(values)
    return {"n": len(ordered), "median": round(statistics.median(ordered), 3),
            "p95": round(ordered[int(0.95 * (len(ordered) - 1))], 3),
            "max": round(ordered[-1], 3)}


def _rss_summary(samples: Sequence[Sample]) -> dict[str, Any]:
    if len(samples) < 4:
        return {"samples": [asdict(s) for s in samples]}
    xs = [s.at for s in samples]
    ys = [s.rss_mb for s in samples]
    half = len(samples) // 2
    slope = statistics.linear_regression(xs[half:], ys[half:]).slope if half >= 2 else 0.0
    return {
        "first": ys[0], "peak": max(ys), "last": ys[-1],
        "second_half_slope_mb_per_min": round(slope * 60, 2),
        "samples": [asdict(s) for s in samples[:: max(1, len(samples) // 40)]],
    }


def _verdict(report: dict[str, Any]) -> bool:
    t = report["tally"]
    leaks = report["leaks"]
    problems = [
        t["hung"], t["unanswered"], t["placeholders"], t["mismatched"],
        t["doubled_unexplained"], report["crashed_handlers"], report["secret_leaks_in_logs"],
        leaks["middle"]["bridge_tasks"], leaks["end"]["bridge_tasks"],
        # Growth from one quiet point to the next is a leak (a little slack for a connection
        # caught closing).
        max(0, leaks["end"]["tasks"] - leaks["middle"]["tasks"] - 5),
        max(0, leaks["end"]["fds"] - leaks["middle"]["fds"] - 5),
    ]
    return not any(problems)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tests.soak.run", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--turns", type=int, default=10_000)
    parser.add_argument("--conversations", type=int, default=200)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--json", metavar="PATH", help="also write the report here")
    args = parser.parse_args(argv)
    config = Config(turns=args.turns, conversations=args.conversations, seed=args.seed)
    report = asyncio.run(soak(config))
    text = json.dumps(report, indent=2, default=str)
    if args.json:
        with open(args.json, "w", encoding="utf-8") as out:
            out.write(text + "\n")
    print(text)
    return 0 if report["ok"] else 1


if __name__ == "__main__":
    sys.exit(main())
