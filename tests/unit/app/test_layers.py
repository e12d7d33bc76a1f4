"""The core knows no platform: nothing under ``bridge/`` but the application shell
(``bridge/app/``) imports a platform SDK or an adapter, and the shell's runtime and CLI reach
the platforms only through ``bridge.app.platforms``."""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

ROOT = Path(__file__).resolve().parents[3]
BRIDGE = ROOT / "bridge"
SHELL = BRIDGE / "app"
PLATFORM_PACKAGES = ("slack_sdk", "slack_bolt", "discord", "adapters")


def imported(path: Path) -> Iterator[tuple[int, str]]:
    """Every module ``path`` imports (absolute names), with its line."""
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield node.lineno, alias.name
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            yield node.lineno, node.module


def platform_imports(path: Path) -> list[str]:
    return [f"{path.relative_to(ROOT)}:{line} imports {name}"
            for line, name in imported(path)
            if name.split(".")[0] in PLATFORM_PACKAGES]


def test_the_walk_sees_the_tree() -> None:
    assert (BRIDGE / "core" / "service.py").is_file()
    assert any(name == "slack_sdk.errors"
               for _, name in imported(ROOT / "adapters" / "slack" / "checks.py"))


def test_no_platform_sdk_or_adapter_is_imported_outside_the_shell() -> None:
    found = [hit for path in sorted(BRIDGE.rglob("*.py"))
             if SHELL not in path.parents for hit in platform_imports(path)]
    assert found == []


def test_the_shell_knows_platforms_only_through_their_interface() -> None:
    found = [hit for path in sorted(SHELL.rglob("*.py")) for hit in platform_imports(path)]
    assert found == []


def test_the_runtime_and_the_cli_do_not_switch_on_platform_names() -> None:
    for path in (SHELL / "runtime.py", SHELL / "cli.py"):
        tree = ast.parse(path.read_text(encoding="utf-8"))
        names = [node.lineno for node in ast.walk(tree)
                 if isinstance(node, ast.Constant) and node.value in ("slack", "discord")]
        assert names == [], f"{path.name} names a platform on lines {names}"


def test_the_core_imports_only_the_standard_library_and_itself() -> None:
    """bridge/core reads settings, stores memory and counts work through its ports; the
    shell hands it the real ones, so it needs no I/O library and nothing outside itself."""
    import sys

    core = BRIDGE / "core"
    found = [f"{path.relative_to(ROOT)}:{line} imports {name}"
             for path in sorted(core.rglob("*.py")) for line, name in imported(path)
             if not name.startswith("bridge.core") and name != "__future__"
             and name.split(".")[0] not in sys.stdlib_module_names]
    assert found == []


def test_the_store_and_the_chatbase_client_do_not_reach_into_the_shell() -> None:
    found = [f"{path.relative_to(ROOT)}:{line} imports {name}"
             for package in ("store", "chatbase")
             for path in sorted((BRIDGE / package).rglob("*.py"))
             for line, name in imported(path) if name.startswith("bridge.app")]
    assert found == []
