"""The documentation: the pages exist, every relative link and anchor resolves, the README
stays short, and comments cite only files in the repository or public URLs."""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
README_MAX_LINES = 250
PAGES = ("slack", "discord", "configuration", "operations", "architecture", "performance",
         "reliability", "development")

_FENCE = re.compile(r"^\s*(```|~~~)")
_CODE_SPAN = re.compile(r"(`+)(?:(?!\1).)+?\1")
# [text](target "title") — the text may hold one level of brackets (a badge, `[x]`).
_INLINE = re.compile(r"!?\[(?:[^\[\]]|\[[^\[\]]*\])*\]\(\s*<?([^)\s>]+)>?(?:\s+\"[^\"]*\")?\s*\)")
_REFERENCE = re.compile(r"^\s{0,3}\[[^\]]+\]:\s*<?(\S+?)>?(?:\s+.*)?$")
_HEADING = re.compile(r"^\s{0,3}(#{1,6})\s+(.*?)\s*#*\s*$")
_EXTERNAL = re.compile(r"^[a-z][a-z0-9+.-]*:", re.IGNORECASE)  # http:, https:, mailto:, …


def markdown_files() -> list[Path]:
    return [ROOT / "README.md", ROOT / "CHANGELOG.md", *sorted((ROOT / "docs").glob("*.md"))]


def _prose_lines(text: str) -> Iterator[str]:
    """Lines outside fenced code blocks, with inline code spans removed."""
    fenced = False
    for line in text.splitlines():
        if _FENCE.match(line):
            fenced = not fenced
            continue
        if not fenced:
            yield _CODE_SPAN.sub("", line)


def links(text: str) -> list[str]:
    """Every link target of a Markdown text (inline and reference-style), outside code."""
    found: list[str] = []
    for line in _prose_lines(text):
        found.extend(_INLINE.findall(line))
        match = _REFERENCE.match(line)
        if match:
            found.append(match.group(1))
    return found


def slug(heading: str) -> str:
    """GitHub's anchor for a heading: Markdown dropped, lower case, punctuation removed,
    spaces to hyphens."""
    text = re.sub(r"!?\[([^\]]*)\]\([^)]*\)", r"\1", heading)  # a link keeps its text
    text = re.sub(r"<[^>]+>", "", text)
    text = text.strip().lower()
    text = re.sub(r"[^\w\- ]", "", text)
    return text.replace(" ", "-")


def anchors(text: str) -> set[str]:
    """Every anchor a Markdown text defines (duplicates get -1, -2, … as on GitHub)."""
    seen: dict[str, int] = {}
    result: set[str] = set()
    fenced = False
    for line in text.splitlines():
        if _FENCE.match(line):
            fenced = not fenced
            continue
        match = None if fenced else _HEADING.match(line)
        if match is None:
            continue
        base = slug(match.group(2))
        count = seen.get(base, 0)
        seen[base] = count + 1
        result.add(base if count == 0 else f"{base}-{count}")
    return result


def broken_links(page: Path, text: str, root: Path = ROOT) -> list[str]:
    """The relative links of ``text`` (the content of ``page``) that lead nowhere in ``root``."""
    broken: list[str] = []
    for target in links(text):
        if _EXTERNAL.match(target):
            continue
        path_part, _, fragment = target.partition("#")
        if not path_part:  # an anchor in the page itself
            if fragment not in anchors(text):
                broken.append(f"{target} (no heading with that anchor)")
            continue
        resolved = (page.parent / path_part).resolve()
        if root.resolve() not in (resolved, *resolved.parents):
            broken.append(f"{target} (outside the repository)")
            continue
        if not resolved.exists():
            broken.append(f"{target} (no such file)")
            continue
        if (fragment and resolved.suffix == ".md" and resolved.is_file()
                and fragment not in anchors(resolved.read_text(encoding="utf-8"))):
            broken.append(f"{target} (no heading with that anchor)")
    return broken


# --------------------------------------------------------------------------- the pages


def test_the_documentation_pages_exist() -> None:
    missing = [f"docs/{name}.md" for name in PAGES if not (ROOT / "docs" / f"{name}.md").is_file()]
    missing += [name for name in ("README.md", "CHANGELOG.md") if not (ROOT / name).is_file()]
    assert not missing, f"missing documentation: {missing}"


def test_the_readme_is_short() -> None:
    lines = (ROOT / "README.md").read_text(encoding="utf-8").splitlines()
    assert len(lines) <= README_MAX_LINES, (
        f"README.md has {len(lines)} lines; keep it at most {README_MAX_LINES} "
        "(what it is, the two commands, the smallest .env, links) and move the rest to docs/")


def test_the_readme_links_every_page() -> None:
    targets = set(links((ROOT / "README.md").read_text(encoding="utf-8")))
    for name in PAGES:
        assert f"docs/{name}.md" in targets, f"README.md does not link docs/{name}.md"
    assert "CHANGELOG.md" in targets


@pytest.mark.parametrize("page", markdown_files(), ids=lambda p: str(p.relative_to(ROOT)))
def test_every_relative_link_resolves(page: Path) -> None:
    text = page.read_text(encoding="utf-8")
    assert not broken_links(page, text), (
        f"{page.relative_to(ROOT)} links to what does not exist: {broken_links(page, text)}")


def test_the_slack_manifest_points_at_an_existing_guide() -> None:
    manifest = (ROOT / "deploy" / "slack" / "manifest.yaml").read_text(encoding="utf-8")
    assert "docs/slack.md" in manifest
    assert (ROOT / "docs" / "slack.md").is_file()


# --------------------------------------------------------------------------- comments

# Documents that exist only outside the repository (the project's research notes); a comment
# cites the public page they name as their source instead.
_OFF_TREE = re.compile(
    r"reference/|seeds/|(chatbase-api|slack-platform|discord-platform)\.md|openapi\.yaml"
)
_URL = re.compile(r"(?:https?://)?(?:[\w-]+\.)+[a-z]{2,}/\S*", re.IGNORECASE)
_DOC_PATH = re.compile(r"\b((?:docs/[\w.-]+\.md)|README\.md|CHANGELOG\.md)\b")


def _source_files() -> Iterator[Path]:
    this = Path(__file__).resolve()
    for folder in ("bridge", "adapters", "tests", "deploy", "tools"):
        for path in sorted((ROOT / folder).rglob("*")):
            readable = path.suffix in {".py", ".yaml", ".yml"} or path.name.startswith("Dockerfile")
            if readable and path != this and "__pycache__" not in path.parts:
                yield path


def test_comments_cite_files_that_exist_or_public_urls() -> None:
    problems: list[str] = []
    for path in _source_files():
        for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
            where = f"{path.relative_to(ROOT)}:{number}"
            if _OFF_TREE.search(_URL.sub("", line)):
                problems.append(f"{where} cites a document outside the repository: "
                                f"{line.strip()}")
            for cited in _DOC_PATH.findall(line):
                if not (ROOT / cited).is_file():
                    problems.append(f"{where} cites {cited}, which does not exist")
    assert not problems, "\n".join(problems)


# --------------------------------------------------------------------------- the checker


def test_the_checker_catches_broken_links_and_anchors(tmp_path: Path) -> None:
    (tmp_path / "docs").mkdir()
    (tmp_path / "docs" / "there.md").write_text("# There\n\n## Both `words` here\n\n## Again\n"
                                                "## Again\n")
    page = tmp_path / "README.md"
    text = "\n".join([
        "[ok](docs/there.md) [ok anchor](docs/there.md#both-words-here)",
        "[dup](docs/there.md#again-1) [self](#title) [web](https://example.com/x.md)",
        "[missing](docs/nowhere.md) [bad anchor](docs/there.md#not-a-heading)",
        "[outside](../../etc/passwd) [bad self](#nope)",
        "`[in code](docs/also-nowhere.md)`",
        "```", "[fenced](docs/fenced-nowhere.md)", "```",
        "[ref]: docs/ref-nowhere.md",
        "# Title",
    ])
    broken = broken_links(page, text, root=tmp_path)
    assert broken == [
        "docs/nowhere.md (no such file)",
        "docs/there.md#not-a-heading (no heading with that anchor)",
        "../../etc/passwd (outside the repository)",
        "#nope (no heading with that anchor)",
        "docs/ref-nowhere.md (no such file)",
    ]


def test_slugs_follow_github() -> None:
    assert slug("Before the first start: `chatbase-bridge check`") == (
        "before-the-first-start-chatbase-bridge-check")
    assert slug("Security (`test_security.py`, `tests/conftest.py`)") == (
        "security-test_securitypy-testsconftestpy")
    assert slug("1. Create the app from the manifest") == "1-create-the-app-from-the-manifest"
    assert slug("What was changed for speed") == "what-was-changed-for-speed"


def test_the_comment_check_tells_a_public_url_from_an_unshipped_document() -> None:
    def flagged(line: str) -> bool:
        return bool(_OFF_TREE.search(_URL.sub("", line)))

    assert flagged("# limits (reference/slack-platform.md §1.4)")
    assert flagged('"""The contract in ``/work/shared/reference/chatbase-api.md``."""')
    assert flagged("# chatbase-api.md §3.3: what the AI SDK emits")
    assert not flagged("# Source: https://docs.slack.dev/reference/methods/chat.startStream")
    assert not flagged("# tiers (docs.slack.dev/reference/methods/chat.appendStream)")
    assert _DOC_PATH.findall("# see docs/performance.md and README.md") == [
        "docs/performance.md", "README.md"]
