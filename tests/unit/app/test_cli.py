"""The command line in-process: parsing, exit statuses, plain error sentences, shard groups."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

import pytest

from bridge.app import cli
from bridge.app.cli import (
    EXIT_CONFIG,
    EXIT_FAILURE,
    build_parser,
    hostname_ordinal,
    main,
    shard_group_ids,
)
from bridge.core.errors import ConfigError, StoreError

SETTINGS_ENV = ("CHATBASE_API_KEY", "CHATBASE_AGENT_ID", "REDIS_URL", "SLACK_BOT_TOKEN",
                "SLACK_APP_TOKEN", "SLACK_SIGNING_SECRET", "DISCORD_BOT_TOKEN",
                "BRIDGE_DISCORD_SHARD_IDS", "BRIDGE_DISCORD_SHARD_COUNT", "BRIDGE_LOG_LEVEL")


@pytest.fixture(autouse=True)
def isolated(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Iterator[None]:
    """No ./.env and no settings from the developer's shell; logging restored afterwards."""
    monkeypatch.chdir(tmp_path)
    for name in SETTINGS_ENV:
        monkeypatch.delenv(name, raising=False)
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    yield
    root.handlers[:] = handlers
    root.setLevel(level)


def test_version(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exited:
        main(["--version"])
    assert exited.value.code == 0
    assert capsys.readouterr().out.strip() == "chatbase-bridge 0.1.0"


def test_a_command_is_required(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exited:
        main([])
    assert exited.value.code == 2
    assert "COMMAND" in capsys.readouterr().err


def test_parser_reads_every_command() -> None:
    parser = build_parser()
    run = parser.parse_args(["run", "--platform", "discord", "--shard-group-size", "2"])
    assert (run.platform, run.shard_group_size, run.shard_group) == ("discord", 2, None)
    ask = parser.parse_args(["ask", "hello", "--conversation", "c1", "--user", "u.1", "--json"])
    assert (ask.text, ask.conversation, ask.user, ask.json) == ("hello", "c1", "u.1", True)
    invite = parser.parse_args(["discord-invite", "--application-id", "42"])
    assert invite.application_id == "42"
    with pytest.raises(SystemExit):
        parser.parse_args(["run", "--platform", "teams"])
    with pytest.raises(SystemExit):
        parser.parse_args(["run", "--shard-group-size", "0"])


def test_discord_invite_with_an_application_id(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["discord-invite", "--application-id", "123"]) == 0
    url = capsys.readouterr().out.strip()
    parts = urlsplit(url)
    assert parts.scheme == "https" and parts.netloc == "discord.com"
    query = parse_qs(parts.query)
    assert query["client_id"] == ["123"]
    assert query["scope"] == ["bot applications.commands"]
    assert int(query["permissions"][0]) > 0


def test_discord_invite_without_id_or_token_says_what_to_give(
    capsys: pytest.CaptureFixture[str],
) -> None:
    assert main(["discord-invite"]) == EXIT_CONFIG
    err = capsys.readouterr().err
    assert err.startswith("error: ") and err.count("\n") == 1
    assert "--application-id" in err and "DISCORD_BOT_TOKEN" in err


def test_discord_invite_with_a_bad_id_is_one_sentence(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["discord-invite", "--application-id", "not-a-number"]) == EXIT_CONFIG
    err = capsys.readouterr().err
    assert err.startswith("error: ") and "Traceback" not in err


def test_ask_without_chatbase_settings_names_them(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["ask", "hello"]) == EXIT_CONFIG
    err = capsys.readouterr().err
    assert "CHATBASE_API_KEY" in err and "CHATBASE_AGENT_ID" in err


def test_run_with_a_malformed_setting_names_it(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("BRIDGE_SHUTDOWN_GRACE", "soon")
    assert main(["run"]) == EXIT_CONFIG
    err = capsys.readouterr().err
    assert "BRIDGE_SHUTDOWN_GRACE" in err and "Traceback" not in err


def test_errors_map_to_exit_statuses_without_tracebacks(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    def raising(error: BaseException) -> None:
        def handler(args: object, secrets: object) -> int:
            raise error

        monkeypatch.setattr(cli, "_cmd_check", handler)

    raising(StoreError("cannot connect to Redis at 127.0.0.1:1 (REDIS_URL)."))
    assert main(["check"]) == EXIT_FAILURE
    assert capsys.readouterr().err == (
        "error: cannot connect to Redis at 127.0.0.1:1 (REDIS_URL).\n")

    # A TaskGroup wraps failures in groups; the settings mistake is the one worth telling.
    raising(ExceptionGroup("tasks", [RuntimeError("x"), ExceptionGroup("inner", [
        ConfigError("BRIDGE_HTTP_PORT 8080 is already in use; pick another port.")])]))
    assert main(["check"]) == EXIT_CONFIG
    assert capsys.readouterr().err == (
        "error: BRIDGE_HTTP_PORT 8080 is already in use; pick another port.\n")

    raising(ZeroDivisionError("division by zero"))
    assert main(["check"]) == EXIT_FAILURE
    err = capsys.readouterr().err
    assert err.startswith("error: unexpected ZeroDivisionError: division by zero")
    assert "Traceback" not in err

    raising(KeyboardInterrupt())
    assert main(["check"]) == cli.EXIT_INTERRUPTED


def test_secrets_are_scrubbed_from_error_messages(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("DISCORD_BOT_TOKEN", "MTIz.secret-token-value")

    def handler(args: object, secrets: cli._Secrets) -> int:
        secrets.remember(cli.load_settings())
        raise RuntimeError("login failed for MTIz.secret-token-value")

    monkeypatch.setattr(cli, "_cmd_check", handler)
    assert main(["check"]) == EXIT_FAILURE
    err = capsys.readouterr().err
    assert "secret-token-value" not in err and "login failed for ***" in err


def test_run_without_a_platform_says_which_tokens_to_set(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], redis_url: str,
    redis_prefix: str,
) -> None:
    monkeypatch.setenv("CHATBASE_API_KEY", "key")
    monkeypatch.setenv("CHATBASE_AGENT_ID", "agent")
    monkeypatch.setenv("REDIS_URL", redis_url)
    monkeypatch.setenv("BRIDGE_REDIS_PREFIX", redis_prefix)
    assert main(["run"]) == EXIT_CONFIG
    err = capsys.readouterr().err
    assert err.splitlines()[-1] == (
        "error: No platform is configured: set SLACK_BOT_TOKEN and/or DISCORD_BOT_TOKEN.")
    assert "Traceback" not in err


# ---------------------------------------------------------------------------- shard groups


def test_hostname_ordinal() -> None:
    assert hostname_ordinal("chatbase-bridge-discord-2") == 2
    assert hostname_ordinal("discord-10.discord.default.svc.cluster.local") == 10
    assert hostname_ordinal("laptop") is None
    assert hostname_ordinal("web-7f9c") is None


def test_shard_group_ids() -> None:
    assert shard_group_ids(group=0, size=2, count=6) == [0, 1]
    assert shard_group_ids(group=2, size=2, count=6) == [4, 5]
    with pytest.raises(ConfigError, match="BRIDGE_DISCORD_SHARD_COUNT is 6"):
        shard_group_ids(group=3, size=2, count=6)
    with pytest.raises(ConfigError, match="needs BRIDGE_DISCORD_SHARD_COUNT"):
        shard_group_ids(group=0, size=2, count=None)


def test_run_shard_group_conflicts_are_plain(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("BRIDGE_DISCORD_SHARD_IDS", "0,1")
    monkeypatch.setenv("BRIDGE_DISCORD_SHARD_COUNT", "4")
    assert main(["run", "--shard-group-size", "2", "--shard-group", "1"]) == EXIT_CONFIG
    assert "not both" in capsys.readouterr().err
    monkeypatch.delenv("BRIDGE_DISCORD_SHARD_IDS")
    monkeypatch.setattr(cli.socket, "gethostname", lambda: "laptop")
    assert main(["run", "--shard-group-size", "2"]) == EXIT_CONFIG
    assert "'laptop'" in capsys.readouterr().err
    assert main(["run", "--shard-group", "1"]) == EXIT_CONFIG
    assert "--shard-group-size" in capsys.readouterr().err


def test_shard_group_from_the_hostname_sets_the_shard_ids(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("BRIDGE_DISCORD_SHARD_COUNT", "6")
    monkeypatch.setattr(cli.socket, "gethostname", lambda: "chatbase-bridge-discord-1")
    seen = []

    async def serve(settings: cli.Settings, platforms: tuple[str, ...] | None) -> None:
        seen.append((settings.discord_shard_ids, platforms))

    monkeypatch.setattr(cli, "_serve", serve)
    assert main(["run", "--platform", "discord", "--shard-group-size", "3"]) == 0
    assert seen == [([3, 4, 5], ("discord",))]
