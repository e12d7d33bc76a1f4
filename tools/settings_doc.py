"""Generates docs/configuration.md, the configuration reference, from the settings fields.

``python -m tools.settings_doc`` prints the page; ``--write`` rewrites docs/configuration.md
whole (a short introduction and one table row per setting).
"""

from __future__ import annotations

import argparse
import enum
import json
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from pydantic import BaseModel, SecretStr
from pydantic_core import PydanticUndefined

from bridge.app.settings import Settings, env_name

__all__ = ["CONFIGURATION", "INTRO", "document", "table"]

CONFIGURATION = Path(__file__).resolve().parent.parent / "docs" / "configuration.md"

INTRO = """\
# Configuration

Every setting is an environment variable (or a line in `.env`). Secrets are never logged.
This page is generated from the settings model (`bridge/app/settings.py`) by
`python -m tools.settings_doc --write`; do not edit it by hand, a test fails when it drifts.
Setup guides: [Slack](slack.md), [Discord](discord.md); running it: [operations](operations.md).

"""


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
    if isinstance(value, list | tuple) and value and isinstance(value[0], BaseModel):
        # Written as the JSON the setting takes.
        return f"`{json.dumps([item.model_dump() for item in value], ensure_ascii=False)}`"
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


def document() -> str:
    """The whole of docs/configuration.md: the introduction, then the table."""
    return INTRO + table()


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m tools.settings_doc",
        description="Print the configuration reference generated from the settings.",
    )
    parser.add_argument("--write", action="store_true",
                        help="write the page to docs/configuration.md (or --out) instead")
    parser.add_argument("--out", type=Path, default=CONFIGURATION, help="file to write")
    args = parser.parse_args(argv)
    if not args.write:
        sys.stdout.write(document())
        return 0
    path: Path = args.out
    try:
        path.write_text(document(), encoding="utf-8")
    except OSError as exc:
        sys.stderr.write(f"error: {path}: {exc}\n")
        return 1
    sys.stdout.write(f"wrote the configuration reference to {path}\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
