"""``chatbase-bridge run`` as real processes in Slack HTTP mode, pointed at the fakes: start,
read their log as it comes (a reader task, so a full pipe never blocks them), post signed
Slack events to them, stop them with SIGTERM."""

from __future__ import annotations

import asyncio
import json
import re
import signal
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import aiohttp
from aiohttp import web

from tests.fakes.chatbase import FakeChatbase
from tests.fakes.slack import FakeSlack
from tests.integration.cli_process import bare_env, start

# A healthy start takes about a second; a loaded CI machine gets more.
START_LIMIT = 60.0


class TimedChatbase(FakeChatbase):
    """The fake Chatbase, also noting when (wall clock) each chat request arrived."""

    def __init__(self, **kw: Any) -> None:
        super().__init__(**kw)
        self.chat_times: list[float] = []

    @web.middleware
    async def _middleware(self, request: web.Request, handler: Any) -> web.StreamResponse:
        if request.path.endswith("/chat"):
            self.chat_times.append(time.time())
        return await super()._middleware(request, handler)


def bridge_env(home: Path, chatbase: FakeChatbase, slack: FakeSlack, redis_url: str,
               prefix: str, **extra: str) -> dict[str, str]:
    return bare_env(
        home,
        CHATBASE_API_KEY=chatbase.api_key, CHATBASE_AGENT_ID=chatbase.agent_id,
        CHATBASE_API_BASE=chatbase.base_url, REDIS_URL=redis_url, BRIDGE_REDIS_PREFIX=prefix,
        SLACK_BOT_TOKEN=slack.bot_token, SLACK_SIGNING_SECRET=slack.signing_secret,
        SLACK_API_URL=slack.api_url, BRIDGE_HTTP_HOST="127.0.0.1", BRIDGE_HTTP_PORT="0",
        BRIDGE_USER_QUOTA="0", BRIDGE_LOG_LEVEL="INFO", **extra,
    )


class Bridge:
    """One ``chatbase-bridge run --platform slack`` process."""

    def __init__(self, env: dict[str, str], cwd: Path) -> None:
        self._env = env
        self._cwd = cwd
        self.lines: list[str] = []
        self._changed = asyncio.Condition()
        self._proc: asyncio.subprocess.Process | None = None
        self._reader: asyncio.Task[None] | None = None
        self.port = 0

    async def start(self) -> Bridge:
        self._proc = await start("run", "--platform", "slack", env=self._env, cwd=self._cwd)
        self._reader = asyncio.create_task(self._read())
        found = await self.wait_line(r"listening on port (\d+)")
        self.port = int(found.group(1))
        await self.wait_line(r"slack connected")
        return self

    async def _read(self) -> None:
        assert self._proc is not None and self._proc.stderr is not None
        while raw := await self._proc.stderr.readline():
            async with self._changed:
                self.lines.append(raw.decode(errors="replace"))
                self._changed.notify_all()
        async with self._changed:
            self._changed.notify_all()

    async def wait_line(self, pattern: str, *, within: float = START_LIMIT) -> re.Match[str]:
        regex = re.compile(pattern)

        def found() -> re.Match[str] | None:
            for line in self.lines:
                match = regex.search(line)
                if match:
                    return match
            return None

        async with asyncio.timeout(within), self._changed:
            while (match := found()) is None:
                assert self._reader is not None
                if self._reader.done():
                    raise AssertionError("the bridge exited early:\n" + self.log)
                await self._changed.wait()
        return match

    @property
    def log(self) -> str:
        return "".join(self.lines)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    async def stop(self, *, within: float = 30.0) -> int:
        """SIGTERM, then wait for the exit status (killed if it does not come)."""
        proc = self._proc
        assert proc is not None
        if proc.returncode is None:
            proc.send_signal(signal.SIGTERM)
        try:
            async with asyncio.timeout(within):
                await proc.wait()
        finally:
            if proc.returncode is None:
                proc.kill()
                await proc.wait()
            if self._reader is not None:
                await self._reader
        assert proc.returncode is not None
        return proc.returncode

    async def kill(self) -> None:
        proc = self._proc
        if proc is not None and proc.returncode is None:
            proc.kill()
            await proc.wait()
        if self._reader is not None:
            await asyncio.gather(self._reader, return_exceptions=True)


async def deliver(session: aiohttp.ClientSession, bridge: Bridge, slack: FakeSlack,
                  payload: Mapping[str, Any], *, retry_num: int | None = None) -> int:
    body = json.dumps(payload)
    headers = slack.signed_headers(body)
    if retry_num is not None:
        headers["x-slack-retry-num"] = str(retry_num)
    async with session.post(f"{bridge.url}/slack/events", data=body.encode(),
                            headers=headers) as response:
        await response.read()
        return response.status
