"""A PostgreSQL server of a test's own, to stop and start under load.

The machine's shared server (127.0.0.1:5432) serves every other test and
engineer, so it is never stopped: a test that restarts PostgreSQL makes its
own cluster with Debian's binaries (``initdb``, ``pg_ctl``), run as the
``postgres`` user when the test runs as root (the server refuses root), on a
free loopback port with trust authentication.  ``fsync`` is off: the server
never outlives the test, and stops are clean (``pg_ctl stop -m fast``), which
writes every commit out, so no acknowledged write depends on it.  A frozen
server (SIGSTOP) stands for one that stops answering without closing its
connections.
"""

from __future__ import annotations

import contextlib
import os
import pwd
import shutil
import signal
import socket
import subprocess
import tempfile
from pathlib import Path

from tests.support.services import require

BIN = Path(os.environ.get("HOOKD_TEST_PG_BIN", "/usr/lib/postgresql/15/bin"))


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class OwnServer:
    def __init__(self) -> None:
        require((BIN / "pg_ctl").exists(), "PostgreSQL's server binaries", f"none in {BIN}")
        as_root = os.geteuid() == 0
        if as_root:
            try:
                self._user: pwd.struct_passwd | None = pwd.getpwnam("postgres")
            except KeyError:
                self._user = None
            require(self._user is not None, "a postgres OS user", "to run a server as root")
        else:
            self._user = None
        # Outside pytest's tmp_path: its folders are private to the test's user.
        self.root = Path(tempfile.mkdtemp(prefix="hookd-pg-"))
        self.data = self.root / "data"
        self.port = _free_port()
        if self._user is not None:
            os.chown(self.root, self._user.pw_uid, self._user.pw_gid)
        self._run(BIN / "initdb", "-D", str(self.data), "-A", "trust", "-U", "postgres", "-N")

    @property
    def url(self) -> str:
        return f"postgresql://postgres@127.0.0.1:{self.port}/postgres"

    def _run(self, *command: object, timeout: float = 60) -> None:
        args = [str(c) for c in command]
        if self._user is not None:
            args = ["runuser", "-u", "postgres", "--", *args]
        done = subprocess.run(
            args, capture_output=True, text=True, timeout=timeout, stdin=subprocess.DEVNULL
        )
        if done.returncode != 0:
            raise RuntimeError(f"{' '.join(args)}: {done.stdout}{done.stderr}")

    def start(self) -> None:
        options = (
            f"-p {self.port} -k {self.root} -c listen_addresses=127.0.0.1"
            " -c fsync=off -c max_connections=60"
        )
        self._run(
            BIN / "pg_ctl", "-D", self.data, "-l", self.root / "log", "-o", options, "-w", "start"
        )

    def stop(self) -> None:
        # fast: the server ends every session at once, as a restart does.
        self._run(BIN / "pg_ctl", "-D", self.data, "-m", "fast", "-w", "stop")

    def _processes(self) -> list[int]:
        """The postmaster and its children (the sessions, the background workers)."""
        postmaster = int((self.data / "postmaster.pid").read_text().split()[0])
        children = subprocess.run(
            ["pgrep", "-P", str(postmaster)], capture_output=True, text=True, check=False
        ).stdout.split()
        return [postmaster, *map(int, children)]

    def freeze(self) -> None:
        """Stop answering without closing a connection, as a server cut off by the network.

        The postmaster first, so it forks no session after its children were
        listed: a session forked in between would go on answering.
        """
        postmaster, *_ = self._processes()
        os.kill(postmaster, signal.SIGSTOP)
        for pid in self._processes()[1:]:
            os.kill(pid, signal.SIGSTOP)

    def thaw(self) -> None:
        for pid in self._processes():
            os.kill(pid, signal.SIGCONT)

    def remove(self) -> None:
        """Stop (if running) and delete the cluster."""
        if (self.data / "postmaster.pid").exists():
            with contextlib.suppress(OSError, ValueError):
                self.thaw()
            with contextlib.suppress(RuntimeError):
                self._run(BIN / "pg_ctl", "-D", self.data, "-m", "immediate", "-w", "stop")
        shutil.rmtree(self.root, ignore_errors=True)
