"""The splitter: parts fit, join back to the answer, and keep code fences balanced."""

from __future__ import annotations

import re

from hypothesis import assume, given, settings
from hypothesis import strategies as st

from bridge.core.split import Fence, fence_after, join_bodies, split_text


def fences_balanced(text: str) -> bool:
    state: Fence | None = None
    for line in text.splitlines():
        state = fence_after(line, state)
    return state is None


def test_short_text_is_one_part() -> None:
    parts = split_text("hello", 100)
    assert [p.text for p in parts] == ["hello"]


def test_prefers_paragraph_boundary() -> None:
    text = "a" * 40 + "\n\n" + "b" * 40 + "\n" + "c" * 40
    parts = split_text(text, 100)
    assert parts[0].text == "a" * 40 + "\n\n"
    assert join_bodies(parts) == text


def test_code_block_across_boundary_is_closed_and_reopened() -> None:
    code = "".join(f"line {i}\n" for i in range(30))
    text = "Intro\n\n```python\n" + code + "```\nafter\n"
    parts = split_text(text, 120)
    assert len(parts) > 1
    assert join_bodies(parts) == text
    for part in parts:
        assert len(part.text) <= 120
        assert fences_balanced(part.text), part.text
    assert parts[1].prefix == "```python\n"


def test_long_line_is_cut_at_a_space() -> None:
    text = "word " * 100
    parts = split_text(text, 50)
    assert join_bodies(parts) == text
    assert all(len(p.text) <= 50 for p in parts)
    assert all(p.body.endswith(" ") for p in parts[:-1])


def test_empty_text() -> None:
    assert [p.text for p in split_text("", 50)] == [""]


alphabet = st.sampled_from(["a", "b", " ", "\n", "```", "~~~", "`", "python", "\r\n", "é", "🙂"])


@settings(deadline=None)
@given(pieces=st.lists(alphabet, max_size=300), limit=st.integers(min_value=16, max_value=200))
def test_any_text_splits_exactly(pieces: list[str], limit: int) -> None:
    text = "".join(pieces)
    parts = split_text(text, limit)
    assert join_bodies(parts) == text
    assert all(len(part.text) <= limit for part in parts)


@settings(deadline=None)
@given(pieces=st.lists(alphabet, max_size=300), limit=st.integers(min_value=120, max_value=400))
def test_fences_stay_balanced(pieces: list[str], limit: int) -> None:
    # Fences are balanced whenever re-opening one fits in a part: markers shorter than a
    # tenth of the limit (real limits are 2,000 characters and more).
    text = "".join(pieces)
    assume(all(len(run) < limit // 10 for run in re.findall(r"`{3,}|~{3,}", text)))
    parts = split_text(text, limit)
    assert join_bodies(parts) == text
    for part in parts:
        assert len(part.text) <= limit
        assert fences_balanced(part.text), part.text


@settings(deadline=None)
@given(text=st.text(max_size=600), limit=st.integers(min_value=16, max_value=120))
def test_arbitrary_unicode_splits_exactly(text: str, limit: int) -> None:
    parts = split_text(text, limit)
    assert join_bodies(parts) == text
    assert all(len(p.text) <= limit for p in parts)
