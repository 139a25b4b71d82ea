"""The SQLite suites use the API too (tests/api/conftest.py), for what a client sees."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from hookd.clock import ManualClock
from tests.api.conftest import Api, running_api


@pytest.fixture
async def api(
    request: pytest.FixtureRequest, tmp_path: Path, clock: ManualClock
) -> AsyncIterator[Api]:
    async with running_api("sqlite", request, tmp_path, clock) as served:
        yield served
