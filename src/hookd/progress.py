"""Progress of long CLI work: a live line on a terminal, silence elsewhere.

Long operations (bulk replay, a retention purge) go in chunks; after each the
command calls :meth:`Progress.advance`.  On a terminal (stderr is a TTY) one
line on stderr is redrawn at most every ``interval`` seconds with the count,
the total when known, and the rate; in a pipe, a cron job or a log, nothing is
written until the end.  :meth:`Progress.finish` clears the line and prints the
one-line summary on stdout, wherever stdout goes.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable
from typing import TextIO


class Progress:
    def __init__(
        self,
        label: str,
        *,
        total: int | None = None,
        unit: str = "",
        stream: TextIO | None = None,
        out: TextIO | None = None,
        clock: Callable[[], float] = time.monotonic,
        interval: float = 0.1,
    ) -> None:
        self.label = label
        self.total = total
        self.unit = unit
        self.stream = stream if stream is not None else sys.stderr
        self.out = out if out is not None else sys.stdout
        self.clock = clock
        self.interval = interval
        self.done = 0
        self.started = clock()
        self._drawn_at: float | None = None
        self.live = _is_terminal(self.stream)

    @property
    def elapsed(self) -> float:
        return self.clock() - self.started

    def line(self) -> str:
        """The progress line as it stands (what a terminal shows)."""
        count = f"{self.done:,}"
        if self.total is not None:
            count += f"/{self.total:,}"
            if self.total:
                count += f" ({100 * self.done / self.total:.0f} %)"
        elapsed = self.elapsed
        rate = f", {self.done / elapsed:,.0f}/s" if elapsed > 0 else ""
        unit = f" {self.unit}" if self.unit else ""
        return f"{self.label}: {count}{unit}{rate}, {elapsed:.1f} s"

    def advance(self, n: int) -> None:
        self.done += n
        if not self.live:
            return
        now = self.clock()
        if self._drawn_at is None or now - self._drawn_at >= self.interval:
            self._drawn_at = now
            # \r and clear-to-end-of-line: one line, redrawn in place.
            self.stream.write(f"\r\x1b[K{self.line()}")
            self.stream.flush()

    def finish(self, summary: str) -> None:
        if self.live and self._drawn_at is not None:
            self.stream.write("\r\x1b[K")
            self.stream.flush()
        print(summary, file=self.out, flush=True)


def _is_terminal(stream: TextIO) -> bool:
    isatty = getattr(stream, "isatty", None)
    try:
        return bool(isatty and isatty())
    except ValueError:  # a closed stream
        return False
