"""The 👍/👎 feedback buttons: one persistent view that survives restarts by its custom ids."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

import discord

from bridge.core.models import Feedback

# Stable ids: a message posted before a restart still routes its presses here, and the
# answer it belongs to is found through the pressed message's id, not the custom id.
POSITIVE_ID = "cbb:fb:pos"
NEGATIVE_ID = "cbb:fb:neg"

PressHandler = Callable[[discord.Interaction[Any], Feedback], Awaitable[None]]


class _FeedbackButton(discord.ui.Button["FeedbackView"]):
    def __init__(self, emoji: str, custom_id: str, value: Feedback) -> None:
        super().__init__(style=discord.ButtonStyle.secondary, emoji=emoji, custom_id=custom_id)
        self.value = value

    async def callback(self, interaction: discord.Interaction[Any]) -> None:
        if self.view is not None:
            await self.view.pressed(interaction, self.value)


class FeedbackView(discord.ui.View):
    """Two buttons; with a handler it is the dispatching view registered with
    ``Client.add_view``, without one it is only the layout sent with an answer."""

    def __init__(self, on_press: PressHandler | None = None) -> None:
        super().__init__(timeout=None)
        self._on_press = on_press
        self.add_item(_FeedbackButton("👍", POSITIVE_ID, Feedback.POSITIVE))
        self.add_item(_FeedbackButton("👎", NEGATIVE_ID, Feedback.NEGATIVE))

    async def pressed(self, interaction: discord.Interaction[Any], value: Feedback) -> None:
        if self._on_press is not None:
            await self._on_press(interaction, value)


def layout_view() -> FeedbackView:
    """A view for sending only: stopped, so discord.py does not keep a copy per message
    (the one registered persistent view dispatches every press)."""
    view = FeedbackView()
    view.stop()
    return view
