"""The engine of ``chatbase-bridge ask``: one question to the agent from a terminal."""

from __future__ import annotations

import getpass
import json
from typing import Any, TextIO

import aiohttp

from bridge.app.compose import compose_chatbase
from bridge.app.settings import AgentAccess, Settings, env_name
from bridge.chatbase.client import ChatbaseClient, check_user_id
from bridge.core import notices
from bridge.core.errors import (
    BridgeError,
    ChatbaseAPIError,
    ChatbaseError,
    ConfigError,
    StreamErrorChunk,
    StreamIdleTimeout,
    StreamInterrupted,
    StreamMalformed,
)
from bridge.core.identity import NOT_USER_ID_CHARS
from bridge.core.models import ChatResult, TextDelta

# What a client action gets from the command line, which has no handlers to run it: the
# agent must not be left waiting on a tool call:
# https://www.chatbase.co/docs/api-reference/v2/client-actions
CLI_TOOL_OUTPUT = {"error": "Client actions are not available from the command line."}


def default_user_id() -> str:
    """``cli.<operating-system user>``, made legal for Chatbase."""
    try:
        name = getpass.getuser()
    except (OSError, KeyError):
        name = ""
    name = NOT_USER_ID_CHARS.sub("_", name).strip("_")[:120]
    return f"cli.{name or 'user'}"


def _access(settings: Settings, agent: str | None) -> AgentAccess:
    """The agent to ask and its key: a configured agent with the key its route names, or
    any other agent with CHATBASE_API_KEY (one key serves every agent of a workspace)."""
    known = settings.agents()
    if agent is None:
        return known[0]
    for access in known:
        if access.agent == agent:
            return access
    if settings.chatbase_api_key is None or not settings.chatbase_api_key.get_secret_value():
        raise ConfigError(f"agent {agent} is not in BRIDGE_ROUTES and CHATBASE_API_KEY is "
                          "not set, so no key can ask it")
    return AgentAccess(agent=agent, api_key=settings.chatbase_api_key,
                       key_setting="CHATBASE_API_KEY")


async def ask(
    *,
    settings: Settings,
    text: str,
    conversation_id: str | None,
    user_id: str | None,
    as_json: bool,
    out: TextIO,
    err: TextIO,
    agent: str | None = None,
) -> int:
    """Send ``text``, print the answer as it streams (or one JSON object with ``as_json``)
    and the conversation facts on ``err``. Returns the exit status: 0, or 1 on any error."""
    try:
        access = _access(settings, agent)
        user_id = _checked(settings, text, conversation_id, user_id)
    except BridgeError as exc:
        err.write(f"error: {exc}\n")
        return 1

    async with aiohttp.ClientSession() as session:
        client = compose_chatbase(settings, session=session, access=access)
        turn = _Turn(client=client, out=None if as_json else out, err=err)
        try:
            result = await turn.run(
                text=text, conversation_id=conversation_id, user_id=user_id,
                max_tool_rounds=settings.max_tool_rounds,
            )
        except BridgeError as exc:
            if not as_json and turn.printed and not turn.printed.endswith("\n"):
                out.write("\n")
            err.write(_describe(exc) + "\n")
            return 1
    if as_json:
        out.write(json.dumps(_payload(turn, result, user_id), ensure_ascii=False) + "\n")
    else:
        _report(turn, result, out=out, err=err)
    err.flush()
    return 0


def _checked(
    settings: Settings, text: str, conversation_id: str | None, user_id: str | None
) -> str | None:
    """The userId to send (the default one for a new conversation); raises ``BridgeError``
    when the question cannot be asked."""
    if not text.strip():
        raise BridgeError("Nothing to ask: the message is empty.")
    if len(text) > settings.max_input_chars:
        raise BridgeError(
            f"The message is {len(text)} characters long; the limit is "
            f"{settings.max_input_chars} ({env_name('max_input_chars')})."
        )
    if conversation_id is None and user_id is None:
        user_id = default_user_id()
    if user_id is not None:
        check_user_id(user_id)
    return user_id


def _payload(turn: _Turn, result: ChatResult, user_id: str | None) -> dict[str, Any]:
    return {
        "text": turn.printed,
        "conversationId": result.conversation_id,
        "messageId": result.message_id,
        "userId": result.user_id if result.user_id is not None else user_id,
        "credits": turn.credits,
        "finishReason": result.finish_reason,
        "incomplete": _incomplete(result) is not None,
    }


def _incomplete(result: ChatResult) -> str | None:
    """Why the answer is incomplete, in plain text; None when it finished with ``stop`` (a
    client action left waiting is reported where it happens)."""
    if result.finish_reason == "tool-calls" and result.tool_calls:
        return None
    note = notices.incomplete(result.finish_reason)
    return note.removeprefix("_(").removesuffix(")_") if note else None


def _report(turn: _Turn, result: ChatResult, *, out: TextIO, err: TextIO) -> None:
    if not turn.printed.endswith("\n"):
        out.write("\n")
    out.flush()
    credits = turn.credits
    err.write(f"conversationId: {result.conversation_id or 'unknown'}\n")
    err.write(f"messageId: {result.message_id or 'unknown'}\n")
    err.write(f"credits: {'unknown' if credits is None else f'{credits:g}'}\n")
    incomplete = _incomplete(result)
    if incomplete is not None:
        err.write(f"note: {incomplete.rstrip('.')} (finish reason {result.finish_reason}).\n")


class _Turn:
    """One question, including the client-action rounds its answer may need."""

    def __init__(self, *, client: ChatbaseClient, out: TextIO | None, err: TextIO) -> None:
        self._client = client
        self._out = out
        self._err = err
        self.printed = ""
        self.credits: float | None = None

    async def run(
        self, *, text: str, conversation_id: str | None, user_id: str | None,
        max_tool_rounds: int,
    ) -> ChatResult:
        message: str | None = text
        rounds = 0
        while True:
            result = await self._stream(message, conversation_id,
                                        user_id if conversation_id is None else None)
            conversation_id = result.conversation_id or conversation_id
            if result.finish_reason != "tool-calls" or not result.tool_calls:
                return result
            if rounds >= max_tool_rounds or conversation_id is None:
                self._err.write("note: the agent is waiting for a client action the command "
                                "line cannot run\n")
                return result
            rounds += 1
            for call in result.tool_calls:
                self._err.write(f"note: the agent asked for the client action "
                                f"{call.tool_name!r}, which the command line cannot run\n")
                await self._client.submit_tool_result(
                    conversation_id=conversation_id, tool_call_id=call.tool_call_id,
                    output=CLI_TOOL_OUTPUT,
                )
            message = None

    async def _stream(
        self, message: str | None, conversation_id: str | None, user_id: str | None
    ) -> ChatResult:
        separator = "\n\n" if self.printed and not self.printed.endswith("\n") else ""
        async with self._client.chat_stream(
            message=message, conversation_id=conversation_id, user_id=user_id
        ) as stream:
            async for event in stream:
                if isinstance(event, TextDelta):
                    self._write(separator + event.delta)
                    separator = ""
            result = stream.result()
        if result.credits is not None:
            self.credits = (self.credits or 0.0) + result.credits
        return result

    def _write(self, text: str) -> None:
        self.printed += text
        if self._out is not None:
            self._out.write(text)
            self._out.flush()


def _describe(exc: BridgeError) -> str:
    request_id = exc.request_id if isinstance(exc, ChatbaseError) else None
    where = f" [request id {request_id}]" if request_id else ""
    if isinstance(exc, ChatbaseAPIError):
        return f"error: {exc.code}: {exc.api_message} (HTTP {exc.status}){where}"
    if isinstance(exc, StreamErrorChunk):
        code = f"{exc.code}: " if exc.code else ""
        return f"error: the answer failed: {code}{exc.error_text}{where}"
    if isinstance(exc, StreamIdleTimeout | StreamInterrupted | StreamMalformed):
        return f"error: the answer was cut off: {exc}{where}"
    return f"error: {exc}{where}"
