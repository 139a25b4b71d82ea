"""A Debian machine booted with systemd by systemd-nspawn, for the unit as shipped.

The root is a cached debootstrapped directory, booted with ``--volatile=overlay``: the
machine's writes land in memory and the cache stays as made.  Without a private
network the machine shares the host's, so a service in it is reachable on the host's
loopback (and must not take a port the host uses).  Commands run inside through
``nsenter`` into the machine's namespaces (no machined registration here).
"""

from __future__ import annotations

import os
import subprocess
import time
from pathlib import Path

from tests.ship.support import run, spawn, terminate
from tests.support.services import require_binary

PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"


def _ns_pid(pid: int) -> list[int]:
    """``pid`` as each nested PID namespace numbers it, the host's first."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("NSpid:"):
            return [int(n) for n in line.split()[1:]]
    raise AssertionError(f"no NSpid for {pid}")


class Machine:
    def __init__(self, binds: dict[Path, str], log: Path) -> None:
        self.nspawn = require_binary("systemd-nspawn", "systemd-container")
        self.nsenter = require_binary("nsenter", "util-linux")
        self.binds = binds
        self.log = log
        self.proc: subprocess.Popen[bytes] | None = None
        self.init = 0  # the machine's PID 1 (systemd), as the host numbers it

    def boot(self, root: Path) -> Machine:
        self.proc = spawn(
            [
                self.nspawn,
                "--quiet",
                "--register=no",
                "--keep-unit",
                "--boot",
                "--volatile=overlay",
                "--console=pipe",
                f"--machine=hookd-test-{os.getpid()}",
                f"--directory={root}",
                *(f"--bind-ro={src}:{dst}" for src, dst in self.binds.items()),
            ],
            self.log,
        )
        deadline = time.monotonic() + 60
        while not self.init:
            self.init = self._find_init()
            self._alive(deadline)
        while self.run("systemctl", "is-system-running", check=False).stdout.strip() not in (
            "running",
            "degraded",
        ):
            self._alive(deadline)
            time.sleep(0.1)
        return self

    def _alive(self, deadline: float) -> None:
        assert self.proc is not None
        if self.proc.poll() is not None or time.monotonic() > deadline:
            raise AssertionError(f"the machine did not boot:\n{self.log.read_text()[-3000:]}")

    def _find_init(self) -> int:
        """nspawn's descendant that is PID 1 of its own namespace."""
        assert self.proc is not None
        parents = {self.proc.pid}
        for _ in range(3):
            children: set[int] = set()
            for parent in parents:
                tasks = Path(f"/proc/{parent}/task")
                for task in tasks.glob("*/children") if tasks.exists() else ():
                    children.update(int(c) for c in task.read_text().split())
            for child in children:
                if _ns_pid(child)[-1] == 1:
                    return child
            parents = children
        return 0

    def run(
        self, *argv: str, check: bool = True, timeout: float = 120
    ) -> subprocess.CompletedProcess[str]:
        """``argv`` in the machine as root, with a clean environment."""
        enter = [self.nsenter, "-t", str(self.init), "-a"]
        env = ["env", "-i", f"PATH={PATH}", "LANG=C.UTF-8"]
        return run([*enter, *env, *argv], timeout=timeout, check=check)

    def shell(self, command: str, cwd: str = "/") -> subprocess.CompletedProcess[str]:
        return self.run("sh", "-c", f"cd {cwd} && {command}", check=False, timeout=600)

    def in_mounts_of(self, host_pid: int, script: str) -> str:
        """What ``script`` prints, run as root in the mount namespace of a process."""
        enter = [self.nsenter, "-t", str(host_pid), "-m", "--"]
        return run([*enter, "sh", "-c", script], timeout=60, check=True).stdout

    def path(self, inside: str) -> Path:
        """A path in the machine's file system, from the host."""
        return Path(f"/proc/{self.init}/root") / inside.lstrip("/")

    def host_pid(self, pid: int) -> int:
        """The host's number for the machine's process ``pid``."""
        ns = os.readlink(f"/proc/{self.init}/ns/pid")
        for entry in Path("/proc").iterdir():
            if entry.name.isdigit():
                try:
                    if os.readlink(entry / "ns/pid") == ns and _ns_pid(int(entry.name))[-1] == pid:
                        return int(entry.name)
                except (OSError, AssertionError):
                    continue
        raise AssertionError(f"no process {pid} in the machine")

    def poweroff(self) -> None:
        """A clean shutdown (nspawn turns SIGTERM into one), killed if it hangs."""
        if self.proc is not None:
            terminate(self.proc)
