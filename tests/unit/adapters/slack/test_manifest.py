"""The Slack app manifest and its documented HTTP variant match what the adapter uses."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import yaml

from adapters.slack.adapter import EVENTS_PATH
from bridge.app.settings import Settings

ROOT = Path(__file__).resolve().parents[4]
MANIFEST = ROOT / "deploy" / "slack" / "manifest.yaml"
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
# three stream methods, assistant.threads.setStatus); commands covers the reset command.
SCOPES = set(EVENTS.values()) | {"chat:write", "commands"}


def load_manifest() -> dict[str, Any]:
    data = yaml.safe_load(MANIFEST.read_text())
    assert isinstance(data, dict)
    return data


def test_manifest_asks_for_exactly_what_the_adapter_uses() -> None:
    manifest = load_manifest()
    assert set(manifest["oauth_config"]["scopes"]["bot"]) == SCOPES
    assert set(manifest["settings"]["event_subscriptions"]["bot_events"]) == set(EVENTS)
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
    variant = yaml.safe_load(blocks[0])
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
