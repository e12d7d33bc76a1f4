"""The alert rules (deploy/prometheus/) and the dashboard (deploy/grafana/) against the bridge
itself and against the real tools: every metric and label they name is in the bridge's real
/metrics after real answers; promtool and tsc (Grafana's schema) accept them and reject
broken copies. Tests needing a tool skip without it, unless BRIDGE_TEST_REQUIRE_TOOLS=1
(.ci/run sets it after deploy/validate.sh installed the tools)."""

from __future__ import annotations

import asyncio
import json
import os
import re
import shutil
import subprocess
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import yaml
from aiohttp.test_utils import TestServer
from prometheus_client.parser import text_string_to_metric_families

from bridge.app.http import create_app
from bridge.app.metrics import CONTENT_TYPE_LATEST
from tests.fakes.chatbase import Answer
from tests.fakes.harness import counter_value
from tests.fakes.slack import event_envelope, mention_event, reaction_event
from tests.fakes.slack_stack import slack_stack

ROOT = Path(__file__).resolve().parents[2]
PROMETHEUS = ROOT / "deploy" / "prometheus"
GRAFANA = ROOT / "deploy" / "grafana"
RULES = PROMETHEUS / "alerts.yml"
RULE_TESTS = PROMETHEUS / "alerts.test.yml"
DASHBOARD = GRAFANA / "dashboards" / "chatbase-bridge.json"
CHECKER = GRAFANA / "validate"
OPERATIONS = ROOT / "docs" / "operations.md"
REQUIRE_TOOLS = os.environ.get("BRIDGE_TEST_REQUIRE_TOOLS") == "1"


def _missing(what: str) -> None:
    reason = (f"{what}; deploy/validate.sh installs it (BRIDGE_TEST_REQUIRE_TOOLS=1 makes "
              "this a failure)")
    if REQUIRE_TOOLS:
        pytest.fail(f"BRIDGE_TEST_REQUIRE_TOOLS=1 but {reason}")
    pytest.skip(reason)


def promtool() -> str:
    found = shutil.which("promtool")
    if found is None:
        _missing("promtool is not installed (Debian package prometheus)")
    assert found is not None
    return found


def dashboard_checker() -> list[str]:
    node = shutil.which("node")
    if node is None:
        _missing("node is not installed")
    if not (CHECKER / "node_modules" / "typescript").is_dir():
        _missing("deploy/grafana/validate has no node_modules (npm ci there)")
    assert node is not None
    return [node, str(CHECKER / "check.mjs")]


def run(command: list[str], *, stdin: str | None = None, cwd: Path = ROOT
        ) -> subprocess.CompletedProcess[str]:
    return subprocess.run(command, input=stdin, capture_output=True, text=True, cwd=cwd,
                          timeout=300, check=False)


# ---------------------------------------------------------------------------- PromQL names

# Everything in a PromQL expression that looks like a name but is not a metric.
_NOT_METRICS = {
    "sum", "avg", "min", "max", "count", "rate", "irate", "increase", "delta",
    "histogram_quantile", "absent", "vector", "and", "or", "unless", "by", "without", "on",
    "ignoring", "group_left", "group_right", "bool", "offset", "inf", "nan",
}
_STRING = re.compile(r'"(?:\\.|[^"\\])*"')
_SELECTOR = re.compile(r"([A-Za-z_:][A-Za-z0-9_:]*)\s*\{([^}]*)\}")
_MATCHER = re.compile(r"([A-Za-z_][A-Za-z0-9_]*)\s*(?:=~|!~|!=|=)")
_GROUPING = re.compile(r"\b(?:by|without|on|ignoring)\s*\(([^)]*)\)")
_NAME = re.compile(r"(?<![\w$.])[A-Za-z_:][A-Za-z0-9_:]*")


def metric_names(expr: str) -> set[str]:
    bare = _STRING.sub('""', expr)
    bare = re.sub(r"\{[^}]*\}", "", bare)
    bare = re.sub(r"\[[^\]]*\]", "", bare)
    bare = _GROUPING.sub("", bare)
    return {name for name in _NAME.findall(bare) if name.lower() not in _NOT_METRICS}


def matcher_labels(expr: str) -> Iterator[tuple[str, str]]:
    """(metric, label) for every label matcher of a selector."""
    for metric, body in _SELECTOR.findall(_STRING.sub('""', expr)):
        for label in _MATCHER.findall(body):
            yield metric, label


def grouping_labels(expr: str) -> set[str]:
    return {label.strip() for group in _GROUPING.findall(expr)
            for label in group.split(",") if label.strip()}


def rules() -> list[dict[str, Any]]:
    loaded = yaml.safe_load(RULES.read_text(encoding="utf-8"))
    return [rule for group in loaded["groups"] for rule in group["rules"]]


def dashboard() -> dict[str, Any]:
    loaded: dict[str, Any] = json.loads(DASHBOARD.read_text(encoding="utf-8"))
    return loaded


def dashboard_exprs() -> list[str]:
    return [target["expr"] for panel in dashboard()["panels"]
            for target in panel.get("targets", [])]


def all_exprs() -> list[str]:
    return [str(rule["expr"]) for rule in rules()] + dashboard_exprs()


def test_the_name_parser_finds_metrics_and_only_metrics() -> None:
    expr = ('histogram_quantile(0.99, sum by (le, platform) (rate(bridge_x_bucket{platform=~'
            '"$platform",outcome="a|b"}[$__rate_interval]))) / on (job) up{job="j"} > 0.25')
    assert metric_names(expr) == {"bridge_x_bucket", "up"}
    assert set(matcher_labels(expr)) == {("bridge_x_bucket", "platform"),
                                        ("bridge_x_bucket", "outcome"), ("up", "job")}
    assert grouping_labels(expr) == {"le", "platform", "job"}


# ---------------------------------------------------------------------------- the exposition


@pytest.fixture(scope="module")
def exposition(redis_url: str) -> str:
    """The bridge's /metrics over HTTP after real answers through the Slack adapter: one
    answered after a Chatbase 429, one refused for want of credits, a 👍 on the first."""
    return asyncio.run(_exposition(redis_url))


async def _exposition(redis_url: str) -> str:
    first, second = "1700000001.000100", "1700000002.000100"
    async with slack_stack(redis_url, f"test:{uuid.uuid4().hex[:12]}:") as stack:
        stack.chatbase.rate_limit_next(retry_after=0.05)
        stack.chatbase.script(Answer(deltas=["The ", "octopus ", "is ", "here."]))
        await stack.deliver(event_envelope(mention_event(text="<@UBOT> zebra question", ts=first)))
        await stack.idle()
        [reply] = stack.slack.thread("C0CHAN", first)
        assert reply.text == "The octopus is here."
        await stack.deliver(event_envelope(reaction_event(reaction="+1", channel="C0CHAN",
                                                          ts=reply.ts)))
        stack.chatbase.fail_next(402, "CHAT_CREDITS_EXHAUSTED", "Credits exhausted")
        await stack.deliver(event_envelope(mention_event(text="<@UBOT> zebra more", ts=second)))
        await stack.idle()
        assert counter_value(stack.metrics, "bridge_feedback", platform="slack",
                             value="positive") == 1

        async def ready() -> dict[str, bool]:
            return {"redis": True}

        server = TestServer(create_app(metrics=stack.metrics, readiness=ready),
                            host="127.0.0.1")
        await server.start_server()
        try:
            async with aiohttp.ClientSession() as session, \
                    session.get(server.make_url("/metrics")) as response:
                assert response.status == 200
                assert response.headers["Content-Type"] == CONTENT_TYPE_LATEST
                return await response.text()
        finally:
            await server.close()


@pytest.fixture(scope="module")
def exposed(exposition: str) -> dict[str, set[str]]:
    """Every sample name of the exposition and the label names it carries."""
    found: dict[str, set[str]] = {}
    for family in text_string_to_metric_families(exposition):
        for sample in family.samples:
            found.setdefault(sample.name, set()).update(sample.labels)
    return found


def test_every_metric_the_rules_and_the_dashboard_name_is_exposed(
    exposed: dict[str, set[str]]
) -> None:
    named = set().union(*(metric_names(expr) for expr in all_exprs()))
    missing = sorted(name for name in named - {"up"} if name not in exposed)
    assert not missing, f"not in /metrics: {missing}"
    assert len(named) >= 14  # the parser did find the names


def test_every_label_the_rules_and_the_dashboard_use_is_on_its_metric(
    exposed: dict[str, set[str]]
) -> None:
    problems = []
    for expr in all_exprs():
        labels_here: set[str] = set()
        for metric in metric_names(expr) - {"up"}:
            labels_here |= exposed.get(metric, set())
        for metric, label in matcher_labels(expr):
            if metric != "up" and label not in exposed.get(metric, set()):
                problems.append(f"{metric} has no label {label}: {expr}")
        for label in grouping_labels(expr) - labels_here - {"job", "instance"}:
            problems.append(f"grouping by {label}, which none of its metrics has: {expr}")
    assert not problems, "\n".join(problems)


def test_the_exposition_carries_the_new_figures_and_no_message_content(
    exposition: str, exposed: dict[str, set[str]]
) -> None:
    for name in ("bridge_stream_deltas_total", "bridge_added_time_to_first_text_seconds_bucket",
                 "bridge_chatbase_rate_limited_total", "bridge_chatbase_errors_total",
                 "bridge_chatbase_credits_exhausted_total", "bridge_answers_stuck",
                 "bridge_watchdog_ended_answers_total"):
        assert name in exposed, name
    assert 'bridge_stream_deltas_total{platform="slack"} 4.0' in exposition
    for content in ("zebra", "octopus", "U0ASKER", "C0CHAN", "T0TEAM"):
        assert content not in exposition


def test_promtool_lints_the_real_exposition(exposition: str) -> None:
    checked = run([promtool(), "check", "metrics"], stdin=exposition)
    assert checked.returncode == 0, checked.stdout + checked.stderr


# ---------------------------------------------------------------------------- alert rules


def test_every_alert_has_a_severity_a_runbook_section_and_a_firing_test() -> None:
    alerts = {rule["alert"]: rule for rule in rules()}
    assert {"BridgeDown", "BridgeAnswersFailing", "BridgePlatformRateLimited",
            "BridgeChatbaseRateLimited", "BridgeFirstTextSlow",
            "BridgeChatbaseCreditsExhausted", "BridgeAnswersStuck"} <= set(alerts)
    anchors = {_anchor(line.lstrip("#")) for line in
               OPERATIONS.read_text(encoding="utf-8").splitlines() if line.startswith("#")}
    tested = yaml.safe_load(RULE_TESTS.read_text(encoding="utf-8"))
    fired = {case["alertname"] for test in tested["tests"]
             for case in test["alert_rule_test"] if case.get("exp_alerts")}
    quiet = {case["alertname"] for test in tested["tests"]
             for case in test["alert_rule_test"] if not case.get("exp_alerts")}
    for name, rule in alerts.items():
        assert rule["labels"]["severity"] in ("critical", "warning"), name
        runbook = rule["annotations"]["runbook"]
        path, _, anchor = runbook.partition("#")
        assert path == "docs/operations.md" and anchor in anchors, runbook
        assert name in fired, f"{name} has no test that it fires"
        assert name in quiet, f"{name} has no test that it stays quiet"


def _anchor(heading: str) -> str:
    """GitHub's anchor of a Markdown heading."""
    text = re.sub(r"[^\w\- ]", "", heading.strip().lower())
    return text.replace(" ", "-")


def test_promtool_accepts_the_rules_their_tests_and_the_scrape_configs() -> None:
    tool = promtool()
    for command in (["check", "rules", str(RULES)], ["test", "rules", str(RULE_TESTS)],
                    ["check", "config", str(PROMETHEUS / "prometheus.yml")],
                    ["check", "config", str(PROMETHEUS / "scrape-kubernetes.yml")]):
        checked = run([tool, *command])
        assert checked.returncode == 0, checked.stdout + checked.stderr


def test_promtool_rejects_a_rule_with_broken_promql(tmp_path: Path) -> None:
    tool = promtool()
    broken = RULES.read_text(encoding="utf-8").replace(
        "sum by (platform) (bridge_answers_stuck) > 0",
        "sum by (platform) (bridge_answers_stuck > 0")
    assert broken != RULES.read_text(encoding="utf-8")
    (tmp_path / "alerts.yml").write_text(broken, encoding="utf-8")
    checked = run([tool, "check", "rules", str(tmp_path / "alerts.yml")])
    assert checked.returncode != 0
    assert "BridgeAnswersStuck" in checked.stdout + checked.stderr or \
        "parse error" in checked.stdout + checked.stderr


def test_the_rule_tests_catch_an_alert_that_would_fire_on_a_healthy_bridge(
    tmp_path: Path
) -> None:
    tool = promtool()
    # One platform 429 now and then is not an incident; a threshold of 0 would page on it.
    loose = RULES.read_text(encoding="utf-8").replace(
        "increase(bridge_platform_rate_limited_total[10m])) > 5",
        "increase(bridge_platform_rate_limited_total[10m])) > 0")
    assert loose != RULES.read_text(encoding="utf-8")
    (tmp_path / "alerts.yml").write_text(loose, encoding="utf-8")
    shutil.copy(RULE_TESTS, tmp_path / "alerts.test.yml")
    checked = run([tool, "test", "rules", str(tmp_path / "alerts.test.yml")])
    assert checked.returncode != 0
    assert "BridgePlatformRateLimited" in checked.stdout + checked.stderr


# ---------------------------------------------------------------------------- dashboard


def test_the_dashboard_shows_every_figure_through_the_datasource_variable() -> None:
    board = dashboard()
    names = set().union(*(metric_names(expr) for expr in dashboard_exprs()))
    assert {"bridge_time_to_first_text_seconds_bucket",
            "bridge_added_time_to_first_text_seconds_bucket", "bridge_stream_deltas_total",
            "bridge_answers_in_flight", "bridge_answers_total",
            "bridge_platform_rate_limited_total", "bridge_chatbase_rate_limited_total",
            "bridge_chatbase_requests_total", "bridge_chatbase_errors_total",
            "bridge_chatbase_credits_exhausted_total", "bridge_feedback_total",
            "bridge_answers_stuck", "bridge_watchdog_ended_answers_total"} <= names
    [variable] = [v for v in board["templating"]["list"] if v["type"] == "datasource"]
    assert variable["name"] == "datasource" and variable["query"] == "prometheus"
    for panel in board["panels"]:
        if panel["type"] == "row":
            continue
        assert panel["datasource"] == {"type": "prometheus", "uid": "${datasource}"}, panel
        for target in panel["targets"]:
            assert target["datasource"]["uid"] == "${datasource}", panel["title"]
    ids = [panel["id"] for panel in board["panels"]]
    assert len(ids) == len(set(ids))
    quantiles = " ".join(dashboard_exprs())
    assert "histogram_quantile(0.5, " in quantiles and "histogram_quantile(0.99, " in quantiles


def test_the_provisioning_points_grafana_at_the_dashboards() -> None:
    provider = yaml.safe_load((GRAFANA / "provisioning" / "dashboards" /
                               "chatbase-bridge.yaml").read_text(encoding="utf-8"))
    [entry] = provider["providers"]
    assert provider["apiVersion"] == 1 and entry["type"] == "file"
    path = entry["options"]["path"]
    docs = OPERATIONS.read_text(encoding="utf-8")
    assert path in docs and "deploy/grafana/dashboards" in docs


def test_the_dashboard_matches_grafanas_schema() -> None:
    checked = run(dashboard_checker())
    assert checked.returncode == 0, checked.stdout + checked.stderr
    assert "match Grafana's schema" in checked.stdout


def _broken(tmp_path: Path, name: str, change: Any) -> Path:
    board = dashboard()
    change(board)
    path = tmp_path / f"{name}.json"
    path.write_text(json.dumps(board, indent=2), encoding="utf-8")
    return path


def _timeseries(board: dict[str, Any]) -> dict[str, Any]:
    return next(p for p in board["panels"] if p["type"] == "timeseries")


def _misspell_grid(board: dict[str, Any]) -> None:
    panel = _timeseries(board)
    panel["gridPoss"] = panel.pop("gridPos")


def _wrong_type(board: dict[str, Any]) -> None:
    _timeseries(board)["type"] = "timeserie"


def _wrong_legend(board: dict[str, Any]) -> None:
    _timeseries(board)["options"]["legend"]["placement"] = "top"


def _misspell_expr(board: dict[str, Any]) -> None:
    target = _timeseries(board)["targets"][0]
    target["expresion"] = target.pop("expr")


def _wrong_variable(board: dict[str, Any]) -> None:
    board["templating"]["list"][0]["type"] = "datasrc"


@pytest.mark.parametrize(("change", "error"), [
    (_misspell_grid, "gridPoss"),
    (_wrong_type, "timeserie"),
    (_wrong_legend, '"top"'),
    (_misspell_expr, "expresion"),
    (_wrong_variable, "datasrc"),
], ids=["misspelled-field", "wrong-panel-type", "wrong-option-value", "misspelled-target-field",
        "wrong-variable-type"])
def test_the_schema_check_rejects_a_broken_dashboard(
    tmp_path: Path, change: Any, error: str
) -> None:
    command = dashboard_checker()
    checked = run([*command, str(_broken(tmp_path, "broken", change))])
    assert checked.returncode != 0
    assert error in checked.stdout + checked.stderr


@pytest.fixture(autouse=True, scope="module")
def _restore_generated() -> Iterator[None]:
    """The broken dashboards' generated files are removed, so a later check starts clean."""
    yield
    shutil.rmtree(CHECKER / "generated", ignore_errors=True)
