"""The shell finds the platforms through the ``chatbase_bridge.platforms`` entry points."""

from __future__ import annotations

import argparse
from importlib.metadata import entry_points

import pytest

from bridge.app.platforms import ENTRY_POINT_GROUP, Platform, discover, select
from bridge.app.settings import Settings
from bridge.core.errors import ConfigError


def settings(**values: str) -> Settings:
    return Settings(_env_file=None, **values)  # type: ignore[call-arg]


def test_the_entry_points_resolve_to_platforms() -> None:
    declared = {entry.name: entry for entry in entry_points(group=ENTRY_POINT_GROUP)}
    assert set(declared) == {"slack", "discord"}
    for name, entry in declared.items():
        platform = entry.load()()
        assert isinstance(platform, Platform), name
        assert platform.name == name
        for command in platform.commands():
            parser = argparse.ArgumentParser()
            command.arguments(parser)
            assert callable(command.run)


def test_discovery_lists_slack_before_discord() -> None:
    assert [p.name for p in discover()] == ["slack", "discord"]


def test_a_platform_is_enabled_by_its_credential() -> None:
    platforms = discover()
    none = settings()
    both = settings(SLACK_BOT_TOKEN="xoxb-1", DISCORD_BOT_TOKEN="d.t.x")
    assert select(none, None, platforms) == ()
    assert [p.name for p in select(both, None, platforms)] == ["slack", "discord"]
    assert [p.name for p in select(both, ["discord"], platforms)] == ["discord"]
    with pytest.raises(ConfigError, match="--platform slack needs SLACK_BOT_TOKEN"):
        select(none, ["slack"], platforms)
    with pytest.raises(ConfigError, match="Unknown platform 'irc'"):
        select(both, ["irc"], platforms)


def test_discord_brings_the_invite_command() -> None:
    commands = {p.name: [c.name for c in p.commands()] for p in discover()}
    assert commands == {"slack": [], "discord": ["discord-invite"]}
