"""Which agent answers where (BRIDGE_ROUTES): the most specific place that names one wins.

Places, most specific first: a Slack channel of a team (``slack:<team>/<channel>``) or the
team's DMs (``slack:<team>/dm``), the team (``slack:<team>``), its Grid org
(``slack:<enterprise>``); a Discord channel of a server (``discord:<guild>/<channel>``; a
thread follows its parent channel), the server (``discord:<guild>``), or Discord DMs
(``discord:dm``). Where none is named, the fallback agent (CHATBASE_AGENT_ID) answers, if any.
"""

from __future__ import annotations

from collections.abc import Mapping

from bridge.core.models import Place, Platform
from bridge.core.ports import ChatbaseLike


def candidates(place: Place) -> tuple[str, ...]:
    """The route names that could apply to ``place``, most specific first."""
    if place.platform is Platform.SLACK:
        team = place.workspace
        names = [f"slack:{team}/dm" if place.is_dm else f"slack:{team}/{place.channel}",
                 f"slack:{team}"]
        if place.enterprise and place.enterprise != team:
            names.append(f"slack:{place.enterprise}")
        return tuple(names)
    if place.is_dm:
        return ("discord:dm",)
    return (f"discord:{place.workspace}/{place.channel}", f"discord:{place.workspace}")


class Routes:
    """Place → agent id."""

    def __init__(self, table: Mapping[str, str], fallback: str | None) -> None:
        self._table = dict(table)
        self.fallback = fallback

    def agent_for(self, place: Place) -> str | None:
        for name in candidates(place):
            agent = self._table.get(name)
            if agent is not None:
                return agent
        return self.fallback

    @property
    def agents(self) -> tuple[str, ...]:
        """Every agent named, the fallback first."""
        named = [self.fallback] if self.fallback else []
        return tuple(dict.fromkeys([*named, *self._table.values()]))


class Agents:
    """The Chatbase client of every agent, found by place (new questions) or by id (feedback
    and regenerate go to the agent that wrote the answer)."""

    def __init__(self, routes: Routes, clients: Mapping[str, ChatbaseLike]) -> None:
        self.routes = routes
        self._clients = dict(clients)

    def for_place(self, place: Place) -> ChatbaseLike | None:
        agent = self.routes.agent_for(place)
        return self._clients.get(agent) if agent is not None else None

    def by_id(self, agent: str | None) -> ChatbaseLike | None:
        """The client of ``agent``; None (a record kept before routing) is the fallback."""
        chosen = agent if agent is not None else self.routes.fallback
        return self._clients.get(chosen) if chosen is not None else None

    @property
    def clients(self) -> tuple[ChatbaseLike, ...]:
        return tuple(self._clients.values())
