"""The sources list under an answer: order, de-duplication, escaping, limits."""

from __future__ import annotations

import re

from hypothesis import given
from hypothesis import strategies as st

from bridge.core.models import Source
from bridge.core.sources import HEADING, MAX_SOURCES, sources_block


def url(u: str, title: str | None = None) -> Source:
    return Source(kind="url", url=u, title=title)


def test_urls_once_each_in_order_of_first_mention() -> None:
    block = sources_block([
        url("https://a.example/x", "A"), url("https://b.example/"), url("https://a.example/x"),
        Source(kind="document", title="Policy", filename="policy.pdf"),
        Source(kind="document", filename="notes.txt"),
        Source(kind="document", title="policy"),  # the same document, by title
    ])
    assert block == "\n".join([
        HEADING,
        "1. [A](https://a.example/x)",
        "2. [b.example](https://b.example/)",
        "3. Policy",
        "4. notes.txt",
    ])


def test_nothing_to_show_is_empty() -> None:
    assert sources_block([]) == ""
    assert sources_block([url("javascript:alert(1)", "x"), url("ftp://h/f")]) == ""


def test_labels_cannot_format_or_mention() -> None:
    block = sources_block([url("https://h.example/p", "[x](https://evil) *b* @here <!channel>")])
    line = block.splitlines()[1]
    assert line == (r"1. [\[x\]\(https://evil\) \*b\* @" "\u200b" r"here \<!channel\>]"
                    "(https://h.example/p)")


def test_link_targets_cannot_end_early() -> None:
    block = sources_block([url("https://h.example/a (b)/c d", "t")])
    assert block.splitlines()[1] == "1. [t](https://h.example/a%20%28b%29/c%20d)"


def test_a_long_list_is_cut() -> None:
    block = sources_block([url(f"https://h.example/{i}") for i in range(MAX_SOURCES + 3)])
    lines = block.splitlines()
    assert len(lines) == 1 + MAX_SOURCES + 1
    assert lines[-1] == "…and 3 more"


_LINK = re.compile(r"^\d+\. (?:\[(?:[^\[\]\\]|\\.)*\]\((https?://[^\s()<>]+)\)|[^\n]+)$")


@given(st.lists(st.builds(
    Source,
    kind=st.sampled_from(["url", "document", "file"]),
    url=st.one_of(st.none(), st.text(max_size=30),
                  st.text(max_size=20).map(lambda s: "https://h.example/" + s)),
    title=st.one_of(st.none(), st.text(max_size=40)),
    filename=st.one_of(st.none(), st.text(max_size=20)),
), max_size=15))
def test_every_line_is_one_safe_entry(sources: list[Source]) -> None:
    block = sources_block(sources)
    if not block:
        return
    heading, *lines = block.split("\n")
    assert heading == HEADING
    targets = []
    for line in lines:
        if line.startswith("…and "):
            continue
        match = _LINK.match(line)
        assert match, line
        if match.group(1):
            targets.append(match.group(1))
        assert "@everyone" not in line and "@here" not in line
    assert len(targets) == len(set(targets))  # each URL once
    assert len([x for x in lines if not x.startswith("…")]) <= MAX_SOURCES
