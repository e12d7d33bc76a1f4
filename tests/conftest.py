"""Shared fixtures: a real Redis (REDIS_URL when set, else one embedded server per session),
and a guard that fails any test during which a known test secret reached a log record."""

from __future__ import annotations

import logging
import os
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest
import redis.asyncio as aioredis
from hypothesis import settings as hypothesis_settings

from tests.fakes import secrets
from tests.fakes.embedded_server import SessionRedis

# Property tests: the same commit gives the same result. The default profile derives every
# example from the test itself and keeps no example database between runs; set
# HYPOTHESIS_PROFILE=explore for fresh randomness and ten times the examples (docs/development.md).
hypothesis_settings.register_profile("default", derandomize=True, database=None,
                                     max_examples=300)
hypothesis_settings.register_profile("explore", derandomize=False, database=None,
                                     max_examples=3000)
hypothesis_settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "default"))


@pytest.fixture(scope="session")
def redis_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """URL of a real Redis for the whole test session."""
    given = os.environ.get("REDIS_URL")
    if given:
        yield given
        return
    server = SessionRedis(Path(tmp_path_factory.mktemp("redis")))
    yield server.start()
    server.stop()


@pytest.fixture
def redis_prefix() -> str:
    """A key prefix private to one test, so tests never see each other's keys."""
    return f"test:{uuid.uuid4().hex[:12]}:"


@pytest.fixture
async def redis_client(redis_url: str, redis_prefix: str) -> AsyncIterator[aioredis.Redis]:
    client = aioredis.Redis.from_url(redis_url)
    yield client
    keys = [key async for key in client.scan_iter(match=f"{redis_prefix}*", count=500)]
    if keys:
        await client.delete(*keys)
    await client.aclose()


# --------------------------------------------------------------------------- secrets in logs

# Records are checked where they are made (the record factory), not by a handler: a handler
# on the root logger would be dropped by code under test that configures logging itself.
_leaks: list[str] = []
_formatter = logging.Formatter()


def _check_record(record: logging.LogRecord) -> None:
    known = secrets._known  # read live: fakes started inside a test register then
    if not known:
        return
    try:
        text = record.getMessage()
    except Exception:  # a malformed call; logging reports it itself
        text = f"{record.msg} {record.args}"
    if record.exc_info and record.exc_info[0] is not None:
        text += "\n" + _formatter.formatException(record.exc_info)
    for value in known:
        if value in text:
            _leaks.append(f"{record.levelname} {record.name}: a secret starting "
                          f"{value[:4]!r} appears in: {text[:300]!r}")


def _install_factory() -> None:
    previous = logging.getLogRecordFactory()
    if getattr(previous, "_checks_secrets", False):
        return

    def factory(*args: Any, **kwargs: Any) -> logging.LogRecord:
        record = previous(*args, **kwargs)
        _check_record(record)
        return record

    factory._checks_secrets = True  # type: ignore[attr-defined]
    logging.setLogRecordFactory(factory)


@pytest.fixture(autouse=True)
def no_secret_in_logs() -> Iterator[None]:
    """Every log record of every test, DEBUG included, is searched for the secret values
    the fakes and stacks registered (``tests.fakes.secrets``); one found fails the test."""
    _install_factory()
    root = logging.getLogger()
    level = root.level
    root.setLevel(logging.DEBUG)
    _leaks.clear()
    try:
        yield
    finally:
        root.setLevel(level)
    found, _leaks[:] = list(_leaks), []
    if found:
        pytest.fail("secret values reached log records:\n" + "\n".join(found[:5]),
                    pytrace=False)
