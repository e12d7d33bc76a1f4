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


class _Log:
    """The process's stderr, read as it comes (so the pipe never fills), with waits on it."""

    def __init__(self, proc: asyncio.subprocess.Process) -> None:
        assert proc.stderr is not None
        self._stderr = proc.stderr
        self.lines: list[str] = []
        self._grew = asyncio.Condition()
        self.ended = False

    async def read(self) -> None:
        while raw := await self._stderr.readline():
            async with self._grew:
                self.lines.append(raw.decode())
                self._grew.notify_all()
        async with self._grew:
            self.ended = True
            self._grew.notify_all()

    async def wait_for(self, pattern: str) -> re.Match[str]:
        async with self._grew:
            await self._grew.wait_for(
                lambda: self.ended or any(re.search(pattern, line) for line in self.lines))
        for line in self.lines:
            if found := re.search(pattern, line):
                return found
        raise AssertionError("the bridge exited early:\n" + "".join(self.lines))


async def test_the_agent_experience_end_to_end(
    tmp_path: Path, redis_url: str, redis_prefix: str
) -> None:
    """The real ``chatbase-bridge run`` in Slack HTTP mode: suggested prompts on the messages
    tab, the stop button on a slow answer, a follow-up that continues the conversation, and
    an answer's sources as links."""
    from bridge.core.notices import STOPPED
    from tests.fakes.chatbase import Answer, Gate
    from tests.fakes.slack import mention_event

    async with FakeChatbase() as chatbase, FakeSlack() as slack:
        env = bare_env(
            tmp_path,
            CHATBASE_API_KEY=chatbase.api_key, CHATBASE_AGENT_ID=chatbase.agent_id,
            CHATBASE_API_BASE=chatbase.base_url,
            REDIS_URL=redis_url, BRIDGE_REDIS_PREFIX=redis_prefix, BRIDGE_USER_QUOTA="0",
            SLACK_BOT_TOKEN=slack.bot_token, SLACK_SIGNING_SECRET=slack.signing_secret,
            SLACK_API_URL=slack.api_url,
            BRIDGE_HTTP_HOST="127.0.0.1", BRIDGE_HTTP_PORT="0", BRIDGE_SHUTDOWN_GRACE="5",
        )
        proc = await start("run", "--platform", "slack", env=env, cwd=tmp_path)
        log = _Log(proc)
        reader = asyncio.create_task(log.read())
        try:
            async with asyncio.timeout(60):
                port = int((await log.wait_for(r"listening on port (\d+)")).group(1))
                await log.wait_for(r"slack connected")
                slack.events_url = f"http://127.0.0.1:{port}/slack/events"

                # The messages tab: the suggested prompts (the default ones).
                assert await slack.deliver_event({
                    "type": "app_home_opened", "user": "U0ASKER", "channel": "D0DM",
                    "tab": "messages", "event_ts": "1700000000.000001"}) == 200
                await slack.wait_for(lambda: bool(slack.prompts_set))
                assert slack.prompts_set[0]["channel_id"] == "D0DM"
                assert len(slack.prompts_set[0]["prompts"]) == 3

                # A slow answer, stopped with the session's stop button.
                thread = "1700000001.000100"
                gate = Gate()
                chatbase.script(Answer(deltas=["Refunds ", "take ", "five days."], gate=gate))
                assert await slack.deliver_event(mention_event(
                    text="<@UBOT> how do refunds work?", ts=thread)) == 200
                gate.release(2)
                await slack.wait_for(lambda: slack.thread_texts("C0CHAN", thread)
                                     == ["Refunds take "])
                assert len(await slack.press_stop("C0CHAN", thread)) == 1
                await chatbase.wait_for(lambda: chatbase.streams_aborted == 1)
                await slack.wait_for(lambda: slack.thread_texts("C0CHAN", thread)
                                     == [f"Refunds take \n\n{STOPPED}"], within=20)
                await slack.wait_for(
                    lambda: slack.session("C0CHAN", thread).status == "active")
                assert slack.session("C0CHAN", thread).history[0] == "processing"

                # A follow-up in the thread continues the same conversation. (A mention:
                # it waits for the stopped turn's end, which the process does not show.)
                chatbase.script(Answer(text="Five working days."))
                assert await slack.deliver_event(mention_event(
                    text="<@UBOT> and for gift cards?", ts="1700000002.000100",
                    thread_ts=thread)) == 200
                await slack.wait_for(lambda: slack.thread_texts("C0CHAN", thread)[-1:]
                                     == ["Five working days."], within=30)
                first, second = chatbase.chat_calls
                [conversation] = chatbase.conversations
                assert "conversationId" not in first.body
                assert second.body["conversationId"] == conversation

                # An answer naming its sources ends with their links.
                other = "1700000003.000100"
                chatbase.script(Answer(text="See our policy.", sources=[
                    {"type": "source-url", "sourceId": "s1",
                     "url": "https://example.com/refunds", "title": "Refund policy"}]))
                assert await slack.deliver_event(mention_event(
                    text="<@UBOT> sources?", ts=other, user="U0OTHER")) == 200
                await slack.wait_for(
                    lambda: any("https://example.com/refunds" in t
                                for t in slack.thread_texts("C0CHAN", other)), within=30)
                await slack.wait_for(lambda: slack.session("C0CHAN", other).status == "active")
                [text] = slack.thread_texts("C0CHAN", other)
                assert text == ("See our policy.\n\n**Sources**\n"
                                "1. [Refund policy](https://example.com/refunds)")
            proc.send_signal(signal.SIGTERM)
            async with asyncio.timeout(30):
                await proc.wait()
                await reader
        finally:
            if proc.returncode is None:
                proc.kill()
                await proc.wait()
            reader.cancel()
        output = "".join(log.lines)
        assert proc.returncode == 0, output
        assert "Traceback" not in output
        assert "how do refunds work" not in output  # message text stays out of INFO logs
        assert slack.bot_token not in output and chatbase.api_key not in output
        assert slack.rate_limited == []
