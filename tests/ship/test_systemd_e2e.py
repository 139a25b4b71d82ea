"""The systemd unit as shipped, under a real systemd in a booted machine.

The README's ``### systemd`` commands run in the machine as written, but for one
change (see :func:`service`): hookd is installed from the wheels this checkout builds
instead of by pip from the checkout (the machine has no compiler, no index and no
copy of the source tree it could write in).  Before them the test writes
``/etc/hookd/hookd.env``, as a user configures hookd: a free port (the machine shares
the host's network) and loopback allowed as a delivery target, for the receiver.
"""

from __future__ import annotations

import json
import os
import signal
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from tests.ops.support import Receiver, http, wait_until
from tests.ship.machine import Machine
from tests.ship.support import (
    ROOT,
    Api,
    Rootfs,
    assert_drained,
    build_wheels,
    cached_rootfs,
    free_port,
    readme_commands,
    require_filesystem,
    require_root,
    substitute,
)

pytestmark = [pytest.mark.ship, pytest.mark.timeout(900)]

ROOTFS = Rootfs("systemd", ("systemd", "systemd-sysv", "dbus", "python3", "python3-venv"))
WHEELS = "/run/hookd-wheels"
SOURCE = "/src"  # the checkout, read-only: the README's commands run here
UNIT = "hookd.service"
# systemd's range for DynamicUser= UIDs.
DYNAMIC_UIDS = range(61184, 65520)


@pytest.fixture(scope="module")
def machine(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Machine]:
    require_root()
    require_filesystem("overlay", "systemd-nspawn --volatile=overlay needs overlayfs")
    work = tmp_path_factory.mktemp("machine")
    booted = Machine({ROOT: SOURCE, work / "wheels": WHEELS}, work / "boot.log")
    root = cached_rootfs(ROOTFS)
    build_wheels(work / "wheels")
    try:
        yield booted.boot(root)
    finally:
        booted.poweroff()


@dataclass
class Service:
    machine: Machine
    api: Api  # with the platform key the README's last command printed

    def show(self, *properties: str) -> dict[str, str]:
        out = self.machine.run("systemctl", "show", UNIT, *(f"--property={p}" for p in properties))
        return dict(line.split("=", 1) for line in out.stdout.splitlines())

    def main_pid(self) -> int:
        """hookd's process, as the host numbers it."""
        return self.machine.host_pid(int(self.show("MainPID")["MainPID"]))

    def journal(self) -> list[dict[str, Any]]:
        out = self.machine.run("journalctl", f"--unit={UNIT}", "--output=json", "--no-pager")
        return [json.loads(line) for line in out.stdout.splitlines()]

    def records(self) -> list[dict[str, Any]]:
        """hookd's own lines in the journal, parsed (each must be JSON)."""
        mine = [e for e in self.journal() if e.get("SYSLOG_IDENTIFIER") == "hookd"]
        return [json.loads(e["MESSAGE"]) for e in mine]


@pytest.fixture(scope="module")
def service(machine: Machine) -> Service:
    port = free_port()
    env = machine.path("/etc/hookd/hookd.env")
    env.parent.mkdir(parents=True, exist_ok=True)
    env.write_text(
        f"HOOKD_SERVER_LISTEN=127.0.0.1:{port}\nHOOKD_DELIVERY_ALLOW_NETWORKS=127.0.0.0/8\n"
        # Successful attempts are logged at debug; the drain test reads them.
        "HOOKD_LOGGING_LEVEL=debug\n"
    )
    commands = readme_commands("### systemd")
    install = "/opt/hookd/bin/pip install ."
    assert any(install in c for c in commands), commands
    key = ""
    for command in commands:
        if install in command:
            local = f"/opt/hookd/bin/pip install --no-index --find-links {WHEELS} hookd"
            command = substitute(command, install, local)
        result = machine.shell(command, cwd=SOURCE)
        assert result.returncode == 0, f"{command}\n{result.stdout}\n{result.stderr}"
        if "keys create" in command:
            key = result.stdout.splitlines()[0].strip()
    assert key.startswith("sk_user_"), "the README's commands create no platform key"
    return Service(machine, Api(f"http://127.0.0.1:{port}", key, workspace="ws_ship"))


def test_the_unit_is_enabled_and_active_with_its_status_text(service: Service) -> None:
    state = service.show("ActiveState", "SubState", "StatusText", "UnitFileState", "Type")
    assert state == {
        "ActiveState": "active",
        "SubState": "running",
        "StatusText": f"serving on {service.api.base_url.removeprefix('http://')}",
        "UnitFileState": "enabled",
        "Type": "notify",
    }


def test_the_probes_answer_on_the_host(service: Service) -> None:
    status, body = http("GET", service.api.base_url + "/healthz")
    assert (status, json.loads(body)) == (200, {"status": "ok"})
    status, body = http("GET", service.api.base_url + "/readyz")
    assert status == 200, body


def test_the_hardening_is_in_effect(service: Service) -> None:
    pid = service.main_pid()
    status = dict(
        line.split(":", 1) for line in Path(f"/proc/{pid}/status").read_text().splitlines()
    )
    uid = int(status["Uid"].split()[0])
    assert uid in DYNAMIC_UIDS, status["Uid"]
    assert str(uid) not in service.machine.path("/etc/passwd").read_text()
    assert status["NoNewPrivs"].strip() == "1"
    assert status["Seccomp"].strip() == "2"  # a filter is installed
    assert int(status["CapEff"], 16) == int(status["CapBnd"], 16) == 0

    # Root itself, in hookd's mount namespace, can write nowhere but the state directory
    # (and the service's private /tmp).
    probe = (
        "for d in / /etc /usr /opt/hookd /var /var/lib /tmp /var/lib/hookd; do "
        'touch "$d/.probe" 2>&1 && rm "$d/.probe" && echo "$d: writable"; done; '
        "stat -L -c %u /var/lib/hookd"
    )
    out = service.machine.in_mounts_of(pid, probe)
    lines = out.splitlines()
    assert lines[-1] == str(uid)  # the state directory belongs to the dynamic user
    writable = [line for line in lines if line.endswith(": writable")]
    assert writable == ["/tmp: writable", "/var/lib/hookd: writable"], out
    refused = [line for line in lines if "Read-only file system" in line]
    assert len(refused) == 6, out


def test_a_stopped_process_is_killed_by_the_watchdog_and_restarted(service: Service) -> None:
    """WatchdogSec is lowered for this test by a runtime drop-in: the unit's 30 s
    would be a long wait, and what is tested is that hookd pings and systemd acts."""
    machine = service.machine
    drop_in = machine.path(f"/run/systemd/system/{UNIT}.d/watchdog-test.conf")
    drop_in.parent.mkdir(parents=True, exist_ok=True)
    drop_in.write_text("[Service]\nWatchdogSec=4s\n")
    try:
        machine.run("systemctl", "daemon-reload")
        machine.run("systemctl", "restart", UNIT)
        before = service.show("MainPID", "NRestarts", "WatchdogTimestampMonotonic")
        # hookd pings every WatchdogSec/2: the last ping's time moves on.
        wait_until(
            lambda: (
                service.show("WatchdogTimestampMonotonic")["WatchdogTimestampMonotonic"]
                != before["WatchdogTimestampMonotonic"]
            ),
            timeout=10,
        )
        stopped = service.main_pid()
        os.kill(stopped, signal.SIGSTOP)

        def restarted() -> bool:
            now = service.show("MainPID", "ActiveState")
            return now["ActiveState"] == "active" and now["MainPID"] not in ("0", before["MainPID"])

        wait_until(restarted, timeout=30, interval=0.2)
        assert int(service.show("NRestarts")["NRestarts"]) == int(before["NRestarts"]) + 1
        results = [e.get("UNIT_RESULT") for e in service.journal() if "UNIT_RESULT" in e]
        assert results[-1] == "watchdog", results
    finally:
        drop_in.unlink()
        machine.run("systemctl", "daemon-reload")
        machine.run("systemctl", "restart", UNIT)
    assert service.show("WatchdogUSec")["WatchdogUSec"] == "30s"
    wait_until(service.api.ready, timeout=30)


def test_systemctl_stop_drains_and_ends_with_success(service: Service, receiver: Receiver) -> None:
    receiver.delay = 2.0
    service.api.webhook_to(receiver.url("/slow"), "ship.drain")
    delivery_id = service.api.send("ship.drain")
    wait_until(lambda: len(receiver.requests) == 1, timeout=30)

    service.machine.run("systemctl", "stop", UNIT)  # returns once hookd has exited
    state = service.show("ActiveState", "Result", "ExecMainCode", "ExecMainStatus")
    assert state == {
        "ActiveState": "inactive",
        "Result": "success",
        "ExecMainCode": "1",  # exited, not killed
        "ExecMainStatus": "0",
    }
    assert_drained(service.records(), delivery_id)

    service.machine.run("systemctl", "start", UNIT)
    wait_until(service.api.ready, timeout=30)
    got = service.api.delivery(delivery_id)
    assert (got["status"], got["attemptCount"]) == ("delivered", 1)


def test_the_logs_reach_the_journal_as_json_lines(service: Service) -> None:
    records = service.records()
    assert records and all({"event", "level", "timestamp"} <= r.keys() for r in records)
    started = [r for r in records if r["event"] == "hookd.started"]
    assert started[-1]["listen"] == [service.api.base_url.removeprefix("http://")]
    assert started[-1]["database"] == "/var/lib/hookd/hookd.db"
