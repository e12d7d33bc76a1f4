"""Generates docs/configuration.md, the configuration reference, from the settings fields.

``python -m tools.settings_doc`` prints the page; ``--write`` rewrites docs/configuration.md
whole (a short introduction and one table row per setting).
"""

from __future__ import annotations

import argparse
import enum
import json
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from pydantic import BaseModel, SecretStr
from pydantic_core import PydanticUndefined

from bridge.app.settings import Settings, env_name

__all__ = ["CONFIGURATION", "INTRO", "SEVERAL_AGENTS", "document", "table"]

CONFIGURATION = Path(__file__).resolve().parent.parent / "docs" / "configuration.md"

INTRO = """\
# Configuration

Every setting is an environment variable (or a line in `.env`). Secrets are never logged.
This page is generated from the settings model (`bridge/app/settings.py`) by
`python -m tools.settings_doc --write`; do not edit it by hand, a test fails when it drifts.
Setup guides: [Slack](slack.md), [Discord](discord.md); running it: [operations](operations.md).

"""


def _default(value: Any) -> str:
    if value is None or value is PydanticUndefined:
        return "—"
    if isinstance(value, SecretStr):
        return "(secret)"
    if isinstance(value, bool):
        return "`true`" if value else "`false`"
    if isinstance(value, enum.Enum):
        return f"`{value.value}`"
    if isinstance(value, float):
        return f"`{value:g}`"
    if isinstance(value, list | tuple) and value and isinstance(value[0], BaseModel):
        # Written as the JSON the setting takes.
        return f"`{json.dumps([item.model_dump() for item in value], ensure_ascii=False)}`"
    if isinstance(value, list | tuple):
        return f"`{','.join(str(item) for item in value)}`" if value else "(empty)"
    return f"`{value}`"


def _cell(text: str) -> str:
    return " ".join(text.split()).replace("|", "\\|")


def table() -> str:
    """The Markdown table: one row per setting, in the order ``Settings`` declares them."""
    rows = ["| Variable | Default | Meaning |", "|---|---|---|"]
    for name, field in Settings.model_fields.items():
        default = field.get_default(call_default_factory=True)
        rows.append(
            f"| `{env_name(name)}` | {_cell(_default(default))} | "
            f"{_cell(field.description or '')} |"
        )
    return "\n".join(rows) + "\n"


SEVERAL_AGENTS = """
## Several agents

One bridge can serve several Chatbase agents: `BRIDGE_ROUTES` names which agent answers
where, and the most specific place wins. A place is a Slack team or Grid org
(`slack:T0123`), one of its channels (`slack:T0123/C0456`) or its direct messages
(`slack:T0123/dm`); a Discord server (`discord:8123…`), one of its channels
(`discord:8123…/9345…`, threads follow their channel) or Discord's DMs (`discord:dm`).
Where no route applies, `CHATBASE_AGENT_ID` answers; leave it unset and messages from
unrouted places are ignored (each place is logged once).

A Chatbase API key serves every agent of its Chatbase workspace, so routes use
`CHATBASE_API_KEY` unless they name another variable with `api_key_env` (an agent of a
second Chatbase workspace); the key itself never goes into the JSON, and the named variable
must be set in the bridge's environment (Docker Compose's `env_file` and Kubernetes
`envFrom` put it there; a plain `.env` file read by the bridge itself does not). Each key
has its own request budget (`BRIDGE_CHATBASE_RATE_LIMIT` per
`BRIDGE_CHATBASE_RATE_WINDOW`), shared by the replicas.

A worked example: the support agent answers everywhere by default, the HR agent in Slack's
`#people` (C0PEOPLE) and the sales agent in `#deals` (C0DEALS), and the community agent,
from another Chatbase workspace, in one Discord server:

```sh
CHATBASE_API_KEY=sk-…               # the main Chatbase workspace
CHATBASE_AGENT_ID=support-agent-id  # answers wherever no route applies
COMMUNITY_CHATBASE_KEY=sk-…         # the second Chatbase workspace
BRIDGE_ROUTES='{
  "slack:T0TEAM/C0PEOPLE": "hr-agent-id",
  "slack:T0TEAM/C0DEALS": "sales-agent-id",
  "discord:812345678901234567": {"agent": "community-agent-id",
                                 "api_key_env": "COMMUNITY_CHATBASE_KEY"}
}'
```

Everything follows the agent that answered: a conversation stays with its agent, 👍/👎
and 🔄 on an answer go to the agent that wrote it, and a place that is re-routed starts
new conversations with its new agent. `chatbase-bridge check` prints one line per agent
(`chatbase` for the first, `chatbase:<agent>` for the others), `chatbase-bridge ask --agent
<id>` asks any of them, the `bridge_chatbase_requests_total` metric carries an `agent`
label, and log lines of an answer carry `agent`. The Home tab and `/history` list the
conversations with the agent that answers the person's DMs (Slack) or the channel where
`/history` is used (Discord).
"""


def document() -> str:
    """The whole of docs/configuration.md: the introduction, the table, then how several
    agents are routed."""
    return INTRO + table() + SEVERAL_AGENTS


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m tools.settings_doc",
        description="Print the configuration reference generated from the settings.",
    )
    parser.add_argument("--write", action="store_true",
                        help="write the page to docs/configuration.md (or --out) instead")
    parser.add_argument("--out", type=Path, default=CONFIGURATION, help="file to write")
    args = parser.parse_args(argv)
    if not args.write:
        sys.stdout.write(document())
        return 0
    path: Path = args.out
    try:
        path.write_text(document(), encoding="utf-8")
    except OSError as exc:
        sys.stderr.write(f"error: {path}: {exc}\n")
        return 1
    sys.stdout.write(f"wrote the configuration reference to {path}\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
