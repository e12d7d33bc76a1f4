"""The app's Home tab: a person's past conversations with the agent, to continue one.

On ``app_home_opened`` (``tab == "home"``) the bridge publishes (``views.publish``) the
person's conversations, newest activity first (``bridge.core.history``): title or first
question, last activity ("2 hours ago"), the status when it is not ongoing, "Continue" on an
ongoing one, "New conversation on this topic" on one that ended, "More" for the next page and
"New conversation". Continue opens the DM with the bot, posts a message headed by the
conversation's title and last exchange, and binds the DM to that conversation, so a reply
continues it. Buttons are acknowledged at once; the work runs in the adapter's tasks.

Block Kit: https://docs.slack.dev/surfaces/app-home and
https://docs.slack.dev/reference/methods/views.publish.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import replace
from typing import Any, Protocol

from adapters.slack.markup import escape
from adapters.slack.sink import SlackApi, fallback_text, markdown_blocks
from adapters.slack.translate import Viewer
from bridge.core.history import History, HistoryPage, ago
from bridge.core.models import Place

log = logging.getLogger(__name__)

CONTINUE = "cbb_home_continue"
MORE = "cbb_home_more"
NEWEST = "cbb_home_newest"
NEW = "cbb_home_new"
NEW_TOPIC = "cbb_home_new_topic"
ACTIONS = (CONTINUE, MORE, NEWEST, NEW, NEW_TOPIC)

# Block Kit limits: a button's value holds at most 2,000 characters
# (https://docs.slack.dev/reference/block-kit/block-elements/button-element).
VALUE_MAX = 2_000

EMPTY = "No conversations yet. Send me a message or mention me in a channel to start one."
CONTINUED = "Continued in our messages: reply in the thread there."
STARTED = "Your next message to me starts a new conversation."
NEW_HERE = "Your next message here starts a new conversation. What would you like to ask?"
NEW_ON_TOPIC = "Let's start a new conversation about *{topic}*. What would you like to know?"


class Continuing(Protocol):
    """What the Home tab asks of the relay (``RelayService``)."""

    async def adopt(self, place: Place, author: str, conversation_id: str) -> None: ...

    async def reset(self, place: Place, author: str) -> bool: ...


def _button(text: str, action_id: str, value: str | None = None,
            style: str | None = None) -> dict[str, Any]:
    button: dict[str, Any] = {"type": "button", "action_id": action_id,
                              "text": {"type": "plain_text", "text": text, "emoji": True}}
    if value is not None:
        button["value"] = value
    if style is not None:
        button["style"] = style
    return button


def home_view(page: HistoryPage, *, now: float, paged: bool,
              notice: str | None = None) -> dict[str, Any]:
    """The Home tab for one page of conversations."""
    blocks: list[dict[str, Any]] = [
        {"type": "header", "text": {"type": "plain_text", "text": "Your conversations"}},
        {"type": "actions", "elements": [_button("New conversation", NEW, style="primary")]},
    ]
    if notice:
        blocks.append({"type": "context",
                       "elements": [{"type": "mrkdwn", "text": escape(notice)}]})
    blocks.append({"type": "divider"})
    if page.problem is not None:
        blocks.append({"type": "section", "text": {"type": "mrkdwn", "text": escape(page.problem)}})
    elif not page.conversations:
        blocks.append({"type": "section", "text": {"type": "mrkdwn", "text": escape(EMPTY)}})
    for past in page.conversations:
        when = ago(past.updated_at, now)
        status = past.status_line
        line = f"*{escape(past.title)}*\n{when}" + (f" · {status}, can't be continued"
                                                    if status else "")
        accessory = (_button("Continue", CONTINUE, past.id) if past.ongoing
                     else _button("New conversation on this topic", NEW_TOPIC,
                                  past.title[:VALUE_MAX]))
        blocks.append({"type": "section", "text": {"type": "mrkdwn", "text": line},
                       "accessory": accessory})
    footer = []
    if paged:
        footer.append(_button("Newest", NEWEST))
    if page.cursor is not None and len(page.cursor) <= VALUE_MAX:
        footer.append(_button("More", MORE, page.cursor))
    if footer:
        blocks.append({"type": "actions", "elements": footer})
    return {"type": "home", "blocks": blocks}


class HomeTab:
    """Publishes the Home tab and answers its buttons."""

    def __init__(self, *, api: SlackApi, history: History, relay: Continuing) -> None:
        self._api = api
        self._history = history
        self._relay = relay

    async def show(self, viewer: Viewer, *, cursor: str | None = None,
                   notice: str | None = None) -> None:
        page = await self._history.page(viewer.place, viewer.user, cursor)
        view = home_view(page, now=self._history.now(), paged=cursor is not None,
                         notice=notice)
        await self._api.call("views.publish", user_id=viewer.user, view=view)

    async def press(self, viewer: Viewer, action_id: str, value: str | None) -> None:
        if action_id == MORE:
            await self.show(viewer, cursor=value or None)
        elif action_id == NEWEST:
            await self.show(viewer)
        elif action_id == CONTINUE and value:
            await self._continue(viewer, value)
        elif action_id in (NEW, NEW_TOPIC):
            await self._start_over(viewer, value if action_id == NEW_TOPIC else None)

    async def _dm(self, viewer: Viewer) -> Place:
        opened = await self._api.call("conversations.open", users=viewer.user)
        channel = opened.get("channel")
        channel_id = channel.get("id") if isinstance(channel, Mapping) else None
        if not isinstance(channel_id, str) or not channel_id:
            raise RuntimeError("Slack conversations.open answered without a channel id")
        return replace(viewer.place, channel=channel_id, is_dm=True)

    async def _post(self, dm: Place, text: str) -> str | None:
        posted = await self._api.call(
            "chat.postMessage", channel=dm.channel, text=fallback_text(text),
            blocks=markdown_blocks(text), unfurl_links=False, unfurl_media=False,
        )
        ts = posted.get("ts")
        return ts if isinstance(ts, str) and ts else None

    async def _continue(self, viewer: Viewer, conversation_id: str) -> None:
        dm = await self._dm(viewer)
        resumed = await self._history.resume(dm, viewer.user, conversation_id)
        if isinstance(resumed, str):
            await self.show(viewer, notice=resumed)
            return
        ts = await self._post(dm, resumed.heading())
        await self._relay.adopt(replace(dm, thread=ts), viewer.user, conversation_id)
        log.info("a past conversation continues in a DM thread")
        await self.show(viewer, notice=CONTINUED)

    async def _start_over(self, viewer: Viewer, topic: str | None) -> None:
        dm = await self._dm(viewer)
        await self._relay.reset(dm, viewer.user)
        await self._post(dm, NEW_ON_TOPIC.format(topic=topic) if topic else NEW_HERE)
        await self.show(viewer, notice=STARTED)
