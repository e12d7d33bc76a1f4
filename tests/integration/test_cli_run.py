"""``chatbase-bridge run`` as a real process: a taken port, and a graceful SIGTERM."""

from __future__ import annotations

import asyncio
import re
import signal
import socket
from collections.abc import Iterator
from pathlib import Path

import aiohttp
import pytest

from tests.fakes.chatbase import FakeChatbase
from tests.fakes.slack import FakeSlack
from tests.integration.cli_process import bare_env, run_cli, start


@pytest.fixture
def taken_port() -> Iterator[int]:
    """A loopback port another program is listening on."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen()
        yield sock.getsockname()[1]


async def test_a_taken_port_ends_in_one_sentence_naming_it(
    tmp_path: Path, redis_url: str, redis_prefix: str, taken_port: int
) -> None:
    env = bare_env(
        tmp_path,
        CHATBASE_API_KEY="key", CHATBASE_AGENT_ID="agent",
        REDIS_URL=redis_url, BRIDGE_REDIS_PREFIX=redis_prefix,
        SLACK_BOT_TOKEN="xoxb-unused", SLACK_SIGNING_SECRET="signing",
        # Never reached: the port is bound before Slack is contacted; loopback regardless.
        SLACK_API_URL=f"http://127.0.0.1:{taken_port}/api/",
        BRIDGE_HTTP_HOST="127.0.0.1", BRIDGE_HTTP_PORT=str(taken_port),
    )
    done = await run_cli("run", env=env, cwd=tmp_path)
    assert done.status == 2
    last = done.err.strip().splitlines()[-1]
    assert last.startswith("error: ") and f"BRIDGE_HTTP_PORT {taken_port}" in last
    assert "Traceback" not in done.err


async def test_sigterm_after_start_exits_cleanly(
    tmp_path: Path, redis_url: str, redis_prefix: str
) -> None:
    async with FakeChatbase() as chatbase, FakeSlack() as slack:
        env = bare_env(
            tmp_path,
            CHATBASE_API_KEY=chatbase.api_key, CHATBASE_AGENT_ID=chatbase.agent_id,
            CHATBASE_API_BASE=chatbase.base_url,
            REDIS_URL=redis_url, BRIDGE_REDIS_PREFIX=redis_prefix,
            SLACK_BOT_TOKEN=slack.bot_token, SLACK_SIGNING_SECRET=slack.signing_secret,
            SLACK_API_URL=slack.api_url,
            BRIDGE_HTTP_HOST="127.0.0.1", BRIDGE_HTTP_PORT="0", BRIDGE_SHUTDOWN_GRACE="5",
        )
        proc = await start("run", "--platform", "slack", env=env, cwd=tmp_path)
        assert proc.stderr is not None
        seen: list[str] = []
        port = None

        async def read_until(pattern: str) -> re.Match[str]:
            assert proc.stderr is not None
            while True:
                raw = await proc.stderr.readline()
                assert raw, "the bridge exited early:\n" + "".join(seen)
                seen.append(raw.decode())
                found = re.search(pattern, seen[-1])
                if found:
                    return found

        try:
            async with asyncio.timeout(30):
                port = int((await read_until(r"listening on port (\d+)")).group(1))
                await read_until(r"slack connected")
            async with aiohttp.ClientSession() as session:
                async with session.get(f"http://127.0.0.1:{port}/healthz") as response:
                    assert response.status == 200
                async with session.get(f"http://127.0.0.1:{port}/readyz") as response:
                    assert response.status == 200
                    assert await response.json() == {"redis": True, "slack": True}
            proc.send_signal(signal.SIGTERM)
            async with asyncio.timeout(30):
                rest, _ = await asyncio.gather(proc.stderr.read(), proc.wait())
        finally:
            if proc.returncode is None:
                proc.kill()
                await proc.wait()
        assert proc.returncode == 0, "".join(seen) + rest.decode()
        log = "".join(seen) + rest.decode()
        assert "SIGTERM received" in log
        assert "Traceback" not in log
        assert slack.bot_token not in log and chatbase.api_key not in log
