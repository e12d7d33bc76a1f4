"""Secret values the fakes and test stacks hand to the bridge, so the suite can prove that
none of them ever reaches a log line (``tests/conftest.py`` checks every record)."""

from __future__ import annotations

from pydantic import SecretStr

__all__ = ["MIN_LENGTH", "known", "register", "register_settings"]

# Shorter values ("key", "x") would match ordinary words in log lines; every secret the
# fakes use is longer than this.
MIN_LENGTH = 8

_known: set[str] = set()


def register(*values: str | None) -> None:
    """Remember secret values (tokens, keys, signing secrets) the bridge is given."""
    for value in values:
        if value is not None and len(value) >= MIN_LENGTH:
            _known.add(value)


def register_settings(settings: object) -> None:
    """Remember every ``SecretStr`` field of a ``bridge.app.settings.Settings``."""
    for name in type(settings).model_fields:  # type: ignore[attr-defined]
        value = getattr(settings, name)
        if isinstance(value, SecretStr):
            register(value.get_secret_value())


def known() -> frozenset[str]:
    return frozenset(_known)
