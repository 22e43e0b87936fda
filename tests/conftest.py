"""Suite-wide helpers.

Tests that need Redis or PostgreSQL skip with a reason when the server does not answer on a
developer's machine, but FAIL in CI (``SYNC_TEST_REQUIRE_SERVICES=1``, set by ``.ci/run``), so a
green CI never hides a suite that did not run.
"""

from __future__ import annotations

import os
from typing import NoReturn

import pytest

__all__ = ["REDIS_SERVER", "service_unavailable"]

REDIS_SERVER = os.environ.get("SYNC_TEST_REDIS_SERVER", "redis://127.0.0.1:6379").rstrip("/")
"""The Redis server the suite uses (each suite picks its own database number on it); a developer
running several checkouts at once points each at its own server."""


def service_unavailable(reason: str) -> NoReturn:
    """Skip (locally) or fail (in CI) because a service the test needs does not answer."""
    if os.environ.get("SYNC_TEST_REQUIRE_SERVICES") == "1":
        pytest.fail(f"required service unavailable: {reason}")
    pytest.skip(reason)
