"""A short soak inside pytest (marked ``soak``: not part of the default run).

    python -m pytest -m soak tests/soak

The full run is ``python -m tests.soak.run --turns 10000 --conversations 200``."""

from __future__ import annotations

import pytest

from tests.soak.run import Config, soak


@pytest.mark.soak
async def test_a_short_soak_keeps_every_promise() -> None:
    report = await soak(Config(turns=600, conversations=40, seed=7))
    tally = report["tally"]
    assert tally["turns"] == 600
    assert tally["hung"] == tally["unanswered"] == tally["placeholders"] == 0
    assert tally["mismatched"] == tally["doubled_unexplained"] == 0
    assert report["crashed_handlers"] == report["secret_leaks_in_logs"] == 0
    assert report["ok"], {k: report[k] for k in ("leaks", "tally", "examples")}
