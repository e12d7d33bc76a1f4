"""Generates the README's configuration reference from the settings fields.

``python -m tools.settings_doc`` prints the table; ``--write`` rewrites the README section
between ``<!-- settings:begin -->`` and ``<!-- settings:end -->`` in place.
"""

from __future__ import annotations

import argparse
import enum
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from pydantic import SecretStr
from pydantic_core import PydanticUndefined

from bridge.app.settings import Settings, env_name

__all__ = ["BEGIN", "END", "README", "readme_section", "rewrite", "table"]

BEGIN = "<!-- settings:begin -->"
END = "<!-- settings:end -->"
README = Path(__file__).resolve().parent.parent / "README.md"


def _default(value: Any) -> str:
    if value is None or value is PydanticUndefined:
        return "—"
    if isinstance(value, SecretStr):
        return "(secret)"
    if isinstance(value, bool):
        return "`true`" if value else "`false`"
    if isinstance(value, enum.Enum):
        return f"`{value.value}`"
    if isinstance(value, float):
        return f"`{value:g}`"
    if isinstance(value, list | tuple):
        return f"`{','.join(str(item) for item in value)}`" if value else "(empty)"
    return f"`{value}`"


def _cell(text: str) -> str:
    return " ".join(text.split()).replace("|", "\\|")


def table() -> str:
    """The Markdown table: one row per setting, in the order ``Settings`` declares them."""
    rows = ["| Variable | Default | Meaning |", "|---|---|---|"]
    for name, field in Settings.model_fields.items():
        default = field.get_default(call_default_factory=True)
        rows.append(
            f"| `{env_name(name)}` | {_cell(_default(default))} | "
            f"{_cell(field.description or '')} |"
        )
    return "\n".join(rows) + "\n"


def readme_section(text: str) -> str | None:
    """What sits between the markers of ``text`` (None when the markers are missing)."""
    start = text.find(BEGIN)
    end = text.find(END, start + len(BEGIN)) if start >= 0 else -1
    if start < 0 or end < 0:
        return None
    return text[start + len(BEGIN):end].strip("\n") + "\n"


def rewrite(text: str) -> str:
    """``text`` with the section between the markers replaced by the current table."""
    if readme_section(text) is None:
        raise ValueError(f"the README has no {BEGIN} … {END} markers; add them where the "
                         "configuration table belongs")
    start = text.find(BEGIN) + len(BEGIN)
    end = text.find(END, start)
    return text[:start] + "\n" + table() + text[end:]


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m tools.settings_doc",
        description="Print the configuration reference table generated from the settings.",
    )
    parser.add_argument("--write", action="store_true",
                        help="rewrite the table between the markers in the README in place")
    parser.add_argument("--readme", type=Path, default=README, help="README to rewrite")
    args = parser.parse_args(argv)
    if not args.write:
        sys.stdout.write(table())
        return 0
    path: Path = args.readme
    try:
        text = path.read_text(encoding="utf-8")
        path.write_text(rewrite(text), encoding="utf-8")
    except (OSError, ValueError) as exc:
        sys.stderr.write(f"error: {path}: {exc}\n")
        return 1
    sys.stdout.write(f"rewrote the settings table in {path}\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
