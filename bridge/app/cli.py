"""The ``chatbase-bridge`` command line: ``run``, ``ask``, ``check``, and each platform's own
commands (``discord-invite``).

Operator mistakes end in one plain sentence on stderr, never a traceback. Exit status: 0 done,
1 a service failed, 2 a setting (or the command line) must change, 130 interrupted.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import re
import signal
import socket
import sys
from collections.abc import Callable, Iterator, Sequence
from importlib import metadata
from pathlib import Path

from pydantic import SecretStr

from bridge.app import logs
from bridge.app.platforms import Command, Platform, discover
from bridge.app.settings import Settings, load_settings
from bridge.core.errors import BridgeError, ConfigError

__all__ = [
    "EXIT_CONFIG",
    "EXIT_FAILURE",
    "EXIT_INTERRUPTED",
    "build_parser",
    "hostname_ordinal",
    "main",
    "shard_group_ids",
]

log = logging.getLogger(__name__)

EXIT_FAILURE = 1
EXIT_CONFIG = 2
EXIT_INTERRUPTED = 130

_ORDINAL = re.compile(r"-(\d+)$")


def version() -> str:
    try:
        return metadata.version("chatbase-bridge")
    except metadata.PackageNotFoundError:
        return "unknown"


# ---------------------------------------------------------------------------- parser


def build_parser(platforms: Sequence[Platform] | None = None) -> argparse.ArgumentParser:
    if platforms is None:
        platforms = discover()
    parser = argparse.ArgumentParser(
        prog="chatbase-bridge",
        description="Puts a Chatbase AI agent into Slack workspaces and Discord servers. "
        "Settings come from the environment and an optional ./.env file.",
    )
    parser.add_argument("--version", action="version", version=f"chatbase-bridge {version()}")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    run = commands.add_parser(
        "run", help="run the bot on every configured platform",
        description="Start every platform whose credentials are set (or one, with --platform) "
        "with the /healthz, /readyz and /metrics server. SIGTERM or Ctrl-C finishes answers "
        "in flight within BRIDGE_SHUTDOWN_GRACE, then exits; a second one quits at once.",
    )
    run.add_argument("--platform", choices=[p.name for p in platforms],
                     help="run only this platform")
    run.add_argument(
        "--shard-group-size", type=_positive, metavar="N",
        help="run N consecutive Discord shards: group G runs shards G*N to G*N+N-1 of "
        "BRIDGE_DISCORD_SHARD_COUNT (instead of BRIDGE_DISCORD_SHARD_IDS)",
    )
    run.add_argument(
        "--shard-group", type=_non_negative, metavar="G",
        help="the shard group of this process; default: the number ending the hostname "
        "(a Kubernetes StatefulSet pod's ordinal)",
    )
    run.set_defaults(handler=_cmd_run)

    ask = commands.add_parser(
        "ask", help="ask the agent one question from the terminal",
        description="Send one message to the Chatbase agent and print the answer as it "
        "streams; the conversation id goes to stderr so it can be continued.",
    )
    ask.add_argument("text", help="the message ('-' reads it from stdin)")
    ask.add_argument("--conversation", metavar="ID", help="continue this conversation")
    ask.add_argument("--agent", metavar="ID",
                     help="the agent to ask (default: CHATBASE_AGENT_ID, else the first one "
                     "BRIDGE_ROUTES names); its key is the one its route names")
    ask.add_argument("--user", metavar="ID",
                     help="Chatbase userId of a new conversation (default: cli.<your login>)")
    ask.add_argument("--json", action="store_true",
                     help="print one JSON object with the whole answer instead")
    ask.set_defaults(handler=_cmd_ask)

    check = commands.add_parser(
        "check", help="validate the settings and reach every configured service",
        description="Check the settings, Chatbase (health and an authorised call), Redis "
        "(PING), Slack (auth.test, Socket Mode) and Discord (login, intents); one line each.",
    )
    check.set_defaults(handler=_cmd_check)

    for platform in platforms:
        for command in platform.commands():
            extra = commands.add_parser(command.name, help=command.help,
                                        description=command.description)
            command.arguments(extra)
            extra.set_defaults(handler=_platform_command(command))
    return parser


def _positive(raw: str) -> int:
    value = _non_negative(raw)
    if value < 1:
        raise argparse.ArgumentTypeError("must be at least 1")
    return value


def _non_negative(raw: str) -> int:
    try:
        value = int(raw)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{raw!r} is not a whole number") from None
    if value < 0:
        raise argparse.ArgumentTypeError("must not be negative")
    return value


# ---------------------------------------------------------------------------- entry


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    handler: Callable[[argparse.Namespace, _Secrets], int] = args.handler
    secrets = _Secrets()
    try:
        return handler(args, secrets)
    except KeyboardInterrupt:
        sys.stderr.write("interrupted\n")
        return EXIT_INTERRUPTED
    except (Exception, BaseExceptionGroup) as exc:
        return _report(exc, secrets)


def _report(exc: BaseException, secrets: _Secrets) -> int:
    """One sentence on stderr; the traceback only at DEBUG, where an operator asked for it."""
    leaf = _leaf(exc)
    if isinstance(leaf, KeyboardInterrupt):
        sys.stderr.write("interrupted\n")
        return EXIT_INTERRUPTED
    if isinstance(leaf, ConfigError):
        message, status = str(leaf), EXIT_CONFIG
    elif isinstance(leaf, BridgeError):
        message, status = str(leaf), EXIT_FAILURE
    else:
        log.debug("unexpected failure", exc_info=exc)
        detail = str(leaf).strip()
        message = f"unexpected {type(leaf).__name__}" + (f": {detail}" if detail else "")
        message += " (BRIDGE_LOG_LEVEL=DEBUG shows the details)"
        status = EXIT_FAILURE
    sys.stderr.write(f"error: {secrets.scrub(message)}\n")
    return status


def _leaf(exc: BaseException) -> BaseException:
    """The error worth reporting inside (nested) exception groups: a settings mistake first."""
    if not isinstance(exc, BaseExceptionGroup):
        return exc
    leaves = list(_flatten(exc))
    for kind in (ConfigError, BridgeError, KeyboardInterrupt):
        for leaf in leaves:
            if isinstance(leaf, kind):
                return leaf
    return leaves[0] if leaves else exc


def _flatten(group: BaseExceptionGroup[BaseException]) -> Iterator[BaseException]:
    for exc in group.exceptions:
        if isinstance(exc, BaseExceptionGroup):
            yield from _flatten(exc)
        else:
            yield exc


class _Secrets:
    """The secret values of the loaded settings, so no message can echo one."""

    def __init__(self) -> None:
        self._values: list[str] = []

    def remember(self, settings: Settings) -> None:
        for name in Settings.model_fields:
            value = getattr(settings, name)
            if isinstance(value, SecretStr) and len(value.get_secret_value()) >= 4:
                self._values.append(value.get_secret_value())

    def scrub(self, text: str) -> str:
        for value in self._values:
            text = text.replace(value, "***")
        return text


def _load(secrets: _Secrets) -> Settings:
    settings = load_settings()
    secrets.remember(settings)
    return settings


def _quiet_logging(settings: Settings) -> None:
    """One-shot commands speak in their own lines; library logs only when asked for DEBUG."""
    debug = settings.log_level.upper() == "DEBUG"
    logs.configure("DEBUG" if debug else "ERROR", settings.log_format)


# ---------------------------------------------------------------------------- run


def _cmd_run(args: argparse.Namespace, secrets: _Secrets) -> int:
    settings = _load(secrets)
    logs.configure(settings.log_level, settings.log_format)
    if args.shard_group is not None and args.shard_group_size is None:
        raise ConfigError("--shard-group needs --shard-group-size.")
    if args.shard_group_size is not None:
        settings = _with_shard_group(settings, size=args.shard_group_size,
                                     group=args.shard_group)
    platforms = (args.platform,) if args.platform else None
    asyncio.run(_serve(settings, platforms))
    return 0


def _with_shard_group(settings: Settings, *, size: int, group: int | None) -> Settings:
    if settings.discord_shard_ids:
        raise ConfigError("Use either BRIDGE_DISCORD_SHARD_IDS or --shard-group-size, not both.")
    if group is None:
        hostname = socket.gethostname()
        group = hostname_ordinal(hostname)
        if group is None:
            raise ConfigError(
                f"--shard-group-size needs --shard-group, or a hostname ending in -<number> "
                f"(a StatefulSet pod's ordinal); this host is {hostname!r}."
            )
    ids = shard_group_ids(group=group, size=size, count=settings.discord_shard_count)
    log.info("Discord shard group %d: shards %s of %d", group, ids, settings.discord_shard_count)
    return settings.model_copy(update={"discord_shard_ids": ids})


def hostname_ordinal(hostname: str) -> int | None:
    """The ordinal ending a StatefulSet pod's hostname (``discord-shards-2`` → 2)."""
    match = _ORDINAL.search(hostname.split(".", 1)[0])
    return int(match.group(1)) if match else None


def shard_group_ids(*, group: int, size: int, count: int | None) -> list[int]:
    """Shards ``group*size`` to ``group*size + size - 1``, all below the total ``count``."""
    if count is None:
        raise ConfigError("--shard-group-size needs BRIDGE_DISCORD_SHARD_COUNT, the number of "
                          "shards across all pods (replicas × group size).")
    first = group * size
    ids = list(range(first, first + size))
    if ids[-1] >= count:
        raise ConfigError(
            f"Shard group {group} of {size} needs shards {first} to {ids[-1]}, but "
            f"BRIDGE_DISCORD_SHARD_COUNT is {count}; make it replicas × group size."
        )
    return ids


async def _serve(settings: Settings, platforms: tuple[str, ...] | None) -> None:
    from bridge.app.runtime import Runtime  # Redis and the HTTP server load only for `run`

    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    handled = (signal.SIGTERM, signal.SIGINT)

    def on_signal(sig: signal.Signals) -> None:
        log.info("%s received: taking no new messages; answers in flight get up to %gs "
                 "(send it again to quit at once)", sig.name, settings.shutdown_grace)
        stop.set()
        # The next one gets the default behaviour: SIGTERM ends the process, SIGINT raises.
        loop.remove_signal_handler(sig)

    for sig in handled:
        loop.add_signal_handler(sig, on_signal, sig)
    try:
        async with Runtime(settings=settings, platforms=platforms) as runtime:
            if not stop.is_set():
                await runtime.serve(stop)
    finally:
        for sig in handled:
            loop.remove_signal_handler(sig)
    log.info("stopped")


# ---------------------------------------------------------------------------- ask


def _cmd_ask(args: argparse.Namespace, secrets: _Secrets) -> int:
    from bridge.app.ask import ask

    settings = _load(secrets)
    settings.require_chatbase()
    _quiet_logging(settings)
    text: str = sys.stdin.read() if args.text == "-" else args.text
    return asyncio.run(ask(
        settings=settings, text=text, conversation_id=args.conversation, user_id=args.user,
        as_json=args.json, out=sys.stdout, err=sys.stderr, agent=args.agent,
    ))


# ---------------------------------------------------------------------------- check


def _cmd_check(args: argparse.Namespace, secrets: _Secrets) -> int:
    from bridge.app.checks import CheckResult, Status, exit_status, run_checks

    try:
        settings = _load(secrets)
    except ConfigError as exc:
        print(CheckResult("settings", Status.FAIL, str(exc), config=True).line())
        sys.stderr.write("check: fix the setting above and run it again\n")
        return EXIT_CONFIG
    _quiet_logging(settings)
    source = "environment and ./.env" if Path(".env").is_file() else "environment (no ./.env)"
    print(CheckResult("settings", Status.OK, f"read from the {source}").line(), flush=True)
    results = asyncio.run(run_checks(settings))
    for result in results:
        print(secrets.scrub(result.line()))
    status = exit_status(results)
    failed = sum(result.status is Status.FAIL for result in results)
    if failed:
        sys.stderr.write(f"check: {failed} problem{'s' if failed > 1 else ''} found\n")
    return status


# ---------------------------------------------------------------------------- platforms


def _platform_command(command: Command) -> Callable[[argparse.Namespace, _Secrets], int]:
    def handler(args: argparse.Namespace, secrets: _Secrets) -> int:
        def settings() -> Settings:
            loaded = _load(secrets)
            _quiet_logging(loaded)
            return loaded

        return command.run(args, settings)

    return handler
