"""The Slack app manifests (agent and classic) and the documented HTTP variant match what the
adapter uses."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import yaml

from adapters.slack.adapter import EVENTS_PATH
from bridge.app.settings import Settings

ROOT = Path(__file__).resolve().parents[4]
MANIFEST = ROOT / "deploy" / "slack" / "manifest.yaml"
CLASSIC = ROOT / "deploy" / "slack" / "manifest.classic.yaml"
DOCS = ROOT / "docs" / "slack.md"

# Every bot event the adapter listens to, and the scope that delivers it.
EVENTS = {
    "app_mention": "app_mentions:read",
    "message.im": "im:history",
    "message.channels": "channels:history",
    "message.groups": "groups:history",
    "reaction_added": "reactions:read",
    "reaction_removed": "reactions:read",
}
# chat:write covers every Web API method the sinks call (postMessage, update, delete, the
# three stream methods, assistant.threads.setStatus, agents.sessions.setStatus); commands
# covers the reset command.
SCOPES = set(EVENTS.values()) | {"chat:write", "commands"}
# The Home tab (both manifests): the history, and Continue opening the person's DM.
HOME_EVENTS = {"app_home_opened"}
HOME_SCOPES = {"im:write"}
# The agent experience: declaring the app an agent adds assistant:write
# (https://docs.slack.dev/ai/agent-sessions/), which setSuggestedPrompts needs.
AGENT_EVENTS = {"agent_session_stopped"}
AGENT_SCOPES = {"assistant:write"}


def load_manifest(path: Path = MANIFEST) -> dict[str, Any]:
    data = yaml.safe_load(path.read_text())
    assert isinstance(data, dict)
    return data


def test_the_agent_manifest_declares_the_agent_view() -> None:
    manifest = load_manifest()
    view = manifest["features"]["agent_view"]
    assert 0 < len(view["agent_description"]) <= 300
    prompts = view["suggested_prompts"]
    assert 0 < len(prompts) <= 4
    assert all(set(p) == {"title", "message"} and p["title"] and p["message"]
               for p in prompts)
    # The bridge sets the same prompts by default when the messages tab opens.
    assert prompts == [p.model_dump() for p in
                       Settings.model_fields["slack_suggested_prompts"].default]
    assert "assistant_view" not in manifest["features"]  # being deprecated


def test_the_classic_manifest_is_the_agent_one_without_the_agent_experience() -> None:
    agent, classic = load_manifest(), load_manifest(CLASSIC)
    assert "agent_view" not in classic["features"]
    assert set(classic["oauth_config"]["scopes"]["bot"]) == SCOPES | HOME_SCOPES
    assert set(classic["settings"]["event_subscriptions"]["bot_events"]) == (
        set(EVENTS) | HOME_EVENTS)
    assert classic["features"]["app_home"]["home_tab_enabled"] is True
    for key in ("display_information", "settings"):
        a, c = dict(agent[key]), dict(classic[key])
        a.pop("event_subscriptions", None), c.pop("event_subscriptions", None)
        assert a == c, key
    assert {k: v for k, v in agent["features"].items() if k != "agent_view"} == (
        classic["features"])


def test_manifest_asks_for_exactly_what_the_adapter_uses() -> None:
    manifest = load_manifest()
    assert set(manifest["oauth_config"]["scopes"]["bot"]) == (
        SCOPES | AGENT_SCOPES | HOME_SCOPES)
    assert set(manifest["settings"]["event_subscriptions"]["bot_events"]) == (
        set(EVENTS) | AGENT_EVENTS | HOME_EVENTS)
    assert manifest["features"]["app_home"]["home_tab_enabled"] is True
    assert "user" not in manifest["oauth_config"]["scopes"]
    [command] = manifest["features"]["slash_commands"]
    assert command["command"] == Settings.model_fields["slack_reset_command"].default
    assert manifest["settings"]["interactivity"]["is_enabled"] is True
    assert manifest["settings"]["socket_mode_enabled"] is True
    assert manifest["settings"]["org_deploy_enabled"] is True
    assert manifest["features"]["app_home"]["messages_tab_enabled"] is True
    assert manifest["features"]["app_home"]["messages_tab_read_only_enabled"] is False
    # Field limits of Slack's manifest schema (slackapi/manifest-schema, v1).
    info = manifest["display_information"]
    assert len(info["name"]) <= 35 and len(info["description"]) <= 140
    assert 175 <= len(info["long_description"]) <= 4000
    assert 2 <= len(command["command"]) <= 32
    assert set(manifest) <= {"_metadata", "display_information", "features", "oauth_config",
                             "settings"}


def test_docs_show_the_http_variant_with_the_events_url() -> None:
    text = DOCS.read_text()
    blocks = re.findall(r"```yaml\n(.*?)```", text, flags=re.S)
    assert blocks, "docs/slack.md shows the HTTP manifest variant"
    [variant] = [yaml.safe_load(b) for b in blocks if "request_url" in b]
    url = f"https://<host>{EVENTS_PATH}"
    settings = variant["settings"]
    assert settings["event_subscriptions"]["request_url"] == url
    assert settings["interactivity"]["request_url"] == url
    assert variant["features"]["slash_commands"][0]["url"] == url
    assert settings["socket_mode_enabled"] is False
    manifest = load_manifest()
    assert settings["event_subscriptions"]["bot_events"] == (
        manifest["settings"]["event_subscriptions"]["bot_events"]
    )
    assert "SLACK_SIGNING_SECRET" in text and "SLACK_APP_TOKEN" in text
