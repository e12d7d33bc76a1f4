"""Start-up objects leave the garbage collector's generations once the bridge is running."""

from __future__ import annotations

import gc

from bridge.app.runtime import Runtime


def test_startup_objects_are_frozen_out_of_collections() -> None:
    survivor = [object()]  # a container alive across the call, like a start-up object
    try:
        Runtime.freeze_startup_objects()
        assert gc.get_freeze_count() > 0
        # Frozen objects are in no generation: full collections no longer walk them.
        assert not any(found is survivor for found in gc.get_objects())
    finally:
        gc.unfreeze()
