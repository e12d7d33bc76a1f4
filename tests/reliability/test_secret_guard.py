"""The suite-wide guard in ``tests/conftest.py`` really catches a secret in a log record."""

from __future__ import annotations

import logging

from tests import conftest
from tests.fakes import secrets


def test_a_registered_secret_in_a_record_is_caught_and_others_are_not() -> None:
    secrets.register("guard-probe-secret-value")
    factory = logging.getLogRecordFactory()
    assert getattr(factory, "_checks_secrets", False)
    try:
        factory("probe", logging.DEBUG, __file__, 1, "token %s sent", ("guard-probe-secret-value",),
                None)
        factory("probe", logging.INFO, __file__, 2, "nothing to see", (), None)
        try:
            raise ValueError("failed with guard-probe-secret-value inside")
        except ValueError:
            import sys

            factory("probe", logging.ERROR, __file__, 3, "boom", (), sys.exc_info())
        assert len(conftest._leaks) == 2
        assert all("'guar'" in leak and "guard-probe-secret-value" in leak
                   for leak in conftest._leaks)
    finally:
        conftest._leaks.clear()
        secrets._known.discard("guard-probe-secret-value")
