"""The sd_notify protocol, spoken directly: one datagram per state change.

systemd passes ``NOTIFY_SOCKET`` (a path, or an abstract name written with a
leading ``@``) to a ``Type=notify`` service; the service sends newline-separated
``KEY=VALUE`` assignments as datagrams.  ``WATCHDOG_USEC`` (and ``WATCHDOG_PID``,
when set, naming the process meant) asks for ``WATCHDOG=1`` at least that often.
The protocol is small enough that a dependency would only add surface.

Outside systemd every call is a no-op, so the daemon never needs to know.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import socket
from collections.abc import Mapping

import structlog

log = structlog.get_logger("hookd.systemd")


def _address(raw: str) -> str | bytes | None:
    if raw.startswith("@"):
        # Abstract namespace: the name starts with a NUL byte and is not a file.
        return b"\0" + raw[1:].encode()
    if raw.startswith("/"):
        return raw
    # vsock (``vsock:CID:PORT``) and anything else unknown: not for us.
    return None


def watchdog_interval(env: Mapping[str, str] | None = None) -> float | None:
    """Seconds between ``WATCHDOG=1`` pings (half the timeout), or ``None``."""
    environ = os.environ if env is None else env
    usec = environ.get("WATCHDOG_USEC", "")
    if not usec.isdigit() or int(usec) == 0:
        return None
    pid = environ.get("WATCHDOG_PID", "")
    if pid and (not pid.isdigit() or int(pid) != os.getpid()):
        return None
    return int(usec) / 1_000_000 / 2


class Notifier:
    """Sends notifications to the service manager, if there is one."""

    def __init__(self, env: Mapping[str, str] | None = None) -> None:
        environ = os.environ if env is None else env
        self._address = _address(environ.get("NOTIFY_SOCKET", ""))
        self._sock: socket.socket | None = None
        self._watchdog_interval = watchdog_interval(environ)
        self._watchdog_task: asyncio.Task[None] | None = None
        if self._address is not None:
            self._sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC)
            # A full receive queue on the manager's side must never stall the
            # event loop; a lost ping is better than a blocked daemon.
            self._sock.setblocking(False)

    @property
    def enabled(self) -> bool:
        return self._sock is not None

    def notify(self, *assignments: str) -> bool:
        """Send ``KEY=VALUE`` lines in one datagram; ``False`` if nobody listens."""
        if self._sock is None or self._address is None:
            return False
        message = "\n".join(assignments).encode()
        try:
            self._sock.sendto(message, self._address)
        except OSError as exc:
            log.warning("systemd.notify_failed", error=str(exc), message=assignments[0])
            return False
        return True

    def ready(self, status: str | None = None) -> bool:
        lines = ["READY=1", f"MAINPID={os.getpid()}"]
        if status:
            lines.append(f"STATUS={status}")
        return self.notify(*lines)

    def stopping(self, status: str | None = None) -> bool:
        lines = ["STOPPING=1"]
        if status:
            lines.append(f"STATUS={status}")
        return self.notify(*lines)

    def start_watchdog(self) -> None:
        """Ping from the event loop itself, so a blocked loop stops the pings."""
        if self._sock is None or self._watchdog_interval is None:
            return
        if self._watchdog_task is None:
            self._watchdog_task = asyncio.create_task(
                self._watchdog(self._watchdog_interval), name="hookd-watchdog"
            )

    async def _watchdog(self, interval: float) -> None:
        while True:
            self.notify("WATCHDOG=1")
            await asyncio.sleep(interval)

    async def close(self) -> None:
        if self._watchdog_task is not None:
            self._watchdog_task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._watchdog_task
            self._watchdog_task = None
        if self._sock is not None:
            self._sock.close()
            self._sock = None
