"""The locks agree with pyproject.toml and with what is installed, on every supported Python,
without asking the package index anything: whatever it serves today cannot turn this red."""

from __future__ import annotations

import re
import sys
import tomllib
from importlib import metadata
from pathlib import Path

import pytest
from packaging.markers import default_environment
from packaging.requirements import Requirement
from packaging.specifiers import SpecifierSet
from packaging.utils import canonicalize_name
from packaging.version import Version

ROOT = Path(__file__).resolve().parents[2]
RUNTIME_LOCK = ROOT / "deploy" / "requirements.lock"
TEST_LOCK = ROOT / "tests" / "requirements.lock"
PROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))["project"]
SUPPORTED = sorted(
    (c.rsplit(" :: ", 1)[1] for c in PROJECT["classifiers"]
     if re.fullmatch(r"Programming Language :: Python :: 3\.\d+", c)),
    key=Version,
)
TEST_EXTRAS = ("test", "speed")


def read_lock(path: Path) -> list[Requirement]:
    pins = []
    for raw in path.read_text(encoding="utf-8").splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        pin = Requirement(line)
        assert len(pin.specifier) == 1 and next(iter(pin.specifier)).operator == "==", (
            f"{path.name}: not an exact pin: {line!r}")
        pins.append(pin)
    return pins


def linux(python: str, extra: str = "") -> dict[str, str]:
    """The marker environment of a Linux CPython ``python`` (such as "3.13")."""
    return {**default_environment(), "python_version": python,
            "python_full_version": f"{python}.0", "sys_platform": "linux",
            "platform_system": "Linux", "os_name": "posix",
            "platform_python_implementation": "CPython", "implementation_name": "cpython",
            "extra": extra}


def pins_for(lock: list[Requirement], environment: dict[str, str]) -> dict[str, str]:
    chosen: dict[str, str] = {}
    for pin in lock:
        if pin.marker is None or pin.marker.evaluate(environment):
            name = canonicalize_name(pin.name)
            assert name not in chosen, f"{pin.name} is pinned twice for {environment}"
            chosen[name] = next(iter(pin.specifier)).version
    return chosen


def direct(extras: tuple[str, ...] = ()) -> list[Requirement]:
    wanted = [Requirement(raw) for raw in PROJECT["dependencies"]]
    for extra in extras:
        wanted += [Requirement(raw) for raw in PROJECT["optional-dependencies"][extra]]
    return wanted


def test_supported_pythons_are_what_requires_python_admits() -> None:
    admitted = SpecifierSet(PROJECT["requires-python"])
    assert SUPPORTED == ["3.11", "3.12", "3.13"]
    for python in SUPPORTED:
        assert admitted.contains(f"{python}.0"), python
    newest = Version(SUPPORTED[-1])
    assert not admitted.contains(f"{newest.major}.{newest.minor + 1}.0"), (
        "requires-python admits a Python the locks were not made for")
    assert not admitted.contains("3.10.14")


@pytest.mark.parametrize("python", SUPPORTED)
@pytest.mark.parametrize(("lock", "extras"), [(RUNTIME_LOCK, ()), (TEST_LOCK, TEST_EXTRAS)],
                         ids=["runtime", "test"])
def test_every_dependency_is_pinned_inside_its_range(
    python: str, lock: Path, extras: tuple[str, ...]
) -> None:
    pins = pins_for(read_lock(lock), linux(python))
    for requirement in direct(extras):
        if requirement.marker is not None and not requirement.marker.evaluate(linux(python)):
            continue
        name = canonicalize_name(requirement.name)
        assert name in pins, f"{lock.name}: {requirement} is not pinned for Python {python}"
        assert requirement.specifier.contains(pins[name], prereleases=True), (
            f"{lock.name}: {name}=={pins[name]} is outside {requirement} (Python {python}); "
            "run `python deploy/make_lock.py`")


@pytest.mark.parametrize("python", SUPPORTED)
def test_tests_run_with_exactly_the_runtime_versions(python: str) -> None:
    runtime = pins_for(read_lock(RUNTIME_LOCK), linux(python))
    test = pins_for(read_lock(TEST_LOCK), linux(python))
    differ = {n: (v, test.get(n)) for n, v in runtime.items() if test.get(n) != v}
    assert not differ, f"the test lock disagrees with the runtime lock: {differ}"
    for tool in ("pytest", "mypy", "ruff", "hypothesis", "kubernetes-validate", "uv"):
        assert tool not in runtime, f"{tool} is a test tool, not a runtime dependency"
        assert tool in test


def test_discord_on_313_gets_its_audioop_replacement_and_only_there() -> None:
    lock = read_lock(RUNTIME_LOCK)
    assert "audioop-lts" in pins_for(lock, linux("3.13"))
    assert "audioop-lts" not in pins_for(lock, linux("3.11"))


def test_what_is_installed_is_the_lock_closed_over_every_requirement() -> None:
    """This interpreter's environment holds exactly the locked versions of chatbase-bridge
    with its test extras and everything they pull in, and the lock names every one of them."""
    here = f"{sys.version_info.major}.{sys.version_info.minor}"
    if here not in SUPPORTED:
        pytest.fail(f"Python {here} is not supported: {SUPPORTED}")
    environment = {**default_environment(), "extra": ""}
    pins = pins_for(read_lock(TEST_LOCK), environment)
    pending = [Requirement("chatbase-bridge[test]")]
    seen: set[str] = set()
    while pending:
        requirement = pending.pop()
        name = canonicalize_name(requirement.name)
        key = f"{name}[{','.join(sorted(requirement.extras))}]"
        if key in seen:
            continue
        seen.add(key)
        installed = metadata.distribution(name)
        if name != "chatbase-bridge":
            assert name in pins, f"{name} is installed as a dependency but not locked"
            assert installed.version == pins[name], (
                f"{name} {installed.version} is installed, the lock says {pins[name]}: "
                "install with the README's command (pip install -c tests/requirements.lock)")
            assert requirement.specifier.contains(installed.version, prereleases=True)
        for raw in installed.requires or []:
            needed = Requirement(raw)
            extras = requirement.extras or {""}
            if needed.marker is None or any(
                needed.marker.evaluate({**environment, "extra": extra}) for extra in extras
            ):
                pending.append(needed)
    assert "discord-py" in {key.split("[")[0] for key in seen}


def test_every_install_goes_through_a_lock() -> None:
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    assert "pip install -c deploy/requirements.lock -e . && chatbase-bridge run" in readme
    assert ("pip install -c tests/requirements.lock -e '.[test]' && python -m pytest"
            in readme)
    ci = (ROOT / ".ci" / "run").read_text(encoding="utf-8")
    installs = [line for line in ci.splitlines() if "pip install" in line]
    assert installs and all("-c tests/requirements.lock" in line for line in installs), installs
