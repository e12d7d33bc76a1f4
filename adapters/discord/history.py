"""Discord's /history: a person's past conversations with the agent, shown only to them, and
"Continue here", which carries one of them on in a new thread.

The list is an ephemeral response: only the person who used the command sees it. Its buttons
are dispatched by a ``discord.ui.DynamicItem`` that reads what it needs from the button's
custom id (the owner's user id, and a conversation id or a page cursor), so they keep
working after a restart. A value too long for Discord's 100-character custom id is kept in
this process's memory instead; pressed after a restart, such a button says the list has
expired. A press by anyone but the owner is refused, and every "Continue here" asks
``History.resume``, which checks with Chatbase that the conversation is the presser's.
"""

from __future__ import annotations

import logging
import re
import secrets
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from enum import StrEnum
from typing import Any, Protocol

import discord
from discord import app_commands

from adapters.common import SOMETHING_WENT_WRONG, EventTasks
from bridge.app.metrics import Metrics
from bridge.core.history import History, HistoryPage, PastConversation, ago
from bridge.core.models import Place, Platform
from bridge.core.split import one_line

from .replies import defer, edit_response, follow_up_ephemeral, reply_ephemeral
from .sink import ARCHIVE_AFTER_MINUTES, NO_MENTIONS
from .translate import ChannelFacts, ChannelKind, thread_name

log = logging.getLogger(__name__)

# A custom id holds at most 100 characters and a button label 80; a message holds at most
# five action rows of five buttons
# (https://discord.com/developers/docs/components/reference#button).
CUSTOM_ID_LIMIT = 100
LABEL_LIMIT = 80
ROW_SIZE = 5
PREFIX = "cbb:h"
# cbb:h:<action>:<owner's user id>:<cursor or conversation id>; an upper-case action means
# the value is a token for one kept in memory.
TEMPLATE = re.compile(r"cbb:h:(?P<action>[mncMC]):(?P<owner>[0-9]{1,20}):(?P<value>.*)")
KEEP_SECONDS = 86_400.0  # an ephemeral message stays until the person dismisses it
KEEP_MAX = 10_000

HEADER = "**Your conversations with the assistant**, most recent first:"
HEADER_MORE = "**More of your conversations:**"
EMPTY = ("You have no conversations with the assistant yet. Mention me, send me a direct "
         "message or use /ask, and they will be listed here.")
NO_MORE = "There are no more conversations to show."
NOT_YOUR_LIST = "These buttons belong to someone else's list. Use /history to see your own."
EXPIRED = "This list has expired. Use /history again."


class Action(StrEnum):
    MORE = "m"  # the next page (value: its cursor)
    NEWEST = "n"  # back to the first page
    CONTINUE = "c"  # continue a conversation (value: its id)


@dataclass(frozen=True, slots=True)
class Press:
    action: Action
    owner: str
    value: str | None  # the cursor or conversation id; None when it was kept and is lost


class PressIds:
    """The custom ids of the history buttons, and the values too long to fit in one."""

    def __init__(self, *, keep_seconds: float = KEEP_SECONDS, keep_max: int = KEEP_MAX,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self._keep_seconds = keep_seconds
        self._keep_max = keep_max
        self._clock = clock
        self._kept: OrderedDict[str, tuple[str, float]] = OrderedDict()

    def custom_id(self, action: Action, owner: str, value: str = "") -> str:
        plain = f"{PREFIX}:{action.value}:{owner}:{value}"
        if len(plain) <= CUSTOM_ID_LIMIT:
            return plain
        now = self._clock()
        while self._kept and (len(self._kept) >= self._keep_max
                              or next(iter(self._kept.values()))[1] <= now):
            self._kept.popitem(last=False)
        token = secrets.token_urlsafe(12)
        self._kept[token] = (value, now + self._keep_seconds)
        return f"{PREFIX}:{action.value.upper()}:{owner}:{token}"

    def press(self, match: re.Match[str]) -> Press:
        """The press a custom id matching ``TEMPLATE`` stands for."""
        letter, value = match["action"], match["value"]
        if letter.isupper():
            kept = self._kept.get(value)
            value = kept[0] if kept is not None and kept[1] > self._clock() else None
        return Press(Action(letter.lower()), match["owner"], value)

    def parse(self, custom_id: str) -> Press | None:
        match = TEMPLATE.fullmatch(custom_id)
        return self.press(match) if match is not None else None


def page_text(page: HistoryPage, now: float, *, first: bool) -> str:
    """The list as a person reads it: title, last activity, and the status when not
    ongoing; the problem line instead when Chatbase could not list them."""
    if page.problem:
        return page.problem
    if not page.conversations:
        return EMPTY if first else NO_MORE
    lines = [HEADER if first else HEADER_MORE]
    lines.extend(f"- {_line(past, now)}" for past in page.conversations)
    return "\n".join(lines)


def _line(past: PastConversation, now: float) -> str:
    parts = [f"**{discord.utils.escape_markdown(past.title)}**", ago(past.updated_at, now)]
    if past.status_line:
        parts.append(past.status_line)
    return " · ".join(parts)


def page_view(ids: PressIds, owner: str, page: HistoryPage, *, first: bool,
              retry: str | None = None) -> discord.ui.View | None:
    """The buttons under a page: Continue here per ongoing conversation, then More (or Try
    again after a failed page), and Newest past the first page. None when there are none."""
    view = discord.ui.View(timeout=None)
    ongoing = [past for past in page.conversations if past.ongoing]
    for n, past in enumerate(ongoing):
        view.add_item(discord.ui.Button(
            label=one_line(f"Continue here: {past.title}", LABEL_LIMIT),
            style=discord.ButtonStyle.primary,
            custom_id=ids.custom_id(Action.CONTINUE, owner, past.id), row=n // ROW_SIZE))
    nav_row = -(-len(ongoing) // ROW_SIZE)
    following = retry if page.problem else page.cursor
    if following:
        view.add_item(discord.ui.Button(
            label="Try again" if page.problem else "More",
            custom_id=ids.custom_id(Action.MORE, owner, following), row=nav_row))
    if not first:
        view.add_item(discord.ui.Button(
            label="Newest", custom_id=ids.custom_id(Action.NEWEST, owner), row=nav_row))
    if not view.children:
        return None
    # Only a layout: the dynamic item registered with the client dispatches every press,
    # so discord.py need not keep this view per message.
    view.stop()
    return view


class Adopter(Protocol):
    async def adopt(self, place: Place, author: str, conversation_id: str) -> None: ...


@dataclass(frozen=True, slots=True)
class Where:
    """Where an interaction happened: the conversation place and what the channel allows."""

    place: Place
    facts: ChannelFacts


@dataclass(frozen=True, slots=True)
class _Destination:
    place: Place  # the conversation key of the continuing thread (or channel, or DM)
    channel: discord.abc.Messageable
    hint: str
    shown_as: str  # how the confirmation names it


class HistoryCommand:
    """/history and its buttons, for one Discord adapter."""

    def __init__(
        self,
        *,
        history: History,
        relay: Adopter,
        tasks: EventTasks,
        metrics: Metrics,
        where: Callable[[discord.Interaction[Any]], Where],
        refusal: Callable[[Place], str | None],
        mention_needed: bool,
    ) -> None:
        """``where`` says where an interaction happened; ``refusal`` why nothing is done
        there (the adapter's filters, a restart), or None; ``mention_needed`` whether a
        message in a thread needs a mention to reach the bot (no message-content intent)."""
        self._history = history
        self._relay = relay
        self._tasks = tasks
        self._metrics = metrics
        self._where = where
        self._refusal = refusal
        self._mention_needed = mention_needed
        self.ids = PressIds()

    def command(self) -> app_commands.Command[Any, ..., None]:
        @app_commands.command(
            name="history", description="Your past conversations with the assistant."
        )
        async def history(interaction: discord.Interaction[Any]) -> None:
            await self.on_command(interaction)

        return history

    def button(self) -> type[discord.ui.DynamicItem[discord.ui.Button[Any]]]:
        """The dynamic item to register with ``Client.add_dynamic_items``."""
        command = self

        class HistoryButton(discord.ui.DynamicItem[discord.ui.Button[Any]], template=TEMPLATE):
            def __init__(self, item: discord.ui.Button[Any], press: Press) -> None:
                super().__init__(item)
                self.press = press

            @classmethod
            async def from_custom_id(
                cls, interaction: discord.Interaction[Any], item: discord.ui.Item[Any],
                match: re.Match[str], /,
            ) -> HistoryButton:
                if not isinstance(item, discord.ui.Button):
                    raise TypeError("a history custom id on a component that is not a button")
                return cls(item, command.ids.press(match))

            async def callback(self, interaction: discord.Interaction[Any]) -> None:
                await command.on_press(interaction, self.press)

        return HistoryButton

    # ------------------------------------------------------------------ the list

    async def on_command(self, interaction: discord.Interaction[Any]) -> None:
        where = self._where(interaction)
        refusal = self._refusal(where.place)
        if refusal is not None:
            await reply_ephemeral(interaction, refusal)
            return
        # Discord waits 3 s for an acknowledgement; Chatbase and Redis come after it.
        if not await defer(interaction, ephemeral=True, what="/history"):
            return
        self._tasks.spawn(
            self._show(interaction, where.place, str(interaction.user.id), None),
            name="discord-history",
            notice=lambda: edit_response(interaction, SOMETHING_WENT_WRONG, view=None),
        )

    async def _show(self, interaction: discord.Interaction[Any], place: Place, owner: str,
                    cursor: str | None) -> None:
        page = await self._history.page(place, owner, cursor)
        first = cursor is None
        await edit_response(interaction, page_text(page, self._history.now(), first=first),
                            view=page_view(self.ids, owner, page, first=first, retry=cursor))

    # ------------------------------------------------------------------ the buttons

    async def on_press(self, interaction: discord.Interaction[Any], press: Press) -> None:
        owner = str(interaction.user.id)
        if owner != press.owner:
            await reply_ephemeral(interaction, NOT_YOUR_LIST)
            return
        where = self._where(interaction)
        refusal = self._refusal(where.place)
        if refusal is not None:
            await reply_ephemeral(interaction, refusal)
            return
        if not await defer(interaction, ephemeral=True, what="a history button"):
            return
        if press.action is Action.NEWEST or press.value is not None:
            self._tasks.spawn(
                self._act(interaction, where, owner, press), name="discord-history-button",
                notice=lambda: follow_up_ephemeral(interaction, SOMETHING_WENT_WRONG),
            )
        else:
            await follow_up_ephemeral(interaction, EXPIRED)

    async def _act(self, interaction: discord.Interaction[Any], where: Where, owner: str,
                   press: Press) -> None:
        if press.action is Action.CONTINUE:
            assert press.value is not None
            await self._continue(interaction, where, owner, press.value)
        else:
            # A component's "original response" is the message it is on: the list pages
            # in place.
            await self._show(interaction, where.place, owner,
                             press.value if press.action is Action.MORE else None)

    async def _continue(self, interaction: discord.Interaction[Any], where: Where, owner: str,
                        conversation_id: str) -> None:
        resumed = await self._history.resume(where.place, owner, conversation_id)
        if isinstance(resumed, str):
            await follow_up_ephemeral(interaction, resumed)
            return
        target = await self._destination(interaction, where, resumed.title)
        await self._relay.adopt(target.place, owner, conversation_id)
        self._count("post")
        await target.channel.send(resumed.heading(target.hint), allowed_mentions=NO_MENTIONS)
        title = discord.utils.escape_markdown(resumed.title)
        await follow_up_ephemeral(interaction, f"Continuing **{title}** {target.shown_as}.")

    async def _destination(self, interaction: discord.Interaction[Any], where: Where,
                           title: str) -> _Destination:
        """A new public thread off a text channel where the bot may open one; elsewhere (a
        DM, a thread, a channel without thread permissions) the place itself."""
        channel, place = interaction.channel, where.place
        if where.facts.can_open_thread and isinstance(channel, discord.TextChannel):
            try:
                self._count("thread")
                thread = await channel.create_thread(
                    name=thread_name(title, fallback="Conversation"),
                    type=discord.ChannelType.public_thread,
                    auto_archive_duration=ARCHIVE_AFTER_MINUTES,
                )
            except (discord.HTTPException, discord.RateLimited) as exc:
                log.info("could not open a thread to continue in, using the channel: %s",
                         type(exc).__name__)
            else:
                return _Destination(
                    place=Place(platform=Platform.DISCORD, workspace=place.workspace,
                                channel=place.channel, thread=str(thread.id)),
                    channel=thread, hint=self._thread_hint(), shown_as=f"in {thread.mention}")
        here = interaction.client.get_partial_messageable(
            int(place.thread or place.channel), guild_id=interaction.guild_id)
        if place.is_dm:
            hint = "Reply here to continue the conversation."
        elif where.facts.kind is ChannelKind.THREAD:
            hint = self._thread_hint()
        else:
            hint = "Mention me here to continue the conversation."
        return _Destination(place=place, channel=here, hint=hint, shown_as="here")

    def _thread_hint(self) -> str:
        if self._mention_needed:
            return "Mention me in this thread to continue the conversation."
        return "Reply in this thread to continue the conversation."

    def _count(self, call: str) -> None:
        self._metrics.platform_calls.labels("discord", call).inc()
