"""A Docker engine of the tests' own, started for a test module and stopped after it.

No bridge and no iptables rules (the machine's network is left alone), so builds and
containers use ``--network host``.  Its data root lives in the cache, so the base
image (made from a debootstrapped root: no registry is reachable) and the build's
unchanged layers are kept between runs; one engine at a time uses it (a lock), and
what a run leaves there (containers, volumes, superseded images) is removed.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import shutil
import signal
import subprocess
import tempfile
import time
from pathlib import Path
from typing import IO

from tests.ship.support import CACHE, ROOT, Rootfs, cached_rootfs, run, spawn, terminate
from tests.support.services import require, require_binary

# The Debian docker.io client builds with BuildKit when DOCKER_BUILDKIT=1; a newer
# client does so only through its buildx plugin.
DEBIAN_CLIENT = "/usr/bin/docker"
DATA_ROOT = CACHE / "dockerd"
PIDFILE = CACHE / "dockerd.pid"


def _can_build_with_buildkit(client: str) -> bool:
    def ask(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [client, *args], capture_output=True, text=True, timeout=30, check=False
        )

    if ask("buildx", "version").returncode == 0:
        return True
    major = ask("version", "--format", "{{.Client.Version}}").stdout.strip().split(".")[0]
    return major.isdigit() and int(major) < 23


def docker_client() -> str:
    """A docker client that can build the Dockerfile (``RUN --mount`` needs BuildKit)."""
    candidates = [c for c in (shutil.which("docker"), DEBIAN_CLIENT) if c and os.path.exists(c)]
    for client in dict.fromkeys(candidates):
        if _can_build_with_buildkit(client):
            return client
    require(False, "a docker client with BuildKit", "Debian's docker.io has one")
    raise AssertionError("unreachable")


def _live_engine(pidfile: Path) -> int | None:
    """The pid of a dockerd on DATA_ROOT that a killed test run left running."""
    with contextlib.suppress(OSError, ValueError):
        pid = int(pidfile.read_text())
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
        if cmdline[0].endswith(b"dockerd") and str(DATA_ROOT).encode() in cmdline:
            return pid
    return None


def _unmount_under(*directories: Path) -> None:
    """Mounts a killed engine left behind keep files busy; take them away."""
    prefixes = tuple(str(d) + "/" for d in directories)
    mounts = [
        line.split()[4]
        for line in Path("/proc/self/mountinfo").read_text().splitlines()
        if line.split()[4].startswith(prefixes)
    ]
    for mount in sorted(mounts, key=len, reverse=True):
        subprocess.run(["umount", "-l", mount], capture_output=True, check=False)


class Engine:
    """``dockerd`` on a private socket and exec root, with the cached data root."""

    def __init__(self) -> None:
        require_binary("dockerd", "docker.io")
        self.client = docker_client()
        self.dir = Path(tempfile.mkdtemp(prefix="hookd-dockerd-"))
        self.socket = self.dir / "docker.sock"
        self.log = self.dir / "dockerd.log"
        self.env = {
            **{k: v for k, v in os.environ.items() if not k.startswith(("DOCKER_", "HOOKD_"))},
            "DOCKER_HOST": f"unix://{self.socket}",
            "DOCKER_BUILDKIT": "1",
        }
        # `docker` on PATH is this client, for the README's commands as written.
        bin_dir = self.dir / "bin"
        bin_dir.mkdir()
        (bin_dir / "docker").symlink_to(self.client)
        self.env["PATH"] = f"{bin_dir}:{self.env.get('PATH', '/usr/bin:/bin')}"
        self.proc: subprocess.Popen[bytes] | None = None
        self._lock: IO[str] | None = None

    def start(self) -> Engine:
        CACHE.mkdir(parents=True, exist_ok=True)
        self._lock = (CACHE / "dockerd.lock").open("w")
        fcntl.flock(self._lock, fcntl.LOCK_EX)
        orphan = _live_engine(PIDFILE)
        if orphan is not None:
            # Its own process group: the engine and the containerd it started.
            os.killpg(orphan, signal.SIGKILL)
            deadline = time.monotonic() + 30
            while Path(f"/proc/{orphan}").exists() and time.monotonic() < deadline:
                time.sleep(0.1)
        _unmount_under(DATA_ROOT)
        PIDFILE.unlink(missing_ok=True)
        self.proc = spawn(
            [
                "dockerd",
                "--storage-driver=overlay2",
                "--iptables=false",
                "--ip6tables=false",
                "--bridge=none",
                f"--data-root={DATA_ROOT}",
                f"--exec-root={self.dir / 'exec'}",
                f"--pidfile={PIDFILE}",
                f"--host=unix://{self.socket}",
            ],
            self.log,
        )
        deadline = time.monotonic() + 60
        while self.docker("version", check=False).returncode != 0:
            if self.proc.poll() is not None or time.monotonic() > deadline:
                raise AssertionError(f"dockerd did not start:\n{self.log.read_text()[-3000:]}")
            time.sleep(0.2)
        self._remove_leftovers()
        return self

    def docker(
        self, *args: str, check: bool = True, timeout: float = 120
    ) -> subprocess.CompletedProcess[str]:
        return run([self.client, *args], env=self.env, timeout=timeout, check=check)

    def shell(self, command: str) -> subprocess.CompletedProcess[str]:
        """A README command line, run by a shell in the repository against this engine."""
        return run(["sh", "-c", command], env=self.env, cwd=ROOT, timeout=600)

    def export(self, image: str) -> bytes:
        """The file system of a container of ``image``, as a tar archive."""
        created = self.docker("create", image).stdout.strip()
        try:
            return subprocess.run(
                [self.client, "export", created],
                env=self.env,
                capture_output=True,
                timeout=300,
                check=True,
            ).stdout
        finally:
            self.docker("rm", created)

    def _remove_leftovers(self) -> None:
        """No container or volume outlives a run; nor do images a newer build replaced."""
        containers = self.docker("ps", "-aq", check=False).stdout.split()
        if containers:
            self.docker("rm", "-f", *containers, check=False, timeout=60)
        volumes = self.docker("volume", "ls", "-q", check=False).stdout.split()
        if volumes:
            self.docker("volume", "rm", "-f", *volumes, check=False, timeout=60)
        self.docker("image", "prune", "-f", check=False, timeout=60)
        self.docker("builder", "prune", "-f", "--keep-storage=1gb", check=False, timeout=120)

    def stop(self) -> None:
        """Containers and volumes gone, the engine stopped, its run files removed."""
        if self.proc is not None and self.proc.poll() is None:
            self._remove_leftovers()
            terminate(self.proc)
        _unmount_under(self.dir, DATA_ROOT)
        shutil.rmtree(self.dir, ignore_errors=True)
        if self._lock is not None:
            self._lock.close()  # and with it the lock

    def base_image(self, recipe: Rootfs) -> str:
        """An image of ``recipe``'s root: kept by the engine, else imported now."""
        root = cached_rootfs(recipe)
        tag = f"hookd-test-base:{root.name.rsplit('-', 1)[1]}"
        if self.docker("image", "inspect", tag, check=False).returncode == 0:
            return tag
        tar = subprocess.Popen(
            ["tar", "-C", str(root), "--numeric-owner", "-c", "."], stdout=subprocess.PIPE
        )
        assert tar.stdout is not None
        with tar.stdout:
            imported = subprocess.run(
                [self.client, "import", "-", tag],
                env=self.env,
                stdin=tar.stdout,
                capture_output=True,
                text=True,
                timeout=600,
                check=False,
            )
        assert tar.wait(60) == 0 and imported.returncode == 0, imported.stderr
        return tag
