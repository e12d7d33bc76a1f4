"""Which agent answers where: the most specific place wins (bridge/core/routing.py)."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from bridge.core.models import Place, Platform
from bridge.core.routing import Routes, candidates

SLACK, DISCORD = Platform.SLACK, Platform.DISCORD


def slack(channel: str = "C1", *, team: str = "T1", dm: bool = False,
          enterprise: str | None = None) -> Place:
    return Place(platform=SLACK, workspace=team, channel=channel, is_dm=dm,
                 enterprise=enterprise)


def discord(channel: str = "10", *, guild: str = "1", thread: str | None = None,
            dm: bool = False) -> Place:
    return Place(platform=DISCORD, workspace="" if dm else guild, channel=channel,
                 thread=thread, is_dm=dm)


ROUTES = Routes({
    "slack:T1/C2": "help", "slack:T1": "team", "slack:T1/dm": "dms", "slack:E1": "org",
    "discord:1/20": "community", "discord:1": "server", "discord:dm": "discord-dms",
}, fallback="default")


def test_the_most_specific_place_wins() -> None:
    assert ROUTES.agent_for(slack("C2")) == "help"
    assert ROUTES.agent_for(slack("C3")) == "team"
    assert ROUTES.agent_for(slack("D1", dm=True)) == "dms"
    assert ROUTES.agent_for(slack("C9", team="T2", enterprise="E1")) == "org"
    assert ROUTES.agent_for(slack("C9", team="T3")) == "default"
    assert ROUTES.agent_for(discord("20")) == "community"
    assert ROUTES.agent_for(discord("21")) == "server"
    assert ROUTES.agent_for(discord("5", dm=True)) == "discord-dms"
    assert ROUTES.agent_for(discord("21", guild="2")) == "default"


def test_a_thread_follows_its_channel() -> None:
    # Discord: a thread's place keeps its parent as the channel (adapters/discord/translate).
    assert ROUTES.agent_for(discord("20", thread="99")) == "community"
    # Slack: a thread lives in its channel.
    assert ROUTES.agent_for(Place(platform=SLACK, workspace="T1", channel="C2",
                                  thread="1700.1")) == "help"


def test_without_a_fallback_an_unrouted_place_has_no_agent() -> None:
    routes = Routes({"slack:T1/C2": "help"}, fallback=None)
    assert routes.agent_for(slack("C2")) == "help"
    assert routes.agent_for(slack("C3")) is None
    assert routes.agents == ("help",)
    assert ROUTES.agents[0] == "default" and len(set(ROUTES.agents)) == len(ROUTES.agents)


ids = st.text(alphabet="ABC123", min_size=1, max_size=3)


@st.composite
def places(draw: st.DrawFn) -> Place:
    if draw(st.booleans()):
        return slack(draw(ids), team=draw(ids), dm=draw(st.booleans()),
                     enterprise=draw(st.none() | ids))
    return discord(draw(st.text(alphabet="123", min_size=1, max_size=2)),
                   guild=draw(st.text(alphabet="123", min_size=1, max_size=2)),
                   dm=draw(st.booleans()))


@given(place=places(), table=st.dictionaries(st.sampled_from([
    "slack:A", "slack:A/B", "slack:A/dm", "slack:1", "discord:1", "discord:1/2", "discord:dm",
    "discord:2", "slack:AB/C1",
]), st.sampled_from(["x", "y", "z"])), fallback=st.none() | st.just("f"))
def test_lookup_is_the_first_named_candidate(place: Place, table: dict[str, str],
                                             fallback: str | None) -> None:
    names = candidates(place)
    expected = next((table[n] for n in names if n in table), fallback)
    assert Routes(table, fallback).agent_for(place) == expected
    # Naming places that are not among its candidates never changes its agent (the ids
    # drawn never contain Z or 9).
    others = {"slack:ZZZ": "other", "discord:999": "other"} | table
    assert Routes(others, fallback).agent_for(place) == expected
    # A route for the most specific candidate always wins.
    assert Routes({**table, names[0]: "mine"}, fallback).agent_for(place) == "mine"
