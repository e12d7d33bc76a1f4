"""The generated configuration reference, and the README section that must match it."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from bridge.app.settings import Settings, env_name
from tools.settings_doc import BEGIN, END, README, readme_section, rewrite, table


def test_every_setting_has_one_row_with_a_meaning() -> None:
    rows = [line for line in table().splitlines()[2:]]
    assert len(rows) == len(Settings.model_fields)
    for name, field in Settings.model_fields.items():
        assert field.description, f"{name} has no description for the README"
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


def test_rewrite_replaces_only_the_marked_section(tmp_path: Path) -> None:
    readme = tmp_path / "README.md"
    readme.write_text(f"# Title\n\nintro\n\n{BEGIN}\nold table\n{END}\n\nafter\n")
    done = subprocess.run(
        [sys.executable, "-m", "tools.settings_doc", "--write", "--readme", str(readme)],
        capture_output=True, text=True, timeout=60, check=False,
    )
    assert done.returncode == 0, done.stderr
    text = readme.read_text()
    assert text.startswith("# Title\n\nintro\n\n")
    assert text.endswith(f"{END}\n\nafter\n")
    assert readme_section(text) == table()
    assert "old table" not in text
    assert rewrite(text) == text  # idempotent


def test_rewrite_refuses_a_readme_without_markers() -> None:
    with pytest.raises(ValueError, match="settings:begin"):
        rewrite("# no markers here\n")


def test_readme_configuration_section_is_current() -> None:
    hint = "run `python -m tools.settings_doc --write` to regenerate it"
    if not README.is_file():
        pytest.fail(f"README.md is missing; write it with the markers, then {hint}")
    section = readme_section(README.read_text(encoding="utf-8"))
    if section is None:
        pytest.fail(f"README.md lacks the {BEGIN} … {END} markers; add them, then {hint}")
    if section != table():
        pytest.fail(f"README.md's settings table is out of date: {hint}")
