"""The composition root: the one place that builds the bridge from settings and given parts.

``compose`` is used by the product (``Runtime``) and by every test harness, rig, soak and
benchmark, so the tests exercise the product's own wiring. Parts a caller passes in (a Redis
client, an HTTP session, a clock, metrics, tools, a limiter) are used as they are and left
open; what ``compose`` opens itself it also closes.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
from collections.abc import AsyncIterator, Callable
from contextlib import AsyncExitStack, asynccontextmanager
from dataclasses import dataclass

import aiohttp
import redis.asyncio as aioredis

from bridge.app.metrics import Metrics
from bridge.app.settings import AgentAccess, Settings
from bridge.chatbase.client import ChatbaseClient, RequestHook, StreamErrorHook
from bridge.chatbase.limiter import LocalLimiter, RequestLimiter
from bridge.core.clock import SystemClock
from bridge.core.history import History
from bridge.core.ports import ChatbaseLike, Clock, SlotStore
from bridge.core.rendering.pacing import Pacer
from bridge.core.routing import Agents, Routes
from bridge.core.service import RelayService
from bridge.core.tools import ToolRegistry
from bridge.core.watchdog import Watchdog
from bridge.store import Store, connect

__all__ = ["Bridge", "compose", "compose_chatbase", "open_session"]


@dataclass(frozen=True)
class Bridge:
    """One bridge process's worth of parts, wired."""

    settings: Settings
    clock: Clock
    metrics: Metrics
    redis: aioredis.Redis
    store: Store
    session: aiohttp.ClientSession
    chatbase: ChatbaseClient
    pacer: Pacer
    tools: ToolRegistry
    service: RelayService
    history: History
    agents: Agents  # every agent's client (``chatbase`` is the default agent's)
    watchdog: Watchdog  # the service's answers in flight; ``Runtime`` runs its checks


def open_session() -> aiohttp.ClientSession:
    """The HTTP session the bridge shares between Chatbase and the platforms."""
    # Every answer in flight holds one Chatbase connection for its whole stream; with
    # aiohttp's default cap of 100 connections, answer 101 would wait for one of them to
    # end (docs/performance.md). Platform calls are bounded by pacing, not by this.
    return aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0))


def compose_chatbase(
    settings: Settings,
    *,
    session: aiohttp.ClientSession,
    limiter: RequestLimiter | None = None,
    clock: Clock | None = None,
    on_request: RequestHook | None = None,
    on_stream_error: StreamErrorHook | None = None,
    access: AgentAccess | None = None,
) -> ChatbaseClient:
    """The Chatbase client of one agent (``access``; default: the default agent). Alone, for
    the one-shot commands (``ask``, ``check``) that must not open Redis; ``compose`` builds
    the bridge's own through it. Without ``limiter``, an in-process window of the
    configured size."""
    access = access if access is not None else settings.require_chatbase()
    return ChatbaseClient(
        session=session,
        api_key=access.api_key.get_secret_value(),
        agent_id=access.agent,
        base_url=settings.chatbase_api_base,
        limiter=limiter if limiter is not None else LocalLimiter(
            limit=settings.chatbase_rate_limit, window=settings.chatbase_rate_window,
            clock=clock,
        ),
        timeout=settings.chatbase_timeout,
        idle_timeout=settings.stream_idle_timeout,
        max_wait=settings.chatbase_max_wait,
        clock=clock,
        on_request=on_request,
        on_stream_error=on_stream_error,
    )


@asynccontextmanager
async def compose(
    settings: Settings,
    *,
    redis: aioredis.Redis | None = None,
    session: aiohttp.ClientSession | None = None,
    clock: Clock | None = None,
    store_clock: Clock | None = None,
    metrics: Metrics | None = None,
    tools: ToolRegistry | None = None,
    limiter: RequestLimiter | None = None,
    wrap_chatbase: Callable[[ChatbaseClient], ChatbaseLike] | None = None,
    wrap_slots: Callable[[Store], SlotStore] | None = None,
) -> AsyncIterator[Bridge]:
    """The whole bridge for ``settings``.

    ``redis``: a client to use (default: REDIS_URL, or the embedded server). ``session``: the
    HTTP session (default: a new one). ``clock``: time for pacing, backoff and the service
    (default: the system's); ``store_clock``: time for the store's leases (default:
    ``clock``). ``tools``: the client-action handlers (default: BRIDGE_TOOLS_MODULE's).
    ``limiter``: the Chatbase request budget (default: shared by all replicas through Redis).
    ``wrap_chatbase`` / ``wrap_slots``: decorate the client the service calls and the pacing
    slots the pacer reserves (benchmarks count and time through them).
    """
    settings.require_chatbase()
    clock = clock if clock is not None else SystemClock()
    metrics = metrics if metrics is not None else Metrics()
    async with AsyncExitStack() as stack:
        if session is None:
            session = open_session()
            stack.push_async_callback(session.close)
        if redis is None:
            redis = await stack.enter_async_context(connect(settings))
        store = Store.from_settings(
            redis, settings, clock=store_clock if store_clock is not None else clock
        )
        stack.push_async_callback(store.aclose)
        # One client per agent; one request budget per API key (Chatbase limits each key),
        # shared by every agent using it and by every replica.
        budgets: dict[str, RequestLimiter] = {}
        clients: dict[str, ChatbaseClient] = {}
        for access in settings.agents():
            budget = limiter
            if budget is None:
                name = "chatbase" if access.key_setting == "CHATBASE_API_KEY" \
                    else f"chatbase:{access.key_setting}"
                budget = budgets.setdefault(name, store.limiter(
                    name, limit=settings.chatbase_rate_limit,
                    window=settings.chatbase_rate_window,
                ))
            clients[access.agent] = compose_chatbase(
                settings, session=session, limiter=budget, clock=clock, access=access,
                on_request=functools.partial(metrics.chatbase_request, agent=access.agent),
                on_stream_error=functools.partial(metrics.chatbase_stream_error,
                                                  agent=access.agent),
            )
        chatbase = next(iter(clients.values()))
        if tools is None:
            tools = ToolRegistry()
            tools.load(settings.tools_module)
        pacer = Pacer(slots=wrap_slots(store) if wrap_slots else store, clock=clock,
                      edits_per_second=settings.live_edits_per_second)
        metrics.edit_spacing.set_function(pacer.spacing)
        agents = Agents(
            Routes({place: r.agent for place, r in settings.bridge_routes.items()},
                   fallback=settings.chatbase_agent_id),
            {agent: wrap_chatbase(client) if wrap_chatbase else client
             for agent, client in clients.items()},
        )
        secret = settings.user_id_secret.get_secret_value() if settings.user_id_secret \
            else None
        watchdog = Watchdog(clock=clock, metrics=metrics, stuck_after=settings.stuck_after,
                            end_after=settings.stuck_end_after)
        service = RelayService(
            settings=settings,
            store=store,
            agents=agents,
            pacer=pacer,
            clock=clock,
            metrics=metrics,
            tools=tools,
            watchdog=watchdog,
        )
        # Stop requests from the other replicas; ``store.stops.ready`` is set once listening.
        listener = asyncio.create_task(store.stops.listen(service.stop_here),
                                       name="stop-listener")
        stack.push_async_callback(_cancel, listener)
        yield Bridge(
            settings=settings, clock=clock, metrics=metrics, redis=redis, store=store,
            session=session, chatbase=chatbase, pacer=pacer, tools=tools, service=service,
            history=History(agents=agents, cache=store, secret=secret), agents=agents,
            watchdog=watchdog,
        )


async def _cancel(task: asyncio.Task[None]) -> None:
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task
