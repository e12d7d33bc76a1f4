"""Pure translation of raw Slack payloads into the bridge's inbound models (no I/O).

Every function takes whatever Slack (or anyone) sent and returns a valid model or None:
a payload that is malformed, truncated, from a bot, an edit, outside the allowed
workspaces/channels, or simply not for the bot gives None, never an exception.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, replace
from typing import Any

from adapters.slack.markup import mentions_user, to_plain
from bridge.core.models import (
    Feedback,
    InboundFeedbackButton,
    InboundMessage,
    InboundReaction,
    Place,
    Platform,
)

# The action id of the feedback buttons the sink puts under finished answers.
FEEDBACK_ACTION_ID = "chatbase_feedback"

# Message subtypes that are still a person writing: a thread reply also sent to the channel,
# and a message with a file attached. Every other subtype (edits, deletes, joins, bot
# messages, ...) is not a question.
_USER_SUBTYPES = frozenset({"thread_broadcast", "file_share"})

_ID_RE = re.compile(r"^[A-Za-z0-9_-]{1,64}$")
_TS_RE = re.compile(r"^\d{1,12}\.\d{1,9}$")
_PERMALINK_TS_RE = re.compile(r"/archives/([A-Z0-9]+)/p(\d{10})(\d{6})")
_THREAD_PARAM_RE = re.compile(r"[?&]thread_ts=(\d{1,12}\.\d{1,9})")

_POSITIVE = frozenset({"+1", "thumbsup", "thumbs_up"})
_NEGATIVE = frozenset({"-1", "thumbsdown", "thumbs_down"})


@dataclass(frozen=True, slots=True)
class BotIdentity:
    """Who the bot is, from ``auth.test``."""

    user_id: str
    bot_id: str | None = None
    team_id: str | None = None
    enterprise_id: str | None = None


@dataclass(frozen=True, slots=True)
class Scope:
    """Where the bot may answer: allowed workspace (team or enterprise) and channel ids;
    an empty set allows all. DMs are never restricted by channel."""

    teams: frozenset[str] = frozenset()
    channels: frozenset[str] = frozenset()

    def allows(self, *, workspace: str, enterprise: str | None, channel: str, is_dm: bool) -> bool:
        if self.teams and workspace not in self.teams and (
            enterprise is None or enterprise not in self.teams
        ):
            return False
        return is_dm or not self.channels or channel in self.channels


@dataclass(frozen=True, slots=True)
class ResetRequest:
    """A reset slash command: whose conversation, and where. ``place`` is None when the
    command was used in a channel without naming a thread."""

    author: str
    place: Place | None


# --------------------------------------------------------------------------- helpers


def _map(value: Any, key: str) -> Mapping[str, Any] | None:
    if not isinstance(value, Mapping):
        return None
    found = value.get(key)
    return found if isinstance(found, Mapping) else None


def _str(value: Any, key: str) -> str | None:
    if not isinstance(value, Mapping):
        return None
    found = value.get(key)
    return found if isinstance(found, str) and found else None


def _id(value: Any, key: str) -> str | None:
    found = _str(value, key)
    return found if found is not None and _ID_RE.match(found) else None


def _ts(value: Any, key: str) -> str | None:
    found = _str(value, key)
    return found if found is not None and _TS_RE.match(found) else None


def _first_authorization(body: Mapping[str, Any]) -> Mapping[str, Any] | None:
    auths = body.get("authorizations")
    if isinstance(auths, list) and auths and isinstance(auths[0], Mapping):
        return auths[0]
    return None


def _workspace(
    body: Mapping[str, Any], event: Mapping[str, Any] | None
) -> tuple[str, str | None] | None:
    """(workspace, enterprise) of the installation that received an Events API envelope.

    In a shared channel (Slack Connect) the envelope's ``team_id``/``enterprise_id`` and
    ``event.team`` belong to the organisation of whoever is speaking; the installation is in
    ``authorizations`` (and ``context_team_id``/``context_enterprise_id``), which is what
    Bolt keys on too (slack_bolt ``request/internals.py``), so conversation keys, userIds and
    allowlists do not change with the speaker. An org-wide Enterprise Grid install has no
    team in its authorization (``is_enterprise_install``): the enterprise is the workspace.
    """
    auth = _first_authorization(body)
    enterprise = (_id(auth, "enterprise_id") or _id(body, "context_enterprise_id")
                  or _id(body, "enterprise_id"))
    if auth is not None and auth.get("is_enterprise_install") is True and enterprise:
        return enterprise, enterprise
    team = (_id(auth, "team_id") or _id(body, "context_team_id") or _id(body, "team_id")
            or _id(event, "team") or enterprise)
    if team is None:
        return None
    return team, enterprise


def _is_dm_channel(channel: str, channel_type: str | None) -> bool:
    return channel_type == "im" or (channel_type is None and channel.startswith("D"))


def _event(body: Any, *types: str) -> Mapping[str, Any] | None:
    event = _map(body, "event")
    if event is None or event.get("type") not in types:
        return None
    return event


def _event_id(body: Mapping[str, Any], channel: str, ts: str) -> str:
    return _str(body, "event_id") or f"{channel}:{ts}"


def _from_person(event: Mapping[str, Any], bot: BotIdentity) -> str | None:
    """The author when the event is a person's message (not a bot's, not ours)."""
    if event.get("bot_id") is not None or event.get("bot_profile") is not None:
        return None
    user = _id(event, "user")
    if user is None or user == bot.user_id:
        return None
    return user


# --------------------------------------------------------------------------- messages


def mention(
    body: Any, bot: BotIdentity, scope: Scope
) -> InboundMessage | None:
    """An ``app_mention`` event in a channel.

    A top-level mention is answered in a thread under it (``reply_thread``); a mention
    inside a thread continues there. DMs come through ``message.im`` instead.
    """
    event = _event(body, "app_mention")
    if event is None or not isinstance(body, Mapping):
        return None
    subtype = event.get("subtype")
    if (subtype is not None and subtype not in _USER_SUBTYPES) or event.get("edited") is not None:
        return None
    posted = _posted(body, event, bot)
    if posted is None or _is_dm_channel(posted.channel, _str(event, "channel_type")):
        return None
    return _channel_mention(body, posted, bot, scope)


def _channel_mention(
    body: Mapping[str, Any], posted: _Posted, bot: BotIdentity, scope: Scope
) -> InboundMessage | None:
    """A channel message that mentions the bot, from ``app_mention`` or ``message.*``.

    Slack may deliver one mention as both (github.com/agno-agi/agno/issues/10183), or only
    as ``message`` when a file is shared with it (slackapi/bolt-python#925); either event id
    would answer it twice or not at all, so both are claimed under the message itself and
    whichever arrives first answers it, once.
    """
    if not scope.allows(workspace=posted.workspace, enterprise=posted.enterprise,
                        channel=posted.channel, is_dm=False):
        return None
    inbound = _inbound(body, posted, is_dm=False, bot=bot,
                       reply_thread=None if posted.thread else posted.ts)
    return replace(inbound, event_id=f"mention:{posted.channel}:{posted.ts}")


def message(
    body: Any, bot: BotIdentity, scope: Scope
) -> InboundMessage | None:
    """A ``message`` event: a DM (always answered), or a candidate thread follow-up in a
    channel (``place.is_dm`` False), to be answered only when the core knows a conversation
    of its author there (``Relay.has_conversation``).

    A channel message that mentions the bot is answered as a mention (``is_mention``), under
    the same claim as its ``app_mention``, so it is answered once whichever arrives.
    """
    event = _event(body, "message")
    if event is None or not isinstance(body, Mapping):
        return None
    subtype = event.get("subtype")
    if subtype is not None and subtype not in _USER_SUBTYPES:
        return None
    if event.get("hidden") or event.get("edited") is not None:
        return None
    posted = _posted(body, event, bot)
    if posted is None:
        return None
    is_dm = _is_dm_channel(posted.channel, _str(event, "channel_type"))
    if not is_dm and mentions_user(posted.text, bot.user_id):
        return _channel_mention(body, posted, bot, scope)
    if not is_dm and not posted.thread:
        return None
    if not scope.allows(workspace=posted.workspace, enterprise=posted.enterprise,
                        channel=posted.channel, is_dm=is_dm):
        return None
    return _inbound(body, posted, is_dm=is_dm, bot=bot)


@dataclass(frozen=True, slots=True)
class _Posted:
    """What every message event a person wrote carries."""

    author: str
    channel: str
    ts: str
    workspace: str
    enterprise: str | None
    thread: str | None  # the thread it was written in; None at the top level
    text: str


def _posted(body: Mapping[str, Any], event: Mapping[str, Any], bot: BotIdentity) -> _Posted | None:
    author = _from_person(event, bot)
    channel = _id(event, "channel")
    ts = _ts(event, "ts")
    where = _workspace(body, event)
    if author is None or channel is None or ts is None or where is None:
        return None
    thread = _ts(event, "thread_ts")
    raw = event.get("text")
    return _Posted(
        author=author, channel=channel, ts=ts, workspace=where[0], enterprise=where[1],
        thread=thread if thread is not None and thread != ts else None,
        text=raw if isinstance(raw, str) else "",
    )


def _inbound(
    body: Mapping[str, Any], posted: _Posted, *, is_dm: bool, bot: BotIdentity,
    reply_thread: str | None = None,
) -> InboundMessage:
    place = Place(
        platform=Platform.SLACK,
        workspace=posted.workspace,
        channel=posted.channel,
        thread=posted.thread,
        is_dm=is_dm,
        enterprise=posted.enterprise,
    )
    return InboundMessage(
        place=place,
        author=posted.author,
        text=to_plain(posted.text, bot_user_id=bot.user_id),
        message_id=posted.ts,
        event_id=_event_id(body, posted.channel, posted.ts),
        reply_thread=reply_thread,
    )


def is_mention(message: InboundMessage) -> bool:
    """Whether a translated channel message is a mention of the bot (answered at once)
    rather than a thread follow-up (answered inside a conversation only)."""
    return message.event_id.startswith("mention:")


# --------------------------------------------------------------------------- feedback


def normalise_reaction(name: str) -> str:
    """Skin tones stripped (``+1::skin-tone-3``) and thumbs aliases folded to ``+1``/``-1``."""
    base = name.split("::", 1)[0]
    if base in _POSITIVE:
        return "+1"
    if base in _NEGATIVE:
        return "-1"
    return base


def reaction(body: Any, bot: BotIdentity, scope: Scope) -> InboundReaction | None:
    """A ``reaction_added``/``reaction_removed`` on one of the bot's messages."""
    event = _event(body, "reaction_added", "reaction_removed")
    if event is None or not isinstance(body, Mapping):
        return None
    item = _map(event, "item")
    if item is None or item.get("type") != "message":
        return None
    # item_user is the author of the reacted-to message: only the bot's replies matter, and
    # every other reaction in every channel is dropped here, before any Redis work.
    if _id(event, "item_user") != bot.user_id:
        return None
    user = _id(event, "user")
    name = _str(event, "reaction")
    channel = _id(item, "channel")
    ts = _ts(item, "ts")
    where = _workspace(body, event)
    if user is None or user == bot.user_id or name is None or channel is None or ts is None:
        return None
    if where is None:
        return None
    workspace, enterprise = where
    is_dm = _is_dm_channel(channel, None)
    if not scope.allows(workspace=workspace, enterprise=enterprise, channel=channel, is_dm=is_dm):
        return None
    emoji = normalise_reaction(name)
    added = event.get("type") == "reaction_added"
    event_ts = _str(event, "event_ts") or ""
    fallback_id = f"{channel}:{ts}:{user}:{emoji}:{'+' if added else '-'}:{event_ts}"
    return InboundReaction(
        platform=Platform.SLACK,
        workspace=workspace,
        channel=channel,
        message_id=ts,
        user=user,
        emoji=emoji,
        added=added,
        event_id=_str(body, "event_id") or fallback_id,
    )


def feedback_button(body: Any, bot: BotIdentity, scope: Scope) -> InboundFeedbackButton | None:
    """A press of the native feedback buttons (``block_actions``) under one of our answers."""
    if not isinstance(body, Mapping) or body.get("type") != "block_actions":
        return None
    actions = body.get("actions")
    if not isinstance(actions, list):
        return None
    action = next(
        (a for a in actions if isinstance(a, Mapping) and a.get("action_id") == FEEDBACK_ACTION_ID),
        None,
    )
    if action is None:
        return None
    value = _str(action, "value")
    if value is None:
        return None
    kind = value.split(":", 1)[0]
    if kind not in (Feedback.POSITIVE.value, Feedback.NEGATIVE.value):
        return None
    user_map = _map(body, "user")
    user = _id(user_map, "id")
    container = _map(body, "container")
    channel = _id(_map(body, "channel"), "id") or _id(container, "channel_id")
    ts = _ts(container, "message_ts") or _ts(_map(body, "message"), "ts")
    where = _press_workspace(body, bot)
    if where is None:
        return None
    workspace, enterprise = where
    if user is None or user == bot.user_id or channel is None or ts is None or workspace is None:
        return None
    is_dm = _is_dm_channel(channel, None)
    if not scope.allows(workspace=workspace, enterprise=enterprise, channel=channel, is_dm=is_dm):
        return None
    action_ts = _str(action, "action_ts") or ""
    return InboundFeedbackButton(
        platform=Platform.SLACK,
        workspace=workspace,
        channel=channel,
        message_id=ts,
        user=user,
        feedback=Feedback(kind),
        event_id=f"{channel}:{ts}:{user}:{action_ts}",
    )


def _press_workspace(body: Mapping[str, Any], bot: BotIdentity) -> tuple[str, str | None] | None:
    """(workspace, enterprise) of the installation whose message was pressed: the same rule
    as ``_workspace`` for events, so a press keys and filters like the answer it rates.

    Interaction payloads carry no ``authorizations`` or ``context_*``. Their ``team`` is the
    workspace of the app that posted the message, while ``user.team_id`` is the presser's
    own organisation in a shared channel (github.com/slackapi/java-slack-sdk/issues/1041), so
    the presser's team is never used. Under an org-wide install ``team`` can be null
    (slack_bolt ``request/internals.py``, ``extract_team_id``; an example payload in
    github.com/slackapi/deno-slack-sdk/issues/267) and the enterprise is the workspace, as
    for events. Otherwise the installation this bridge's one token serves (``auth.test``).
    """
    enterprise = _id(_map(body, "enterprise"), "id") or bot.enterprise_id
    if body.get("is_enterprise_install") is True and enterprise:
        return enterprise, enterprise
    team = _id(_map(body, "team"), "id") or bot.team_id or enterprise
    if team is None:
        return None
    return team, enterprise


# --------------------------------------------------------------------------- home tab


@dataclass(frozen=True, slots=True)
class Viewer:
    """Whose Home tab: the person and the installation (workspace, Grid org) their userId
    lives in, found as for their messages so the history is theirs."""

    user: str
    workspace: str
    enterprise: str | None = None

    @property
    def place(self) -> Place:
        # The userId depends only on the platform, the workspace (or org) and the person;
        # the agent is the one that answers the person's DMs (Continue happens there).
        return Place(platform=Platform.SLACK, workspace=self.workspace, channel="",
                     is_dm=True, enterprise=self.enterprise)


def home_opened(body: Any, scope: Scope) -> Viewer | None:
    """The viewer of an ``app_home_opened`` event on the Home tab; None for the other tabs
    and for a workspace the bot does not serve."""
    event = _event(body, "app_home_opened")
    if event is None or event.get("tab") != "home":
        return None
    return _viewer(_id(event, "user"), _workspace(body, event), scope)


@dataclass(frozen=True, slots=True)
class HomePress:
    viewer: Viewer
    action_id: str
    value: str | None


def home_press(body: Any, bot: BotIdentity, scope: Scope) -> HomePress | None:
    """A button pressed on the Home tab (``block_actions`` from a ``home`` view)."""
    if not isinstance(body, Mapping):
        return None
    actions = body.get("actions")
    action = actions[0] if isinstance(actions, list) and actions else None
    action_id = _str(action, "action_id")
    if action_id is None:
        return None
    viewer = _viewer(_id(_map(body, "user"), "id"), _press_workspace(body, bot), scope)
    if viewer is None:
        return None
    return HomePress(viewer=viewer, action_id=action_id, value=_str(action, "value"))


def _viewer(user: str | None, where: tuple[str, str | None] | None,
            scope: Scope) -> Viewer | None:
    if user is None or where is None:
        return None
    workspace, enterprise = where
    if not scope.allows(workspace=workspace, enterprise=enterprise, channel="", is_dm=True):
        return None
    return Viewer(user=user, workspace=workspace, enterprise=enterprise)


# --------------------------------------------------------------------------- reset


def _command_workspace(
    body: Mapping[str, Any], bot: BotIdentity
) -> tuple[str, str | None] | None:
    """(workspace, enterprise) a slash command is keyed and filtered by: the same rule as
    ``_workspace`` for events, so a reset finds the conversation a message made.

    Slack offers an app's commands only to members of a workspace where it is installed, so
    a command's ``team_id`` names an installation. Under an org-wide install
    (``is_enterprise_install``, a "true"/"false" string in the form body) the enterprise is
    the workspace, as it is for events; without a team the bot's own (``auth.test``)."""
    enterprise = _id(body, "enterprise_id") or bot.enterprise_id
    if str(body.get("is_enterprise_install")).lower() == "true" and enterprise:
        return enterprise, enterprise
    team = _id(body, "team_id") or bot.team_id or enterprise
    if team is None:
        return None
    return team, enterprise


def reset_request(body: Any, scope: Scope, bot: BotIdentity) -> ResetRequest | None:
    """The reset slash command: the DM it was used in, or a channel thread.

    Slack's slash-command payload has no thread field, so in a channel the thread is taken
    from a ``thread_ts`` field when present or from a message link given as the argument.
    """
    if not isinstance(body, Mapping):
        return None
    author = _id(body, "user_id")
    channel = _id(body, "channel_id")
    where = _command_workspace(body, bot)
    if author is None or channel is None or where is None:
        return None
    workspace, enterprise = where
    is_dm = channel.startswith("D") or body.get("channel_name") == "directmessage"
    if not scope.allows(workspace=workspace, enterprise=enterprise, channel=channel, is_dm=is_dm):
        return None
    thread = _ts(body, "thread_ts")
    if thread is None:
        thread, linked_channel = _thread_from_link(_str(body, "text") or "")
        if linked_channel is not None and linked_channel != channel:
            thread = None
    if is_dm:
        return ResetRequest(
            author=author,
            place=Place(
                platform=Platform.SLACK, workspace=workspace, channel=channel,
                thread=None, is_dm=True, enterprise=enterprise,
            ),
        )
    if thread is None:
        return ResetRequest(author=author, place=None)
    return ResetRequest(
        author=author,
        place=Place(
            platform=Platform.SLACK, workspace=workspace, channel=channel,
            thread=thread, is_dm=False, enterprise=enterprise,
        ),
    )


def _thread_from_link(text: str) -> tuple[str | None, str | None]:
    """(thread ts, channel) from a Slack message link: ``…/archives/C1/p1700000000123456``
    names a message; ``?thread_ts=…`` names its thread when the link is to a reply."""
    found = _PERMALINK_TS_RE.search(text)
    if found is None:
        return None, None
    channel = found.group(1)
    param = _THREAD_PARAM_RE.search(text)
    if param is not None:
        return param.group(1), channel
    return f"{found.group(2)}.{found.group(3)}", channel


# --------------------------------------------------------------------------- agent experience


@dataclass(frozen=True, slots=True)
class SessionStop:
    """A press of the stop button of an agent session: the thread whose answer to stop."""

    channel: str
    thread_ts: str


def session_stopped(body: Any, scope: Scope) -> SessionStop | None:
    """An ``agent_session_stopped`` event
    (https://docs.slack.dev/reference/events/agent_session_stopped/): ``channel`` and
    ``thread_ts`` name the session; ``team_id`` is on the envelope."""
    event = _event(body, "agent_session_stopped")
    if event is None or not isinstance(body, Mapping):
        return None
    channel = _id(event, "channel")
    thread = _ts(event, "thread_ts")
    where = _workspace(body, event)
    if channel is None or thread is None or where is None:
        return None
    workspace, enterprise = where
    if not scope.allows(workspace=workspace, enterprise=enterprise, channel=channel,
                        is_dm=_is_dm_channel(channel, None)):
        return None
    return SessionStop(channel=channel, thread_ts=thread)


def messages_tab_opened(body: Any, scope: Scope) -> str | None:
    """The DM channel of an ``app_home_opened`` event on the app's messages tab (where the
    suggested prompts are shown), or None for any other tab."""
    event = _event(body, "app_home_opened")
    if event is None or not isinstance(body, Mapping) or event.get("tab") != "messages":
        return None
    channel = _id(event, "channel")
    if channel is None or _viewer(_id(event, "user"), _workspace(body, event), scope) is None:
        return None
    return channel
