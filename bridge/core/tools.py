"""Client actions: handlers for Chatbase custom actions the agent asks the bridge to run.

An operator registers handlers by tool name from a module named in ``BRIDGE_TOOLS_MODULE``
(which defines ``register_tools(registry)``) or from the ``chatbase_bridge.tools`` entry-point
group. A tool without a handler is answered with an error output, never left hanging.
"""

from __future__ import annotations

import importlib
import logging
from collections.abc import Awaitable, Callable
from importlib.metadata import entry_points
from typing import Any

from bridge.core.errors import ConfigError
from bridge.core.models import ToolCall

log = logging.getLogger(__name__)

ToolHandler = Callable[[Any], Awaitable[Any]]
ENTRY_POINT_GROUP = "chatbase_bridge.tools"


class ToolRegistry:
    """Handlers by Chatbase tool (custom action) name."""

    def __init__(self) -> None:
        self._handlers: dict[str, ToolHandler] = {}

    def register(self, name: str, handler: ToolHandler) -> None:
        if not name:
            raise ValueError("a tool needs a name")
        self._handlers[name] = handler

    def names(self) -> list[str]:
        return sorted(self._handlers)

    async def run(self, call: ToolCall) -> Any:
        """The output for one tool call; failures become an error output for the agent."""
        handler = self._handlers.get(call.tool_name)
        if handler is None:
            log.info("tool %r has no handler; answering that it is unavailable", call.tool_name)
            return {"error": f"The action '{call.tool_name}' is not available in chat."}
        try:
            return await handler(call.input)
        except Exception as exc:
            log.warning("tool %r failed: %s", call.tool_name, type(exc).__name__)
            return {"error": f"The action '{call.tool_name}' failed."}

    def load(self, module: str | None) -> None:
        """Register handlers from the configured module and from installed entry points."""
        if module:
            try:
                loaded = importlib.import_module(module)
            except ImportError as exc:
                raise ConfigError(
                    f"BRIDGE_TOOLS_MODULE names {module!r}, which cannot be imported: {exc}."
                ) from None
            register = getattr(loaded, "register_tools", None)
            if not callable(register):
                raise ConfigError(
                    f"BRIDGE_TOOLS_MODULE {module!r} has no register_tools(registry) function."
                )
            register(self)
        for entry in entry_points(group=ENTRY_POINT_GROUP):
            entry.load()(self)
