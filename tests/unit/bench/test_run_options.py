"""The benchmark command's ``--only``: names of scenarios, checked before anything runs."""

from __future__ import annotations

import argparse

import pytest

from tests.bench.run import SCENARIOS, _only


def test_only_takes_a_comma_separated_list_of_scenarios() -> None:
    assert _only("cpu, throughput") == {"cpu", "throughput"}
    assert _only(",".join(SCENARIOS)) == set(SCENARIOS)


@pytest.mark.parametrize("value", ["cpu,nonsense", "", ","])
def test_only_refuses_what_is_not_a_scenario(value: str) -> None:
    with pytest.raises(argparse.ArgumentTypeError):
        _only(value)
