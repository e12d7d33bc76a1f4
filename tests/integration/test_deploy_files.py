"""The deployment files, checked without Docker: they parse, validate against the Kubernetes
schemas, agree with each other, with the settings and with the command line, and the image
healthcheck really probes /healthz."""

from __future__ import annotations

import asyncio
import json
import re
import shlex
import socket
import sys
import tomllib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
import yaml
from aiohttp.test_utils import TestServer

from bridge.app.cli import build_parser, hostname_ordinal, shard_group_ids
from bridge.app.http import create_app
from bridge.app.metrics import Metrics
from bridge.app.settings import Settings, env_name

ROOT = Path(__file__).resolve().parents[2]
DEPLOY = ROOT / "deploy"
KUBE = DEPLOY / "kubernetes"
# The oldest Kubernetes still commonly run, and the newest the validator knows.
KUBE_VERSIONS = ("1.29.0", kubernetes_validate.latest_version())
ENV_NAMES = {env_name(name) for name in Settings.model_fields}
DEFAULTS = Settings.model_fields


def kube_objects() -> Iterator[tuple[str, dict[str, Any]]]:
    for path in sorted(KUBE.glob("*.yaml")):
        for document in yaml.safe_load_all(path.read_text(encoding="utf-8")):
            if document is not None:
                yield path.name, document


OBJECTS = list(kube_objects())


def of_kind(kind: str) -> list[dict[str, Any]]:
    return [obj for _, obj in OBJECTS if obj["kind"] == kind]


def workloads() -> list[dict[str, Any]]:
    return of_kind("Deployment") + of_kind("StatefulSet")


def bridge_workloads() -> list[dict[str, Any]]:
    return [w for w in workloads()
            if w["metadata"]["labels"].get("app.kubernetes.io/name") == "chatbase-bridge"]


def config_map() -> dict[str, str]:
    [found] = of_kind("ConfigMap")
    data: dict[str, str] = found["data"]
    return data


def shutdown_grace() -> float:
    raw = config_map().get("BRIDGE_SHUTDOWN_GRACE")
    return float(raw) if raw is not None else float(DEFAULTS["shutdown_grace"].default)


def pyproject() -> dict[str, Any]:
    return tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))


# ---------------------------------------------------------------------------- YAML + schemas


def test_every_yaml_file_parses() -> None:
    files = sorted(DEPLOY.rglob("*.yaml")) + sorted(DEPLOY.rglob("*.yml"))
    assert DEPLOY / "docker-compose.yml" in files and len(files) >= 8
    for path in files:
        documents = list(yaml.safe_load_all(path.read_text(encoding="utf-8")))
        assert documents and all(isinstance(d, dict) for d in documents if d is not None), path


@pytest.mark.parametrize("version", KUBE_VERSIONS)
@pytest.mark.parametrize(("source", "obj"), OBJECTS,
                         ids=[f"{name}:{obj['kind']}" for name, obj in OBJECTS])
def test_kubernetes_objects_validate_strictly(
    source: str, obj: dict[str, Any], version: str
) -> None:
    kubernetes_validate.validate(obj, version, strict=True)


def test_the_kubernetes_set_is_complete() -> None:
    kinds = {obj["kind"] for _, obj in OBJECTS}
    assert {"Deployment", "StatefulSet", "Service", "ConfigMap", "Secret",
            "PodDisruptionBudget", "Ingress"} <= kinds
    assert any(name == "discord-shards.yaml" and obj["kind"] == "StatefulSet"
               for name, obj in OBJECTS)
    assert any(name == "redis.yaml" for name, _ in OBJECTS)


# ---------------------------------------------------------------------------- Kubernetes sense


def test_config_and_secret_keys_are_real_settings() -> None:
    [secret] = of_kind("Secret")
    for key in [*config_map(), *secret["stringData"]]:
        assert key in ENV_NAMES, f"{key} is not a setting the bridge reads"
    assert {"CHATBASE_API_KEY", "CHATBASE_AGENT_ID"} <= set(secret["stringData"])
    assert config_map()["REDIS_URL"].startswith("redis://")


def _container(workload: dict[str, Any]) -> dict[str, Any]:
    [container] = workload["spec"]["template"]["spec"]["containers"]
    return container


@pytest.mark.parametrize("workload", bridge_workloads(), ids=lambda w: w["metadata"]["name"])
def test_bridge_pods_probe_limit_and_stop_gracefully(workload: dict[str, Any]) -> None:
    pod = workload["spec"]["template"]["spec"]
    container = _container(workload)
    assert container["livenessProbe"]["httpGet"]["path"] == "/healthz"
    assert container["readinessProbe"]["httpGet"]["path"] == "/readyz"
    for probe in ("livenessProbe", "readinessProbe"):
        assert container[probe]["httpGet"]["port"] == "http"
    [port] = container["ports"]
    assert port["name"] == "http"
    assert port["containerPort"] == int(config_map()["BRIDGE_HTTP_PORT"])
    resources = container["resources"]
    assert {"cpu", "memory"} <= set(resources["requests"]) and "memory" in resources["limits"]
    pause = 0
    pre_stop = container.get("lifecycle", {}).get("preStop", {})
    if pre_stop:
        command = pre_stop["exec"]["command"]
        assert command[0] == "sleep"  # exec form, no shell in the way
        pause = int(command[1])
    assert pod["terminationGracePeriodSeconds"] > pause + shutdown_grace()
    assert pod["securityContext"]["runAsNonRoot"] is True
    refs = {next(iter(ref.values()))["name"] for ref in container["envFrom"]}
    [secret] = of_kind("Secret")
    assert refs == {config_map_name(), secret["metadata"]["name"]}


def config_map_name() -> str:
    [found] = of_kind("ConfigMap")
    name: str = found["metadata"]["name"]
    return name


@pytest.mark.parametrize("workload", bridge_workloads(), ids=lambda w: w["metadata"]["name"])
def test_bridge_pod_arguments_are_a_valid_command_line(workload: dict[str, Any]) -> None:
    args = _container(workload)["args"]
    parsed = build_parser().parse_args(args)
    assert parsed.command == "run" and parsed.platform in ("slack", "discord")


def test_discord_shards_cover_the_shard_count_exactly() -> None:
    [shards] = [w for w in bridge_workloads() if w["kind"] == "StatefulSet"]
    container = _container(shards)
    parsed = build_parser().parse_args(container["args"])
    assert parsed.platform == "discord" and parsed.shard_group_size >= 1
    env = {item["name"]: item["value"] for item in container.get("env", [])}
    count = int(env["BRIDGE_DISCORD_SHARD_COUNT"])
    assert count == shards["spec"]["replicas"] * parsed.shard_group_size
    assert "BRIDGE_DISCORD_SHARD_IDS" not in env and "BRIDGE_DISCORD_SHARD_IDS" not in config_map()
    # Pod hostnames are <statefulset name>-<ordinal>, which the CLI turns into the group.
    covered = []
    for ordinal in range(shards["spec"]["replicas"]):
        group = hostname_ordinal(f"{shards['metadata']['name']}-{ordinal}")
        assert group == ordinal
        covered += shard_group_ids(group=group, size=parsed.shard_group_size, count=count)
    assert covered == list(range(count))
    [headless] = [service for service in of_kind("Service")
                  if service["metadata"]["name"] == shards["spec"]["serviceName"]]
    assert headless["spec"]["clusterIP"] == "None"


def _matches(selector: dict[str, str], labels: dict[str, str]) -> bool:
    return all(labels.get(key) == value for key, value in selector.items())


def test_services_and_budgets_select_a_workload() -> None:
    pods = [w["spec"]["template"]["metadata"]["labels"] for w in workloads()]
    for service in of_kind("Service"):
        assert any(_matches(service["spec"]["selector"], labels) for labels in pods), service
    for budget in of_kind("PodDisruptionBudget"):
        selector = budget["spec"]["selector"]["matchLabels"]
        assert any(_matches(selector, labels) for labels in pods), budget
    for workload in workloads():
        assert _matches(workload["spec"]["selector"]["matchLabels"],
                        workload["spec"]["template"]["metadata"]["labels"])


def test_ingress_routes_the_slack_events_path_to_the_slack_service() -> None:
    from adapters.slack.adapter import EVENTS_PATH

    [ingress] = of_kind("Ingress")
    [rule] = ingress["spec"]["rules"]
    [path] = rule["http"]["paths"]
    assert path["path"] == EVENTS_PATH
    service_name = path["backend"]["service"]["name"]
    [service] = [s for s in of_kind("Service") if s["metadata"]["name"] == service_name]
    [slack] = [w for w in workloads() if w["kind"] == "Deployment"]
    assert _matches(service["spec"]["selector"], slack["spec"]["template"]["metadata"]["labels"])
    assert build_parser().parse_args(_container(slack)["args"]).platform == "slack"


def test_redis_example_persists_its_data() -> None:
    [redis] = [w for w in workloads() if w["metadata"]["name"].endswith("redis")]
    args = _container(redis)["args"]
    assert args[args.index("--appendonly") + 1] == "yes"
    assert redis["spec"]["volumeClaimTemplates"][0]["metadata"]["name"] == "data"
    host = config_map()["REDIS_URL"].split("//", 1)[1].split(":", 1)[0]
    assert host in {s["metadata"]["name"] for s in of_kind("Service")}


# ---------------------------------------------------------------------------- Slack manifests


def slack_manifest(name: str) -> dict[str, Any]:
    loaded: dict[str, Any] = yaml.safe_load((DEPLOY / "slack" / name).read_text())
    return loaded


def _bot(manifest: dict[str, Any]) -> tuple[set[str], set[str]]:
    return (set(manifest["oauth_config"]["scopes"]["bot"]),
            set(manifest["settings"]["event_subscriptions"]["bot_events"]))


def test_the_slack_manifests_are_the_agent_app_and_its_classic_variant() -> None:
    agent, classic = slack_manifest("manifest.yaml"), slack_manifest("manifest.classic.yaml")
    # The agent: Slack's agent view (https://docs.slack.dev/ai/agent-sessions/), whose
    # sessions' stop button and messages tab the bridge handles.
    view = agent["features"]["agent_view"]
    assert 0 < len(view["agent_description"]) <= 300 and len(view["suggested_prompts"]) <= 4
    scopes, events = _bot(agent)
    classic_scopes, classic_events = _bot(classic)
    assert scopes == classic_scopes | {"assistant:write"}
    assert events == classic_events | {"agent_session_stopped", "app_home_opened"}
    # The classic bot: the same app, without any of it.
    assert "agent_view" not in classic["features"] and "assistant_view" not in classic["features"]
    assert classic["settings"]["socket_mode_enabled"] == agent["settings"]["socket_mode_enabled"]
    docs = (ROOT / "docs" / "slack.md").read_text(encoding="utf-8")
    assert "deploy/slack/manifest.yaml" in docs and "deploy/slack/manifest.classic.yaml" in docs


# ---------------------------------------------------------------------------- compose


def compose() -> dict[str, Any]:
    loaded: dict[str, Any] = yaml.safe_load((DEPLOY / "docker-compose.yml").read_text())
    return loaded


def test_compose_runs_the_bridge_on_a_persistent_redis() -> None:
    spec = compose()
    services = spec["services"]
    assert {"bridge", "redis"} <= set(services)
    redis = services["redis"]
    assert redis["image"].startswith("redis:7")
    command = redis["command"]
    assert command[command.index("--appendonly") + 1] == "yes"
    assert "redis-data" in spec["volumes"]
    assert "redis-data:/data" in redis["volumes"]
    assert "redis-cli" in redis["healthcheck"]["test"]

    bridge = services["bridge"]
    assert bridge["env_file"] == ".env"
    assert bridge["depends_on"]["redis"]["condition"] == "service_healthy"
    assert bridge["environment"]["REDIS_URL"].startswith("redis://redis:")
    assert bridge["build"]["dockerfile"] == "deploy/Dockerfile"
    assert (DEPLOY / bridge["build"]["context"] / bridge["build"]["dockerfile"]).is_file()
    grace = re.fullmatch(r"(\d+)s", bridge["stop_grace_period"])
    assert grace and int(grace.group(1)) > DEFAULTS["shutdown_grace"].default
    assert build_parser().parse_args(bridge["command"]).command == "run"
    for key in bridge["environment"]:
        assert key in ENV_NAMES


# ---------------------------------------------------------------------------- Dockerfile


def dockerfile() -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) pairs, continuation lines joined, comments dropped."""
    instructions: list[tuple[str, str]] = []
    pending = ""
    for raw in (DEPLOY / "Dockerfile").read_text(encoding="utf-8").splitlines():
        line = raw.strip()
        if not pending and (not line or line.startswith("#")):
            continue
        if line.endswith("\\"):
            pending += line[:-1] + " "
            continue
        line = pending + line
        pending = ""
        keyword, _, rest = line.partition(" ")
        instructions.append((keyword.upper(), rest.strip()))
    return instructions


def _all(keyword: str) -> list[str]:
    return [rest for kw, rest in dockerfile() if kw == keyword]


def test_dockerfile_is_slim_non_root_and_exec_form() -> None:
    bases = [rest.split()[0] for rest in _all("FROM")]
    assert bases and all(base == "python:3.11-slim" for base in bases)
    # The USER of the final stage: after the last FROM.
    final = dockerfile()[max(i for i, (kw, _) in enumerate(dockerfile()) if kw == "FROM"):]
    users = [rest for kw, rest in final if kw == "USER"]
    assert users and users[-1].split(":")[0] not in ("root", "0")
    entrypoint = json.loads(_all("ENTRYPOINT")[-1])
    scripts = pyproject()["project"]["scripts"]
    assert entrypoint == ["chatbase-bridge"] and "chatbase-bridge" in scripts
    assert scripts["chatbase-bridge"] == "bridge.app.cli:main"
    assert json.loads(_all("CMD")[-1]) == ["run"]
    assert _all("EXPOSE") == [str(DEFAULTS["http_port"].default)]


def test_dockerfile_installs_from_the_lock_without_resolving() -> None:
    installs = [rest for rest in _all("RUN") if "pip install" in rest]
    assert any("-r requirements.lock" in rest and "--no-deps" in rest for rest in installs)
    assert all("--no-deps" in rest for rest in installs)
    for rest in _all("COPY"):
        if "--from=" in rest:
            continue  # copied from a build stage, not from the context
        parts = [p for p in shlex.split(rest) if not p.startswith("--")]
        for source in parts[:-1]:
            assert (ROOT / source).exists(), f"COPY source {source} is missing"


def _healthcheck_command() -> list[str]:
    [healthcheck] = _all("HEALTHCHECK")
    command = json.loads(healthcheck[healthcheck.index("CMD") + len("CMD"):].strip())
    assert isinstance(command, list) and command[0] == "python"
    assert not any("curl" in part or "wget" in part for part in command)
    return [str(part) for part in command]


async def _probe(command: list[str], port: int) -> int:
    proc = await asyncio.create_subprocess_exec(
        sys.executable, *command[1:], env={"BRIDGE_HTTP_PORT": str(port)},
        stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.DEVNULL,
    )
    async with asyncio.timeout(30):
        return await proc.wait()


async def test_healthcheck_probes_healthz_for_real() -> None:
    command = _healthcheck_command()

    async def ready() -> dict[str, bool]:
        return {"redis": False}  # not ready: liveness must not care

    server = TestServer(create_app(metrics=Metrics(), readiness=ready), host="127.0.0.1")
    await server.start_server()
    try:
        assert server.port is not None
        assert await _probe(command, server.port) == 0
    finally:
        await server.close()
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))  # bound, not listening: refuses connections
        assert await _probe(command, sock.getsockname()[1]) != 0


def test_dockerignore_lets_the_copied_sources_through() -> None:
    ignore = (DEPLOY / "Dockerfile.dockerignore").read_text().splitlines()
    for needed in ("!deploy/requirements.lock", "!pyproject.toml", "!README.md",
                   "!bridge/**", "!adapters/**"):
        assert needed in ignore


