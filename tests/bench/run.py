"""The benchmark's one command:
``python -m tests.bench.run [--smoke] [--only NAME[,NAME...]] [--out PATH]``.

Runs the real relay service (built by ``bridge.app.compose.compose``) on a real Redis (REDIS_URL,
else an embedded one) against the fake Chatbase in a separate process, and the real Slack and
Discord adapters against their fakes; prints the figures next to their targets and writes
them as JSON (default ``bench-report.json``). See docs/performance.md.

Exit status: 1 when the harness breaks or any answer's final text is wrong (differs from the
agent's answer, or is a bare placeholder or keeps the progress mark); timings and 429s are
reported, never fatal.
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import json
import logging
import platform
import sys
import time
import traceback
from collections import Counter
from collections.abc import Awaitable, Callable
from dataclasses import asdict, replace
from pathlib import Path
from typing import Any

from tests.bench import report, scenarios
from tests.bench.load import bridge
from tests.bench.procs import bench_server, redis_url, stream_source
from tests.bench.scenarios import FULL, SMOKE, Context, Profile, Tally, timed

# The scenarios, in the order they run; ``--only`` picks some of them by these names.
SCENARIOS = ("round_trips", "memory", "latency_1", "cpu", "latency_many", "throughput",
             "slack_429", "discord_429", "cadence", "replicas")


class _Collect(logging.Handler):
    """Keeps the bridge's warnings out of the table but in the report."""

    def __init__(self) -> None:
        super().__init__(logging.WARNING)
        self.counts: Counter[str] = Counter()
        self.samples: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        message = record.getMessage()
        self.counts[f"{record.levelname} {record.name}"] += 1
        if len(self.samples) < 15:
            self.samples.append(f"{record.levelname} {record.name}: {message[:160]}")


def _progress(start: float) -> Any:
    def say(what: str) -> None:
        print(f"[{time.perf_counter() - start:6.1f}s] {what}", file=sys.stderr, flush=True)
    return say


async def _rounds(progress: Any, name: str, runs: int, make: Callable[[], Awaitable[Any]],
                  **pids: int | None) -> list[dict[str, Any]]:
    out = []
    for i in range(runs):
        label = name if runs == 1 else f"{name} ({i + 1}/{runs})"
        out.append(await timed(progress, label, make(), **pids))
    return out


async def _run(profile: Profile, progress: Any, use_uvloop: bool,
               only: frozenset[str]) -> dict[str, Any]:
    tally = Tally()
    results: dict[str, Any] = {}
    n = profile.rounds
    with redis_url() as (url, where):
        async with bench_server(uvloop=use_uvloop) as server, bridge(server, url) as built:
            ctx = Context(bridge=built, redis_url=url, profile=profile, tally=tally,
                          progress=progress, uvloop=use_uvloop)
            pid = server.proc.pid
            if "round_trips" in only:
                results["round_trips"] = await _rounds(
                    progress, "round trips per turn", n,
                    lambda: scenarios.round_trips(ctx), server_pid=pid)
            if "memory" in only:
                results["memory"] = await _rounds(
                    progress, "memory per answer in flight", n,
                    lambda: scenarios.memory(ctx), server_pid=pid)
            if "latency_1" in only:
                results["latency_1"] = await _rounds(
                    progress, "first text, one answer", n,
                    lambda: scenarios.latency_single(ctx), server_pid=pid)
            if "cpu" in only:
                results["floor_check"] = await _rounds(
                    progress, "the floor asks and reads what the bridge does", 1,
                    lambda: scenarios.floor_check(ctx), server_pid=pid)
                results["cpu"] = await _rounds(
                    progress, "CPU per delta, bridge vs floor", n,
                    lambda: scenarios.cpu(ctx), server_pid=pid)
            if "latency_many" in only:
                results["latency_many"] = await _rounds(
                    progress, f"first text, {profile.many_users} answers", n,
                    lambda: scenarios.latency_many(ctx), server_pid=pid)
            if "throughput" in only or "replicas" in only:
                async with stream_source(uvloop=use_uvloop) as source:
                    if "throughput" in only:
                        async with bridge(server, url, source=source) as fed:
                            fed_ctx = replace(ctx, bridge=fed)
                            results["throughput"] = await _rounds(
                                progress, "sustained deltas per second", n,
                                lambda: scenarios.throughput(fed_ctx, source),
                                server_pid=pid, source_pid=source.proc.pid)
                    if "replicas" in only:
                        for variant in ("shared", "cpu"):
                            results[f"replicas_{variant}"] = [
                                await timed(progress, f"{count} replica(s), {variant}",
                                            scenarios.replicas(ctx, source, count=count,
                                                               variant=variant),
                                            source_pid=source.proc.pid)
                                for count in profile.replica_counts]
        if "slack_429" in only:
            results["slack_429"] = await _rounds(
                progress, f"{profile.platform_answers} answers in one Slack workspace",
                profile.platform_runs,
                lambda: scenarios.slack_pacing(ctx, scale=0.1, answers=profile.platform_answers))
        if "discord_429" in only:
            results["discord_429"] = await _rounds(
                progress, f"{profile.platform_answers} answers in one Discord channel",
                profile.platform_runs,
                lambda: scenarios.discord_pacing(ctx, answers=profile.platform_answers))
        if "cadence" in only:
            results["cadence"] = []
            for i in range(n):
                progress(f"update cadence, Slack and Discord ({i + 1}/{n})")
                slack, discord = await asyncio.gather(scenarios.slack_cadence(ctx),
                                                      scenarios.discord_cadence(ctx))
                results["cadence"].append({"slack": slack, "discord": discord})
        results["redis"] = where
    results["correctness"] = {"checked": tally.checked, "wrong": tally.wrong,
                              "problems": tally.problems}
    return results


def figures(results: dict[str, Any], profile: Profile) -> list[dict[str, Any]]:
    """The table's rows for this profile."""
    return report.figures(results, full=profile.name == FULL.name,
                          platform_runs=profile.platform_runs)


def _only(value: str) -> frozenset[str]:
    names = frozenset(x.strip() for x in value.split(",") if x.strip())
    unknown = names - set(SCENARIOS)
    if unknown or not names:
        raise argparse.ArgumentTypeError(
            f"unknown scenario(s) {', '.join(sorted(unknown)) or '(none)'}; "
            f"choose from {', '.join(SCENARIOS)}")
    return names


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tests.bench.run", description=__doc__)
    parser.add_argument("--smoke", action="store_true",
                        help="small numbers, seconds: checks the harness and the answers")
    parser.add_argument("--out", type=Path, default=Path("bench-report.json"),
                        help="where to write the JSON report (default: bench-report.json)")
    parser.add_argument("--only", type=_only, default=frozenset(SCENARIOS),
                        metavar="NAME[,NAME...]",
                        help="run only these scenarios (for profiling), of: "
                             + ", ".join(SCENARIOS))
    parser.add_argument("--uvloop", action="store_true",
                        help="run the bridge (and the fake) on uvloop (the 'speed' extra)")
    args = parser.parse_args(argv)
    profile = SMOKE if args.smoke else FULL
    collect = _Collect()
    root = logging.getLogger()
    root.addHandler(collect)
    root.setLevel(logging.WARNING)
    started = time.perf_counter()
    progress = _progress(started)
    out: dict[str, Any] = {
        "command": " ".join(["python -m tests.bench.run", *(argv or sys.argv[1:])]),
        "profile": asdict(profile),
        "started": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "python": platform.python_version(),
        "event_loop": "uvloop" if args.uvloop else "asyncio",
        "scenarios": [x for x in SCENARIOS if x in args.only],
        "machine_before": scenarios.machine(),
    }
    if args.uvloop:
        import uvloop

        asyncio.set_event_loop_policy(uvloop.EventLoopPolicy())
    status = 0
    try:
        results = asyncio.run(_run(profile, progress, args.uvloop, args.only))
    except Exception:
        traceback.print_exc()
        out["error"] = traceback.format_exc()
        status = 1
    else:
        rows = figures(results, profile)
        steps = report.steps_table(results)
        out.update(results=results, figures=rows, table=report.table(rows),
                   throughput_steps=steps)
        print(report.table(rows))
        if steps:
            print("\nThroughput steps (offered: due by the source's clock; achieved: received "
                  "by the service):\n" + steps)
        wrong = results["correctness"]["wrong"]
        if wrong:
            status = 1
            print(f"\n{wrong} answer(s) wrong:", *results["correctness"]["problems"],
                  sep="\n  ")
    out["seconds"] = round(time.perf_counter() - started, 1)
    out["machine_after"] = scenarios.machine()
    out["log"] = {"counts": dict(collect.counts), "samples": collect.samples}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(out, indent=2, ensure_ascii=False) + "\n")
    print(f"\nreport: {args.out} ({out['seconds']} s)", file=sys.stderr)
    return status


if __name__ == "__main__":
    sys.exit(main())
