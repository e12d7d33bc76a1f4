"""Operator checks behind ``chatbase-bridge check``: reach each service, say what is wrong.

Each check gives one ``CheckResult``; a result is either a settings mistake (``config``: the
operator must change a variable) or a failing service. Messages are plain sentences that name
the variable to fix and never carry a secret.
"""

from __future__ import annotations

import asyncio
import contextlib
import tempfile
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path
from urllib.parse import urlsplit

import aiohttp

from bridge.app.compose import compose_chatbase
from bridge.app.platforms import Platform, credentials, discover
from bridge.app.settings import AgentAccess, Settings
from bridge.core.errors import (
    ChatbaseAPIError,
    ChatbaseError,
    ChatbaseRateLimited,
    ConfigError,
    StoreError,
)
from bridge.store import connection
from bridge.store.connection import Target
from bridge.store.embedded import EmbeddedRedis

__all__ = [
    "CHECK_TIMEOUT",
    "CheckResult",
    "Refused",
    "Status",
    "check_chatbase",
    "check_redis",
    "client_reason",
    "exit_status",
    "fail",
    "host_of",
    "ok",
    "run_checks",
]

# Long enough for a slow network, short enough that a black-holed host does not hang `check`.
CHECK_TIMEOUT = 10.0


class Status(StrEnum):
    OK = "ok"
    FAIL = "FAIL"
    SKIPPED = "skipped"


@dataclass(frozen=True)
class CheckResult:
    name: str
    status: Status
    detail: str = ""
    config: bool = False  # a settings mistake (exit 2) rather than a failing service (exit 1)

    def line(self) -> str:
        return f"{self.name:<9} {self.status.value:<7} {self.detail}".rstrip()


def ok(name: str, detail: str) -> CheckResult:
    return CheckResult(name, Status.OK, detail)


def fail(name: str, detail: str, *, config: bool = False) -> CheckResult:
    return CheckResult(name, Status.FAIL, detail, config=config)


class Refused(Exception):
    """A service answered, and said no; the message is the plain sentence to show.
    ``config``: it refused a credential, which the operator fixes in the settings."""

    def __init__(self, message: str, *, config: bool = False) -> None:
        super().__init__(message)
        self.config = config


def exit_status(results: Sequence[CheckResult]) -> int:
    """0 when everything passed, 2 when a setting must change, else 1."""
    failed = [r for r in results if r.status is Status.FAIL]
    if any(r.config for r in failed):
        return 2
    return 1 if failed else 0


async def run_checks(
    settings: Settings, platforms: Sequence[Platform] | None = None
) -> list[CheckResult]:
    """Every check, concurrently: Chatbase, Redis, then each installed platform's own
    preflight; results in a fixed order."""
    if platforms is None:
        platforms = discover()
    timeout = aiohttp.ClientTimeout(total=CHECK_TIMEOUT)
    async with aiohttp.ClientSession(timeout=timeout) as session:
        checks: list[Awaitable[CheckResult | list[CheckResult]]] = [
            check_chatbase(settings, session),
            check_redis(settings),
            *(platform.check(settings, session) for platform in platforms),
        ]
        results: list[CheckResult] = []
        for found in await asyncio.gather(*checks):
            results.extend(found if isinstance(found, list) else [found])
    if not any(platform.enabled(settings) for platform in platforms):
        results.append(fail(
            "platform",
            f"no platform is configured: set {credentials(platforms)}.",
            config=True,
        ))
    return results


# ---------------------------------------------------------------------------- Chatbase


async def check_chatbase(
    settings: Settings, session: aiohttp.ClientSession
) -> list[CheckResult]:
    """One line per agent the bridge talks to (CHATBASE_AGENT_ID and BRIDGE_ROUTES), each
    with its own key: the first is named ``chatbase``, the others ``chatbase:<agent>``."""
    missing = settings.missing_chatbase()
    if missing:
        return [fail("chatbase", f"missing required setting(s) {' and '.join(missing)}.",
                     config=True)]
    try:
        accesses = settings.agents()
    except ConfigError as exc:
        return [fail("chatbase", str(exc), config=True)]
    return list(await asyncio.gather(*(
        _check_agent("chatbase" if n == 0 else f"chatbase:{access.agent}", settings,
                     session, access)
        for n, access in enumerate(accesses))))


async def _check_agent(name: str, settings: Settings, session: aiohttp.ClientSession,
                       access: AgentAccess) -> CheckResult:
    agent_id = access.agent
    # The bridge's own client, with waits capped so that `check` answers promptly.
    capped = settings.model_copy(update={
        "chatbase_timeout": min(settings.chatbase_timeout, CHECK_TIMEOUT),
        "stream_idle_timeout": min(settings.stream_idle_timeout, CHECK_TIMEOUT),
        "chatbase_max_wait": min(settings.chatbase_max_wait, 5.0),
    })
    client = compose_chatbase(capped, session=session, access=access)
    where = client.base_url
    try:
        health = await client.health()
    except ChatbaseAPIError as exc:
        return fail(name, f"Chatbase's health check at {where} answered {exc.code} "
                           f"(HTTP {exc.status}); check CHATBASE_API_BASE.")
    except ChatbaseError as exc:
        return fail(name, f"{exc}; check CHATBASE_API_BASE and the network.")
    if health.get("status") != "ok":
        return fail(name, f"Chatbase at {where} reports its health as "
                           f"{health.get('status')!r}, not 'ok'.")
    # One authorised call proves the key, the plan's API access and the agent id together.
    pages = client.list_conversations(limit=1)
    try:
        await anext(pages, None)
    except ChatbaseAPIError as exc:
        # A refused key or an unknown agent is fixed in the settings, like the runtime says.
        refused = exc.code.startswith("AUTH_") or exc.code in _UNKNOWN_AGENT
        return fail(name, _chatbase_refusal(exc, access), config=refused)
    except ChatbaseError as exc:
        return fail(name, f"Chatbase at {where} failed an authorised call: {exc}.")
    finally:
        aclose: Callable[[], Awaitable[None]] | None = getattr(pages, "aclose", None)
        if aclose is not None:
            await aclose()
    return ok(name, f"agent {agent_id} answers at {where} (key {access.key_setting})")


_UNKNOWN_AGENT = frozenset({"AGENT_NOT_FOUND", "RESOURCE_NOT_FOUND"})


def _chatbase_refusal(exc: ChatbaseAPIError, access: AgentAccess) -> str:
    agent_id = access.agent
    code = exc.code
    where = f" (request id {exc.request_id})" if exc.request_id else ""
    if code.startswith("AUTH_"):
        return (f"Chatbase refused the API key ({code}); check {access.key_setting} "
                "(Workspace Settings → API Keys).")
    if code in _UNKNOWN_AGENT:
        return (f"Chatbase has no agent {agent_id!r} for the key in {access.key_setting} "
                f"({code}); check CHATBASE_AGENT_ID or BRIDGE_ROUTES.")
    if code in ("SUBSCRIPTION_API_RESTRICTED_PLAN", "PLAN_FEATURE_NOT_AVAILABLE"):
        return (f"the Chatbase workspace's plan has no API access ({code}); "
                "API v2 needs a Standard plan or above.")
    if isinstance(exc, ChatbaseRateLimited):
        return f"Chatbase is rate limiting this API key ({code}); try again shortly."
    return f"Chatbase answered {code} (HTTP {exc.status}): {exc.api_message}{where}."


# ---------------------------------------------------------------------------- Redis


async def ping_redis(target: Target) -> str:
    """PING the Redis of ``target`` once, through the bridge's own connection factory with
    check's short timeouts; returns where it answered. ``StoreError`` (``ConfigError`` for
    an unusable TLS file) names the setting to fix, never a password."""
    async with connection.opened(
        target, max_connections=2, pool_wait=CHECK_TIMEOUT / 2,
        connect_timeout=CHECK_TIMEOUT / 2, socket_timeout=CHECK_TIMEOUT / 2,
    ) as client:
        return connection.redis_address(client)


async def check_redis(settings: Settings) -> CheckResult:
    name = "redis"
    if settings.redis_url is not None or settings.redis_sentinels:
        target = Target.from_settings(settings)
        try:
            where = await ping_redis(target)
        except ConfigError as exc:
            return fail(name, str(exc), config=True)
        except StoreError as exc:
            # Refused credentials and certificates are fixed in the settings.
            refused = any(word in str(exc) for word in (
                "refused the credentials", "TLS certificate", "client certificate",
                "REDIS_SENTINEL_MASTER"))
            return fail(name, str(exc), config=refused)
        how = " over TLS" if target.tls else ""
        if target.sentinels:
            return ok(name, f"{where}{how}, found through REDIS_SENTINELS, answers PING")
        return ok(name, f"{where} (REDIS_URL){how} answers PING")
    # A scratch folder, so a bridge already running on BRIDGE_DATA_DIR keeps its files alone.
    problem = _unwritable(settings.data_dir)
    if problem:
        return fail(name, f"REDIS_URL is unset and BRIDGE_DATA_DIR {settings.data_dir} "
                           f"is not writable ({problem}).", config=True)
    with tempfile.TemporaryDirectory(prefix="cbb-check-") as scratch:
        embedded = EmbeddedRedis(Path(scratch))
        try:
            url = await embedded.start()
            await ping_redis(Target(url=url))
        except StoreError as exc:
            return fail(name, str(exc))
        finally:
            await embedded.stop()
    return ok(name, "embedded Redis works (REDIS_URL unset: one process only; "
                     "set REDIS_URL to run several replicas)")


def _unwritable(folder: Path) -> str | None:
    existing = folder
    while not existing.exists() and existing != existing.parent:
        existing = existing.parent
    if not existing.is_dir():
        return f"{existing} is not a folder"
    try:
        with tempfile.TemporaryFile(dir=existing):
            pass
    except OSError as exc:
        return exc.strerror or type(exc).__name__
    return None


# ---------------------------------------------------------------------------- helpers


def host_of(url: str) -> str:
    parts = urlsplit(url)
    try:
        port = parts.port
    except ValueError:
        port = None
    if port is None:
        return parts.hostname or url
    return f"{parts.hostname}:{port}"


def client_reason(exc: aiohttp.ClientError) -> str:
    if isinstance(exc, aiohttp.ClientConnectorError):
        return exc.strerror or "connection failed"
    if isinstance(exc, aiohttp.ClientResponseError):
        return f"HTTP {exc.status}"
    with contextlib.suppress(Exception):
        text = str(exc)
        if text:
            return text
    return type(exc).__name__
