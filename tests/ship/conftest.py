"""The ship tests' receiver on the host, and their findings at the end of the run."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.ops.support import Receiver
from tests.ship.support import NOTES


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    """A receiver on the host's loopback, which the containers share."""
    started = Receiver().start()
    yield started
    started.close()


def pytest_terminal_summary(
    terminalreporter: pytest.TerminalReporter, config: pytest.Config
) -> None:
    notes = config.stash.get(NOTES, [])
    if notes:
        terminalreporter.write_sep("-", "what ships")
        for line in notes:
            terminalreporter.write_line(line)
