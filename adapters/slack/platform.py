"""Slack as the application shell sees it (``bridge.app.platforms.Platform``)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

import aiohttp
from aiohttp import web

from bridge.app.platforms import Command
from bridge.app.settings import Settings
from bridge.core.ports import PlatformAdapter

if TYPE_CHECKING:
    from bridge.app.checks import CheckResult
    from bridge.app.compose import Bridge


class SlackPlatform:
    """Slack on slack-bolt: Socket Mode, or HTTP events on the shared HTTP server."""

    name = "slack"
    rank = 10
    credential = "SLACK_BOT_TOKEN"

    def enabled(self, settings: Settings) -> bool:
        return settings.slack_enabled

    def adapter(self, bridge: Bridge, *, http_app: web.Application) -> PlatformAdapter:
        # Imported here: the CLI loads every platform to list its commands, and slack-bolt
        # is needed only by `run`.
        from adapters.slack.adapter import SlackAdapter

        return SlackAdapter(
            settings=bridge.settings, relay=bridge.service, metrics=bridge.metrics,
            http_app=http_app, session=bridge.session, history=bridge.history,
        )

    async def check(self, settings: Settings, session: aiohttp.ClientSession) -> CheckResult:
        from adapters.slack.checks import check_slack

        return await check_slack(settings, session)

    def commands(self) -> Sequence[Command]:
        return ()
