"""The one orchestrator: turns inbound platform events into Chatbase turns rendered in place."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from dataclasses import dataclass, field, replace
from typing import Any

from bridge.core import notices
from bridge.core.context import bind, bound
from bridge.core.errors import (
    ChatbaseAPIError,
    ChatbaseError,
    PlatformError,
    StoreError,
    operator_hint,
)
from bridge.core.feedback import UNCHANGED, FeedbackPolicy, Meaning
from bridge.core.identity import (
    answer_handles,
    chatbase_user_id,
    conversation_key,
    place_key,
    thread_handle,
)
from bridge.core.models import (
    ChatResult,
    Claim,
    ConversationState,
    Feedback,
    InboundFeedbackButton,
    InboundMessage,
    InboundReaction,
    Place,
    ReplyRecord,
    Source,
    SourceFound,
    StreamMetadata,
    StreamStart,
    TextDelta,
)
from bridge.core.ports import (
    ChatbaseLike,
    Clock,
    ConversationStore,
    RelayMetrics,
    RelaySettings,
    ReplySink,
    SinkOpener,
    Turn,
)
from bridge.core.rendering.pacing import Pacer
from bridge.core.rendering.renderer import Renderer
from bridge.core.routing import Agents, candidates
from bridge.core.sources import sources_block
from bridge.core.tools import ToolRegistry
from bridge.core.watchdog import Watchdog

log = logging.getLogger(__name__)

NOT_ONGOING = "CHAT_CONVERSATION_NOT_ONGOING"
# Answers that say the stored conversation cannot be continued (reference §8, §10): it
# ended or was taken over, it belongs to another agent or user, or Chatbase no longer has it
# (deleted, expired). The turn forgets it and asks the same question in a new conversation.
CANNOT_CONTINUE = frozenset({NOT_ONGOING, "CHAT_CONVERSATION_MISMATCH", "RESOURCE_NOT_FOUND"})
# Feedback errors that mean "this message cannot take feedback", not a fault of ours.
FEEDBACK_REFUSED = frozenset({"RESOURCE_MESSAGE_NOT_FOUND", "RESOURCE_MESSAGE_NOT_ASSISTANT",
                              "RESOURCE_NOT_FOUND"})
# How long a reply cut off by shutdown gets for its last write.
CUT_OFF_WRITE_SECONDS = 10.0
# The finish reason of an answer someone stopped (the bridge's own, not Chatbase's).
STOPPED = "stopped"


# The question and userId to ask again in a new conversation, or None when they are unknown.
Question = tuple[str, str | None]


@dataclass(frozen=True)
class _Ask:
    """What a turn asks Chatbase first, and how to ask it again in a new conversation."""

    open: Callable[[], Any]  # the first stream (chat or retry), not yet entered
    conversation_id: str | None  # the stored conversation it continues, if any
    again: Callable[[], Awaitable[Question | None]]
    chatbase: ChatbaseLike  # the agent that answers


@dataclass
class _Progress:
    """What the streams of one turn said so far besides text: kept for an answer that is
    stopped before its stream finished, and for the sources listed under any answer."""

    conversation_id: str | None = None
    message_id: str | None = None
    sources: list[Source] = field(default_factory=list)
    deltas: int = 0  # text deltas received (the watchdog adds them to the metric in batches)


@dataclass(eq=False)
class _Running:
    """An answer in flight that a stop request can cut short (by cancelling its task)."""

    task: asyncio.Task[Any]
    armed: bool = True
    requested: bool = False

    def stop(self) -> bool:
        if not self.armed or self.requested:
            return False
        self.requested = True
        self.task.cancel()
        return True


@dataclass
class _MemorylessTurn:
    """Stands in for a Redis turn while Redis is unreachable: no lock, no memory."""

    state: ConversationState | None = None

    def remember(
        self, conversation_id: str, latest_message_id: str | None, reply: ReplyRecord | None,
        *, agent: str | None = None,
    ) -> None:
        pass

    def forget(self) -> None:
        pass


class RelayService:
    """De-duplicates, serialises turns per conversation, calls Chatbase, renders, remembers."""

    def __init__(
        self,
        *,
        settings: RelaySettings,
        store: ConversationStore,
        agents: Agents,
        pacer: Pacer,
        clock: Clock,
        metrics: RelayMetrics,
        tools: ToolRegistry | None = None,
        watchdog: Watchdog | None = None,
    ) -> None:
        self._settings = settings
        self._store = store
        self._agents = agents
        self._unrouted: set[str] = set()
        self._pacer = pacer
        self._clock = clock
        self._metrics = metrics
        self._tools = tools or ToolRegistry()
        self._watchdog = watchdog or Watchdog(clock=clock, metrics=metrics)
        self._policy = FeedbackPolicy.from_settings(settings)
        self._secret = (
            settings.user_id_secret.get_secret_value() if settings.user_id_secret else None
        )
        self._inflight: set[asyncio.Task[Any]] = set()
        self._running: dict[str, list[_Running]] = {}
        self._accepting = True

    # ------------------------------------------------------------------ messages

    async def handle_message(self, message: InboundMessage, sink: ReplySink) -> None:
        platform = message.place.platform.value
        with self._answering(), bound(platform=platform, event=message.event_id):
            await self._handle_message(message, sink, platform)

    @contextlib.contextmanager
    def _answering(self) -> Iterator[None]:
        """Count the current task as an answer in flight, which shutdown lets finish."""
        task = asyncio.current_task()
        if task is not None:
            self._inflight.add(task)
        try:
            yield
        finally:
            if task is not None:
                self._inflight.discard(task)

    async def _handle_message(
        self, message: InboundMessage, sink: ReplySink, platform: str
    ) -> None:
        started = self._clock.now()
        chatbase = self._agents.for_place(message.place)
        if chatbase is None:
            self._ignore_unrouted(message.place)
            return
        bind(agent=chatbase.agent_id)
        text = message.text.strip()
        if not await self._admit(message, sink, platform, text):
            return
        key = self._key(message)
        bind(conversation=key)
        log.debug("message text: %s", text)
        answering = False
        try:
            async with self._turn(key) as turn:
                state = self._current_state(message, turn.state, chatbase.agent_id)
                user_id = chatbase_user_id(message.place, message.author, secret=self._secret)
                answering = True
                await self._answer(message, sink, text, state, user_id, turn, started,
                                   chatbase)
        except asyncio.CancelledError:
            if not answering:
                # Cut off while waiting for the previous turn: say so rather than vanish.
                with contextlib.suppress(TimeoutError, asyncio.CancelledError):
                    await asyncio.wait_for(
                        self._notice(sink, platform, notices.RESTARTED_BEFORE_ANSWER),
                        CUT_OFF_WRITE_SECONDS,
                    )
            raise

    async def _admit(
        self, message: InboundMessage, sink: ReplySink, platform: str, text: str
    ) -> bool:
        """Claim the event and check it may be answered; a notice says why when it may not."""
        quota = self._settings.user_quota
        limit = self._settings.max_input_chars
        # Only a message that would reach Chatbase counts against the user's quota.
        counted = bool(quota and text and len(text) <= limit)
        claim = await self._claim(message, platform, counted=counted)
        if not claim.first:
            self._metrics.events.labels(platform, "duplicate").inc()
            log.info("dropped a duplicate delivery")
            return False
        self._metrics.events.labels(platform, "accepted").inc()
        refusal: str | None = None
        if not self._accepting:
            refusal = notices.RESTARTING
        elif not text:
            refusal = notices.EMPTY_MESSAGE
        elif len(text) > limit:
            refusal = notices.too_long(limit, len(text))
        elif counted and claim.quota_count > quota:
            log.info("user over quota (%s messages in the window)", claim.quota_count)
            refusal = notices.over_quota(quota, claim.quota_reset_in)
        if refusal is not None:
            await self._notice(sink, platform, refusal)
            return False
        return True

    async def _claim(self, message: InboundMessage, platform: str, *, counted: bool) -> Claim:
        place = message.place
        subject = f"{platform}:{place.enterprise or place.workspace}:{message.author}"
        try:
            return await self._store.claim(
                message.event_id,
                quota_subject=subject if counted else None,
                quota_window=self._settings.user_quota_window,
            )
        except StoreError as exc:
            log.warning("answering without de-duplication or quota: %s", exc)
            return Claim(first=True)

    def _ignore_unrouted(self, place: Place) -> None:
        """No agent answers here (BRIDGE_ROUTES names none, and CHATBASE_AGENT_ID is
        unset): the message is ignored, and the place logged once."""
        where = candidates(place)[0]
        if where not in self._unrouted and len(self._unrouted) < 10_000:
            self._unrouted.add(where)
            log.warning("no agent answers at %s (BRIDGE_ROUTES names none and "
                        "CHATBASE_AGENT_ID is unset); its messages are ignored", where)

    def _current_state(
        self, message: InboundMessage, state: ConversationState | None, agent: str
    ) -> ConversationState | None:
        """The conversation to continue: none when another agent owns the stored one (a
        Chatbase conversation belongs to one agent: CHATBASE_AGENT_ID changed), or after a DM
        was idle past BRIDGE_DM_IDLE_RESET."""
        if state is not None and state.agent is not None and state.agent != agent:
            log.info("the stored conversation belongs to another agent; starting a new one")
            return None
        idle = self._settings.dm_idle_reset
        if (state is not None and message.place.is_dm and idle
                and time.time() - state.last_turn_at > idle):
            log.info("DM idle for longer than BRIDGE_DM_IDLE_RESET; starting over")
            return None
        return state

    async def _answer(
        self,
        message: InboundMessage,
        sink: ReplySink,
        text: str,
        state: ConversationState | None,
        user_id: str,
        turn: Turn,
        started: float,
        chatbase: ChatbaseLike,
    ) -> None:
        platform = message.place.platform.value
        gauge = self._metrics.in_flight.labels(platform)
        gauge.inc()
        renderer = Renderer(sink=sink, pacer=self._pacer, clock=self._clock)
        conversation_id = state.conversation_id if state else None

        async def failed(exc: ChatbaseError) -> None:
            self._count(platform, await self._fail(renderer, exc))

        async def again() -> Question:
            return text, user_id

        ask = _Ask(
            open=lambda: chatbase.chat_stream(
                message=text, conversation_id=conversation_id,
                user_id=None if conversation_id else user_id,
            ),
            conversation_id=conversation_id,
            again=again,
            chatbase=chatbase,
        )
        try:
            played = await self._play(renderer, platform, turn, ask, failed,
                                      handles=answer_handles(message))
            if played is None:
                return
            result, part_ids = played
            stopped = result.finish_reason == STOPPED
            outcome = "stopped" if stopped else "answered"
            self._count(platform, "failed_render" if renderer.failed else outcome)
            if renderer.first_text_at is not None:
                self._metrics.first_text_seconds.labels(platform).observe(
                    max(0.0, renderer.first_text_at - started)
                )
            if stopped and result.conversation_id is None:
                # A new conversation (first, or after the stored one could not continue).
                result = replace(result, conversation_id=await self._newest_conversation(
                    chatbase, user_id))
            if result.conversation_id:
                record = self._reply_record(message, result, _reply_ids(part_ids, sink),
                                            chatbase.agent_id)
                # A stopped answer is not the conversation's latest complete answer: it is
                # never regenerated (its message may not even be kept by Chatbase).
                turn.remember(result.conversation_id, None if stopped else result.message_id,
                              record, agent=chatbase.agent_id)
        finally:
            gauge.dec()

    @contextlib.contextmanager
    def _stoppable(self, handles: tuple[str, ...]) -> Iterator[_Running | None]:
        """Make the current task's answer stoppable under ``handles`` while it streams."""
        task = asyncio.current_task()
        if task is None:
            yield None
            return
        running = _Running(task)
        for handle in handles:
            self._running.setdefault(handle, []).append(running)
        try:
            yield running
        finally:
            running.armed = False
            for handle in handles:
                listed = self._running.get(handle)
                if listed is not None:
                    with contextlib.suppress(ValueError):
                        listed.remove(running)
                    if not listed:
                        del self._running[handle]

    @staticmethod
    async def _newest_conversation(chatbase: ChatbaseLike, user_id: str) -> str | None:
        """The conversation a stopped first answer opened: Chatbase names it only when the
        stream finishes, so it is read back as the user's most recently active one."""
        try:
            items, _ = await chatbase.user_conversations_page(user_id, limit=1)
        except ChatbaseError as exc:
            log.warning("a stopped answer's conversation could not be read back, so the "
                        "next message starts a new one: %s", exc)
            return None
        found = items[0].get("id") if items else None
        return found if isinstance(found, str) and found else None

    async def stop(self, handle: str) -> bool:
        stopped = self.stop_here(handle)
        try:
            await self._store.announce_stop(handle)
        except StoreError as exc:
            log.warning("could not ask the other replicas to stop an answer: %s", exc)
        return stopped

    def stop_here(self, handle: str) -> bool:
        """Stop the answers this replica runs under ``handle``; True when there was one."""
        stopped = False
        for running in list(self._running.get(handle, ())):
            if running.stop():
                stopped = True
        if stopped:
            log.info("an answer was stopped by a user")
        return stopped

    async def _play(
        self,
        renderer: Renderer,
        platform: str,
        turn: Turn,
        ask: _Ask,
        failed: Callable[[ChatbaseError], Awaitable[None]],
        *,
        handles: tuple[str, ...],
    ) -> tuple[ChatResult, tuple[str, ...]] | None:
        """The one turn loop of answers and regenerations: stream the answer into
        ``renderer`` (stoppable under ``handles`` while it streams) and write its final text,
        with the note ``_converse`` may add and the sources. A Chatbase error goes to
        ``failed`` (None is returned); a stop request ends it with the text shown so far;
        shutdown or a fault of the bridge marks what was shown as cut off."""
        progress = _Progress(conversation_id=ask.conversation_id)
        with self._stoppable(handles) as running, \
                self._watchdog.watch(platform, renderer, progress):
            async with renderer:
                return await self._write(renderer, platform, turn, ask, progress, failed,
                                         running)

    async def _write(
        self,
        renderer: Renderer,
        platform: str,
        turn: Turn,
        ask: _Ask,
        progress: _Progress,
        failed: Callable[[ChatbaseError], Awaitable[None]],
        running: _Running | None,
    ) -> tuple[ChatResult, tuple[str, ...]] | None:
        try:
            try:
                result, note = await self._converse(renderer, turn, ask, progress)
            finally:
                if running is not None:
                    running.armed = False
        except asyncio.CancelledError:
            task = asyncio.current_task()
            if self._watchdog.ended(renderer) and task is not None and task.cancelling() == 1:
                task.uncancel()  # ended by the watchdog alone: finished here, as a failure
                await self._cut_off(renderer, notices.STUCK)
                self._count(platform, "stuck")
                return None
            if running is None or not running.requested or running.task.uncancel() > 0:
                await self._cut_off(renderer, notices.SHUTTING_DOWN)
                self._count(platform, "cut_off")
                raise
            # Stopped by a user: the stream is closed (leaving it aborted the connection).
            result = ChatResult(
                text=renderer.text, message_id=progress.message_id,
                conversation_id=progress.conversation_id, finish_reason=STOPPED,
            )
            note = notices.STOPPED
        except ChatbaseError as exc:
            await failed(exc)
            return None
        except Exception:
            await self._cut_off(renderer, "something went wrong on the bridge")
            self._count(platform, "error")
            raise
        else:
            if running is not None and running.requested:
                # Finished before the stop request could land: the answer stands whole.
                running.task.uncancel()
        if renderer.text.strip():
            final = f"{renderer.text}\n\n{note}" if note else renderer.text
        elif note and (notices.incomplete(result.finish_reason) or result.finish_reason
                       == STOPPED):
            final = note  # nothing shown: the note alone says why
        else:
            final = f"{notices.EMPTY_ANSWER}\n\n{note}" if note else notices.EMPTY_ANSWER
        if self._settings.show_sources and progress.sources:
            listed = sources_block(progress.sources)
            if listed:
                final = f"{final}\n\n{listed}"
        return result, await renderer.finish(final)

    def _reply_record(
        self, message: InboundMessage, result: ChatResult, part_ids: tuple[str, ...],
        agent: str,
    ) -> ReplyRecord | None:
        if not (result.conversation_id and result.message_id and part_ids):
            return None
        return ReplyRecord(
            conversation_id=result.conversation_id,
            assistant_message_id=result.message_id,
            conversation_key=self._key(message),
            asker=message.author,
            platform=message.place.platform,
            workspace=message.place.workspace,
            channel=message.place.channel,
            thread=message.conversation_thread,
            part_ids=part_ids,
            agent=agent,
        )

    def _count(self, platform: str, outcome: str) -> None:
        self._metrics.answers.labels(platform, outcome).inc()

    async def _converse(
        self, renderer: Renderer, turn: Turn, ask: _Ask, progress: _Progress
    ) -> tuple[ChatResult, str | None]:
        """The one turn loop of messages and regenerations: the first request, client
        actions, a new conversation when Chatbase cannot continue the stored one, and a note
        under an answer that is incomplete. Returns the last answer and the note."""
        notes: list[str] = []
        restarted = False

        async def restart(exc: ChatbaseAPIError) -> ChatResult:
            nonlocal restarted
            question = None if restarted else await ask.again()
            turn.forget()
            if question is None:
                log.warning("%s [code %s, request id %s]; no new conversation started",
                            operator_hint(exc), exc.code, exc.request_id)
                raise exc
            restarted = True
            log.info("%s [code %s, request id %s]; starting a new conversation",
                     operator_hint(exc), exc.code, exc.request_id)
            notes.append(notices.NEW_CONVERSATION)
            if renderer.has_text and not renderer.text.endswith("\n"):
                renderer.append("\n\n")
            text, user_id = question
            progress.conversation_id = None
            return await self._stream(ask.chatbase, renderer, progress, message=text,
                                      conversation_id=None, user_id=user_id)

        try:
            result = await self._consume(ask.open(), renderer, progress)
        except ChatbaseAPIError as exc:
            if exc.code not in CANNOT_CONTINUE or ask.conversation_id is None:
                raise
            result = await restart(exc)
        rounds = 0
        while result.finish_reason == "tool-calls" and result.tool_calls:
            if rounds >= self._settings.max_tool_rounds or not result.conversation_id:
                notes.append(notices.TOOL_ROUNDS)
                break
            rounds += 1
            try:
                result = await self._tool_round(ask.chatbase, renderer, progress, result,
                                                result.conversation_id)
            except ChatbaseAPIError as exc:
                if exc.code not in CANNOT_CONTINUE:
                    raise
                result = await restart(exc)
        else:
            incomplete = notices.incomplete(result.finish_reason)
            if incomplete is not None:
                log.info("answer incomplete (finish reason %s) [request id %s]",
                         result.finish_reason, result.request_id)
                notes.append(incomplete)
        return result, "\n".join(notes) or None

    async def _tool_round(
        self, chatbase: ChatbaseLike, renderer: Renderer, progress: _Progress,
        result: ChatResult, conversation_id: str,
    ) -> ChatResult:
        """Answer the client actions of ``result`` and read the answer that follows."""
        for call in result.tool_calls:
            output = await self._tools.run(call)
            await chatbase.submit_tool_result(
                conversation_id=conversation_id, tool_call_id=call.tool_call_id, output=output,
            )
        if renderer.has_text and not renderer.text.endswith("\n"):
            renderer.append("\n\n")
        return await self._stream(
            chatbase, renderer, progress, message=None, conversation_id=conversation_id,
            user_id=None,
        )

    async def _stream(
        self,
        chatbase: ChatbaseLike,
        renderer: Renderer,
        progress: _Progress,
        *,
        message: str | None,
        conversation_id: str | None,
        user_id: str | None,
    ) -> ChatResult:
        stream = chatbase.chat_stream(
            message=message, conversation_id=conversation_id, user_id=user_id
        )
        return await self._consume(stream, renderer, progress)

    @staticmethod
    async def _consume(stream: Any, renderer: Renderer, progress: _Progress) -> ChatResult:
        async with stream as open_stream:
            bind(request_id=open_stream.request_id)
            append = renderer.append
            while True:
                # Reads wait while the reply's writer waits for its next paced slot, with the
                # connection's reading paused: the deltas pile up in the socket's buffer and
                # one read takes them all in.
                if renderer.hold() > 0:
                    await open_stream.hold(renderer.wanted())
                events = await open_stream.read_batch()
                if not events:
                    break
                for event in events:
                    kind = type(event)
                    if kind is TextDelta:
                        append(event.delta)
                        progress.deltas += 1
                    elif kind is SourceFound:
                        progress.sources.append(event.source)
                    elif kind is StreamMetadata or kind is StreamStart:
                        if event.message_id:
                            progress.message_id = event.message_id
                        if kind is StreamMetadata and event.conversation_id:
                            progress.conversation_id = event.conversation_id
            result: ChatResult = open_stream.result()
            return result

    async def _fail(self, renderer: Renderer, exc: ChatbaseError) -> str:
        code = getattr(exc, "code", None)
        log.error("Chatbase call failed: %s: %s", operator_hint(exc), exc,
                  extra={"chatbase_code": code, "request_id": exc.request_id})
        if renderer.has_text and renderer.text.strip():
            await renderer.finish(
                renderer.text + "\n\n"
                + notices.CUT_OFF.format(reason=notices.cut_off_reason(exc)),
                answered=False,
            )
            return "cut_off"
        await renderer.finish(notices.for_error(exc), answered=False)
        return "error"

    @staticmethod
    async def _cut_off(renderer: Renderer, reason: str) -> None:
        text = renderer.text if renderer.text.strip() else ""
        note = notices.CUT_OFF.format(reason=reason)
        final = f"{text}\n\n{note}" if text else note
        try:
            await asyncio.wait_for(
                renderer.finish(final, answered=False), CUT_OFF_WRITE_SECONDS
            )
        except (TimeoutError, asyncio.CancelledError):
            log.error("could not mark an interrupted answer as cut off in time")

    async def _notice(self, sink: ReplySink, platform: str, text: str) -> None:
        renderer = Renderer(sink=sink, pacer=self._pacer, clock=self._clock)
        async with renderer:
            await renderer.finish(text, answered=False)
        self._count(platform, "notice")

    @contextlib.asynccontextmanager
    async def _turn(self, key: str) -> AsyncIterator[Turn]:
        try:
            manager = self._store.turn(key)
            turn = await manager.__aenter__()
        except StoreError as exc:
            log.warning("answering without conversation memory: %s", exc)
            yield _MemorylessTurn()
            return
        try:
            yield turn
        except BaseException as exc:
            with contextlib.suppress(StoreError):
                await manager.__aexit__(type(exc), exc, exc.__traceback__)
            raise
        else:
            try:
                await manager.__aexit__(None, None, None)
            except StoreError as exc:
                log.warning("could not remember this turn: %s", exc)

    def _key(self, message: InboundMessage) -> str:
        return conversation_key(message, scope=self._settings.conversation_scope)

    async def has_conversation(self, message: InboundMessage) -> bool:
        # Whichever agent answered there: a thread the bot took part in stays one after
        # CHATBASE_AGENT_ID changes (the next turn then starts the new agent's conversation).
        try:
            return await self._store.has_conversation(self._key(message))
        except StoreError as exc:
            log.warning("cannot tell whether a thread is a conversation: %s", exc)
        return False

    def answers_at(self, place: Place) -> bool:
        return self._agents.for_place(place) is not None

    async def adopt(self, place: Place, author: str, conversation_id: str) -> None:
        """Make ``conversation_id`` the conversation of ``author`` at ``place`` (a thread
        that continues a past conversation), so the next message there continues it. The
        caller has checked it is theirs (``History.resume``)."""
        chatbase = self._agents.for_place(place)
        if chatbase is None:
            raise LookupError("no agent answers at this place")
        key = place_key(place, author, scope=self._settings.conversation_scope)
        async with self._turn(key) as turn:
            turn.remember(conversation_id, None, None, agent=chatbase.agent_id)

    async def reset(self, place: Place, author: str) -> bool:
        scope = self._settings.conversation_scope
        return await self._store.forget_conversation(place_key(place, author, scope=scope))

    # ------------------------------------------------------------------ feedback

    async def handle_reaction(self, reaction: InboundReaction, open_sink: SinkOpener) -> None:
        meaning = self._policy.meaning(reaction.emoji)
        if meaning is None:
            return
        with bound(platform=reaction.platform.value, event=reaction.event_id):
            try:
                record = await self._store.find_reply(
                    reaction.platform, reaction.channel, reaction.message_id
                )
            except StoreError as exc:
                log.warning("reaction ignored: %s", exc)
                return
            if record is None:
                return  # not one of our answers, or forgotten
            if meaning is Meaning.REGENERATE:
                if reaction.added and reaction.user == record.asker:
                    with self._answering():
                        await self._regenerate(record, open_sink, reaction.event_id)
                return
            if not self._policy.counts(reaction.user, record.asker):
                return
            try:
                remaining = await self._store.feedback_reactions(
                    assistant_message_id=record.assistant_message_id,
                    user=reaction.user,
                    add=meaning.value if reaction.added else None,
                    remove=None if reaction.added else meaning.value,
                )
            except StoreError as exc:
                log.warning("feedback without reaction memory: %s", exc)
                remaining = frozenset({meaning.value}) if reaction.added else frozenset()
            decision = self._policy.decide(meaning, added=reaction.added, remaining=remaining)
            if decision is UNCHANGED:
                return
            await self._send_feedback(record, decision)

    async def handle_feedback_button(self, press: InboundFeedbackButton) -> None:
        with bound(platform=press.platform.value, event=press.event_id):
            try:
                record = await self._store.find_reply(
                    press.platform, press.channel, press.message_id
                )
            except StoreError as exc:
                log.warning("feedback button ignored: %s", exc)
                return
            if record is None or not self._policy.counts(press.user, record.asker):
                return
            await self._send_feedback(record, press.feedback)

    async def _send_feedback(self, record: ReplyRecord, value: Feedback | None) -> None:
        chatbase = self._agents.by_id(record.agent)
        if chatbase is None:
            log.warning("feedback ignored: the agent %s that wrote the answer is no longer "
                        "configured", record.agent)
            return
        try:
            await chatbase.set_feedback(
                conversation_id=record.conversation_id,
                message_id=record.assistant_message_id,
                feedback=value,
            )
        except ChatbaseAPIError as exc:
            level = logging.WARNING if exc.code in FEEDBACK_REFUSED else logging.ERROR
            log.log(level, "Chatbase refused feedback: %s", exc,
                    extra={"chatbase_code": exc.code, "request_id": exc.request_id})
            return
        except ChatbaseError as exc:
            log.error("could not send feedback: %s", exc, extra={"request_id": exc.request_id})
            return
        self._metrics.feedback.labels(
            record.platform.value, value.value if value else "cleared"
        ).inc()

    async def _regenerate(self, record: ReplyRecord, open_sink: SinkOpener, event_id: str) -> None:
        try:
            claim = await self._store.claim(event_id)
            if not claim.first:
                return
        except StoreError as exc:
            log.warning("regenerate ignored: %s", exc)
            return
        chatbase = self._agents.by_id(record.agent)
        if chatbase is None:
            log.warning("regenerate ignored: the agent %s that wrote the answer is no longer "
                        "configured", record.agent)
            return
        bind(conversation=record.conversation_key, agent=chatbase.agent_id)
        platform = record.platform.value
        async with self._turn(record.conversation_key) as turn:
            state = turn.state
            if state is None or state.latest_message_id != record.assistant_message_id:
                log.info("regenerate ignored: not the latest answer of its conversation")
                return
            sink = open_sink(record)
            renderer = Renderer(sink=sink, pacer=self._pacer, clock=self._clock,
                                existing=record.part_ids)

            ask = _Ask(
                open=lambda: chatbase.retry_stream(
                    conversation_id=record.conversation_id,
                    message_id=record.assistant_message_id,
                ),
                conversation_id=record.conversation_id,
                again=lambda: self._question_before(chatbase, record),
                chatbase=chatbase,
            )

            async def failed(exc: ChatbaseError) -> None:
                await self._regenerate_failed(renderer, sink, record, exc)

            handles = (thread_handle(record.platform, record.channel, record.thread),) \
                if record.thread is not None else ()
            played = await self._play(renderer, platform, turn, ask, failed,
                                      handles=handles)
            if played is None:
                return
            result, part_ids = played
            stopped = result.finish_reason == STOPPED
            self._count(platform, "stopped" if stopped else "regenerated")
            conversation_id = result.conversation_id or record.conversation_id
            new_id = result.message_id or record.assistant_message_id
            turn.remember(
                conversation_id,
                None if stopped else new_id,
                replace(record, conversation_id=conversation_id, assistant_message_id=new_id,
                        part_ids=_reply_ids(part_ids, sink), agent=chatbase.agent_id),
                agent=chatbase.agent_id,
            )

    @staticmethod
    async def _question_before(chatbase: ChatbaseLike, record: ReplyRecord) -> Question | None:
        """The question an answer replied to and its asker's userId, read back from the
        conversation (still there when it merely ended); None when Chatbase has it no more."""
        try:
            data = await chatbase.get_conversation(record.conversation_id)
        except ChatbaseError as exc:
            log.info("cannot read the question back: %s", exc)
            return None
        messages = data.get("messages")
        if not isinstance(messages, list):
            return None
        ids = [m.get("id") if isinstance(m, dict) else None for m in messages]
        end = ids.index(record.assistant_message_id) if record.assistant_message_id in ids \
            else len(messages)
        for message in reversed(messages[:end]):
            if not isinstance(message, dict) or message.get("role") != "user":
                continue
            parts = message.get("parts")
            text = "".join(
                p["text"] for p in (parts if isinstance(parts, list) else ())
                if isinstance(p, dict) and p.get("type") == "text"
                and isinstance(p.get("text"), str)
            )
            if text.strip():
                user_id = data.get("userId")
                return text, user_id if isinstance(user_id, str) and user_id else None
        return None

    async def _regenerate_failed(
        self, renderer: Renderer, sink: ReplySink, record: ReplyRecord, exc: ChatbaseError
    ) -> None:
        """A regeneration that showed text is marked cut off; one that showed nothing leaves
        the old answer in place and says why below it."""
        if renderer.has_text:
            await self._fail(renderer, exc)
            return
        log.error("regenerate failed: %s: %s", operator_hint(exc), exc,
                  extra={"request_id": exc.request_id})
        await sink.finish(record.part_ids, answered=False)
        code = getattr(exc, "code", None)
        line = notices.CANNOT_REGENERATE if code in CANNOT_CONTINUE else notices.for_error(exc)
        try:
            await sink.post(line, final=True)
        except PlatformError as exc:
            log.warning("could not tell the user that regenerating failed: %s", exc)

    # ------------------------------------------------------------------ shutdown

    @property
    def in_flight(self) -> int:
        return len(self._inflight)

    async def drain(self, grace: float) -> None:
        """Stop taking turns; give answers in flight ``grace`` seconds, then cut them off."""
        self._accepting = False
        pending = {t for t in self._inflight if not t.done()}
        if not pending:
            return
        log.info("waiting up to %.0fs for %d answer(s) in flight", grace, len(pending))
        _, still = await asyncio.wait(pending, timeout=grace)
        if not still:
            return
        log.warning("cutting off %d answer(s) still in flight", len(still))
        for task in still:
            task.cancel()
        await asyncio.wait(still, timeout=CUT_OFF_WRITE_SECONDS + 5)


def _reply_ids(part_ids: tuple[str, ...], sink: ReplySink) -> tuple[str, ...]:
    """Every message of a reply. A sink that continued a part in further messages (Slack
    rolls streams over before they expire) lists them all, in order, as ``part_ids``."""
    every = getattr(sink, "part_ids", None)
    if isinstance(every, tuple) and set(part_ids) <= set(every):
        return every
    return part_ids

