"""Pure translation of Discord gateway payloads: what is answered, where, and what is dropped."""

from __future__ import annotations

from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from adapters.discord.translate import (
    THREAD_NAME_LIMIT,
    ChannelFacts,
    ChannelKind,
    Filters,
    ReplyMode,
    command_place,
    message_decision,
    normalise_emoji,
    reaction_event,
    strip_bot_mention,
    thread_name,
)
from bridge.core.models import Place, Platform

BOT = "100000000000000001"
USER = "200000000000000002"
OTHER = "200000000000000003"
GUILD = "300000000000000003"
CHANNEL = "400000000000000004"
THREAD = "500000000000000005"
MESSAGE = "600000000000000006"

TEXT_CAN_THREAD = ChannelFacts(kind=ChannelKind.TEXT, can_open_thread=True)
TEXT_NO_THREAD = ChannelFacts(kind=ChannelKind.TEXT, can_open_thread=False)
IN_THREAD = ChannelFacts(kind=ChannelKind.THREAD, parent_id=CHANNEL)
EVERYWHERE = Filters()


def payload(**overrides: Any) -> dict[str, Any]:
    base: dict[str, Any] = {
        "id": MESSAGE,
        "channel_id": CHANNEL,
        "guild_id": GUILD,
        "author": {"id": USER, "username": "asker", "bot": False},
        "content": f"<@{BOT}> how do refunds work?",
        "mentions": [{"id": BOT, "username": "bridge", "bot": True}],
        "mention_everyone": False,
        "mention_roles": [],
        "type": 0,
    }
    base.update(overrides)
    return base


def decide(data: Any, facts: ChannelFacts = TEXT_CAN_THREAD, filters: Filters = EVERYWHERE):
    return message_decision(data, bot_id=BOT, facts=facts, filters=filters)


# ---------------------------------------------------------------- messages


def test_a_channel_mention_opens_a_thread_keyed_on_the_message() -> None:
    decision = decide(payload())
    assert decision is not None
    assert decision.mode is ReplyMode.OPEN_THREAD
    assert decision.target_channel == MESSAGE
    message = decision.message
    assert message.text == "how do refunds work?"
    assert message.place == Place(platform=Platform.DISCORD, workspace=GUILD, channel=CHANNEL)
    assert message.reply_thread == MESSAGE
    assert message.conversation_thread == MESSAGE
    assert message.event_id == MESSAGE and message.message_id == MESSAGE
    assert message.author == USER
    assert decision.thread_name == "how do refunds work?"


def test_without_thread_permission_the_answer_is_inline() -> None:
    decision = decide(payload(), TEXT_NO_THREAD)
    assert decision is not None
    assert decision.mode is ReplyMode.INLINE
    assert decision.target_channel == CHANNEL
    assert decision.message.reply_thread is None


def test_unknown_or_voice_channels_get_an_inline_answer() -> None:
    decision = decide(payload(), ChannelFacts(kind=ChannelKind.OTHER))
    assert decision is not None and decision.mode is ReplyMode.INLINE


def test_a_nickname_mention_is_stripped_too() -> None:
    decision = decide(payload(content=f"<@!{BOT}> what now?"))
    assert decision is not None and decision.message.text == "what now?"


def test_strip_bot_mention_keeps_other_mentions() -> None:
    assert strip_bot_mention(f"<@{BOT}> ask <@{OTHER}>", BOT) == f"ask <@{OTHER}>"


def test_everyone_and_role_mentions_are_not_mentions_of_the_bot() -> None:
    everyone = payload(content="@everyone hello", mentions=[], mention_everyone=True)
    role = payload(content="<@&700> hello", mentions=[], mention_roles=["700"])
    assert decide(everyone) is None
    assert decide(role) is None


def test_channel_messages_without_a_mention_are_ignored() -> None:
    assert decide(payload(content="just chatting", mentions=[])) is None


def test_a_thread_follow_up_without_a_mention_needs_a_conversation() -> None:
    decision = decide(
        payload(channel_id=THREAD, content="and for annual plans?", mentions=[]), IN_THREAD
    )
    assert decision is not None
    assert decision.mode is ReplyMode.IN_PLACE
    assert decision.mentioned is False
    assert decision.target_channel == THREAD
    assert decision.message.place == Place(
        platform=Platform.DISCORD, workspace=GUILD, channel=CHANNEL, thread=THREAD
    )
    assert decision.message.conversation_thread == THREAD


def test_a_thread_follow_up_without_content_is_ignored() -> None:
    # Without the message-content intent Discord sends such messages with empty content.
    assert decide(payload(channel_id=THREAD, content="", mentions=[]), IN_THREAD) is None


def test_a_mention_inside_a_thread_is_answered_there() -> None:
    decision = decide(payload(channel_id=THREAD), IN_THREAD)
    assert decision is not None
    assert decision.mode is ReplyMode.IN_PLACE and decision.mentioned
    assert decision.target_channel == THREAD
    assert decision.message.reply_thread is None


def test_dms_are_answered_in_place_without_a_mention() -> None:
    data = payload(content="hello there", mentions=[])
    del data["guild_id"]
    decision = decide(data, ChannelFacts(kind=ChannelKind.OTHER))
    assert decision is not None
    assert decision.mode is ReplyMode.IN_PLACE and decision.mentioned
    assert decision.message.place == Place(
        platform=Platform.DISCORD, workspace="", channel=CHANNEL, is_dm=True
    )
    assert decision.message.text == "hello there"


def test_bots_webhooks_system_messages_and_the_bot_itself_are_ignored() -> None:
    assert decide(payload(author={"id": OTHER, "bot": True})) is None
    assert decide(payload(author={"id": BOT})) is None
    assert decide(payload(author={"id": USER, "system": True})) is None
    assert decide(payload(webhook_id="800000000000000008")) is None
    for system_type in (6, 7, 8, 18, 21):  # pin, join, boost, thread created, starter
        assert decide(payload(type=system_type)) is None
    assert decide(payload(type=19)) is not None  # a reply is a normal message


def test_allowed_guilds_and_channels() -> None:
    only_other_guild = Filters.of(["999"], [])
    only_this_channel = Filters.of([], [CHANNEL])
    only_other_channel = Filters.of([], ["998"])
    assert decide(payload(), filters=only_other_guild) is None
    assert decide(payload(), filters=only_this_channel) is not None
    assert decide(payload(), filters=only_other_channel) is None
    # A thread counts by its parent.
    thread_message = payload(channel_id=THREAD)
    assert decide(thread_message, IN_THREAD, only_this_channel) is not None
    assert decide(thread_message, IN_THREAD, only_other_channel) is None
    # DMs are not in a guild: guild and channel lists do not apply.
    dm = payload(content="hi", mentions=[])
    del dm["guild_id"]
    assert decide(dm, filters=only_other_guild) is not None


def test_thread_names_fit_discords_limit() -> None:
    assert thread_name("  what\n is\tthis  ") == "what is this"
    assert thread_name("   ") == "Question"
    long = thread_name("x" * 300)
    assert len(long) == THREAD_NAME_LIMIT and long.endswith("…")
    # Astral characters count twice in Discord's (UTF-16) length.
    emoji = thread_name("😀" * 80)
    assert len(emoji.encode("utf-16-le")) // 2 <= THREAD_NAME_LIMIT
    assert emoji.endswith("…")


def test_a_mention_of_the_bot_alone_is_passed_on_empty() -> None:
    decision = decide(payload(content=f"<@{BOT}>"))
    assert decision is not None and decision.message.text == ""
    assert decision.thread_name == "Question"


# ---------------------------------------------------------------- reactions


def reaction(**overrides: Any) -> dict[str, Any]:
    base: dict[str, Any] = {
        "user_id": USER,
        "channel_id": THREAD,
        "message_id": MESSAGE,
        "guild_id": GUILD,
        "emoji": {"id": None, "name": "👍"},
        "type": 0,
        "burst": False,
        "message_author_id": BOT,
    }
    base.update(overrides)
    return base


def react(data: Any, added: bool = True, filters: Filters = EVERYWHERE):
    return reaction_event(data, added=added, bot_id=BOT, filters=filters, received_at=1000.4)


def test_skin_tones_and_variation_selectors_are_normalised() -> None:
    for name in ("👍", "👍🏻", "👍🏽", "👍🏿", "👍\ufe0f", "👍🏾\ufe0f"):
        assert normalise_emoji(name) == "👍"
    assert normalise_emoji("👎🏿") == "👎"
    assert normalise_emoji("🔄") == "🔄"


def test_a_reaction_becomes_an_inbound_reaction() -> None:
    event = react(reaction(emoji={"id": None, "name": "👎🏽"}))
    assert event is not None
    assert event.emoji == "👎"
    assert event.added is True
    assert (event.workspace, event.channel, event.message_id, event.user) == (
        GUILD, THREAD, MESSAGE, USER,
    )
    removed = react(reaction(message_author_id=None), added=False)
    assert removed is not None and removed.added is False
    assert removed.event_id != event.event_id


def test_reactions_the_bot_should_not_see() -> None:
    assert react(reaction(user_id=BOT)) is None  # its own
    assert react(reaction(message_author_id=OTHER)) is None  # on someone else's message
    assert react(reaction(emoji={"id": "900", "name": "thumbsup"})) is None  # custom emoji
    assert react(reaction(), filters=Filters.of(["1"], [])) is None


def test_a_dm_reaction_has_no_workspace() -> None:
    data = reaction()
    del data["guild_id"]
    event = react(data)
    assert event is not None and event.workspace == ""


def test_duplicate_deliveries_share_an_event_id() -> None:
    first = react(reaction())
    second = reaction_event(
        reaction(), added=True, bot_id=BOT, filters=EVERYWHERE, received_at=1000.9
    )
    assert first is not None and second is not None
    assert first.event_id == second.event_id


# ---------------------------------------------------------------- commands


def test_command_places() -> None:
    assert command_place(guild_id=None, channel_id=CHANNEL, facts=IN_THREAD).is_dm
    in_thread = command_place(guild_id=GUILD, channel_id=THREAD, facts=IN_THREAD)
    assert (in_thread.channel, in_thread.thread) == (CHANNEL, THREAD)
    in_channel = command_place(guild_id=GUILD, channel_id=CHANNEL, facts=TEXT_CAN_THREAD)
    assert (in_channel.channel, in_channel.thread) == (CHANNEL, None)


# ---------------------------------------------------------------- arbitrary payloads

json_leaf = st.none() | st.booleans() | st.integers() | st.text(max_size=30)
any_json = st.recursive(
    json_leaf,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=12), inner,
                                                                max_size=5),
    max_leaves=20,
)


@st.composite
def truncated_message(draw: st.DrawFn) -> dict[str, Any]:
    """A real-looking payload with keys dropped and values swapped for junk."""
    data = payload()
    for key in list(data):
        choice = draw(st.integers(0, 3))
        if choice == 0:
            del data[key]
        elif choice == 1:
            data[key] = draw(any_json)
    return data


facts_strategy = st.sampled_from([TEXT_CAN_THREAD, TEXT_NO_THREAD, IN_THREAD,
                                  ChannelFacts(kind=ChannelKind.OTHER)])


@settings(deadline=None)
@given(data=any_json | truncated_message(), facts=facts_strategy)
def test_any_message_payload_translates_or_is_dropped(data: Any, facts: ChannelFacts) -> None:
    decision = decide(data, facts)
    if decision is None:
        return
    message = decision.message
    assert message.place.platform is Platform.DISCORD
    assert message.event_id.isdigit() and message.author.isdigit()
    assert message.author != BOT
    assert f"<@{BOT}>" not in message.text
    if decision.mode is ReplyMode.OPEN_THREAD:
        assert decision.thread_name
        assert len(decision.thread_name.encode("utf-16-le")) // 2 <= THREAD_NAME_LIMIT


@st.composite
def truncated_reaction(draw: st.DrawFn) -> dict[str, Any]:
    data = reaction()
    for key in list(data):
        choice = draw(st.integers(0, 3))
        if choice == 0:
            del data[key]
        elif choice == 1:
            data[key] = draw(any_json)
    return data


@settings(deadline=None)
@given(data=any_json | truncated_reaction(), added=st.booleans())
def test_any_reaction_payload_translates_or_is_dropped(data: Any, added: bool) -> None:
    event = react(data, added)
    if event is None:
        return
    assert event.user != BOT and event.user.isdigit()
    assert event.emoji and not any(0x1F3FB <= ord(c) <= 0x1F3FF for c in event.emoji)
    assert event.added is added


@given(name=st.text(min_size=1, max_size=400))
def test_thread_names_are_never_empty_or_too_long(name: str) -> None:
    result = thread_name(name)
    assert result and len(result.encode("utf-16-le")) // 2 <= THREAD_NAME_LIMIT
    assert "\n" not in result
