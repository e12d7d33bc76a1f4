"""Escaping outbound text and reading inbound Slack markup."""

from __future__ import annotations

import re

from hypothesis import given
from hypothesis import strategies as st

from adapters.slack.markup import (
    escape,
    escaped_length,
    escaped_prefix,
    mentions_user,
    split_for_escaped_limit,
    to_plain,
)

LIVE = re.compile(r"<[@#!][^>]*>")


def unescape(text: str) -> str:
    return text.replace("&lt;", "<").replace("&gt;", ">").replace("&amp;", "&")


def test_escape_makes_every_token_inert() -> None:
    text = "<!channel> <!here> <!everyone> <@U1> <#C1|x> <!subteam^S1|@t> a&b 1<2>0"
    escaped = escape(text)
    assert escaped == (
        "&lt;!channel&gt; &lt;!here&gt; &lt;!everyone&gt; &lt;@U1&gt; &lt;#C1|x&gt; "
        "&lt;!subteam^S1|@t&gt; a&amp;b 1&lt;2&gt;0"
    )
    assert LIVE.search(escaped) is None


def test_escape_keeps_literal_entities_literal() -> None:
    assert escape("&lt;b&gt;") == "&amp;lt;b&amp;gt;"
    assert unescape(escape("&lt;b&gt;")) == "&lt;b&gt;"


@given(st.text())
def test_escape_round_trips_and_never_leaves_a_bracket(text: str) -> None:
    escaped = escape(text)
    assert "<" not in escaped and ">" not in escaped
    assert unescape(escaped) == text
    assert escaped_length(text) == len(escaped)


@given(st.text(alphabet=st.sampled_from("ab&<> \n")), st.integers(min_value=5, max_value=40))
def test_split_for_escaped_limit_joins_back_within_the_limit(text: str, limit: int) -> None:
    pieces = split_for_escaped_limit(text, limit)
    assert "".join(pieces) == text
    assert all(piece and len(escape(piece)) <= limit for piece in pieces)


@given(st.text(alphabet=st.sampled_from("ab&<> ")), st.integers(min_value=6, max_value=60))
def test_escaped_prefix_never_cuts_an_entity(text: str, limit: int) -> None:
    shown = escaped_prefix(text, limit)
    assert len(shown) <= limit
    body = shown.removesuffix("…")
    assert unescape(body) == text[: len(unescape(body))]
    assert re.search(r"&(?!amp;|lt;|gt;)", body) is None


def test_to_plain_strips_the_bot_and_reads_tokens() -> None:
    text = (
        "<@UBOT> hi <@U2|ann>, see <#C1|general> and <https://x.test/a|the docs> or "
        "<https://y.test> <mailto:a@b.test|a@b.test> <!here> <!subteam^S1|@ops> "
        "1 &lt; 2 &amp;&amp; 3 &gt; 2"
    )
    assert to_plain(text, bot_user_id="UBOT") == (
        "hi @ann, see #general and the docs (https://x.test/a) or https://y.test a@b.test "
        "@here @ops 1 < 2 && 3 > 2"
    )


def test_to_plain_removes_a_mention_in_the_middle() -> None:
    assert to_plain("so <@UBOT|bridge> what now", bot_user_id="UBOT") == "so what now"
    assert to_plain("&amp;lt; literal", bot_user_id="UBOT") == "&lt; literal"


def test_mentions_user() -> None:
    assert mentions_user("hey <@UBOT> there", "UBOT")
    assert mentions_user("hey <@UBOT|bot>", "UBOT")
    assert not mentions_user("hey <@UBOTX>", "UBOT")
