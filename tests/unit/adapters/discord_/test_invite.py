"""The invite link asks for exactly the scopes and permissions the adapter uses."""

from __future__ import annotations

import base64
from urllib.parse import parse_qs, urlsplit

import discord
import pytest

from adapters.discord.invite import PERMISSIONS, SCOPES, application_id_from_token, invite_url
from bridge.core.errors import ConfigError


def test_invite_url_has_the_scopes_and_permissions() -> None:
    url = invite_url("123456789012345678")
    parts = urlsplit(url)
    assert (parts.scheme, parts.netloc, parts.path) == ("https", "discord.com", "/oauth2/authorize")
    query = parse_qs(parts.query)
    assert query["client_id"] == ["123456789012345678"]
    assert query["scope"] == ["bot applications.commands"]
    granted = discord.Permissions(int(query["permissions"][0]))
    assert granted == PERMISSIONS
    assert SCOPES == ("bot", "applications.commands")


def test_permissions_are_the_ones_used_and_no_more() -> None:
    wanted = {
        "read_messages", "send_messages", "send_messages_in_threads",
        "create_public_threads", "read_message_history",
    }
    # discord.py iterates View Channel under its older name, read_messages.
    granted = {name for name, value in PERMISSIONS if value}
    assert granted == wanted
    # Things a careless invite often asks for.
    assert not PERMISSIONS.administrator
    assert not PERMISSIONS.manage_messages
    assert not PERMISSIONS.mention_everyone
    assert not PERMISSIONS.embed_links
    assert not PERMISSIONS.add_reactions


@pytest.mark.parametrize("bad", ["", "abc", "12 34", "-5", "1" * 25])
def test_a_malformed_application_id_is_a_config_error(bad: str) -> None:
    with pytest.raises(ConfigError, match="application id"):
        invite_url(bad)


def test_the_application_id_is_read_from_a_bot_token() -> None:
    head = base64.b64encode(b"1234567890123456789").decode().rstrip("=")
    assert application_id_from_token(f"{head}.GhIjKl.abcdefghijklmnop") == "1234567890123456789"
    assert application_id_from_token("not-a-token") is None
    assert application_id_from_token("") is None
    junk = base64.b64encode(b"hello").decode()
    assert application_id_from_token(f"{junk}.x.y") is None
