"""The systemd unit and the sd_notify protocol, checked by systemd's own tools and by a
real notify socket."""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import secrets
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from hookd.config import DeliveryConfig, _known_env_names
from hookd.systemd import Notifier, watchdog_interval
from tests.ops.support import ROOT, Serve
from tests.support.services import require_binary

UNIT = ROOT / "systemd" / "hookd.service"
INSTALLED_EXEC = "ExecStart=/usr/local/bin/hookd serve"

HARDENING = {
    "NoNewPrivileges": "yes",
    "ProtectSystem": "strict",
    "ProtectHome": "yes",
    "PrivateTmp": "yes",
    "PrivateDevices": "yes",
    "RestrictAddressFamilies": "AF_INET AF_INET6 AF_UNIX",
    "CapabilityBoundingSet": "",
    "MemoryDenyWriteExecute": "yes",
    "LockPersonality": "yes",
    "RestrictNamespaces": "yes",
    "RestrictRealtime": "yes",
    "RestrictSUIDSGID": "yes",
    "ProtectKernelTunables": "yes",
    "ProtectKernelModules": "yes",
    "ProtectKernelLogs": "yes",
    "ProtectControlGroups": "yes",
    "ProtectClock": "yes",
    "ProtectHostname": "yes",
    "SystemCallArchitectures": "native",
    "UMask": "0077",
}


def directives() -> list[tuple[str, str, str]]:
    """(section, key, value) in order; systemd allows a key more than once."""
    out: list[tuple[str, str, str]] = []
    section = ""
    for raw in UNIT.read_text().splitlines():
        line = raw.strip()
        if not line or line.startswith(("#", ";")):
            continue
        if line.startswith("["):
            section = line.strip("[]")
            continue
        key, _, value = line.partition("=")
        out.append((section, key.strip(), value.strip()))
    return out


def service(key: str) -> list[str]:
    return [v for s, k, v in directives() if s == "Service" and k == key]


def _seconds(value: str) -> float:
    match = re.fullmatch(r"(\d+)(s|min)?", value)
    assert match, value
    return int(match[1]) * (60 if match[2] == "min" else 1)


def test_the_unit_is_a_hardened_notify_service() -> None:
    assert service("Type") == ["notify"]
    assert service("NotifyAccess") == ["main"]
    assert service("ExecStart") == ["/usr/local/bin/hookd serve"]
    assert service("Restart") == ["on-failure"]
    assert service("DynamicUser") == ["yes"]
    assert service("StateDirectory") == ["hookd"]
    assert "HOOKD_DATABASE_PATH=/var/lib/hookd/hookd.db" in service("Environment")
    for assignment in service("Environment"):
        assert assignment.split("=")[0] in _known_env_names()
    # Long enough for the drain (and the store closing after it).
    assert _seconds(service("TimeoutStopSec")[0]) > DeliveryConfig().drain_timeout_seconds + 5
    assert _seconds(service("WatchdogSec")[0]) >= 10
    for key, expected in HARDENING.items():
        assert service(key) == [expected], key
    assert service("SystemCallFilter")[0] == "@system-service"


@pytest.fixture
def runnable_unit(tmp_path: Path) -> Path:
    """The unit with ExecStart pointing at this virtualenv's hookd, which exists here."""
    text = UNIT.read_text()
    assert INSTALLED_EXEC in text
    hookd = Path(sys.executable).parent / "hookd"
    assert hookd.exists()
    unit = tmp_path / "hookd.service"
    unit.write_text(text.replace(INSTALLED_EXEC, f"ExecStart={hookd} serve"))
    return unit


def test_systemd_analyze_verify_finds_nothing(runnable_unit: Path) -> None:
    analyze = require_binary("systemd-analyze", "systemd")
    result = subprocess.run(
        [analyze, "verify", str(runnable_unit)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0 and not (result.stdout + result.stderr).strip(), (
        result.stdout + result.stderr
    )


def test_systemd_analyze_security_score_is_low_and_in_the_readme(runnable_unit: Path) -> None:
    analyze = require_binary("systemd-analyze", "systemd")
    result = subprocess.run(
        [analyze, "security", "--offline=true", "--no-pager", str(runnable_unit)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    match = re.search(r"Overall exposure level for hookd\.service: (\d+\.\d) (\w+)", result.stdout)
    assert match, result.stdout
    assert float(match[1]) <= 2.0, result.stdout
    readme = (ROOT / "README.md").read_text()
    assert match[0] in readme, f"README should state: {match[0]}"


# -- sd_notify, end to end ------------------------------------------------------------


@pytest.fixture(params=["path", "abstract"])
def notify_socket(
    request: pytest.FixtureRequest, tmp_path: Path
) -> Iterator[tuple[str, socket.socket]]:
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    if request.param == "path":
        path = str(tmp_path / "notify.sock")
        sock.bind(path)
        name = path
    else:
        abstract = f"hookd-test-{secrets.token_hex(6)}"
        sock.bind(b"\0" + abstract.encode())
        name = "@" + abstract
    sock.settimeout(0.2)
    yield name, sock
    sock.close()


def _receive(sock: socket.socket, messages: list[str], until: Callable[[], bool]) -> None:
    deadline = time.monotonic() + 15
    while not until():
        assert time.monotonic() < deadline, messages
        with contextlib.suppress(TimeoutError):
            messages.append(sock.recv(4096).decode())


def test_serve_notifies_ready_watchdog_and_stopping_in_order(
    serve: Callable[..., Serve], notify_socket: tuple[str, socket.socket]
) -> None:
    name, sock = notify_socket
    daemon = serve(NOTIFY_SOCKET=name, WATCHDOG_USEC="200000")
    messages: list[str] = []

    def pings() -> int:
        return sum(m == "WATCHDOG=1" for m in messages)

    _receive(sock, messages, lambda: pings() >= 3)
    daemon.proc.send_signal(15)
    _receive(sock, messages, lambda: any("STOPPING=1" in m for m in messages))
    assert daemon.proc.wait(15) == 0

    ready = messages[0].split("\n")
    assert ready[0] == "READY=1"
    assert f"MAINPID={daemon.proc.pid}" in ready
    assert any(line.startswith("STATUS=serving on 127.0.0.1:") for line in ready)
    stopping = next(i for i, m in enumerate(messages) if "STOPPING=1" in m)
    first_ping = messages.index("WATCHDOG=1")
    assert 0 < first_ping < stopping
    assert sum("READY=1" in m for m in messages) == 1


def test_watchdog_only_for_the_process_it_names() -> None:
    assert watchdog_interval({}) is None
    assert watchdog_interval({"WATCHDOG_USEC": "0"}) is None
    assert watchdog_interval({"WATCHDOG_USEC": "30000000"}) == 15.0
    mine = {"WATCHDOG_USEC": "200000", "WATCHDOG_PID": str(os.getpid())}
    assert watchdog_interval(mine) == 0.1
    assert watchdog_interval({**mine, "WATCHDOG_PID": str(os.getpid() + 1)}) is None


async def test_without_a_service_manager_notifying_is_a_no_op() -> None:
    notifier = Notifier(env={})
    assert not notifier.enabled
    assert notifier.ready() is False and notifier.stopping() is False
    notifier.start_watchdog()
    await notifier.close()


async def test_a_vanished_manager_socket_does_not_break_the_daemon(tmp_path: Path) -> None:
    notifier = Notifier(env={"NOTIFY_SOCKET": str(tmp_path / "gone.sock")})
    assert notifier.enabled
    assert notifier.ready() is False
    await notifier.close()


async def test_a_blocked_event_loop_stops_the_watchdog_pings(tmp_path: Path) -> None:
    """The pings come from the loop itself: if it hangs, systemd hears nothing."""
    path = str(tmp_path / "notify.sock")
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(path)
    sock.setblocking(False)

    def drain() -> int:
        # A unix datagram is in the receiver's queue once sendto returns, so
        # what is queued here is exactly what was sent so far.
        count = 0
        with contextlib.suppress(BlockingIOError):
            while True:
                assert sock.recv(64) == b"WATCHDOG=1"
                count += 1
        return count

    notifier = Notifier(env={"NOTIFY_SOCKET": path, "WATCHDOG_USEC": "100000"})
    try:
        notifier.start_watchdog()
        seen = 0
        deadline = time.monotonic() + 10
        while seen < 3:
            assert time.monotonic() < deadline
            await asyncio.sleep(0.02)
            seen += drain()
        drain()
        time.sleep(0.6)  # noqa: ASYNC251 - blocking the loop is the point
        assert drain() == 0, "a ping while the loop was blocked"
        await asyncio.sleep(0.3)
        assert drain() >= 1, "pings resume with the loop"
    finally:
        await notifier.close()
        sock.close()
