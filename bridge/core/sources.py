"""The list of sources under a finished answer: links to where the agent's answer came from.

Chatbase streams may name sources (``source-url``, ``source-document``) and files (``file``).
They are listed once each, in the order they were first named, as standard Markdown that
both platforms render: a link with its title (or the URL's last path segment) for a URL,
the title or filename for a document. Only http(s) URLs become links. Labels are escaped
so a title can neither format the list nor mention anyone.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from urllib.parse import quote, unquote, urlsplit

from bridge.core.models import Source
from bridge.core.split import one_line

HEADING = "**Sources**"
# A long list helps nobody and costs a message part; the rest are counted, not listed.
MAX_SOURCES = 10
MAX_LABEL = 120
MAX_URL = 1_000

_MARKDOWN = re.compile(r"([\\`*_~\[\]()<>#|])")
# What may stay as it is in a link target; everything else (spaces, parentheses, angle
# brackets, quotes) is percent-encoded so the Markdown link cannot end early.
_URL_SAFE = ":/?#@!$&'*+,;=%~-._"


def _url(raw: str | None) -> str | None:
    if raw is None or len(raw) > MAX_URL:
        return None
    try:
        parts = urlsplit(raw)
    except ValueError:
        return None
    if parts.scheme.lower() not in ("http", "https") or not parts.hostname:
        return None
    return quote(raw, safe=_URL_SAFE.replace("'", ""))


def _label(text: str) -> str:
    text = one_line(text, MAX_LABEL)
    # A zero-width space after "@" keeps "@everyone", "@here" and user names from ever
    # reading as a mention, whatever the platform's own mention settings.
    return _MARKDOWN.sub(r"\\\1", text).replace("@", "@\u200b")


def _name_in(url: str) -> str:
    path = urlsplit(url).path.rstrip("/")
    name = unquote(path.rsplit("/", 1)[-1]).strip() if path else ""
    return name or urlsplit(url).hostname or url


def sources_block(sources: Iterable[Source]) -> str:
    """The Markdown list of ``sources``, or "" when none can be shown."""
    lines: list[str] = []
    seen: set[str] = set()
    more = 0
    for source in sources:
        url = _url(source.url)
        label = next((x for x in (source.title, source.filename) if x and x.strip()), None)
        if url is not None:
            key = "u:" + url
            line_label = _label(label or _name_in(source.url or url))
        elif label is not None and source.kind == "document":
            key = "d:" + label.casefold()
            line_label = _label(label)
        else:
            continue  # a URL that is not http(s), or nothing to show
        if key in seen:
            continue
        seen.add(key)
        if len(lines) >= MAX_SOURCES:
            more += 1
            continue
        entry = f"[{line_label}]({url})" if url is not None else line_label
        lines.append(f"{len(lines) + 1}. {entry}")
    if not lines:
        return ""
    if more:
        lines.append(f"…and {more} more")
    return "\n".join([HEADING, *lines])
