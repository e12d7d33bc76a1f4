"""The OAuth2 link that adds the bot to a server with exactly the permissions it uses."""

from __future__ import annotations

import discord

from bridge.errors import ConfigError

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
