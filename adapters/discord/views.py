"""The buttons under answers: 👍/👎 feedback and Stop, both routed after a restart by their
custom ids alone (no view kept in memory per message)."""

from __future__ import annotations

import re
from collections.abc import Awaitable, Callable
from typing import Any

import discord

from bridge.core.models import Feedback

# Stable ids: a message posted before a restart still routes its presses here, and the
# answer it belongs to is found through the pressed message's id, not the custom id.
POSITIVE_ID = "cbb:fb:pos"
NEGATIVE_ID = "cbb:fb:neg"

# The Stop button names the asker and the question's event id (both snowflakes of at most
# 20 digits: 50 characters in all, within Discord's 100-character custom_id limit,
# https://discord.com/developers/docs/components/reference#button).
STOP_PREFIX = "cbb:stop:"
STOP_TEMPLATE = re.compile(STOP_PREFIX + r"(?P<asker>[0-9]{1,20}):(?P<event>[0-9]{1,20})")
STOP_LABEL = "Stop"

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


def stop_custom_id(asker: str, event_id: str) -> str:
    return f"{STOP_PREFIX}{asker}:{event_id}"


def parse_stop(custom_id: object) -> tuple[str, str] | None:
    """(asker, event id) of a Stop button's custom id; None for any other component."""
    if not isinstance(custom_id, str):
        return None
    found = STOP_TEMPLATE.fullmatch(custom_id)
    return (found["asker"], found["event"]) if found else None


def stop_view(asker: str, event_id: str) -> discord.ui.View:
    """The layout sent with an answer while it is written: the Stop button alone. Stopped,
    like ``layout_view``: presses are routed by parsing the custom id (``parse_stop``), not
    by a view kept per message."""
    view = discord.ui.View(timeout=None)
    view.add_item(discord.ui.Button(
        style=discord.ButtonStyle.secondary, label=STOP_LABEL,
        custom_id=stop_custom_id(asker, event_id),
    ))
    view.stop()
    return view
