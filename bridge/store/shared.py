"""The store's scripts, from every task of the process, over one pipelined connection."""

from __future__ import annotations

import asyncio
import contextlib
import math
from collections import deque
from typing import Any

import redis.asyncio as aioredis
from redis.asyncio.connection import AbstractConnection
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import ReadOnlyError, ResponseError

__all__ = ["SharedConnection"]


class _Line:
    """One connection and the replies it owes, oldest first; its reader task, and why it
    was given up, once it was."""

    __slots__ = ("conn", "failure", "owed", "reader")

    def __init__(self, conn: AbstractConnection) -> None:
        self.conn = conn
        self.owed: deque[asyncio.Future[Any]] = deque()
        self.reader: asyncio.Task[None] | None = None
        self.failure: BaseException | None = None


class SharedConnection:
    """Commands of every task over one connection: each is written as it comes, and one
    reader task reads the replies back in order and hands each to its caller.

    A round trip then costs a write and a share of a read. Through the pool each command
    also checks a connection out and back in, which in redis-py 8 takes a lock, a
    condition, a timer and several awaits each way (docs/performance.md, change 10).

    Only for commands that neither block nor change the connection's state (the store's
    scripts). The connection comes from ``client``'s pool, so the pool's credentials, TLS,
    Sentinel discovery and limit apply; it goes back to the pool when it fails, on
    ``reset`` and on ``aclose``, and the next command opens another. When the connection
    fails, every command waiting on it fails, as a dropped connection fails its command in
    redis-py: the command may have run, so nothing is retried. The exception is a READONLY
    reply: the command ran nowhere (a primary was demoted under the connection), so it is
    sent once more, on a new connection. A caller that stops waiting (cancelled) leaves the
    connection as it is: its reply is read and dropped. A reply overdue is the owner's to
    judge (``Link``: REDIS_TIMEOUT), which then gives the connection up (``reset``)."""

    def __init__(self, client: aioredis.Redis) -> None:
        self._pool = client.connection_pool
        self._line: _Line | None = None
        # While a connection is being opened: what its first commands wait for, and the
        # task opening it.
        self._opening: asyncio.Future[_Line] | None = None
        self._connecting: asyncio.Task[None] | None = None

    async def execute(self, *args: Any) -> Any:
        """Send one command and return its reply (a Redis error reply is raised)."""
        try:
            return await self._once(args)
        except ReadOnlyError:
            return await self._once(args)

    def reset(self, failure: BaseException) -> None:
        """Give the connection up, or the opening of one (a reply overdue: Redis may hang);
        the commands waiting on it fail with ``failure``, and the next command opens
        another connection."""
        opening, self._opening = self._opening, None
        if opening is not None and not opening.done():
            _fail(opening, _failed(failure))
        connecting, self._connecting = self._connecting, None
        if connecting is not None:
            connecting.cancel()
        line = self._line
        if line is not None:
            self._retire(line, failure)

    async def aclose(self) -> None:
        """Return the connection to the pool; commands still waiting fail."""
        line, connecting = self._line, self._connecting
        self.reset(RedisConnectionError("the store closed its connection"))
        for task in (connecting, line.reader if line is not None else None):
            if task is not None:
                with contextlib.suppress(Exception, asyncio.CancelledError):
                    await task

    # ------------------------------------------------------------------ writing

    async def _once(self, args: tuple[Any, ...]) -> Any:
        line = self._line
        if line is None or not line.conn.is_connected:
            if line is not None:
                self._retire(line, RedisConnectionError("Redis closed the connection"))
            line = await self._open()
            if line is not self._line:  # given up again before this caller woke
                raise RedisConnectionError("the new connection to Redis was given up")
        conn = line.conn
        future: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        # The reply comes back in the order the command is written: nothing may come
        # between the append and the write (``send_packed_command`` writes before its
        # first await, the connection being open).
        line.owed.append(future)
        try:
            await conn.send_packed_command(conn.pack_command(*args), check_health=False)
        except BaseException as exc:
            # redis-py closes a connection whose write failed or was interrupted.
            future.cancel()
            self._retire(line, exc)
            raise
        return await future

    async def _open(self) -> _Line:
        opening = self._opening
        if opening is None:
            opening = self._opening = asyncio.get_running_loop().create_future()
            self._connecting = asyncio.create_task(self._connect(opening),
                                                   name="redis-shared-connect")
        # Shielded: a caller that stops waiting leaves the opening to the others.
        return await asyncio.shield(opening)

    async def _connect(self, opening: asyncio.Future[_Line]) -> None:
        try:
            conn: AbstractConnection = await self._pool.get_connection()  # type: ignore[no-untyped-call]
        except BaseException as exc:
            if not opening.done():
                _fail(opening, exc if isinstance(exc, Exception)
                      else RedisConnectionError("connecting was cancelled"))
            if self._opening is opening:
                self._opening = None
                self._connecting = None
            if isinstance(exc, Exception):
                return  # the callers waiting have it
            raise
        if opening.done():  # given up meanwhile (reset, aclose)
            with contextlib.suppress(Exception):
                await self._pool.release(conn)
            return
        line = _Line(conn)
        line.reader = asyncio.create_task(self._read(line), name="redis-shared-reader")
        self._line = line
        self._opening = None
        self._connecting = None
        opening.set_result(line)

    # ------------------------------------------------------------------ reading

    async def _read(self, line: _Line) -> None:
        conn = line.conn
        try:
            while line.owed or self._line is line:
                try:
                    # However long: each caller bounds its own wait (REDIS_TIMEOUT), and an
                    # idle connection just waits for the next command.
                    reply: Any = await conn.read_response(timeout=math.inf)
                except ResponseError as exc:  # an error reply; the connection is fine
                    reply = exc
                    if isinstance(exc, ReadOnlyError) and self._line is line:
                        # A demoted primary: no new command is sent here; those already
                        # sent are answered READONLY too, and sent again by their callers.
                        self._line = None
                if not line.owed:
                    raise RedisConnectionError("Redis sent a reply no command was waiting for")
                owed = line.owed.popleft()
                if not owed.done():
                    if isinstance(reply, BaseException):
                        _fail(owed, reply)
                    else:
                        owed.set_result(reply)
        except asyncio.CancelledError:
            pass  # retired: line.failure says why
        except Exception as exc:
            line.failure = line.failure or exc
        finally:
            if self._line is line:
                self._line = None
            failure = line.failure or RedisConnectionError("the connection was given up")
            while line.owed:
                owed = line.owed.popleft()
                if not owed.done():
                    _fail(owed, _failed(failure))
            with contextlib.suppress(Exception):
                await conn.disconnect(nowait=True)
            with contextlib.suppress(Exception):
                await self._pool.release(conn)

    def _retire(self, line: _Line, failure: BaseException) -> None:
        if self._line is line:
            self._line = None
        line.failure = line.failure or failure
        reader = line.reader
        if reader is not None and reader is not asyncio.current_task():
            reader.cancel()


def _fail(future: asyncio.Future[Any], error: BaseException) -> None:
    """Fail ``future``, whose caller may stop waiting (its own deadline, at the same moment)
    before it wakes: the error counts as seen, so asyncio does not log it as never
    retrieved; a caller that does wake still gets it raised."""
    future.set_exception(error)
    future.exception()


def _failed(failure: BaseException) -> BaseException:
    """What a command waiting on a failed connection raises: a connection error of its own
    (one exception object is not raised in many tasks), caused by ``failure``."""
    if isinstance(failure, RedisConnectionError | OSError):
        error: BaseException = RedisConnectionError(str(failure) or type(failure).__name__)
    else:
        error = RedisConnectionError(f"the connection failed: {failure!r}")
    error.__cause__ = failure
    return error
