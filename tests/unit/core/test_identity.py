"""Chatbase userIds and conversation keys derived from platform identities."""

from __future__ import annotations

import re

from hypothesis import given
from hypothesis import strategies as st

from bridge.app.settings import ConversationScope
from bridge.core.identity import (
    USER_ID_PATTERN,
    chatbase_user_id,
    conversation_key,
    place_key,
)
from bridge.core.keys import escape, unescape
from bridge.core.models import InboundMessage, Place, Platform

# A tiny alphabet of separators and escape characters makes near-collisions likely, so a
# mapping that is not injective is caught, not merely improbable to hit.
tricky = st.text(alphabet="a.:_5f-", max_size=4)
ids = tricky | st.text(max_size=80)
long_ids = tricky | st.text(max_size=300)
secrets = st.text(min_size=1, max_size=40)
SECRET_FORM = re.compile(r"^(slack|discord)\._h\.[0-9a-f]{64}$")
KEY_SAFE = re.compile(r"^[A-Za-z0-9._:-]+$")  # no spaces, braces or glob characters


def slack(
    team: str,
    enterprise: str | None = None,
    *,
    channel: str = "C1",
    thread: str | None = None,
    is_dm: bool = False,
) -> Place:
    return Place(Platform.SLACK, team, channel, thread=thread, is_dm=is_dm, enterprise=enterprise)


def discord() -> Place:
    return Place(Platform.DISCORD, "G1", "C1")


# ------------------------------------------------------------------ userId


def test_readable_ids_for_ordinary_platform_ids() -> None:
    assert chatbase_user_id(slack("T123"), "U456", secret=None) == "slack.T123.U456"
    assert chatbase_user_id(slack("T123", "E9"), "U456", secret=None) == "slack.E9.U456"
    assert chatbase_user_id(discord(), "80351110224678912", secret=None) == (
        "discord.80351110224678912"
    )


def test_separators_and_underscores_are_escaped() -> None:
    assert chatbase_user_id(slack("a.b"), "c", secret=None) == "slack.a_2eb.c"
    assert chatbase_user_id(slack("a"), "b.c", secret=None) == "slack.a.b_2ec"
    assert chatbase_user_id(discord(), "x_y", secret=None) == "discord.x_5fy"


def test_ids_too_long_are_hashed() -> None:
    user_id = chatbase_user_id(slack("T1"), "U" * 200, secret=None)
    assert re.fullmatch(r"slack\._s\.[0-9a-f]{64}", user_id)


@given(org=ids, enterprise=st.none() | ids, user=long_ids, secret=st.none() | secrets)
def test_always_legal(org: str, enterprise: str | None, user: str, secret: str | None) -> None:
    for place in (slack(org, enterprise), discord()):
        user_id = chatbase_user_id(place, user, secret=secret)
        assert USER_ID_PATTERN.fullmatch(user_id), user_id
        assert user_id == chatbase_user_id(place, user, secret=secret)


@given(people=st.lists(st.tuples(ids, long_ids), unique=True, max_size=40),
       secret=st.none() | secrets)
def test_injective_slack(people: list[tuple[str, str]], secret: str | None) -> None:
    made = {chatbase_user_id(slack(org), user, secret=secret) for org, user in people}
    assert len(made) == len(people)


@given(people=st.lists(long_ids, unique=True, max_size=40), secret=st.none() | secrets)
def test_injective_discord(people: list[str], secret: str | None) -> None:
    made = {chatbase_user_id(discord(), user, secret=secret) for user in people}
    assert len(made) == len(people)


@given(org=ids, user=ids)
def test_platforms_never_share_ids(org: str, user: str) -> None:
    assert chatbase_user_id(slack(org), user, secret=None) != chatbase_user_id(
        discord(), user, secret=None
    )


@given(org=ids, user=long_ids, secret=secrets)
def test_secret_hides_raw_ids(org: str, user: str, secret: str) -> None:
    for place in (slack(org), discord()):
        user_id = chatbase_user_id(place, user, secret=secret)
        assert SECRET_FORM.fullmatch(user_id)
        # A raw id with any character outside lowercase hex cannot hide in the digest.
        for raw in (org, user):
            if re.search(r"[^0-9a-f]", raw):
                assert raw not in user_id.split(".", 2)[2]


def test_secret_pseudonyms_depend_on_the_secret() -> None:
    place = slack("T1")
    assert chatbase_user_id(place, "U1", secret="one") != chatbase_user_id(
        place, "U1", secret="two"
    )
    assert "U1" not in chatbase_user_id(place, "U1", secret="one")
    assert "T1" not in chatbase_user_id(place, "U1", secret="one")


@given(plain=st.tuples(ids, ids), hashed=st.tuples(ids, st.text(min_size=130, max_size=200)))
def test_hashed_and_plain_forms_never_meet(
    plain: tuple[str, str], hashed: tuple[str, str]
) -> None:
    assert chatbase_user_id(slack(plain[0]), plain[1], secret=None) != chatbase_user_id(
        slack(hashed[0]), hashed[1], secret=None
    )


@given(value=st.text())
def test_escape_round_trips(value: str) -> None:
    for keep_dot in (True, False):
        escaped = escape(value, keep_dot=keep_dot)
        assert re.fullmatch(r"[A-Za-z0-9.\-_]*", escaped)
        assert unescape(escaped) == value


# ------------------------------------------------------------------ conversation keys


def message(place: Place, author: str = "U1", reply_thread: str | None = None) -> InboundMessage:
    return InboundMessage(
        place=place, author=author, text="hi", message_id="m", event_id="e",
        reply_thread=reply_thread,
    )


USER = ConversationScope.USER
THREAD = ConversationScope.THREAD


def test_slack_keys_are_per_user_per_thread() -> None:
    in_thread = slack("T1", thread="1700000000.000100")
    assert conversation_key(message(in_thread), scope=USER) == (
        "slack:T1:C1:1700000000.000100:U1"
    )
    assert conversation_key(message(in_thread, "U2"), scope=USER) != conversation_key(
        message(in_thread), scope=USER
    )


def test_a_mention_is_keyed_on_the_thread_it_opens() -> None:
    top = slack("T1")
    follow_up = slack("T1", thread="111.222")
    assert conversation_key(message(top, reply_thread="111.222"), scope=USER) == (
        conversation_key(message(follow_up), scope=USER)
    )
    assert conversation_key(message(top), scope=USER) != conversation_key(
        message(follow_up), scope=USER
    )


def test_discord_thread_is_its_own_channel() -> None:
    in_thread = Place(Platform.DISCORD, "G1", "C1", thread="T9")
    assert conversation_key(message(in_thread), scope=USER) == "discord:G1:T9:U1"
    assert conversation_key(message(Place(Platform.DISCORD, "G1", "T9")), scope=USER) == (
        "discord:G1:T9:U1"
    )


def test_thread_scope_shares_threads_but_not_dms_or_top_level() -> None:
    in_thread = slack("T1", thread="1.2")
    assert conversation_key(message(in_thread, "U1"), scope=THREAD) == conversation_key(
        message(in_thread, "U2"), scope=THREAD
    )
    top = slack("T1")
    assert conversation_key(message(top, "U1"), scope=THREAD) != conversation_key(
        message(top, "U2"), scope=THREAD
    )
    dm = Place(Platform.DISCORD, "", "D1", is_dm=True)
    assert conversation_key(message(dm, "U1"), scope=THREAD) != conversation_key(
        message(dm, "U2"), scope=THREAD
    )


def test_dms_are_one_conversation_per_user_threads_or_not() -> None:
    dm = slack("T1", channel="D1", is_dm=True)
    dm_thread = slack("T1", channel="D1", is_dm=True, thread="5.6")
    assert conversation_key(message(dm), scope=USER) == conversation_key(
        message(dm_thread), scope=USER
    )
    assert conversation_key(message(dm), scope=USER) == "slack-dm:D1:U1"


def test_place_key_matches_a_message_at_that_place() -> None:
    place = slack("T1", thread="9.9")
    for scope in (USER, THREAD):
        assert place_key(place, "U1", scope=scope) == conversation_key(
            message(place), scope=scope
        )


# Parts from a two-letter world, so distinct places often differ in one part only.
part = st.sampled_from(["", "a", "_", ":", "a:", "_5f"])
places = st.builds(
    Place,
    platform=st.sampled_from(Platform),
    workspace=part,
    channel=part,
    thread=st.none() | part,
    is_dm=st.booleans(),
)


def _canonical(place: Place, author: str, scope: ConversationScope) -> tuple[object, ...]:
    """What a conversation is by the design: the tuple the key must tell apart."""
    if place.is_dm:
        return (place.platform, "dm", place.channel, author)
    who = None if scope is THREAD and place.thread is not None else author
    if place.platform is Platform.SLACK:
        return (place.platform, place.workspace, place.channel, place.thread, who)
    where = place.thread if place.thread is not None else place.channel
    return (place.platform, place.workspace, where, who)


@given(
    cases=st.lists(st.tuples(places, part), max_size=40),
    scope=st.sampled_from(ConversationScope),
)
def test_keys_are_injective_and_redis_safe(
    cases: list[tuple[Place, str]], scope: ConversationScope
) -> None:
    keys = {place_key(place, author, scope=scope) for place, author in cases}
    assert all(KEY_SAFE.fullmatch(key) for key in keys)
    assert len(keys) == len({_canonical(place, author, scope) for place, author in cases})


@given(
    platform=st.sampled_from(Platform), workspace=part, channel=part, thread=part, author=ids
)
def test_scopes_never_share_keys_in_threads(
    platform: Platform, workspace: str, channel: str, thread: str, author: str
) -> None:
    place = Place(platform, workspace, channel, thread=thread)
    assert place_key(place, author, scope=USER) != place_key(place, author, scope=THREAD)
