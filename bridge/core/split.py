"""Splits an answer into platform-sized parts at paragraph or line boundaries, fences intact.

Each part is ``prefix + body + suffix``: the bodies joined give back the answer exactly; the
prefix and suffix re-open and close a code fence when a code block has to continue in the
next message, so every part renders on its own.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

_FENCE = re.compile(r"^[ ]{0,3}(`{3,}|~{3,})(.*)$")


@dataclass(frozen=True, slots=True)
class Fence:
    marker: str  # the run of backticks or tildes that opened the block
    info: str  # the info string after it ("python")


@dataclass(frozen=True, slots=True)
class Part:
    prefix: str
    body: str
    suffix: str

    @property
    def text(self) -> str:
        return self.prefix + self.body + self.suffix


def fence_after(line: str, fence: Fence | None) -> Fence | None:
    """The fence state after ``line`` (with or without its newline) given the state before."""
    match = _FENCE.match(line.rstrip("\r\n"))
    if match is None:
        return fence
    run, rest = match.group(1), match.group(2)
    if fence is None:
        if run[0] == "`" and "`" in rest:
            return None  # CommonMark: a backtick fence's info string cannot hold a backtick
        return Fence(marker=run, info=rest.strip())
    if run[0] == fence.marker[0] and len(run) >= len(fence.marker) and not rest.strip():
        return None
    return fence


def _opener(fence: Fence | None) -> str:
    # The info string is cut short so a reopened fence never eats a part's room.
    return "" if fence is None else f"{fence.marker}{fence.info[:24]}\n"


def _closer(fence: Fence | None, body: str) -> str:
    if fence is None:
        return ""
    return ("" if body.endswith("\n") or not body else "\n") + fence.marker


def _hard_cut(line: str, room: int) -> int:
    """Where to cut a line longer than ``room``: the last space inside it, else ``room``."""
    cut = line.rfind(" ", 0, room)
    if cut <= room // 2:
        cut = room
    else:
        cut += 1  # keep the space with the first half so the halves join exactly
    return max(1, cut)


def _cut_line(
    line: str, state: Fence | None, prefix: str, limit: int
) -> tuple[Part, str, Fence | None]:
    """Cut a single line that does not fit into a part of its own: the part, the rest of
    the line, and the fence open after the part."""
    # The line's head may itself open a fence (an over-long fence line), so leave room to
    # close one.
    opening = _FENCE.match(line)
    closing_room = max(
        len(state.marker) + 1 if state is not None else 0,
        len(opening.group(1)) + 1 if opening is not None else 0,
    )
    room = limit - len(prefix) - closing_room
    if room < 1 or not line:
        # A fence so long that re-opening it leaves no room: give up keeping it
        # balanced rather than loop; real limits (2,000+) never get here.
        prefix, state = "", None
        room = limit
    cut = _hard_cut(line, room)
    head, tail = line[:cut], line[cut:]
    state = fence_after(head, state)
    if len(prefix) + len(head) + len(_closer(state, head)) > limit:
        state = None
    return Part(prefix, head, _closer(state, head)), tail, state


def split_text(text: str, limit: int, *, fence: Fence | None = None) -> list[Part]:
    """Split ``text`` into parts whose ``.text`` is at most ``limit`` characters.

    ``fence`` is the code block open where ``text`` starts (when splitting the tail of a
    longer answer). A break outside a code block is preferred; one inside a block closes
    the fence at the end of the part and reopens it at the start of the next.
    """
    if limit < 16:
        raise ValueError("limit must be at least 16 characters")
    parts: list[Part] = []
    lines = text.splitlines(keepends=True)
    current: list[str] = []
    size = 0
    start_fence = fence
    state = fence
    # Candidate break points inside ``current``: (index after line, fence state there,
    # is paragraph boundary).
    breaks: list[tuple[int, Fence | None, bool]] = []
    i = 0
    while i < len(lines):
        line = lines[i]
        after = fence_after(line, state)
        prefix = _opener(start_fence)
        # Room needed to close whatever fence is open after this line.
        closing = len(after.marker) + 1 if after is not None else 0
        if len(prefix) + size + len(line) + closing <= limit:
            current.append(line)
            size += len(line)
            state = after
            breaks.append((len(current), state, line.strip() == ""))
            i += 1
            continue
        if not current:
            part, tail, state = _cut_line(line, state, prefix, limit)
            parts.append(part)
            lines[i] = tail
            start_fence = state
            if not tail:
                i += 1
            continue
        index, at_fence = _choose_break(breaks, size_of=[len(x) for x in current])
        body = "".join(current[:index])
        parts.append(Part(prefix, body, _closer(at_fence, body)))
        rest = current[index:]
        start_fence = at_fence
        # Re-scan the carried lines from the break point.
        current, size, breaks = [], 0, []
        state = start_fence
        lines[i:i] = rest
    body = "".join(current)
    if body or not parts:
        parts.append(Part(_opener(start_fence), body, _closer(state, body)))
    return parts


def _choose_break(
    breaks: list[tuple[int, Fence | None, bool]], size_of: list[int]
) -> tuple[int, Fence | None]:
    """Pick where to end a full part: a late paragraph break outside code, else a late line
    break outside code, else the last line break (inside a code block)."""
    total = sum(size_of)
    offsets = []
    acc = 0
    for n in size_of:
        acc += n
        offsets.append(acc)
    half = total / 2
    for want_paragraph in (True, False):
        for index, fence, paragraph in reversed(breaks):
            if offsets[index - 1] < half:
                break
            if fence is None and (paragraph or not want_paragraph):
                return index, fence
    index, fence, _ = breaks[-1]
    return index, fence


def join_bodies(parts: list[Part]) -> str:
    return "".join(part.body for part in parts)


def one_line(text: str, limit: int) -> str:
    """``text`` on one line (runs of whitespace become one space), cut to at most ``limit``
    characters with "…" (titles, labels)."""
    line = " ".join(text.split())
    return line if len(line) <= limit else line[: limit - 1].rstrip() + "…"
