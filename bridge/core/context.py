"""Log context: fields (platform, key, request) bound to every log event of a task and the
tasks it starts; the application's log formatters print them."""

from __future__ import annotations

import contextlib
import contextvars
from collections.abc import Iterator, Mapping
from types import MappingProxyType

# Read-only mapping as the default; ``bind`` always replaces it with a fresh dict.
_context: contextvars.ContextVar[Mapping[str, str]] = contextvars.ContextVar(
    "log_context", default=MappingProxyType({})
)


def current() -> Mapping[str, str]:
    """The fields bound in this task."""
    return _context.get()


@contextlib.contextmanager
def bound(**fields: str | None) -> Iterator[None]:
    """Attach fields to every log event in this task (and tasks it starts) until exit."""
    merged = dict(_context.get())
    merged.update({k: str(v) for k, v in fields.items() if v is not None})
    token = _context.set(merged)
    try:
        yield
    finally:
        _context.reset(token)


def bind(**fields: str | None) -> None:
    """Add fields to the current task's log context for the rest of the task."""
    merged = dict(_context.get())
    merged.update({k: str(v) for k, v in fields.items() if v is not None})
    _context.set(merged)
