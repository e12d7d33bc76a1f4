"""Who is talking and where: Chatbase userIds and conversation keys from platform ids."""

from __future__ import annotations

import hashlib
import hmac
import re

from bridge.core.keys import NONE, escape
from bridge.core.models import ConversationScope, InboundMessage, Place, Platform

# Chatbase's userId rule (https://chatbase.co/docs/api-v2/user-conversations): 1 to 128 of
# these characters. The one statement of it; the client's validation and `ask`'s default id
# use it too.
USER_ID_CHARS = "a-zA-Z0-9._-"
USER_ID_MAX = 128
USER_ID_PATTERN = re.compile(f"^[{USER_ID_CHARS}]{{1,{USER_ID_MAX}}}$")
NOT_USER_ID_CHARS = re.compile(f"[^{USER_ID_CHARS}]+")

# The plain form is ``slack.<org>.<user>`` / ``discord.<user>`` with every part escaped
# (no '.', and '_' only ever followed by two lowercase hex digits). The hashed forms put
# '_h' / '_s' where a part would be: no escaped part can look like that, so a hashed id
# never equals a plain one.
_HMAC_MARK = "_h"
_HASH_MARK = "_s"


def _plain_user_id(place: Place, author: str) -> str:
    name = place.platform.value
    if place.platform is Platform.SLACK:
        # Enterprise Grid users keep one id across the grid's workspaces, so the grid, not
        # the workspace, names where the user lives.
        org = place.enterprise or place.workspace
        return f"{name}.{escape(org, keep_dot=False)}.{escape(author, keep_dot=False)}"
    return f"{name}.{escape(author, keep_dot=False)}"


def chatbase_user_id(place: Place, author: str, *, secret: str | None) -> str:
    """The Chatbase userId of ``author`` at ``place``: stable, injective, always legal.

    With ``secret`` (BRIDGE_USER_ID_SECRET) the id is an HMAC-SHA256 pseudonym, so Chatbase
    never sees a platform id; without it, an id too long for Chatbase becomes a SHA-256.
    """
    plain = _plain_user_id(place, author)
    name = place.platform.value
    if secret:
        digest = hmac.new(secret.encode(), plain.encode("ascii"), hashlib.sha256).hexdigest()
        return f"{name}.{_HMAC_MARK}.{digest}"
    if len(plain) > USER_ID_MAX:
        return f"{name}.{_HASH_MARK}.{hashlib.sha256(plain.encode('ascii')).hexdigest()}"
    return plain


def _key(place: Place, thread: str | None, author: str, scope: ConversationScope) -> str:
    name = place.platform.value
    if place.is_dm:
        # One rolling conversation per person per DM, threads or not (DESIGN: DMs).
        return f"{name}-dm:{escape(place.channel)}:{escape(author)}"
    who = NONE if scope is ConversationScope.THREAD and thread is not None else escape(author)
    if place.platform is Platform.SLACK:
        where = escape(thread) if thread is not None else NONE
        return f"{name}:{escape(place.workspace)}:{escape(place.channel)}:{where}:{who}"
    # A Discord thread is a channel of its own; its id alone names the place.
    channel = thread if thread is not None else place.channel
    return f"{name}:{escape(place.workspace)}:{escape(channel)}:{who}"


def conversation_key(message: InboundMessage, *, scope: ConversationScope) -> str:
    """The key of the conversation ``message`` belongs to (DESIGN: "Conversation key").

    Slack ``(team, channel, thread, user)``, Discord ``(guild, channel-or-thread, user)``,
    DMs ``(dm channel, user)``. With ``thread`` scope everyone in a thread shares one
    conversation. The agent that owns the stored conversation is kept beside it, not in the
    key, so the place stays the bot's when CHATBASE_AGENT_ID changes. Parts are escaped, so
    the key is safe inside a Redis key.
    """
    return _key(message.place, message.conversation_thread, message.author, scope)


def place_key(place: Place, author: str, *, scope: ConversationScope) -> str:
    """The key a message by ``author`` at ``place`` would get (for a reset command)."""
    return _key(place, place.thread, author, scope)


# ---------------------------------------------------------------------- answer handles
# An answer in flight is found by a handle, for stopping it: the thread it streams into (a
# Slack agent session is a thread: `agent_session_stopped` names the channel and thread) or
# the event it answers (a Discord Stop button carries the question's id).


def thread_handle(platform: Platform, channel: str, thread: str) -> str:
    return f"{platform.value}:t:{escape(channel)}:{escape(thread)}"


def event_handle(platform: Platform, event_id: str) -> str:
    return f"{platform.value}:e:{escape(event_id)}"


def answer_handles(message: InboundMessage) -> tuple[str, ...]:
    """The handles an answer to ``message`` can be stopped by."""
    platform = message.place.platform
    handles = [event_handle(platform, message.event_id)]
    thread = message.conversation_thread
    if thread is not None:
        handles.append(thread_handle(platform, message.place.channel, thread))
    return tuple(handles)
