"""The Redis settings: each mistake is one ConfigError naming the variable to change, and a
password is never quoted back."""

from __future__ import annotations

from pathlib import Path

import pytest

from bridge.app.settings import load_settings
from bridge.core.errors import ConfigError
from bridge.store.connection import Target

SECRET = "Pw-0123456789abcdef"


def _error(**values: str) -> str:
    with pytest.raises(ConfigError) as raised:
        load_settings(_env_file=None, **values)
    message = str(raised.value)
    assert SECRET not in message
    return message


@pytest.mark.parametrize(("values", "named", "says"), [
    ({"REDIS_SENTINELS": "a:26379"}, "REDIS_SENTINEL_MASTER", "required with REDIS_SENTINELS"),
    ({"REDIS_SENTINEL_MASTER": "m"}, "REDIS_SENTINEL_MASTER", "needs REDIS_SENTINELS"),
    ({"REDIS_URL": "redis://h", "REDIS_SENTINELS": "a:1", "REDIS_SENTINEL_MASTER": "m"},
     "REDIS_SENTINELS", "not both"),
    ({"REDIS_SENTINELS": "a:1,nope", "REDIS_SENTINEL_MASTER": "m"}, "REDIS_SENTINELS",
     "'nope' is not host:port"),
    ({"REDIS_SENTINELS": "a:99999", "REDIS_SENTINEL_MASTER": "m"}, "REDIS_SENTINELS",
     "not host:port"),
    ({"REDIS_PASSWORD": SECRET}, "REDIS_PASSWORD", "needs REDIS_URL or REDIS_SENTINELS"),
    ({"REDIS_URL": f"redis://:{SECRET}@h", "REDIS_PASSWORD": SECRET}, "REDIS_PASSWORD",
     "give it in one place"),
    ({"REDIS_URL": "redis://h", "REDIS_USERNAME": "bridge"}, "REDIS_PASSWORD",
     "REDIS_USERNAME is set"),
    ({"REDIS_URL": "redis://h", "REDIS_TLS": "true"}, "REDIS_TLS", "rediss://"),
    ({"REDIS_URL": "redis://h", "REDIS_TLS_CA_FILE": "/etc/hostname"}, "REDIS_TLS_CA_FILE",
     "not reached over TLS"),
    ({"REDIS_URL": "rediss://h", "REDIS_TLS_CA_FILE": "/no/such/ca.pem"}, "REDIS_TLS_CA_FILE",
     "no file at /no/such/ca.pem"),
    ({"REDIS_SENTINELS": "a:1", "REDIS_SENTINEL_MASTER": "m",
      "REDIS_SENTINEL_PASSWORD": SECRET, "REDIS_SENTINEL_USERNAME": "x",
      "REDIS_TLS_CA_FILE": "/etc/hostname"}, "REDIS_TLS_CA_FILE", "not reached over TLS"),
])
def test_each_redis_mistake_names_its_setting(values: dict[str, str], named: str,
                                              says: str) -> None:
    message = _error(**values)
    assert f"{named}:" in message and says in message, message


def test_a_client_certificate_needs_its_key(tmp_path: Path) -> None:
    cert = tmp_path / "c.pem"
    cert.write_text("x")
    message = _error(REDIS_URL="rediss://h", REDIS_TLS_CERT_FILE=str(cert))
    assert "REDIS_TLS_KEY_FILE:" in message


def test_sentinel_settings_make_a_sentinel_target() -> None:
    settings = load_settings(
        _env_file=None, REDIS_SENTINELS=" s0:26379 , [::1]:26380 ",
        REDIS_SENTINEL_MASTER="mymaster", REDIS_USERNAME="bridge", REDIS_PASSWORD=SECRET,
        REDIS_TLS="true",
    )
    target = Target.from_settings(settings)
    assert target.sentinels == (("s0", 26379), ("::1", 26380))
    assert target.master == "mymaster" and target.url is None and target.tls
    assert target.username == "bridge" and target.password == SECRET
    assert target.setting == "REDIS_SENTINELS" and SECRET not in repr(target)


def test_rediss_means_tls_and_a_url_password_stays_in_the_url() -> None:
    target = Target.from_settings(load_settings(
        _env_file=None, REDIS_URL=f"rediss://bridge:{SECRET}@redis.example:6380/0"))
    assert target.tls and target.password is None and target.setting == "REDIS_URL"
