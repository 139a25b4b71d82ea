"""What the ship tests share: the README's commands, cached Debian roots, the host's
package sources, and the checks for whether this machine can run them at all.

Root filesystems are made with debootstrap from the Debian mirror apt uses and kept
under :data:`CACHE`, named by a hash of their recipe: a changed recipe makes a new
one, an unchanged one is reused by every later run (and every worktree).
"""

from __future__ import annotations

import configparser
import contextlib
import fcntl
import hashlib
import json
import os
import re
import shlex
import shutil
import signal
import socket
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import pytest

from tests.ops.support import http
from tests.support.services import require, require_binary

ROOT = Path(__file__).resolve().parents[2]
README = ROOT / "README.md"
CACHE = Path("/var/cache/hookd-tests")
SUITE = "bookworm"
# Raised when what is done to a root after debootstrap changes, so caches are remade.
PREPARATION = 2


# -- the README's commands -----------------------------------------------------------


def readme_commands(heading: str) -> list[str]:
    """The shell commands of the first ```sh block under ``heading`` (exact line),
    continuation lines joined, comment lines dropped."""
    lines = README.read_text().splitlines()
    assert heading in lines, f"README.md has no {heading!r} heading"
    body: list[str] | None = None
    for line in lines[lines.index(heading) + 1 :]:
        if body is None:
            assert not line.startswith("#"), f"no ```sh block under {heading!r}"
            if line.strip() == "```sh":
                body = []
        elif line.strip() == "```":
            break
        else:
            body.append(line)
    assert body, f"no ```sh block under {heading!r}"
    commands: list[str] = []
    pending = ""
    for raw in body:
        line = raw.strip()
        if line.endswith("\\"):
            pending += line[:-1].strip() + " "
            continue
        line = pending + line
        pending = ""
        if line and not line.startswith("#"):
            commands.append(line)
    return commands


def substitute(command: str, old: str, new: str) -> str:
    """``command`` with ``old`` replaced once; failing loudly if the README moved on."""
    assert command.count(old) == 1, f"expected {old!r} once in the README command {command!r}"
    return command.replace(old, new)


# What a run found worth saying (the image's size), shown at the end of the run.
NOTES = pytest.StashKey[list[str]]()


def note(config: pytest.Config, text: str) -> None:
    config.stash.setdefault(NOTES, []).append(text)


# -- processes ---------------------------------------------------------------------------


def run(
    argv: list[str],
    *,
    timeout: float,
    env: dict[str, str] | None = None,
    cwd: Path | None = None,
    check: bool = False,
) -> subprocess.CompletedProcess[str]:
    """``argv`` with no input and its output captured as text; ``check`` asserts success."""
    result = subprocess.run(
        argv,
        env=env,
        cwd=cwd,
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )
    if check:
        assert result.returncode == 0, f"{shlex.join(argv)}:\n{result.stdout}\n{result.stderr}"
    return result


def spawn(argv: list[str], log: Path) -> subprocess.Popen[bytes]:
    """A long-running process in a process group of its own, its output in ``log``."""
    with log.open("wb") as out:
        return subprocess.Popen(
            argv,
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )


def terminate(proc: subprocess.Popen[bytes], timeout: float = 30) -> None:
    """SIGTERM, and the whole process group killed if it is not gone within ``timeout``."""
    if proc.poll() is not None:
        return
    proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(timeout)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(10)


# -- this machine ----------------------------------------------------------------------


def require_root() -> None:
    require(os.geteuid() == 0, "root", "runs containers and debootstrap; CI runs as root")


def require_filesystem(name: str, why: str) -> None:
    known = Path("/proc/filesystems").read_text().split()
    modprobe = shutil.which("modprobe")
    if name not in known and modprobe:
        # Not built in: a module may still load on first mount.
        subprocess.run([modprobe, name], capture_output=True, check=False)
        known = Path("/proc/filesystems").read_text().split()
    require(name in known, f"kernel support for {name}", why)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def apt_mirror(suite: str = SUITE) -> str:
    """The Debian mirror apt takes ``suite`` from (deb822 or one-line sources)."""
    sources = Path("/etc/apt")
    for path in sorted((sources / "sources.list.d").glob("*.sources")):
        for paragraph in re.split(r"\n\s*\n", path.read_text()):
            fields: dict[str, str] = {}
            for line in paragraph.splitlines():
                if line and not line.startswith(("#", " ")):
                    key, _, value = line.partition(":")
                    fields[key.strip().lower()] = value.strip()
            if (
                "deb" in fields.get("types", "").split()
                and suite in fields.get("suites", "").split()
                and fields.get("enabled", "yes").lower() != "no"
            ):
                return fields["uris"].split()[0]
    for path in [sources / "sources.list", *sorted((sources / "sources.list.d").glob("*.list"))]:
        if not path.exists():
            continue
        for line in path.read_text().splitlines():
            words = re.sub(r"\[[^]]*\]", " ", line.split("#")[0]).split()
            if len(words) >= 3 and words[0] == "deb" and words[2] == suite:
                return words[1]
    raise AssertionError(f"apt has no source for {suite}")


def host_pip_setting(name: str) -> str | None:
    """A pip option as this machine's pip is configured (environment first)."""
    from_env = os.environ.get("PIP_" + name.upper().replace("-", "_"))
    if from_env:
        return from_env
    listed = run([sys.executable, "-m", "pip", "config", "list"], timeout=60).stdout
    found = None
    for line in listed.splitlines():
        key, _, value = line.partition("=")
        if key.rpartition(".")[2] == name:
            found = value.strip().strip("'\"")
    return found


def build_pip_config(directory: Path) -> list[str]:
    """``--secret`` options handing the host's package-index trust to an image build.

    The Dockerfile's build stage reads a pip configuration file and a CA bundle as
    BuildKit secrets, which never become part of an image layer.
    """
    options: list[str] = []
    parser = configparser.ConfigParser()
    parser["global"] = {}
    cert = host_pip_setting("cert")
    if cert:
        parser["global"]["cert"] = "/run/secrets/pip-ca"
        options.append(f"--secret id=pip-ca,src={cert}")
    index = host_pip_setting("index-url")
    if index and not index.startswith("file:"):
        parser["global"]["index-url"] = index
    conf = directory / "pip.conf"
    with conf.open("w") as out:
        parser.write(out)
    options.append(f"--secret id=pip.conf,src={conf}")
    return options


def build_wheels(directory: Path) -> Path:
    """hookd's wheel and its dependencies', built by the host's pip as configured."""
    directory.mkdir(parents=True, exist_ok=True)
    wheel = [sys.executable, "-m", "pip", "wheel", "-q", "--wheel-dir", str(directory)]
    run([*wheel, str(ROOT)], timeout=300, check=True)
    assert list(directory.glob("hookd-*.whl"))
    return directory


# -- hookd, from outside -----------------------------------------------------------------


@dataclass
class Api:
    """hookd's HTTP API on ``base_url`` with an API key (a platform key names a workspace)."""

    base_url: str
    key: str
    workspace: str | None = None

    def call(self, method: str, path: str, body: Any = None) -> tuple[int, Any]:
        headers = {"X-Api-Key": self.key}
        if self.workspace:
            headers["X-Workspace-Id"] = self.workspace
        status, raw = http(method, self.base_url + path, body, headers=headers)
        return status, json.loads(raw) if raw else None

    def ready(self) -> bool:
        try:
            return http("GET", self.base_url + "/readyz", timeout=2)[0] == 200
        except OSError:
            return False

    def webhook_to(self, url: str, event_type: str) -> dict[str, Any]:
        status, created = self.call(
            "POST", "/v1/webhooks", {"name": event_type, "url": url, "events": [event_type]}
        )
        assert status == 201, created
        found: dict[str, Any] = created["data"]
        return found

    def send(self, event_type: str, data: Any = None) -> str:
        """The id of the one delivery of a new event of ``event_type``."""
        status, sent = self.call("POST", "/v1/events", {"type": event_type, "data": data or {}})
        assert status == 202, sent
        [delivery_id] = sent["data"]["deliveryIds"]
        assert isinstance(delivery_id, str)
        return delivery_id

    def delivery(self, delivery_id: str) -> dict[str, Any]:
        status, got = self.call("GET", f"/v1/deliveries/{delivery_id}")
        assert status == 200, got
        found: dict[str, Any] = got["data"]
        return found


def assert_drained(records: list[dict[str, Any]], delivery_id: str) -> None:
    """The last stop of hookd finished ``delivery_id``'s attempt before it exited."""
    events = [r.get("event") for r in records]
    stopping = len(events) - 1 - events[::-1].index("hookd.stopping")
    attempts = [
        i
        for i, r in enumerate(records)
        if r.get("event") == "delivery.attempt" and r.get("delivery_id") == delivery_id
    ]
    assert len(attempts) == 1, events
    assert stopping < attempts[0] < events.index("hookd.stopped", stopping), events
    attempt = records[attempts[0]]
    assert (attempt["status_code"], attempt["status"]) == (200, "delivered"), attempt


# -- cached root filesystems -------------------------------------------------------------


@dataclass(frozen=True)
class Rootfs:
    """A debootstrapped Debian root: ``purpose`` names it, the rest is its recipe."""

    purpose: str
    packages: tuple[str, ...]
    suite: str = SUITE
    variant: str = "minbase"

    def key(self, mirror: str) -> str:
        recipe = {**asdict(self), "mirror": mirror, "preparation": PREPARATION}
        return hashlib.sha256(json.dumps(recipe, sort_keys=True).encode()).hexdigest()[:16]


@contextlib.contextmanager
def cache_lock(name: str) -> Iterator[None]:
    """One maker per cache entry, across concurrent test runs on this machine."""
    CACHE.mkdir(parents=True, exist_ok=True)
    with (CACHE / f"{name}.lock").open("w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)


def cached_rootfs(recipe: Rootfs) -> Path:
    """The root directory for ``recipe``, made now if no earlier run made it."""
    debootstrap = require_binary("debootstrap")
    mirror = apt_mirror(recipe.suite)
    name = f"rootfs-{recipe.purpose}-{recipe.key(mirror)}"
    done = CACHE / name
    with cache_lock(name):
        if done.is_dir():
            return done
        partial = CACHE / f"{name}.partial"
        shutil.rmtree(partial, ignore_errors=True)
        command = [
            debootstrap,
            f"--variant={recipe.variant}",
            f"--include={','.join(recipe.packages)}",
            recipe.suite,
            str(partial),
            mirror,
        ]
        run(command, timeout=900, check=True)
        # What apt downloaded, and documentation: nothing a test runs reads them.
        for leftover in ("var/cache/apt/archives", "var/lib/apt/lists"):
            for path in (partial / leftover).glob("*"):
                if path.is_file():
                    path.unlink()
        for path in (partial / "var/cache/apt").glob("*.bin"):
            path.unlink()
        for docs in ("doc", "info", "locale", "man"):
            shutil.rmtree(partial / "usr/share" / docs, ignore_errors=True)
        partial.rename(done)
    return done
