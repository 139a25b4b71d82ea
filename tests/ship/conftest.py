"""The ship tests' findings at the end of the run (the image's size)."""

from __future__ import annotations

import pytest

from tests.ship.support import NOTES


def pytest_terminal_summary(
    terminalreporter: pytest.TerminalReporter, config: pytest.Config
) -> None:
    notes = config.stash.get(NOTES, [])
    if notes:
        terminalreporter.write_sep("-", "what ships")
        for line in notes:
            terminalreporter.write_line(line)
