"""A child process whose output a test reads while it runs."""

from __future__ import annotations

import subprocess
import threading
from collections.abc import Sequence
from pathlib import Path


class Collected:
    """Runs ``command``; a thread collects its stdout and stderr, line by line."""

    def __init__(
        self, command: Sequence[str], env: dict[str, str], cwd: Path | None = None
    ) -> None:
        self.lines: list[str] = []
        self.proc = subprocess.Popen(
            list(command),
            env=env,
            cwd=cwd,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self.lines.append(line)

    @property
    def output(self) -> str:
        return "".join(self.lines)

    def stop(self, timeout: float = 10) -> int:
        """SIGTERM, then the exit status."""
        self.proc.terminate()
        return self.proc.wait(timeout)

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(10)
