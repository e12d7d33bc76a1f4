"""Once the bridge runs, start-up objects leave the garbage collector's generations and
collections come less often."""

from __future__ import annotations

import gc

from bridge.app.runtime import GC_THRESHOLDS, Runtime


def test_startup_objects_are_frozen_and_collections_rarer() -> None:
    survivor = [object()]  # a container alive across the call, like a start-up object
    thresholds = gc.get_threshold()
    try:
        Runtime.prepare_heap()
        assert gc.get_freeze_count() > 0
        # Frozen objects are in no generation: full collections no longer walk them.
        assert not any(found is survivor for found in gc.get_objects())
        assert gc.get_threshold() == GC_THRESHOLDS
        # A few thousand new containers no longer trigger a young collection.
        before = gc.get_stats()[0]["collections"]
        kept = [[] for _ in range(5_000)]
        assert gc.get_stats()[0]["collections"] == before and len(kept) == 5_000
    finally:
        gc.unfreeze()
        gc.set_threshold(*thresholds)
