"""The storage contract: every Store implementation must pass this suite.

``contract_store`` is parametrized over ``tests.support.backends.BACKENDS``: a
backend joins the contract by adding itself there (a fresh, empty store on the
test's clock, remembering idempotency keys for ``IDEMPOTENCY_WINDOW_MS``).  A
backend that needs a service skips through ``tests.support.services.require``
when it is missing.  The tests talk to the store only through the ``Store``
protocol, with the manual clock driving leases and windows.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from hookd.clock import ManualClock
from hookd.storage import Store
from tests.support.backends import BACKENDS, fresh_store


@pytest.fixture(params=BACKENDS)
async def contract_store(
    request: pytest.FixtureRequest, tmp_path: Path, clock: ManualClock
) -> AsyncIterator[Store]:
    async with fresh_store(request.param, request, tmp_path, clock) as store:
        yield store
