"""BRIDGE_ROUTES as a setting: its forms, its errors (one plain error naming the setting,
never quoting it), and the agents and keys it names."""

from __future__ import annotations

import pytest

from bridge.app.settings import Settings, load_settings
from bridge.core.errors import ConfigError


def settings(monkeypatch: pytest.MonkeyPatch, routes: str, **env: str) -> Settings:
    for name in ("CHATBASE_API_KEY", "CHATBASE_AGENT_ID"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("BRIDGE_ROUTES", routes)
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    return load_settings(_env_file=None)


def test_agents_and_their_keys(monkeypatch: pytest.MonkeyPatch) -> None:
    s = settings(monkeypatch, '{"slack:T1/C2": "help", "discord:1": '
                 '{"agent": "community", "api_key_env": "SECOND_KEY"}, "slack:T1": "help"}',
                 CHATBASE_API_KEY="sk-first", CHATBASE_AGENT_ID="main", SECOND_KEY="sk-second")
    agents = s.agents()
    assert [(a.agent, a.key_setting, a.api_key.get_secret_value()) for a in agents] == [
        ("main", "CHATBASE_API_KEY", "sk-first"), ("help", "CHATBASE_API_KEY", "sk-first"),
        ("community", "SECOND_KEY", "sk-second")]
    assert s.require_chatbase().agent == "main"
    assert "sk-second" not in repr(s) and "sk-second" not in str(s.bridge_routes)


def test_routes_alone_need_no_default_agent(monkeypatch: pytest.MonkeyPatch) -> None:
    s = settings(monkeypatch, '{"slack:T1": {"agent": "a", "api_key_env": "K"}}', K="sk-k")
    assert s.missing_chatbase() == []
    assert s.require_chatbase().agent == "a"
    # A route that uses the default key needs it.
    s = settings(monkeypatch, '{"slack:T1": "a"}')
    assert s.missing_chatbase() == ["CHATBASE_API_KEY"]
    with pytest.raises(ConfigError, match="CHATBASE_API_KEY"):
        s.agents()


@pytest.mark.parametrize(("routes", "problem"), [
    ("{not json", "expected a JSON object"),
    ('["slack:T1"]', "expected a JSON object"),
    ('{"teams:T1": "a"}', "'teams:T1' is not a place"),
    ('{"slack:T1/C2/x": "a"}', "is not a place"),
    ('{"discord:abc": "a"}', "is not a place"),
    ('{"slack:T1": {"agent": "a", "api_key_env": "UNSET_KEY_VARIABLE"}}',
     "UNSET_KEY_VARIABLE named for agent a is not set"),
    ('{"slack:T1": {"agent": "a", "api_key": "sk-pasted-by-mistake"}}', "api_key_env"),
    ('{"slack:T1": {"agent": ""}}', "BRIDGE_ROUTES"),
    ('{"slack:T1": {"agent": "a", "api_key_env": "no spaces"}}', "BRIDGE_ROUTES"),
])
def test_a_bad_value_is_one_plain_error_naming_the_setting(
    monkeypatch: pytest.MonkeyPatch, routes: str, problem: str
) -> None:
    monkeypatch.delenv("UNSET_KEY_VARIABLE", raising=False)
    with pytest.raises(ConfigError) as caught:
        settings(monkeypatch, routes, CHATBASE_API_KEY="sk-x")
    message = str(caught.value)
    assert message.startswith("Invalid setting BRIDGE_ROUTES") and problem in message
    assert "sk-pasted-by-mistake" not in message and "got" not in message


def test_one_agent_has_one_key(monkeypatch: pytest.MonkeyPatch) -> None:
    s = settings(monkeypatch, '{"slack:T1": "a", "discord:1": {"agent": "a", '
                 '"api_key_env": "OTHER"}}', CHATBASE_API_KEY="sk-1", OTHER="sk-2")
    with pytest.raises(ConfigError, match="agent a is named with two API keys"):
        s.agents()
