"""Answering a Discord interaction: acknowledge within Discord's 3 s, then say something only
the person sees (https://discord.com/developers/docs/interactions/receiving-and-responding)."""

from __future__ import annotations

import logging
from typing import Any

import discord

from .sink import NO_MENTIONS

log = logging.getLogger(__name__)


async def defer(interaction: discord.Interaction[Any], *, ephemeral: bool, what: str) -> bool:
    """Acknowledge ``interaction``: "thinking" for a command, silently for a button. False
    when it cannot be acknowledged any more."""
    try:
        if interaction.type is discord.InteractionType.component:
            await interaction.response.defer()
        else:
            await interaction.response.defer(ephemeral=ephemeral, thinking=True)
    except discord.HTTPException as exc:
        # 40060: another process (same shard by mistake) acknowledged it first; 10062: it
        # arrived too late to answer.
        log.info("could not acknowledge %s (%s): code %s", what, interaction.id, exc.code)
        return False
    return True


async def edit_response(interaction: discord.Interaction[Any], text: str,
                        **extra: Any) -> None:
    """Replace a deferred response's "thinking" (or, for a button, its message) with
    ``text`` (and ``view=`` when given)."""
    try:
        await interaction.edit_original_response(content=text, allowed_mentions=NO_MENTIONS,
                                                 **extra)
    except discord.HTTPException as exc:
        log.info("could not answer interaction %s: code %s", interaction.id, exc.code)


async def follow_up_ephemeral(interaction: discord.Interaction[Any], text: str) -> None:
    """A message only the person sees, after the interaction was acknowledged."""
    await interaction.followup.send(text, ephemeral=True, allowed_mentions=NO_MENTIONS)


async def reply_ephemeral(interaction: discord.Interaction[Any], text: str) -> None:
    """An immediate answer only the person sees (the acknowledgement itself)."""
    try:
        await interaction.response.send_message(text, ephemeral=True,
                                                allowed_mentions=NO_MENTIONS)
    except discord.HTTPException as exc:
        log.info("could not answer interaction %s: code %s", interaction.id, exc.code)
