"""/history's custom ids, list text and buttons (adapters/discord/history.py), without I/O."""

from __future__ import annotations

from typing import Any

from adapters.discord.history import (
    CUSTOM_ID_LIMIT,
    EXPIRED,
    LABEL_LIMIT,
    Action,
    Press,
    PressIds,
    page_text,
    page_view,
)
from bridge.core.history import HistoryPage, PastConversation

OWNER = "123456789012345678"
NOW = 1_000_000.0


def test_short_values_ride_in_the_custom_id_and_survive_a_restart() -> None:
    custom_id = PressIds().custom_id(Action.CONTINUE, OWNER, "conv-1")
    assert custom_id == f"cbb:h:c:{OWNER}:conv-1"
    assert PressIds().parse(custom_id) == Press(Action.CONTINUE, OWNER, "conv-1")
    assert PressIds().parse(f"cbb:h:m:{OWNER}:a:b/c+=") == Press(Action.MORE, OWNER, "a:b/c+=")
    assert PressIds().parse("cbb:fb:pos") is None


def test_a_long_cursor_is_kept_in_memory_and_expires() -> None:
    clock = [0.0]
    ids = PressIds(keep_seconds=60.0, clock=lambda: clock[0])
    cursor = "x" * 200
    custom_id = ids.custom_id(Action.MORE, OWNER, cursor)
    assert len(custom_id) <= CUSTOM_ID_LIMIT and cursor not in custom_id
    assert ids.parse(custom_id) == Press(Action.MORE, OWNER, cursor)
    # Another process (or this one after a restart) does not have it: the list expired.
    assert PressIds().parse(custom_id) == Press(Action.MORE, OWNER, None)
    clock[0] = 61.0
    assert ids.parse(custom_id) == Press(Action.MORE, OWNER, None)


def test_kept_values_are_bounded() -> None:
    ids = PressIds(keep_max=2)
    first, *_ = [ids.custom_id(Action.MORE, OWNER, f"{n}" * 120) for n in range(3)]
    assert ids.parse(first) == Press(Action.MORE, OWNER, None)


def _page(*conversations: PastConversation, cursor: str | None = None) -> HistoryPage:
    return HistoryPage(conversations=conversations, cursor=cursor)


def _buttons(view: Any) -> list[tuple[str, str, int | None]]:
    return [(b.label, b.custom_id, b.row) for b in view.children]


def test_the_list_names_titles_times_and_statuses_escaped() -> None:
    page = _page(PastConversation("a", "Refunds *now*", NOW - 7300, "ongoing"),
                 PastConversation("b", "Hours", NOW - 90_000, "taken_over"))
    assert page_text(page, NOW, first=True).splitlines()[1:] == [
        r"- **Refunds \*now\*** · 2 hours ago",
        "- **Hours** · yesterday · taken over by a person",
    ]
    assert page_text(HistoryPage(problem="Busy."), NOW, first=True) == "Busy."
    assert page_text(_page(), NOW, first=False) != page_text(_page(), NOW, first=True)
    assert EXPIRED.endswith("/history again.")


async def test_buttons_continue_ongoing_ones_page_on_and_fit_discords_limits() -> None:
    # async: discord.py ties a view to the running loop (a stopped view is only a layout)
    long_title = "A very long title " * 10
    page = _page(PastConversation("a", long_title, NOW, "ongoing"),
                 PastConversation("b", "Ended", NOW, "ended"),
                 PastConversation("c", "Third", NOW, "ongoing"), cursor="next")
    view = page_view(PressIds(), OWNER, page, first=True)
    assert view is not None and view.is_finished()
    (first, _, row0), third, more = _buttons(view)
    assert len(first) <= LABEL_LIMIT and first.startswith("Continue here: A very long")
    assert row0 == 0 and third == ("Continue here: Third", f"cbb:h:c:{OWNER}:c", 0)
    assert more == ("More", f"cbb:h:m:{OWNER}:next", 1)
    later = page_view(PressIds(), OWNER, _page(PastConversation("d", "D", NOW, "ended")),
                      first=False)
    assert later is not None and _buttons(later) == [("Newest", f"cbb:h:n:{OWNER}:", 0)]
    assert page_view(PressIds(), OWNER, _page(), first=True) is None
    # A page that failed offers to try the same cursor again.
    retry = page_view(PressIds(), OWNER, HistoryPage(problem="Busy."), first=False,
                      retry="cur")
    assert retry is not None and _buttons(retry)[0] == ("Try again", f"cbb:h:m:{OWNER}:cur", 0)
