"""Fuzzing settings parsing: whatever the environment holds, the bridge either starts with
typed settings or says in one ``ConfigError`` which variables are wrong, and never repeats a
secret (a key, a token, a password inside a URL) while saying it."""

from __future__ import annotations

import re
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from bridge.app.settings import Settings, env_name, load_settings
from bridge.core.errors import ConfigError

NAMES = sorted(env_name(field) for field in Settings.model_fields)
SECRET_NAMES = [n for n in NAMES if n.endswith(("KEY", "TOKEN", "SECRET", "PASSWORD"))]
URL_NAMES = ["REDIS_URL", "CHATBASE_API_BASE", "SLACK_API_URL", "DISCORD_API_BASE"]

# Values an operator could plausibly type, and plain noise.
plausible = st.one_of(
    st.integers(-10, 10**9).map(str),
    st.floats(allow_nan=True, allow_infinity=True).map(str),
    st.sampled_from(["", " ", "true", "false", "yes", "0", "1", "user", "thread", "json",
                     "console", "debug", "INFO", "loud", "a,b,,c", " x , y ", "1,2,3",
                     "1,x", "/reset", "/Chatbase-Reset", "redis://h:1/0", "unix:///tmp/s",
                     "https://example.test/api", "ftp://nope"]),
)
noise = st.text(st.characters(blacklist_categories=("Cs",), blacklist_characters="\x00"),
                max_size=40)
# A secret has a shape no ordinary word or error message can have (as real keys and tokens
# do), so "the message repeats the secret" can only mean the secret leaked: a key drawn as
# plain "json" would collide with a correct message quoting the allowed values.
hex_digits = st.text(alphabet="0123456789abcdef", min_size=16, max_size=32)
secret = st.one_of(
    st.sampled_from(["", " "]),
    st.builds(lambda body, tail: f"sk-{body}{tail}", hex_digits, st.one_of(st.just(""), noise)),
)
environment = st.builds(
    lambda plain, secrets: {**plain, **secrets},
    st.dictionaries(st.sampled_from([n for n in NAMES if n not in SECRET_NAMES]),
                    st.one_of(plausible, noise), max_size=8),
    st.dictionaries(st.sampled_from(SECRET_NAMES), secret, max_size=3),
)


def _load(values: dict[str, str]) -> Settings:
    return load_settings(_env_file=None, **values)


@settings(deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(environment)
def test_any_environment_gives_settings_or_one_plain_config_error(values: dict[str, str]) -> None:
    try:
        loaded = _load(values)
    except ConfigError as exc:
        message = str(exc)
        assert message.startswith("Invalid setting ") and message.endswith(".")
        assert "\n" not in message
        named = [n for n in values if n in message]
        assert named, message  # the variable at fault is named
        others = {v for n, v in values.items() if n not in SECRET_NAMES}
        for name in SECRET_NAMES:
            value = values.get(name, "")
            # (A secret that is also another variable's value may be shown as that value.)
            if len(value.strip()) >= 4 and not any(value in other for other in others):
                assert value not in message, (name, message)
        return
    # Accepted: the typed values are what the environment said, within their bounds.
    assert isinstance(loaded, Settings)
    assert 0 <= loaded.http_port <= 65535 and loaded.chatbase_rate_limit >= 1
    for field in ("slack_allowed_teams", "slack_allowed_channels", "discord_allowed_guilds",
                  "feedback_positive"):
        items: list[str] = getattr(loaded, field)
        assert all(item == item.strip() and item and "," not in item for item in items)


ident = st.text(st.characters(whitelist_categories=("Lu", "Ll", "Nd")), min_size=1,
                max_size=12)


@settings(deadline=None)
@given(st.lists(ident, max_size=6), st.sampled_from(["", " ", "  "]))
def test_comma_lists_round_trip(items: list[str], pad: str) -> None:
    raw = ",".join(f"{pad}{item}{pad}" for item in items)
    loaded = _load({"BRIDGE_SLACK_ALLOWED_CHANNELS": raw, "BRIDGE_DISCORD_ALLOWED_GUILDS": raw})
    assert loaded.slack_allowed_channels == items
    assert loaded.discord_allowed_guilds == items


# Shaped like a generated password, so no error message can contain it by chance.
password = st.builds(lambda body: f"Pw{body}", hex_digits)


@settings(deadline=None)
@given(st.sampled_from(URL_NAMES), password,
       st.sampled_from(["http", "htps", "redis", "", "tcp", "rediss"]),
       st.sampled_from(["://", ":/", "//", ":"]))
def test_a_password_in_a_mistyped_url_is_never_repeated(
    name: str, secret: str, scheme: str, sep: str
) -> None:
    value = f"{scheme}{sep}user:{secret}@host.example:6379/0"
    try:
        _load({name: value})
    except ConfigError as exc:
        assert secret not in str(exc), str(exc)
        assert name in str(exc)


@settings(deadline=None)
@given(st.integers(-1000, 70000))
def test_port_bounds_are_enforced_and_named(port: int) -> None:
    values: dict[str, Any] = {"BRIDGE_HTTP_PORT": str(port)}
    if 0 <= port <= 65535:
        assert _load(values).http_port == port
    else:
        try:
            _load(values)
        except ConfigError as exc:
            assert re.search(r"BRIDGE_HTTP_PORT: .*\(got '-?\d+'\)", str(exc))
        else:
            raise AssertionError(f"port {port} accepted")
