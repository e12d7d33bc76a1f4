"""Raw Slack payloads to inbound models: what is answered, what is dropped, never a crash."""

from __future__ import annotations

import copy
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from adapters.slack import translate
from adapters.slack.translate import BotIdentity, ResetRequest, Scope
from bridge.core.models import (
    Feedback,
    InboundFeedbackButton,
    InboundMessage,
    InboundReaction,
    Place,
    Platform,
)
from tests.fakes.slack import (
    block_action,
    event_envelope,
    mention_event,
    message_event,
    reaction_event,
    slash_command,
)

BOT = BotIdentity(user_id="UBOT", bot_id="BBOT", team_id="T0TEAM")
ALL = Scope()
TS = "1700000001.000200"
PARENT = "1700000000.000100"


def test_top_level_mention_opens_a_thread_under_itself() -> None:
    body = event_envelope(mention_event(text="<@UBOT> what is the refund policy?", ts=TS),
                          event_id="Ev1")
    message = translate.mention(body, BOT, ALL)
    assert message == InboundMessage(
        place=Place(platform=Platform.SLACK, workspace="T0TEAM", channel="C0CHAN",
                    thread=None, is_dm=False, enterprise=None),
        author="U0ASKER", text="what is the refund policy?", message_id=TS,
        event_id=f"mention:C0CHAN:{TS}", reply_thread=TS,
    )
    assert message.conversation_thread == TS


def test_mention_inside_a_thread_continues_there() -> None:
    body = event_envelope(mention_event(text="<@UBOT> and then?", ts=TS, thread_ts=PARENT))
    message = translate.mention(body, BOT, ALL)
    assert message is not None
    assert message.place.thread == PARENT and message.reply_thread is None
    assert message.conversation_thread == PARENT


def test_mentions_that_are_not_questions_are_dropped() -> None:
    for event in (
        mention_event(text="<@UBOT> hi", ts=TS, user="UBOT"),
        {**mention_event(text="<@UBOT> hi", ts=TS), "bot_id": "B2"},
        {**mention_event(text="<@UBOT> hi", ts=TS), "edited": {"user": "U0ASKER"}},
        mention_event(text="<@UBOT> hi", ts=TS, channel="D0DM"),  # DMs come as message.im
        {**mention_event(text="<@UBOT> hi", ts=TS), "ts": "not-a-ts"},
    ):
        assert translate.mention(event_envelope(event), BOT, ALL) is None


def test_dm_is_always_answered_and_keeps_its_thread() -> None:
    top = translate.message(event_envelope(message_event(text="hello", ts=TS)), BOT, ALL)
    assert top is not None and top.place.is_dm and top.place.thread is None
    assert top.conversation_thread is None
    threaded = translate.message(
        event_envelope(message_event(text="<@UBOT> more", ts=TS, thread_ts=PARENT)), BOT, ALL
    )
    assert threaded is not None and threaded.place.thread == PARENT
    assert threaded.text == "more"


def test_channel_messages_only_as_thread_follow_ups_without_a_mention() -> None:
    def channel_message(**kw: Any) -> dict[str, Any]:
        return event_envelope(message_event(channel="C0CHAN", channel_type="channel", **kw))

    follow_up = translate.message(channel_message(text="and?", ts=TS, thread_ts=PARENT), BOT, ALL)
    assert follow_up is not None and not follow_up.place.is_dm
    assert follow_up.place.thread == PARENT and follow_up.reply_thread is None
    assert translate.message(channel_message(text="top level", ts=TS), BOT, ALL) is None
    # The same mention may also arrive as app_mention: both claim the message itself.
    as_message = translate.message(
        channel_message(text="<@UBOT> again", ts=TS, thread_ts=PARENT), BOT, ALL)
    as_mention = translate.mention(
        event_envelope(mention_event(text="<@UBOT> again", ts=TS, thread_ts=PARENT)), BOT, ALL)
    assert as_message is not None and as_mention is not None
    assert translate.is_mention(as_message) and translate.is_mention(as_mention)
    assert as_message.event_id == as_mention.event_id
    private = event_envelope(message_event(text="x", ts=TS, thread_ts=PARENT,
                                           channel="G0PRIV", channel_type="group"))
    assert translate.message(private, BOT, ALL) is not None


def test_subtypes_bots_and_self_are_dropped() -> None:
    for extra in (
        {"subtype": "message_changed"}, {"subtype": "message_deleted"},
        {"subtype": "channel_join"}, {"subtype": "bot_message"}, {"bot_id": "B9"},
        {"user": "UBOT"}, {"hidden": True},
    ):
        body = event_envelope(message_event(text="hi", ts=TS, **extra))
        assert translate.message(body, BOT, ALL) is None, extra
    for kept in ({"subtype": "thread_broadcast"}, {"subtype": "file_share"}):
        body = event_envelope(message_event(text="hi", ts=TS, **kept))
        assert translate.message(body, BOT, ALL) is not None, kept


def test_allowed_workspaces_and_channels() -> None:
    scope = Scope(teams=frozenset({"T0TEAM"}), channels=frozenset({"C0OK"}))
    ok = event_envelope(mention_event(text="<@UBOT> q", ts=TS, channel="C0OK"))
    other_channel = event_envelope(mention_event(text="<@UBOT> q", ts=TS, channel="C0NO"))
    other_team = event_envelope(mention_event(text="<@UBOT> q", ts=TS, channel="C0OK"),
                                team_id="T0OTHER")
    dm = event_envelope(message_event(text="q", ts=TS))
    assert translate.mention(ok, BOT, scope) is not None
    assert translate.mention(other_channel, BOT, scope) is None
    assert translate.mention(other_team, BOT, scope) is None
    assert translate.message(dm, BOT, scope) is not None  # DMs are never channel-restricted
    by_enterprise = Scope(teams=frozenset({"E0ORG"}))
    grid = event_envelope(mention_event(text="<@UBOT> q", ts=TS), enterprise_id="E0ORG")
    assert translate.mention(grid, BOT, by_enterprise) is not None
    assert translate.mention(ok, BOT, by_enterprise) is None


def test_enterprise_grid_identity() -> None:
    body = event_envelope(mention_event(text="<@UBOT> q", ts=TS, team="T0WS"),
                          team_id="T0WS", enterprise_id="E0ORG")
    message = translate.mention(body, BOT, ALL)
    assert message is not None
    assert message.place.workspace == "T0WS" and message.place.enterprise == "E0ORG"
    # An org-wide install can deliver events without a team: the enterprise stands in.
    org_wide = event_envelope(mention_event(text="<@UBOT> q", ts=TS), enterprise_id="E0ORG")
    org_wide["team_id"] = None
    org_wide["authorizations"][0]["team_id"] = None
    del org_wide["event"]["team"]
    message = translate.mention(org_wide, BOT, ALL)
    assert message is not None
    assert message.place.workspace == "E0ORG" and message.place.enterprise == "E0ORG"


def test_reactions_on_bot_messages() -> None:
    added = translate.reaction(
        event_envelope(reaction_event(reaction="+1::skin-tone-4", channel="C0CHAN", ts=TS),
                       event_id="EvR"),
        BOT, ALL,
    )
    assert added == InboundReaction(
        platform=Platform.SLACK, workspace="T0TEAM", channel="C0CHAN", message_id=TS,
        user="U0ASKER", emoji="+1", added=True, event_id="EvR",
    )
    removed = translate.reaction(
        event_envelope(reaction_event(reaction="thumbsdown", channel="C0CHAN", ts=TS,
                                      added=False)), BOT, ALL,
    )
    assert removed is not None and removed.emoji == "-1" and not removed.added
    regenerate = translate.reaction(
        event_envelope(reaction_event(reaction="arrows_counterclockwise", channel="C0CHAN",
                                      ts=TS)), BOT, ALL,
    )
    assert regenerate is not None and regenerate.emoji == "arrows_counterclockwise"
    on_someone_else = event_envelope(reaction_event(reaction="+1", channel="C0CHAN", ts=TS,
                                                    item_user="U0OTHER"))
    by_the_bot = event_envelope(reaction_event(reaction="+1", channel="C0CHAN", ts=TS,
                                               user="UBOT"))
    on_a_file = event_envelope(reaction_event(reaction="+1", channel="C0CHAN", ts=TS))
    on_a_file["event"]["item"] = {"type": "file", "file": "F1"}
    for body in (on_someone_else, by_the_bot, on_a_file):
        assert translate.reaction(body, BOT, ALL) is None


def test_normalise_reaction() -> None:
    assert translate.normalise_reaction("thumbsup::skin-tone-2") == "+1"
    assert translate.normalise_reaction("-1::skin-tone-6") == "-1"
    assert translate.normalise_reaction("heart") == "heart"


def test_feedback_button_press() -> None:
    press = translate.feedback_button(
        block_action(value="negative", channel="C0CHAN", message_ts=TS), BOT, ALL
    )
    assert isinstance(press, InboundFeedbackButton)
    assert (press.feedback, press.channel, press.message_id, press.user, press.workspace) == (
        Feedback.NEGATIVE, "C0CHAN", TS, "U0ASKER", "T0TEAM"
    )
    assert translate.feedback_button(
        block_action(value="meh", channel="C0CHAN", message_ts=TS), BOT, ALL
    ) is None
    assert translate.feedback_button(
        block_action(value="positive", channel="C0CHAN", message_ts=TS, action_id="other"),
        BOT, ALL,
    ) is None


def test_reset_in_a_dm_and_in_threads() -> None:
    dm = translate.reset_request(slash_command(), ALL, BOT)
    assert dm == ResetRequest(author="U0ASKER", place=Place(
        platform=Platform.SLACK, workspace="T0TEAM", channel="D0DM", is_dm=True))
    link = "https://fake.slack.com/archives/C0CHAN/p1700000000000100"
    by_link = translate.reset_request(slash_command(channel="C0CHAN", text=link), ALL, BOT)
    assert by_link is not None and by_link.place is not None
    assert by_link.place.thread == PARENT and not by_link.place.is_dm
    reply_link = ("https://fake.slack.com/archives/C0CHAN/p1700000009000900"
                  f"?thread_ts={PARENT}&cid=C0CHAN")
    by_reply = translate.reset_request(slash_command(channel="C0CHAN", text=reply_link), ALL, BOT)
    assert by_reply is not None and by_reply.place is not None
    assert by_reply.place.thread == PARENT
    field = translate.reset_request(slash_command(channel="C0CHAN", thread_ts=PARENT), ALL, BOT)
    assert field is not None and field.place is not None and field.place.thread == PARENT
    nowhere = translate.reset_request(slash_command(channel="C0CHAN"), ALL, BOT)
    assert nowhere == ResetRequest(author="U0ASKER", place=None)
    elsewhere = translate.reset_request(
        slash_command(channel="C0CHAN", text=link.replace("C0CHAN", "C0ELSE")), ALL, BOT
    )
    assert elsewhere is not None and elsewhere.place is None
    assert translate.reset_request(slash_command(team_id="T0X"),
                                   Scope(teams=frozenset({"T0TEAM"})), BOT) is None


# --------------------------------------------------------------------------- never crash

any_json = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=20),
    lambda children: st.lists(children, max_size=4)
    | st.dictionaries(st.text(max_size=12), children, max_size=6),
    max_leaves=25,
)

KEYS = ["type", "event", "user", "text", "ts", "thread_ts", "channel", "channel_type", "team",
        "team_id", "enterprise_id", "event_id", "subtype", "bot_id", "item", "item_user",
        "reaction", "authorizations", "actions", "value", "action_id", "container",
        "message_ts", "user_id", "channel_id", "command", "id"]
slackish = st.recursive(
    st.none() | st.booleans() | st.integers() | st.text(max_size=12)
    | st.sampled_from(["UBOT", "U1", "C1", "D1", TS, PARENT, "message", "app_mention",
                       "reaction_added", "block_actions", "chatbase_feedback", "positive",
                       "im", "+1", "T0TEAM"]),
    lambda children: st.lists(children, max_size=3)
    | st.dictionaries(st.sampled_from(KEYS), children, max_size=8),
    max_leaves=30,
)

SAMPLES: list[dict[str, Any]] = [
    event_envelope(mention_event(text="<@UBOT> q", ts=TS, thread_ts=PARENT)),
    event_envelope(message_event(text="q", ts=TS, thread_ts=PARENT)),
    event_envelope(message_event(text="q", ts=TS, channel="C1", channel_type="channel",
                                 thread_ts=PARENT)),
    event_envelope(reaction_event(reaction="+1", channel="C1", ts=TS)),
    block_action(value="positive", channel="C1", message_ts=TS),
    slash_command(channel="C1", text="https://x/archives/C1/p1700000000000100"),
]

TRANSLATORS: list[Callable[[Any], object]] = [
    lambda b: translate.mention(b, BOT, ALL),
    lambda b: translate.message(b, BOT, ALL),
    lambda b: translate.reaction(b, BOT, ALL),
    lambda b: translate.feedback_button(b, BOT, ALL),
    lambda b: translate.reset_request(b, ALL, BOT),
]
VALID = (InboundMessage, InboundReaction, InboundFeedbackButton, ResetRequest)


def check_valid(result: object) -> None:
    if result is None:
        return
    assert isinstance(result, VALID)
    if isinstance(result, InboundMessage):
        assert result.place.workspace and result.place.channel and result.author
        assert result.message_id and result.event_id and isinstance(result.text, str)
    elif isinstance(result, (InboundReaction, InboundFeedbackButton)):
        assert result.workspace and result.channel and result.message_id and result.user
    elif isinstance(result, ResetRequest):
        assert result.author
        assert result.place is None or (result.place.workspace and result.place.channel)


@settings(deadline=None)
@given(any_json | slackish)
def test_arbitrary_payloads_never_crash(body: Any) -> None:
    for fn in TRANSLATORS:
        check_valid(fn(body))
        check_valid(fn({"event": body, "type": "event_callback", "team_id": "T0TEAM"}))


def _damage(value: Any, choices: list[int]) -> Any:
    """Drop or garble parts of a payload, driven by ``choices``."""
    if not choices:
        return value
    pick = choices.pop()
    if isinstance(value, dict):
        out = {}
        for key, item in value.items():
            step = choices.pop() if choices else 3
            if step == 0:
                continue  # truncated: the key is missing
            if step == 1:
                out[key] = None
            elif step == 2:
                out[key] = 12345
            else:
                out[key] = _damage(item, choices)
        return out
    if isinstance(value, list):
        return [_damage(item, choices) for item in value[: max(0, len(value) - pick % 2)]]
    if isinstance(value, str) and pick == 0:
        return value[: len(value) // 2]
    return value


@settings(deadline=None)
@given(st.sampled_from(range(len(SAMPLES))), st.lists(st.integers(0, 6), max_size=60))
def test_truncated_payloads_never_crash(index: int, choices: list[int]) -> None:
    body = _damage(copy.deepcopy(SAMPLES[index]), list(choices))
    for fn in TRANSLATORS:
        check_valid(fn(body))


def test_every_sample_is_understood_before_it_is_damaged() -> None:
    for body in SAMPLES:
        assert any(fn(body) is not None for fn in TRANSLATORS), body


# ---------------------------------------------------------------- real payload variety (issue 13)

FIXTURES = Path(__file__).resolve().parents[3] / "fixtures" / "slack_events"


def fixture(name: str) -> dict[str, Any]:
    loaded: dict[str, Any] = json.loads((FIXTURES / name).read_text())
    return loaded


def test_shared_channel_keys_on_the_installation_not_the_speaker() -> None:
    """Derived from slackapi/bolt-python tests/scenario_tests/test_events_shared_channels.py
    (valid_event_body, in app_mention_shared_channels_test.json): the same app_mention with
    the envelope's team/enterprise swapped for another organisation's, as Slack sends it when
    someone from that organisation speaks in a Slack Connect channel (slack-go/slack#695)."""
    body = fixture("app_mention_shared_channels_test.json")
    bot = BotIdentity(user_id="W111")
    home = translate.mention(body, bot, ALL)
    foreign = copy.deepcopy(body)
    foreign.update(team_id="T_SOURCE", enterprise_id="E_SOURCE")
    foreign["event"]["team"] = "T_SOURCE"
    guest = translate.mention(foreign, bot, ALL)
    assert home is not None and guest is not None
    assert home.place == guest.place
    assert guest.place.workspace == "T_INSTALLED" and guest.place.enterprise == "E_INSTALLED"
    only_installed = Scope(teams=frozenset({"T_INSTALLED"}))
    assert translate.mention(foreign, bot, only_installed) is not None


def test_shared_channel_reaction_keys_on_the_installation() -> None:
    """Derived from reaction_added_shared_channel.json (bolt-python's shared-channel test,
    envelope T_SOURCE/E_SOURCE, authorization T_INSTALLED/E_INSTALLED): there W111 reacts to
    its own message; here the reacted-to message is the bot's (W111) and W222 reacts."""
    body = fixture("reaction_added_shared_channel.json")
    body["event"]["user"] = "W222"
    reaction = translate.reaction(body, BotIdentity(user_id="W111"), ALL)
    assert reaction is not None and reaction.workspace == "T_INSTALLED"


def test_slack_connect_message_keys_on_the_authorization() -> None:
    """message_slack_connect_thread_reply.json (gathertown/grapevine, captured live):
    context_team_id differs from the authorization; the authorization wins, as in Bolt."""
    message = translate.message(fixture("message_slack_connect_thread_reply.json"),
                                BotIdentity(user_id="U09AERJ2868"), ALL)
    assert message is not None and message.place.workspace == "T017NA5LEV9"


def test_org_wide_install_keys_on_the_enterprise() -> None:
    """message_org_wide_install_bare_mention.json (bolt-python test_events_org_apps.py):
    authorizations[0] has team_id null and is_enterprise_install true."""
    body = fixture("message_org_wide_install_bare_mention.json")
    message = translate.message(body, BotIdentity(user_id="W222"), ALL)
    assert message is not None
    assert message.place.workspace == "E111" and message.place.enterprise == "E111"
    assert message.text == ""  # a bare mention: the core answers with a friendly prompt
    assert translate.is_mention(message) and message.reply_thread == message.message_id


def test_reset_keys_on_the_installation_like_the_messages_it_resets() -> None:
    """The slash-command payload's fields as Slack documents them
    (https://docs.slack.dev/interactivity/implementing-slash-commands: team_id,
    enterprise_id, is_enterprise_install as a "true"/"false" string). Under an org-wide
    install (message_org_wide_install_bare_mention.json, bolt-python test_events_org_apps.py)
    a message keys on the enterprise, so the reset must too."""
    body = fixture("message_org_wide_install_bare_mention.json")
    org_bot = BotIdentity(user_id="W222", enterprise_id="E111")
    message = translate.message(body, org_bot, ALL)
    assert message is not None
    command = slash_command(channel=message.place.channel, team_id="T_WORKSPACE",
                            enterprise_id="E111", is_enterprise_install="true",
                            thread_ts=message.message_id)
    reset = translate.reset_request(command, ALL, org_bot)
    assert reset is not None and reset.place is not None
    assert (reset.place.workspace, reset.place.enterprise) == (
        message.place.workspace, message.place.enterprise)


def press_by(user: str, user_team: str, *, message_ts: str, channel: str,
             team: str | None, enterprise: str | None, org_wide: bool) -> dict[str, Any]:
    """A feedback press as Slack sends it: ``team`` is the workspace of the app that posted
    the message and ``user.team_id`` the presser's (java-slack-sdk#1041); ``team`` null
    with the enterprise set under an org-wide install (deno-slack-sdk#267)."""
    body = block_action(value="positive", channel=channel, message_ts=message_ts, user=user,
                        team_id=user_team)
    body["team"] = {"id": team, "domain": "x"} if team is not None else None
    body["enterprise"] = {"id": enterprise, "name": "x"} if enterprise is not None else None
    body["is_enterprise_install"] = org_wide
    return body


@pytest.mark.parametrize("team", ["T_INSTALLED", None])
def test_shared_channel_feedback_press_keys_on_the_installation(team: str | None) -> None:
    """reaction_added_shared_channel.json (slackapi/bolt-python
    tests/scenario_tests/test_events_shared_channels.py, valid_reaction_added_body): W222 of
    the other organisation (T_SOURCE) rates the bot's answer in the shared channel, once with
    a 👍 reaction and once with the feedback button; both key on the installation, and an
    allowlist of the installed workspace lets both through."""
    body = fixture("reaction_added_shared_channel.json")
    body["event"]["user"] = "W222"
    bot = BotIdentity(user_id="W111", team_id="T_INSTALLED", enterprise_id="E_INSTALLED")
    only_installed = Scope(teams=frozenset({"T_INSTALLED"}))
    reaction = translate.reaction(body, bot, only_installed)
    item = body["event"]["item"]
    press = translate.feedback_button(
        press_by("W222", "T_SOURCE", message_ts=item["ts"], channel=item["channel"],
                 team=team, enterprise=None, org_wide=False),
        bot, only_installed)
    assert reaction is not None and press is not None
    assert press.workspace == reaction.workspace == "T_INSTALLED"


@pytest.mark.parametrize("team", ["T111", None])
def test_org_wide_install_feedback_press_keys_on_the_enterprise(team: str | None) -> None:
    """message_org_wide_install_bare_mention.json (slackapi/bolt-python
    tests/scenario_tests/test_events_org_apps.py, test_message): the question keys on the
    enterprise E111; a press on its answer by a member of workspace T111 keys the same."""
    body = fixture("message_org_wide_install_bare_mention.json")
    bot = BotIdentity(user_id="W222", enterprise_id="E111")
    message = translate.message(body, bot, ALL)
    press = translate.feedback_button(
        press_by("W111", "T111", message_ts="1606810820.000900", channel="C111", team=team,
                 enterprise="E111", org_wide=True),
        bot, ALL)
    assert message is not None and press is not None
    assert press.workspace == message.place.workspace == "E111"


@pytest.mark.parametrize("subtype", ["thread_broadcast", "file_share"])
def test_app_mention_with_a_subtype_is_answered_once(subtype: str) -> None:
    """No published app_mention carries a subtype (SOURCES.md, case 2): derived from
    app_mention_shared_channels_test.json with the subtype added, as nearai/ironclaw PR
    #7941 describes for "Also send to channel" (thread_broadcast), and from
    message_thread_broadcast.json (bolt-python) for the message.* twin."""
    bot = BotIdentity(user_id="W111")
    mention_body = fixture("app_mention_shared_channels_test.json")
    mention_body["event"]["subtype"] = subtype
    mention_body["event"]["thread_ts"] = "1599529000.000100"
    twin = copy.deepcopy(mention_body)
    twin["event"]["type"] = "message"
    twin["event"]["channel_type"] = "channel"
    twin["event_id"] = "Ev_twin"
    as_mention = translate.mention(mention_body, bot, ALL)
    as_message = translate.message(twin, bot, ALL)
    assert as_mention is not None and as_message is not None
    assert as_mention.event_id == as_message.event_id  # one claim: answered once


# --------------------------------------------------------------------------- agent experience


def test_agent_session_stopped_names_the_thread_to_stop() -> None:
    event = json.loads((FIXTURES / "agent_session_stopped_docs_example.json").read_text())
    body = event_envelope(event)
    assert translate.session_stopped(body, ALL) == translate.SessionStop(
        channel="C0123ABC456", thread_ts="1782234671.392669")
    assert translate.session_stopped(body, Scope(teams=frozenset({"T0OTHER"}))) is None
    assert translate.session_stopped(body, Scope(channels=frozenset({"C0OTHER"}))) is None
    del event["thread_ts"]
    assert translate.session_stopped(event_envelope(event), ALL) is None
    assert translate.session_stopped(event_envelope(mention_event(text="hi", ts=TS)),
                                     ALL) is None


def test_only_the_messages_tab_gets_prompts() -> None:
    messages = json.loads((FIXTURES / "app_home_opened_messages.json").read_text())
    home = json.loads((FIXTURES / "app_home_opened_home.json").read_text())
    assert translate.messages_tab_opened(messages, ALL) == "D0442US94JD"
    assert translate.messages_tab_opened(home, ALL) is None
    assert translate.messages_tab_opened(messages, Scope(teams=frozenset({"T0OTHER"}))) is None
    # DMs are never restricted by channel.
    assert translate.messages_tab_opened(
        messages, Scope(channels=frozenset({"C0OTHER"}))) == "D0442US94JD"
