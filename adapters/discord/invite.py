"""The OAuth2 link that adds the bot to a server with exactly the permissions it uses."""

from __future__ import annotations

import base64
import binascii

import discord

from bridge.core.errors import ConfigError

from .translate import snowflake

SCOPES: tuple[str, ...] = ("bot", "applications.commands")

# What the adapter does and nothing more. It reads channels and the history a reply
# references, writes messages, opens a public thread from a mention and answers in it.
# It adds no reactions (it only reads them) and sends no embeds, so neither Add Reactions
# nor Embed Links is asked for. Slash commands need only the applications.commands scope.
PERMISSIONS = discord.Permissions(
    view_channel=True,
    send_messages=True,
    send_messages_in_threads=True,
    create_public_threads=True,
    read_message_history=True,
)


def invite_url(application_id: str) -> str:
    """The authorisation URL for the application (its id is on the Developer Portal's
    General Information page)."""
    app = snowflake(application_id.strip())
    if app is None:
        raise ConfigError(
            f"{application_id!r} is not a Discord application id (a number such as "
            "123456789012345678, from General Information in the Developer Portal)."
        )
    return discord.utils.oauth_url(app, permissions=PERMISSIONS, scopes=SCOPES)


def application_id_from_token(token: str) -> str | None:
    """The application id a bot token belongs to, without asking Discord.

    A bot token's first dot-separated segment is the bot user's id in base64, and a bot
    user's id is its application's id. None when the token does not have that shape.
    """
    head = token.strip().split(".", 1)[0]
    if not head:
        return None
    try:
        decoded = base64.b64decode(head + "=" * (-len(head) % 4), altchars=b"-_", validate=True)
    except (binascii.Error, ValueError):
        return None
    try:
        text = decoded.decode("ascii")
    except UnicodeDecodeError:
        return None
    return snowflake(text)
