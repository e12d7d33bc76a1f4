"""The one interface through which the application shell knows a chat platform.

Each adapter package implements ``Platform`` and declares a zero-argument factory for it in
the ``chatbase_bridge.platforms`` entry-point group (pyproject.toml), so the shell finds the
installed platforms without naming them; a new platform is a new package, not a new branch
in the runtime or the CLI.
"""

from __future__ import annotations

import argparse
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from importlib.metadata import entry_points
from typing import TYPE_CHECKING, Protocol, runtime_checkable

import aiohttp
from aiohttp import web

from bridge.app.settings import Settings
from bridge.core.errors import ConfigError
from bridge.core.ports import PlatformAdapter

if TYPE_CHECKING:
    from bridge.app.checks import CheckResult
    from bridge.app.compose import Bridge

__all__ = ["ENTRY_POINT_GROUP", "Command", "Platform", "discover", "select"]

ENTRY_POINT_GROUP = "chatbase_bridge.platforms"


@dataclass(frozen=True)
class Command:
    """An extra ``chatbase-bridge`` subcommand a platform brings (``discord-invite``).

    ``arguments`` adds its options to its parser; ``run`` does the work and returns the exit
    status, calling ``load_settings`` only if it needs the settings (it may work without)."""

    name: str
    help: str
    description: str
    arguments: Callable[[argparse.ArgumentParser], None]
    run: Callable[[argparse.Namespace, Callable[[], Settings]], int]


@runtime_checkable
class Platform(Protocol):
    """One chat platform as the shell sees it."""

    @property
    def name(self) -> str:
        """Its name on the command line (``--platform``) and in logs and check lines."""
        ...

    @property
    def rank(self) -> int:
        """Its place in lists an operator reads (check lines, messages): lower first."""
        ...

    @property
    def credential(self) -> str:
        """The setting that turns it on (named in 'not configured' messages)."""
        ...

    def enabled(self, settings: Settings) -> bool:
        """Whether ``settings`` configure it (its credential is set)."""
        ...

    def adapter(self, bridge: Bridge, *, http_app: web.Application) -> PlatformAdapter:
        """Its bot on the composed bridge; ``http_app`` is the shared HTTP server's app
        (for webhooks) and ``bridge.session`` the shared HTTP session."""
        ...

    async def check(self, settings: Settings, session: aiohttp.ClientSession) -> CheckResult:
        """Its preflight for ``chatbase-bridge check``: credentials valid, service reached."""
        ...

    def commands(self) -> Sequence[Command]:
        """Its extra subcommands."""
        ...


def discover() -> tuple[Platform, ...]:
    """Every installed platform, by rank (installers do not keep the declared order)."""
    found: list[Platform] = []
    for entry in entry_points(group=ENTRY_POINT_GROUP):
        factory = entry.load()
        platform = factory()
        if not isinstance(platform, Platform):
            raise TypeError(f"entry point {entry.name!r} ({entry.value}) is not a Platform")
        found.append(platform)
    return tuple(sorted(found, key=lambda p: (p.rank, p.name)))


def credentials(platforms: Sequence[Platform]) -> str:
    """``SLACK_BOT_TOKEN and/or DISCORD_BOT_TOKEN``: what turns any of them on."""
    return " and/or ".join(p.credential for p in platforms)


def select(
    settings: Settings, names: Sequence[str] | None, platforms: Sequence[Platform]
) -> tuple[Platform, ...]:
    """The platforms to run: those ``names`` asks for, each of which must be configured,
    or else every configured one."""
    if names is None:
        return tuple(p for p in platforms if p.enabled(settings))
    by_name = {p.name: p for p in platforms}
    chosen = []
    for name in names:
        platform = by_name.get(name)
        if platform is None:
            raise ConfigError(
                f"Unknown platform {name!r}: expected {' or '.join(by_name) or 'none'}."
            )
        if not platform.enabled(settings):
            raise ConfigError(f"--platform {name} needs {platform.credential}.")
        chosen.append(platform)
    return tuple(chosen)
