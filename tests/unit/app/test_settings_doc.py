"""The generated configuration reference, and docs/configuration.md that must match it."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from bridge.app.settings import Settings, env_name
from tools.settings_doc import CONFIGURATION, INTRO, SEVERAL_AGENTS, document, table


def test_every_setting_has_one_row_with_a_meaning() -> None:
    rows = [line for line in table().splitlines()[2:]]
    assert len(rows) == len(Settings.model_fields)
    for name, field in Settings.model_fields.items():
        assert field.description, f"{name} has no description for the docs"
        [row] = [r for r in rows if r.startswith(f"| `{env_name(name)}` |")]
        assert row.count(" | ") == 2, row  # a description with a bare | would add a column


def test_environment_names_are_unique() -> None:
    names = [env_name(name) for name in Settings.model_fields]
    assert len(names) == len(set(names))


def test_defaults_are_shown_as_an_operator_would_type_them() -> None:
    text = table()
    assert "| `BRIDGE_HTTP_PORT` | `8080` |" in text
    assert "| `BRIDGE_SHUTDOWN_GRACE` | `25` |" in text
    assert "| `BRIDGE_LOG_FORMAT` | `console` |" in text
    assert "| `BRIDGE_SLACK_NATIVE_STREAMING` | `true` |" in text
    assert "| `BRIDGE_FEEDBACK_POSITIVE` | `+1,thumbsup,👍` |" in text
    assert "| `CHATBASE_API_KEY` | — |" in text


def test_write_replaces_the_whole_page(tmp_path: Path) -> None:
    page = tmp_path / "configuration.md"
    page.write_text("# stale\n\nold table\n")
    done = subprocess.run(
        [sys.executable, "-m", "tools.settings_doc", "--write", "--out", str(page)],
        capture_output=True, text=True, timeout=60, check=False,
    )
    assert done.returncode == 0, done.stderr
    text = page.read_text(encoding="utf-8")
    assert text == document() == INTRO + table() + SEVERAL_AGENTS
    assert text.startswith("# Configuration\n")
    assert "old table" not in text


def test_configuration_page_is_current() -> None:
    hint = "run `python -m tools.settings_doc --write` to regenerate it"
    if not CONFIGURATION.is_file():
        pytest.fail(f"docs/configuration.md is missing: {hint}")
    if CONFIGURATION.read_text(encoding="utf-8") != document():
        pytest.fail(f"docs/configuration.md is out of date: {hint}")
