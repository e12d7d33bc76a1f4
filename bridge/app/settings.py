"""Settings: the only reader of the environment and of the optional ``.env`` file."""

from __future__ import annotations

import json
import os
import re
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path
from typing import Annotated, Any
from urllib.parse import urlsplit

from pydantic import (
    AliasChoices,
    BaseModel,
    ConfigDict,
    Field,
    SecretStr,
    ValidationError,
    ValidationInfo,
    field_validator,
)
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

from bridge.core.errors import ConfigError
from bridge.core.models import ConversationScope, FeedbackFrom

CsvList = Annotated[list[str], NoDecode]
CsvInts = Annotated[list[int], NoDecode]


class LogFormat(StrEnum):
    CONSOLE = "console"
    JSON = "json"


def _env(name: str) -> Any:
    """Bind a field to exactly one environment variable name."""
    return AliasChoices(name)


class SuggestedPrompt(BaseModel):
    """One of Slack's suggested prompts: the button's ``title`` and the ``message`` it sends
    (https://docs.slack.dev/reference/methods/assistant.threads.setSuggestedPrompts)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    title: str = Field(min_length=1)
    message: str = Field(min_length=1)


class RouteSpec(BaseModel):
    """Where one place's questions go: an agent, and the variable holding its API key
    (``CHATBASE_API_KEY`` when not named). ``api_key`` is read from that variable, never
    from the JSON."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    agent: str = Field(min_length=1)
    api_key_env: str | None = Field(None, pattern=r"^[A-Za-z_][A-Za-z0-9_]*$")
    api_key: SecretStr | None = Field(None, exclude=True)


# Places a route may name (docs/configuration.md, "Several agents"): a Slack team or Grid
# org, one of its channels or its DMs; a Discord server, one of its channels, or DMs.
ROUTE_PLACE = re.compile(
    r"slack:[A-Za-z0-9]+(?:/(?:[A-Za-z0-9]+|dm))?|discord:(?:dm|[0-9]+(?:/[0-9]+)?)"
)


@dataclass(frozen=True)
class AgentAccess:
    """One agent the bridge talks to, with its key and the setting the key came from."""

    agent: str
    api_key: SecretStr
    key_setting: str


class Settings(BaseSettings):
    """Every setting of the bridge. Field descriptions feed docs/configuration.md."""

    model_config = SettingsConfigDict(
        env_file=".env",
        env_file_encoding="utf-8",
        extra="ignore",
        case_sensitive=False,
        populate_by_name=False,
        frozen=True,
    )

    # ---------------------------------------------------------------- Chatbase
    chatbase_api_key: SecretStr | None = Field(
        None, validation_alias=_env("CHATBASE_API_KEY"),
        description="Chatbase API key (Workspace Settings → API Keys). Required.",
    )
    chatbase_agent_id: str | None = Field(
        None, validation_alias=_env("CHATBASE_AGENT_ID"),
        description="The Chatbase agent that answers (where BRIDGE_ROUTES names none). "
        "Required unless BRIDGE_ROUTES is set.",
    )
    bridge_routes: Annotated[dict[str, RouteSpec], NoDecode] = Field(
        {}, validation_alias=_env("BRIDGE_ROUTES"),
        description="Which agent answers where: a JSON object from a place (`slack:<team>`, "
        "`slack:<team>/<channel>`, `slack:<team>/dm`, `discord:<guild>`, "
        "`discord:<guild>/<channel>`, `discord:dm`) to an agent id or "
        "`{\"agent\": …, \"api_key_env\": \"<VARIABLE>\"}`; the most specific place wins "
        "(see Several agents below).",
    )
    chatbase_api_base: str = Field(
        "https://www.chatbase.co/api/v2", validation_alias=_env("CHATBASE_API_BASE"),
        description="Chatbase API v2 base URL.",
    )
    chatbase_rate_limit: int = Field(
        100, ge=1, validation_alias=_env("BRIDGE_CHATBASE_RATE_LIMIT"),
        description="Chatbase requests allowed per window, shared by all replicas.",
    )
    chatbase_rate_window: float = Field(
        10.0, gt=0, validation_alias=_env("BRIDGE_CHATBASE_RATE_WINDOW"),
        description="Length of the Chatbase rate-limit window in seconds.",
    )
    chatbase_timeout: float = Field(
        30.0, gt=0, validation_alias=_env("BRIDGE_CHATBASE_TIMEOUT"),
        description="Seconds to wait for Chatbase to start answering a request.",
    )
    stream_idle_timeout: float = Field(
        60.0, gt=0, validation_alias=_env("BRIDGE_STREAM_IDLE_TIMEOUT"),
        description="Seconds without a byte from a Chatbase stream before it counts as stalled.",
    )
    chatbase_max_wait: float = Field(
        30.0, ge=0, validation_alias=_env("BRIDGE_CHATBASE_MAX_WAIT"),
        description="Longest total wait on Chatbase 429s for one request before giving up.",
    )

    # ---------------------------------------------------------------- Redis
    redis_url: str | None = Field(
        None, validation_alias=_env("REDIS_URL"),
        description="Redis URL: `redis://host:6379/0`, `rediss://` for TLS, "
        "`rediss://user:password@host:6379/0` with an ACL user. Unset (and no "
        "REDIS_SENTINELS): an embedded Redis for one process, kept in BRIDGE_DATA_DIR.",
    )
    redis_sentinels: CsvList = Field(
        [], validation_alias=_env("REDIS_SENTINELS"),
        description="Redis Sentinel addresses, `host:port,host:port`: the bridge asks them "
        "where the primary of REDIS_SENTINEL_MASTER is, and again after a failover. "
        "Instead of REDIS_URL.",
    )
    redis_sentinel_master: str | None = Field(
        None, validate_default=True, validation_alias=_env("REDIS_SENTINEL_MASTER"),
        description="The master name the sentinels monitor (`sentinel monitor <name> …`). "
        "Required with REDIS_SENTINELS.",
    )
    redis_username: str | None = Field(
        None, validate_default=True, validation_alias=_env("REDIS_USERNAME"),
        description="Redis ACL user (instead of one in REDIS_URL; needs REDIS_PASSWORD). "
        "Unset: Redis's `default` user.",
    )
    redis_password: SecretStr | None = Field(
        None, validate_default=True, validation_alias=_env("REDIS_PASSWORD"),
        description="Redis password (instead of one in REDIS_URL), so a Secret need not be "
        "spliced into the URL.",
    )
    redis_sentinel_username: str | None = Field(
        None, validate_default=True, validation_alias=_env("REDIS_SENTINEL_USERNAME"),
        description="ACL user on the sentinels themselves, when they require one.",
    )
    redis_sentinel_password: SecretStr | None = Field(
        None, validate_default=True, validation_alias=_env("REDIS_SENTINEL_PASSWORD"),
        description="Password of the sentinels themselves (`requirepass` in sentinel.conf), "
        "when they require one; the primary's is REDIS_PASSWORD.",
    )
    redis_tls: bool = Field(
        False, validation_alias=_env("REDIS_TLS"),
        description="TLS to the sentinels and the primary they name (with REDIS_SENTINELS; "
        "with REDIS_URL, `rediss://` says it).",
    )
    redis_tls_ca_file: Path | None = Field(
        None, validate_default=True, validation_alias=_env("REDIS_TLS_CA_FILE"),
        description="PEM file of the CA(s) that signed Redis's certificate. Unset: the "
        "system's trusted CAs. Certificates are always verified.",
    )
    redis_tls_cert_file: Path | None = Field(
        None, validate_default=True, validation_alias=_env("REDIS_TLS_CERT_FILE"),
        description="PEM client certificate, for a Redis that requires one "
        "(`tls-auth-clients yes`, its default); with REDIS_TLS_KEY_FILE.",
    )
    redis_tls_key_file: Path | None = Field(
        None, validate_default=True, validation_alias=_env("REDIS_TLS_KEY_FILE"),
        description="PEM private key (unencrypted) of REDIS_TLS_CERT_FILE.",
    )
    redis_tls_check_hostname: bool = Field(
        True, validation_alias=_env("REDIS_TLS_CHECK_HOSTNAME"),
        description="Check that Redis's certificate names the host connected to. `false` "
        "still verifies the certificate against the CA but accepts it for any host (for "
        "sentinels that announce bare IPs the certificate does not list); a weaker "
        "setting, logged as a warning at start.",
    )
    redis_timeout: float = Field(
        30.0, gt=0, le=600, validation_alias=_env("REDIS_TIMEOUT"),
        description="Seconds one round trip to Redis may take (waiting for a pooled "
        "connection, connecting, the reply) before it fails as Redis unreachable: a hung or "
        "paused Redis is then handled as one that is down, instead of holding answers.",
    )
    data_dir: Path = Field(
        Path(".bridge-data"), validation_alias=_env("BRIDGE_DATA_DIR"),
        description="Folder for the embedded Redis's data when REDIS_URL is unset.",
    )
    redis_prefix: str = Field(
        "cbb:", min_length=1, validation_alias=_env("BRIDGE_REDIS_PREFIX"),
        description="Prefix of every Redis key the bridge writes.",
    )
    conversation_ttl: int = Field(
        30 * 86400, ge=60, validation_alias=_env("BRIDGE_CONVERSATION_TTL"),
        description="Seconds a conversation is remembered after its last turn (sliding).",
    )
    reply_ttl: int = Field(
        30 * 86400, ge=60, validation_alias=_env("BRIDGE_REPLY_TTL"),
        description="Seconds a reply stays reachable for reactions and buttons.",
    )
    dedup_ttl: int = Field(
        86400, ge=60, validation_alias=_env("BRIDGE_DEDUP_TTL"),
        description="Seconds a platform event id is remembered to drop redeliveries.",
    )
    lock_ttl: int = Field(
        20, ge=3, le=3600, validation_alias=_env("BRIDGE_LOCK_TTL"),
        description="Lease of a conversation's turn lock, in seconds: renewed every third of "
        "it while the turn runs, so a holder that died or lost Redis at release frees the "
        "conversation within this long. A Redis outage longer than this during a turn lets "
        "the next turn begin.",
    )
    lock_wait: float = Field(
        600.0, gt=0, validation_alias=_env("BRIDGE_LOCK_WAIT"),
        description="Longest wait for the previous turn of a conversation to finish.",
    )

    # ---------------------------------------------------------------- conversations
    conversation_scope: ConversationScope = Field(
        ConversationScope.USER, validation_alias=_env("BRIDGE_CONVERSATION_SCOPE"),
        description="`user`: one conversation per person per thread; `thread`: everyone in a "
        "thread shares one.",
    )
    dm_idle_reset: int = Field(
        86400, ge=0, validation_alias=_env("BRIDGE_DM_IDLE_RESET"),
        description="Seconds of silence after which a DM starts a new conversation (0: never).",
    )
    max_input_chars: int = Field(
        4000, ge=1, validation_alias=_env("BRIDGE_MAX_INPUT_CHARS"),
        description="Longest message the bridge forwards to Chatbase.",
    )
    user_quota: int = Field(
        30, ge=0, validation_alias=_env("BRIDGE_USER_QUOTA"),
        description="Messages one person may send per quota window (0: no quota).",
    )
    user_quota_window: int = Field(
        3600, ge=1, validation_alias=_env("BRIDGE_USER_QUOTA_WINDOW"),
        description="Length of the per-user quota window in seconds.",
    )
    user_id_secret: SecretStr | None = Field(
        None, validation_alias=_env("BRIDGE_USER_ID_SECRET"),
        description="When set, Chatbase userIds are HMAC pseudonyms instead of platform ids.",
    )
    tools_module: str | None = Field(
        None, validation_alias=_env("BRIDGE_TOOLS_MODULE"),
        description=(
            "Python module that registers client-action handlers "
            "(see docs/operations.md, Client actions)."
        ),
    )
    max_tool_rounds: int = Field(
        5, ge=0, le=20, validation_alias=_env("BRIDGE_MAX_TOOL_ROUNDS"),
        description="Most client-action rounds in one answer.",
    )
    show_sources: bool = Field(
        True, validation_alias=_env("BRIDGE_SHOW_SOURCES"),
        description="End answers with the sources and files the agent's stream names, as "
        "links.",
    )

    # ---------------------------------------------------------------- feedback
    feedback_from: FeedbackFrom = Field(
        FeedbackFrom.ASKER, validation_alias=_env("BRIDGE_FEEDBACK_FROM"),
        description="Whose reactions count as feedback: `asker` or `anyone`.",
    )
    feedback_positive: CsvList = Field(
        ["+1", "thumbsup", "👍"], validation_alias=_env("BRIDGE_FEEDBACK_POSITIVE"),
        description="Reaction names that mean positive feedback (comma-separated).",
    )
    feedback_negative: CsvList = Field(
        ["-1", "thumbsdown", "👎"], validation_alias=_env("BRIDGE_FEEDBACK_NEGATIVE"),
        description="Reaction names that mean negative feedback (comma-separated).",
    )
    regenerate_reactions: CsvList = Field(
        ["arrows_counterclockwise", "🔄"], validation_alias=_env("BRIDGE_REGENERATE_REACTIONS"),
        description="Reaction names that regenerate the latest answer (comma-separated).",
    )

    # ---------------------------------------------------------------- Slack
    slack_bot_token: SecretStr | None = Field(
        None, validation_alias=_env("SLACK_BOT_TOKEN"),
        description="Slack bot token (`xoxb-…`). Enables Slack.",
    )
    slack_app_token: SecretStr | None = Field(
        None, validation_alias=_env("SLACK_APP_TOKEN"),
        description="Slack app-level token (`xapp-…`, connections:write): Socket Mode.",
    )
    slack_signing_secret: SecretStr | None = Field(
        None, validation_alias=_env("SLACK_SIGNING_SECRET"),
        description="Slack signing secret: HTTP Events API mode (without SLACK_APP_TOKEN).",
    )
    slack_api_url: str = Field(
        "https://slack.com/api/", validation_alias=_env("SLACK_API_URL"),
        description="Slack Web API base URL (GovSlack, proxies, tests).",
    )
    slack_allowed_teams: CsvList = Field(
        [], validation_alias=_env("BRIDGE_SLACK_ALLOWED_TEAMS"),
        description="Slack team (or enterprise) ids the bot answers in; empty: all.",
    )
    slack_allowed_channels: CsvList = Field(
        [], validation_alias=_env("BRIDGE_SLACK_ALLOWED_CHANNELS"),
        description="Slack channel ids the bot answers in (DMs always); empty: all.",
    )
    slack_feedback_buttons: bool = Field(
        False, validation_alias=_env("BRIDGE_SLACK_FEEDBACK_BUTTONS"),
        description="Add Slack's native 👍/👎 feedback buttons under finished answers.",
    )
    slack_native_streaming: bool = Field(
        True, validation_alias=_env("BRIDGE_SLACK_NATIVE_STREAMING"),
        description="Stream threaded answers with chat.startStream (else post + update).",
    )
    slack_stream_rollover_seconds: float = Field(
        240.0, gt=0, le=280, validation_alias=_env("BRIDGE_SLACK_STREAM_ROLLOVER_SECONDS"),
        description="Age at which a streamed Slack answer continues in a new message "
        "(Slack ends streams about 5 minutes after they start).",
    )
    slack_suggested_prompts: Annotated[list[SuggestedPrompt], NoDecode] = Field(
        [
            SuggestedPrompt(title="What can you do?", message="What can you help me with?"),
            SuggestedPrompt(title="Get started",
                            message="How do I get started? Give me the first steps."),
            SuggestedPrompt(title="Find an answer",
                            message="I have a question about our product."),
        ],
        validation_alias=_env("BRIDGE_SLACK_SUGGESTED_PROMPTS"),
        description="Prompts shown when a user opens the app's messages tab: a JSON list of "
        "up to four `{\"title\": …, \"message\": …}` objects (`[]`: none).",
    )
    slack_reset_command: str = Field(
        "/chatbase-reset", pattern=r"^/[a-z0-9_-]{1,31}$",
        validation_alias=_env("BRIDGE_SLACK_RESET_COMMAND"),
        description="Slash command that starts a new conversation.",
    )

    # ---------------------------------------------------------------- Discord
    discord_bot_token: SecretStr | None = Field(
        None, validation_alias=_env("DISCORD_BOT_TOKEN"),
        description="Discord bot token. Enables Discord.",
    )
    discord_api_base: str = Field(
        "https://discord.com/api/v10", validation_alias=_env("DISCORD_API_BASE"),
        description="Discord REST base URL for `check` and `discord-invite` (tests). The bot "
        "itself always uses Discord's API and refuses to start with another value.",
    )
    discord_message_content: bool = Field(
        False, validation_alias=_env("BRIDGE_DISCORD_MESSAGE_CONTENT"),
        description="Use the privileged message-content intent (thread follow-ups without a "
        "mention). Toggle it in the Developer Portal first.",
    )
    discord_allowed_guilds: CsvList = Field(
        [], validation_alias=_env("BRIDGE_DISCORD_ALLOWED_GUILDS"),
        description="Discord guild ids the bot answers in; empty: all.",
    )
    discord_allowed_channels: CsvList = Field(
        [], validation_alias=_env("BRIDGE_DISCORD_ALLOWED_CHANNELS"),
        description="Discord channel ids (threads count by their parent) the bot answers in; "
        "empty: all.",
    )
    discord_feedback_buttons: bool = Field(
        False, validation_alias=_env("BRIDGE_DISCORD_FEEDBACK_BUTTONS"),
        description="Add 👍/👎 buttons under finished answers.",
    )
    discord_command_guilds: CsvList = Field(
        [], validation_alias=_env("BRIDGE_DISCORD_COMMAND_GUILDS"),
        description="Guild ids to sync slash commands to instantly; empty: global sync.",
    )
    discord_shard_ids: CsvInts = Field(
        [], validation_alias=_env("BRIDGE_DISCORD_SHARD_IDS"),
        description="Shards this process runs (comma-separated); empty: all.",
    )
    discord_shard_count: int | None = Field(
        None, ge=1, validation_alias=_env("BRIDGE_DISCORD_SHARD_COUNT"),
        description="Total shard count across processes; unset: Discord's recommendation.",
    )

    # ---------------------------------------------------------------- operations
    http_host: str = Field(
        "0.0.0.0", validation_alias=_env("BRIDGE_HTTP_HOST"),
        description="Address the health, metrics and Slack HTTP server listens on.",
    )
    http_port: int = Field(
        8080, ge=0, le=65535, validation_alias=_env("BRIDGE_HTTP_PORT"),
        description="Port of the health, metrics and Slack HTTP server (0: any free port).",
    )
    log_level: str = Field(
        "INFO", pattern=r"^(?i:debug|info|warning|error|critical)$",
        validation_alias=_env("BRIDGE_LOG_LEVEL"),
        description="Log level; message text is only logged at DEBUG.",
    )
    log_format: LogFormat = Field(
        LogFormat.CONSOLE, validation_alias=_env("BRIDGE_LOG_FORMAT"),
        description="`console` (readable) or `json` (one object per line).",
    )
    live_edits_per_second: float = Field(
        500.0, gt=0, validation_alias=_env("BRIDGE_LIVE_EDITS_PER_SECOND"),
        description="Progress edits per second this process makes at most, across the "
        "answers it is streaming: with more answers showing text at once than this, each "
        "answer's in-progress text is updated every (answers ÷ this) seconds instead of at "
        "the platform's pace (at most every 10 s). First texts and final texts are never "
        "delayed. Keeps a busy process's event loop, and so every answer's first text, "
        "quick (docs/performance.md).",
    )
    shutdown_grace: float = Field(
        25.0, ge=0, validation_alias=_env("BRIDGE_SHUTDOWN_GRACE"),
        description="Seconds in-flight answers get to finish on SIGTERM before being cut off.",
    )
    stuck_after: float = Field(
        120.0, gt=0, validation_alias=_env("BRIDGE_STUCK_AFTER"),
        description="Seconds an answer in flight may show no progress (no platform call "
        "carrying its text since it started or since the last one) before the watchdog "
        "counts it as stuck (`bridge_answers_stuck`).",
    )
    stuck_end_after: float = Field(
        600.0, ge=0, validation_alias=_env("BRIDGE_STUCK_END_AFTER"),
        description="Seconds without progress after which the watchdog ends an answer: what "
        "was shown stays, marked as cut off, and the conversation takes the next message "
        "(0: never end one, only count it).",
    )

    @field_validator(
        "feedback_positive", "feedback_negative", "regenerate_reactions",
        "slack_allowed_teams", "slack_allowed_channels", "discord_allowed_guilds",
        "discord_allowed_channels", "discord_command_guilds", "discord_shard_ids",
        "redis_sentinels", mode="before",
    )
    @classmethod
    def _split_csv(cls, value: Any) -> Any:
        if isinstance(value, str):
            return [item.strip() for item in value.split(",") if item.strip()]
        return value

    @field_validator("bridge_routes", mode="before")
    @classmethod
    def _routes_in(cls, value: Any) -> Any:
        if isinstance(value, str):
            try:
                value = json.loads(value) if value.strip() else {}
            except ValueError:
                raise ValueError("expected a JSON object from places to agents") from None
        if not isinstance(value, dict):
            raise ValueError("expected a JSON object from places to agents")
        routes = {}
        for place, target in value.items():
            if not isinstance(place, str) or not ROUTE_PLACE.fullmatch(place):
                raise ValueError(
                    f"{place!r} is not a place (slack:<team>, slack:<team>/<channel>, "
                    "slack:<team>/dm, discord:<guild>, discord:<guild>/<channel>, discord:dm)")
            if isinstance(target, dict) and "api_key" in target:
                raise ValueError(f"{place}: name the variable holding the key "
                                 "(api_key_env), not the key")
            routes[place] = {"agent": target} if isinstance(target, str) else target
        return routes

    @field_validator("bridge_routes")
    @classmethod
    def _route_keys(cls, value: dict[str, RouteSpec]) -> dict[str, RouteSpec]:
        resolved = {}
        for place, route in value.items():
            if route.api_key_env is not None:
                key = os.environ.get(route.api_key_env, "")
                if not key.strip():
                    raise ValueError(f"{place}: the variable {route.api_key_env} named for "
                                     f"agent {route.agent} is not set")
                route = route.model_copy(update={"api_key": SecretStr(key)})
            resolved[place] = route
        return resolved

    @field_validator("slack_suggested_prompts", mode="before")
    @classmethod
    def _prompts(cls, value: Any) -> Any:
        if isinstance(value, str):
            try:
                value = json.loads(value) if value.strip() else []
            except ValueError:
                raise ValueError(
                    'expected a JSON list of {"title": …, "message": …} objects'
                ) from None
        if isinstance(value, list) and len(value) > 4:
            raise ValueError("Slack shows at most four suggested prompts")
        return value

    @field_validator("chatbase_api_base", "slack_api_url", "discord_api_base")
    @classmethod
    def _url(cls, value: str) -> str:
        if not value.startswith(("http://", "https://")):
            raise ValueError("expected an http:// or https:// URL")
        return value

    @field_validator("redis_url")
    @classmethod
    def _redis_url(cls, value: str | None) -> str | None:
        if value is not None and not value.strip():
            return None
        if value is not None and not value.startswith(("redis://", "rediss://", "unix://")):
            raise ValueError("expected a redis://, rediss:// or unix:// URL")
        return value

    # The Redis settings below are checked against those defined before them (``info.data``
    # holds the fields validated so far, in definition order), so each mistake is reported
    # under the variable to change.

    @field_validator("redis_sentinels")
    @classmethod
    def _sentinels(cls, value: list[str], info: ValidationInfo) -> list[str]:
        if value and info.data.get("redis_url"):
            raise ValueError("set REDIS_URL or REDIS_SENTINELS, not both")
        for address in value:
            sentinel_address(address)
        return value

    @field_validator("redis_sentinel_master")
    @classmethod
    def _sentinel_master(cls, value: str | None, info: ValidationInfo) -> str | None:
        value = value.strip() if value is not None else None
        sentinels = info.data.get("redis_sentinels")
        if sentinels and not value:
            raise ValueError("required with REDIS_SENTINELS (the name in `sentinel monitor "
                             "<name> …`)")
        if value and not sentinels and "redis_sentinels" in info.data:
            raise ValueError("needs REDIS_SENTINELS, the sentinels to ask")
        return value or None

    @field_validator("redis_username", "redis_sentinel_username")
    @classmethod
    def _blank_is_unset(cls, value: str | None) -> str | None:
        return value.strip() or None if value is not None else None

    @field_validator("redis_password", "redis_sentinel_password")
    @classmethod
    def _credentials(cls, value: SecretStr | None, info: ValidationInfo) -> SecretStr | None:
        if value is not None and not value.get_secret_value():
            value = None
        sentinel = info.field_name == "redis_sentinel_password"
        user = info.data.get("redis_sentinel_username" if sentinel else "redis_username")
        url, sentinels = info.data.get("redis_url"), info.data.get("redis_sentinels")
        in_url_user = in_url_password = None
        if url and not sentinel:
            try:
                parts = urlsplit(url)
                in_url_user, in_url_password = parts.username, parts.password
            except ValueError:
                pass  # REDIS_URL's own check says what is wrong with it
        if user and value is None and not in_url_password:
            raise ValueError(f"{'REDIS_SENTINEL_USERNAME' if sentinel else 'REDIS_USERNAME'} "
                             "is set, so its password is needed too")
        if sentinel:
            if (value is not None or user) and not sentinels:
                raise ValueError("needs REDIS_SENTINELS")
            return value
        if (value is not None or user) and not url and not sentinels \
                and "redis_url" in info.data and "redis_sentinels" in info.data:
            raise ValueError("needs REDIS_URL or REDIS_SENTINELS (the embedded Redis has "
                             "no password)")
        if value is not None and in_url_password:
            raise ValueError("REDIS_URL has a password too: give it in one place")
        if user and in_url_user:
            raise ValueError("REDIS_URL names a user too: give it in one place")
        return value

    @field_validator("redis_tls")
    @classmethod
    def _tls(cls, value: bool, info: ValidationInfo) -> bool:
        url = info.data.get("redis_url")
        if value and url and not url.startswith("rediss://"):
            raise ValueError("REDIS_URL decides TLS: write rediss:// instead of "
                             f"{url.split('://', 1)[0]}://")
        return value

    @field_validator("redis_tls_ca_file", "redis_tls_cert_file", "redis_tls_key_file")
    @classmethod
    def _tls_file(cls, value: Path | None, info: ValidationInfo) -> Path | None:
        if value is None or not str(value).strip():
            if info.field_name == "redis_tls_key_file" \
                    and info.data.get("redis_tls_cert_file") is not None:
                raise ValueError("REDIS_TLS_CERT_FILE is set, so its private key is needed too")
            return None
        url = info.data.get("redis_url")
        tls = info.data.get("redis_tls") or (url or "").startswith("rediss://")
        if not tls and "redis_url" in info.data and "redis_tls" in info.data:
            raise ValueError("set, but Redis is not reached over TLS: use rediss:// in "
                             "REDIS_URL, or REDIS_TLS=true with REDIS_SENTINELS")
        if not value.is_file():
            raise ValueError(f"{value} is not a file" if value.exists()
                             else f"no file at {value}")
        if info.field_name == "redis_tls_key_file" and "redis_tls_cert_file" in info.data \
                and info.data.get("redis_tls_cert_file") is None:
            raise ValueError("needs REDIS_TLS_CERT_FILE, the certificate of this key")
        return value

    # ---------------------------------------------------------------- derived

    @property
    def slack_enabled(self) -> bool:
        return self.slack_bot_token is not None

    @property
    def discord_enabled(self) -> bool:
        return self.discord_bot_token is not None

    def missing_chatbase(self) -> list[str]:
        """Names of the required Chatbase settings that are not set."""
        missing = []
        has_key = self.chatbase_api_key is not None and bool(
            self.chatbase_api_key.get_secret_value())
        needs_key = self.chatbase_agent_id is not None or not self.bridge_routes or any(
            r.api_key is None for r in self.bridge_routes.values())
        if needs_key and not has_key:
            missing.append("CHATBASE_API_KEY")
        if not self.chatbase_agent_id and not self.bridge_routes:
            missing.append("CHATBASE_AGENT_ID")
        return missing

    def agents(self) -> list[AgentAccess]:
        """Every agent the bridge talks to, each with its key: CHATBASE_AGENT_ID first,
        then the routed ones in the order BRIDGE_ROUTES names them."""
        missing = self.missing_chatbase()
        if missing:
            raise ConfigError(f"Missing required setting(s): {', '.join(missing)}.")
        found: dict[str, AgentAccess] = {}
        wanted: list[tuple[str, SecretStr | None, str | None]] = (
            [(self.chatbase_agent_id, None, None)] if self.chatbase_agent_id else [])
        wanted += [(r.agent, r.api_key, r.api_key_env) for r in self.bridge_routes.values()]
        for agent, key, setting in wanted:
            if key is None:
                assert self.chatbase_api_key is not None
                key, setting = self.chatbase_api_key, "CHATBASE_API_KEY"
            access = AgentAccess(agent=agent, api_key=key, key_setting=setting or "")
            known = found.setdefault(agent, access)
            if known.key_setting != access.key_setting:
                raise ConfigError(
                    f"Invalid setting BRIDGE_ROUTES: agent {agent} is named with two API keys "
                    f"({known.key_setting} and {access.key_setting}); one agent has one key.")
        return list(found.values())

    def require_chatbase(self) -> AgentAccess:
        """The default agent: CHATBASE_AGENT_ID, else the first routed one."""
        return self.agents()[0]


def sentinel_address(address: str) -> tuple[str, int]:
    """``host:port`` (``[v6]:port`` for an IPv6 address) of one sentinel; ValueError
    naming the entry otherwise."""
    host, sep, port = address.rpartition(":")
    host = host.removeprefix("[").removesuffix("]")
    if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise ValueError(f"{address!r} is not host:port (e.g. sentinel-0:26379)")
    return host, int(port)


def env_name(field_name: str) -> str:
    """The environment variable a settings field is read from."""
    alias = Settings.model_fields[field_name].validation_alias
    assert isinstance(alias, AliasChoices)
    first = alias.choices[0]
    assert isinstance(first, str)
    return first


def _shown(value: Any) -> Any:
    """A rejected value as it may be quoted back: a URL's credentials (``user:password@``,
    also in a mistyped URL) are replaced by ``***``."""
    if isinstance(value, str) and "@" in value:
        head, _, tail = value.rpartition("@")
        scheme = head.split("//", 1)[0] + "//" if "//" in head else ""
        return f"{scheme}***@{tail}"
    return value


def load_settings(**overrides: Any) -> Settings:
    """Read the settings, turning validation errors into one plain ``ConfigError``."""
    try:
        return Settings(**overrides)
    except ValidationError as exc:
        problems = []
        for error in exc.errors():
            loc = error.get("loc") or ("?",)
            name = str(loc[0])
            if name in Settings.model_fields:
                name = env_name(name)
            value = error.get("input")
            # Never quoted: secrets, and the routes (a key pasted there by mistake).
            secret = name.endswith(("KEY", "TOKEN", "SECRET", "PASSWORD")) \
                or name == "BRIDGE_ROUTES"
            shown = "" if secret else f" (got {_shown(value)!r})"
            problems.append(f"{name}: {error.get('msg', 'invalid')}{shown}")
        raise ConfigError("Invalid setting " + "; ".join(problems) + ".") from None
