"""Time as an injected dependency.

Every component that needs "now" takes a :class:`Clock`, so retry, lease and
rate-limit behaviour can be tested by moving a :class:`ManualClock` instead of
sleeping.  Times are integer milliseconds since the Unix epoch throughout the
code base: they compare and index cheaply in SQLite and never carry a timezone.
"""

from __future__ import annotations

import asyncio
import time
from typing import Protocol


class Clock(Protocol):
    def now_ms(self) -> int:
        """Wall-clock time in milliseconds since the Unix epoch."""
        ...

    async def sleep(self, seconds: float) -> None:
        """Wait ``seconds`` of this clock's time."""
        ...


class SystemClock:
    def now_ms(self) -> int:
        return time.time_ns() // 1_000_000

    async def sleep(self, seconds: float) -> None:
        await asyncio.sleep(seconds)


class ManualClock:
    """A clock that only moves when told to.

    ``sleep`` yields to the event loop but does not wait for real time: a test
    advances the clock explicitly and the code under test observes the jump.
    """

    def __init__(self, start_ms: int = 1_717_236_000_000) -> None:
        self._now = start_ms

    def now_ms(self) -> int:
        return self._now

    def advance(self, seconds: float) -> None:
        self._now += round(seconds * 1000)

    def set(self, now_ms: int) -> None:
        self._now = now_ms

    async def sleep(self, seconds: float) -> None:
        await asyncio.sleep(0)
