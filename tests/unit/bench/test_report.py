"""The benchmark table's arithmetic: a figure over its runs, its range, and when it is met."""

from __future__ import annotations

from typing import Any

from tests.bench.report import all_zero, at_least, at_most, figures, spread, steps_table


def test_median_with_its_range() -> None:
    s = spread([1.9, 1.4, 1.6])
    assert (s.value, s.low, s.high) == (1.6, 1.4, 1.9)
    assert s.text() == "1.6 (median of 3: 1.4–1.9)"
    assert at_most(s, 1.6) and not at_most(s, 1.5)
    assert s.as_json() == {"value": 1.6, "min": 1.4, "max": 1.9, "runs": [1.9, 1.4, 1.6],
                           "pick": "median"}


def test_worst_is_the_largest_or_the_smallest() -> None:
    assert spread([30.0, 49.0, 31.0], "worst-high").value == 49.0
    assert spread([30.0, 49.0, 31.0], "worst-low").value == 30.0
    assert spread([30.0, 49.0, 31.0], "worst-high").text(" KiB") == (
        "49 KiB (worst of 3: 30 KiB–49 KiB)")


def test_a_run_without_a_value() -> None:
    # Left out of a median, and said so...
    s = spread([None, 31_000.0, 29_000.0])
    assert s.value == 30_000.0 and at_least(s, 30_000)
    assert "1 without a value" in s.text()
    # ...but a bound every run must keep is not met when a run measured nothing.
    worst = spread([40.0, None], "worst-high")
    assert worst.value is None and not at_most(worst, 48)
    assert spread([None, None]).text() == "n/a"
    assert not at_least(spread([]), 0)


def test_one_run_is_shown_alone() -> None:
    assert spread([2.5]).text(" ms") == "2.5 ms"


def test_429s_are_met_only_when_every_required_run_counted_zero() -> None:
    assert all_zero([0] * 10, 10)
    assert not all_zero([0] * 9 + [1], 10)
    assert not all_zero([0] * 9, 10)  # too few runs


def _results(**over: Any) -> dict[str, Any]:
    runs = [{"ratio": r, "bridge_us_per_delta": 60.0, "floor_us_per_delta": 44.0,
             "users": 100, "latency": {"p50_ms": 1.0, "p99_ms": 4.0}} for r in (1.4, 1.5, 1.7)]
    results: dict[str, Any] = {
        "cpu": runs,
        "floor_check": [{"ok": True}],
        "slack_429": [{"answers": 50, "rate_limited": 0}] * 10,
        "discord_429": [{"answers": 50, "rate_limited": n} for n in [0] * 9 + [1]],
        "correctness": {"checked": 10, "wrong": 0},
        "memory": [{"answers": 1000, "python_heap_kib_per_answer": h,
                    "rss_kib_per_answer": 50.0} for h in (40.0, 47.0, 49.0)],
        "throughput": [{"per_core": pc, "best": None, "stopped": "loop lag p99 over 50 ms",
                        "source_was_limit": False} for pc in (31_000, None, 35_000)],
    }
    results.update(over)
    return results


def _met(rows: list[dict[str, Any]], start: str) -> bool | None:
    [found] = [r for r in rows if r["figure"].startswith(start)]
    met: bool | None = found["met"]
    return met


def test_the_table_applies_each_target_to_its_pick() -> None:
    rows = figures(_results(), full=True, platform_runs=10)
    assert _met(rows, "bridge CPU") is True  # the median, 1.5
    assert _met(rows, "429s, 50 answers in one Slack") is True
    assert _met(rows, "429s, 50 answers in one Discord") is False  # one run had one
    assert _met(rows, "memory") is False  # the worst run, 49 KiB
    assert _met(rows, "sustained") is True  # the median of the runs with a value
    assert _met(rows, "final texts") is True
    [cpu] = [r for r in rows if r["figure"].startswith("bridge CPU")]
    assert cpu["values"]["runs"] == [1.4, 1.5, 1.7]
    assert "median of 3: 1.4–1.7" in cpu["measured"]


def test_a_failed_floor_check_fails_the_cpu_figure() -> None:
    rows = figures(_results(floor_check=[{"ok": False}]), full=True, platform_runs=10)
    assert _met(rows, "bridge CPU") is False


def test_a_smoke_run_judges_no_timing() -> None:
    rows = figures(_results(), full=False, platform_runs=1)
    assert _met(rows, "bridge CPU") is None and _met(rows, "memory") is None
    # Counts are still judged, against the smoke run's own number of runs.
    assert _met(rows, "final texts") is True


def test_only_the_scenarios_that_ran_have_rows() -> None:
    rows = figures({"correctness": {"checked": 0, "wrong": 0}}, full=True, platform_runs=10)
    assert [r["figure"] for r in rows] == ["final texts equal to the agent's answer"]
    assert rows[0]["met"] is False  # nothing checked is not 100 %


def test_the_steps_table_shows_offered_against_achieved() -> None:
    step = {"streams": 100, "offered_per_s": 9000, "achieved_per_s": 8000,
            "bridge_cores": 0.9, "source_cores": 0.2, "platform_server_cores": 0.05,
            "loop_lag_p99_ms": 61.0, "within_lag": False, "achieved": False, "per_core": None}
    text = steps_table({"throughput": [{"steps": [step]}]})
    assert "| 1 | 100 | 9,000 | 8,000 (short) | 0.90 | 0.20 | 0.05 | 61 ms (over) | — |" in text
    assert steps_table({}) == ""


def test_one_wrong_answer_in_thousands_is_not_shown_as_100_percent() -> None:
    rows = figures({"correctness": {"checked": 13_349, "wrong": 2}}, full=True,
                   platform_runs=10)
    assert rows[0]["measured"] == "99.99 % (2 wrong) of 13,349" and rows[0]["met"] is False
    rows = figures({"correctness": {"checked": 10, "wrong": 0}}, full=True, platform_runs=10)
    assert rows[0]["measured"] == "100 % of 10" and rows[0]["met"] is True
