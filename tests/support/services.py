"""Tests that need an outside tool or service, and CI's rule that none of them is skipped.

A test that needs something this machine may lack (promtool, dockerd, a PostgreSQL
server, Chromium) calls :func:`require` or :func:`require_binary`: on a developer's
laptop without it the test is skipped with a reason.  ``.ci/run`` sets
``HOOKD_CI=1``, and then any such skip fails the run (see ``tests/conftest.py``),
so a missing install step shows in CI rather than as a silently thinner suite.
"""

from __future__ import annotations

import os
import shutil

import pytest

# Every skip for a missing service starts with this; the CI check looks for it.
SERVICE_SKIP_PREFIX = "needs "


def in_ci() -> bool:
    return os.environ.get("HOOKD_CI") == "1"


def require(available: bool, what: str, hint: str) -> None:
    """Skip the calling test unless ``available``; ``what`` names the missing thing."""
    if not available:
        pytest.skip(f"{SERVICE_SKIP_PREFIX}{what}: {hint}")


def require_binary(name: str, package: str | None = None) -> str:
    """The path of ``name`` on PATH, or a skip naming the Debian package that brings it."""
    found = shutil.which(name)
    require(
        found is not None,
        name,
        f"not installed; .ci/run installs Debian's {package or name}",
    )
    assert found is not None
    return found


def is_service_skip(reason: str) -> bool:
    return reason.startswith(SERVICE_SKIP_PREFIX)
