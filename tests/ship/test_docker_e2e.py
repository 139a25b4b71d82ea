"""The Docker image, built and run as the README says, on an engine of the test's own.

The README's ``### Docker`` commands run as written, with only what this machine
needs changed (see :func:`deployment`): the base image is a local debootstrapped
Debian (no registry here), the package index's CA reaches the build as a secret, and
the container shares the host's network (the engine has no bridge), listening on a
free port and allowed to deliver to loopback, with the image's own HEALTHCHECK probed
every second instead of every 30.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import io
import json
import tarfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import standardwebhooks

from tests.ops.support import Receiver, http, wait_until
from tests.ship.engine import Engine
from tests.ship.support import (
    Api,
    Rootfs,
    assert_drained,
    build_pip_config,
    free_port,
    host_pip_setting,
    note,
    readme_commands,
    require_filesystem,
    require_root,
    substitute,
)

pytestmark = [pytest.mark.ship, pytest.mark.timeout(900)]

# What the Dockerfile's build needs of a base: python3 with venv (and useradd).
BASE = Rootfs("docker-base", ("python3", "python3-venv"))
NAME = "hookd"  # the README's container, image and volume names
VOLUME = "hookd-data"
STOP_TIMEOUT = 30  # the README's --stop-timeout


@pytest.fixture(scope="module")
def engine() -> Iterator[Engine]:
    require_root()
    require_filesystem("overlay", "dockerd's overlay2 storage driver needs overlayfs")
    started = Engine()
    try:
        yield started.start()
    finally:
        started.stop()


@dataclass
class Deployment:
    engine: Engine
    api: Api  # with the key printed by the README's `docker exec ... keys create`

    def docker(self, *args: str) -> str:
        return self.engine.docker(*args).stdout.strip()

    def container(self) -> dict[str, Any]:
        inspected: list[dict[str, Any]] = json.loads(self.docker("inspect", NAME))
        return inspected[0]

    def logs(self) -> list[dict[str, Any]]:
        out = self.engine.docker("logs", NAME)
        return [json.loads(line) for line in out.stderr.splitlines() if line.startswith("{")]


@pytest.fixture(scope="module")
def deployment(
    engine: Engine, tmp_path_factory: pytest.TempPathFactory, request: pytest.FixtureRequest
) -> Deployment:
    base = engine.base_image(BASE)
    secrets = " ".join(build_pip_config(tmp_path_factory.mktemp("pip")))
    port = free_port()
    changes = {
        "docker build": (
            "docker build ",
            f"docker build --network host --build-arg BASE={base} {secrets} ",
        ),
        "docker run": (
            "-p 8080:8080",
            f"--network host -e HOOKD_SERVER_LISTEN=127.0.0.1:{port}"
            " -e HOOKD_DELIVERY_ALLOW_NETWORKS=127.0.0.0/8 --health-interval 1s"
            # Successful attempts are logged at debug; the drain test reads them.
            " -e HOOKD_LOGGING_LEVEL=debug",
        ),
    }
    commands = readme_commands("### Docker")
    assert all(any(words in c for c in commands) for words in changes), commands
    key = ""
    for command in commands:
        for words, (old, new) in changes.items():
            if words in command:
                command = substitute(command, old, new)
        result = engine.shell(command)
        assert result.returncode == 0, f"{command}\n{result.stdout}\n{result.stderr}"
        if "keys create" in command:
            key = result.stdout.splitlines()[0].strip()

    size = int(engine.docker("image", "inspect", NAME, "--format", "{{.Size}}").stdout)
    base_size = int(engine.docker("image", "inspect", base, "--format", "{{.Size}}").stdout)
    note(
        request.config,
        f"hookd image: {size / 1e6:.0f} MB on the debootstrapped base "
        f"({base_size / 1e6:.0f} MB of it the base)",
    )
    assert key.startswith("sk_"), "the README's commands create no API key"
    api = Api(f"http://127.0.0.1:{port}", key)
    try:
        wait_until(api.ready, timeout=30)
    except AssertionError:
        raise AssertionError(engine.docker("logs", NAME, check=False).stderr) from None
    return Deployment(engine, api)


def test_the_probes_answer_on_the_host(deployment: Deployment) -> None:
    status, body = http("GET", deployment.api.base_url + "/healthz")
    assert (status, json.loads(body)) == (200, {"status": "ok"})
    status, body = http("GET", deployment.api.base_url + "/readyz")
    assert status == 200, body


def test_hookd_is_the_containers_process_and_runs_as_uid_10001(deployment: Deployment) -> None:
    pid = deployment.container()["State"]["Pid"]
    status = Path(f"/proc/{pid}/status").read_text()
    ids = {line.split(":")[0]: line.split()[1:] for line in status.splitlines()}
    assert ids["Uid"] == ["10001"] * 4 and ids["Gid"] == ["10001"] * 4
    cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
    assert cmdline[-3:] == [b"/opt/hookd/bin/hookd", b"serve", b""]
    assert deployment.docker("exec", NAME, "id", "-u") == "10001"


def test_a_signed_event_reaches_a_receiver_on_the_host(
    deployment: Deployment, receiver: Receiver
) -> None:
    secret = deployment.api.webhook_to(receiver.url("/signed"), "ship.signed")["secret"]
    delivery_id = deployment.api.send("ship.signed", {"n": 1})
    wait_until(lambda: len(receiver.requests) == 1, timeout=30)
    path, headers, body = receiver.requests[0]
    assert path == "/signed"
    # A plain secret signs with its UTF-8 bytes, which the verifier takes in base64.
    verifier = standardwebhooks.Webhook(base64.b64encode(secret.encode()).decode())
    payload = verifier.verify(body, headers)
    assert payload["type"] == "ship.signed" and payload["data"] == {"n": 1}
    expected = hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()
    assert headers["X-Webhook-Signature"] == expected
    wait_until(lambda: deployment.api.delivery(delivery_id)["status"] == "delivered", timeout=15)


def test_the_images_healthcheck_turns_healthy(deployment: Deployment) -> None:
    image = json.loads(deployment.docker("image", "inspect", NAME))[0]
    assert image["Config"]["Healthcheck"]["Test"] == ["CMD", "hookd", "check"]

    def health() -> dict[str, Any]:
        found: dict[str, Any] = deployment.container()["State"]["Health"]
        return found

    wait_until(lambda: health()["Status"] == "healthy", timeout=60, interval=0.5)
    assert health()["Log"][-1]["ExitCode"] == 0


def test_the_database_survives_a_restart_on_its_volume(
    deployment: Deployment, receiver: Receiver
) -> None:
    created = deployment.api.webhook_to(receiver.url("/kept"), "ship.kept")
    mounts = deployment.container()["Mounts"]
    assert [(m["Type"], m["Name"], m["Destination"]) for m in mounts] == [
        ("volume", VOLUME, "/var/lib/hookd")
    ]
    before = deployment.container()["State"]["Pid"]
    deployment.docker("restart", NAME)
    assert deployment.container()["State"]["Pid"] != before
    wait_until(deployment.api.ready, timeout=30)
    status, got = deployment.api.call("GET", f"/v1/webhooks/{created['_id']}")
    assert status == 200 and got["data"]["url"] == receiver.url("/kept")


def test_docker_stop_drains_in_flight_work_and_exits_0(
    deployment: Deployment, receiver: Receiver
) -> None:
    receiver.delay = 2.0
    deployment.api.webhook_to(receiver.url("/slow"), "ship.drain")
    delivery_id = deployment.api.send("ship.drain")
    wait_until(lambda: len(receiver.requests) == 1, timeout=30)

    # Past its --stop-timeout docker would SIGKILL hookd: exit status 137, not 0.
    assert deployment.container()["Config"]["StopTimeout"] == STOP_TIMEOUT
    deployment.docker("stop", NAME)
    state = deployment.container()["State"]
    assert (state["Status"], state["ExitCode"], state["OOMKilled"]) == ("exited", 0, False)
    assert_drained(deployment.logs(), delivery_id)

    deployment.docker("start", NAME)
    wait_until(deployment.api.ready, timeout=30)
    got = deployment.api.delivery(delivery_id)
    assert (got["status"], got["attemptCount"]) == ("delivered", 1)


def test_help_and_a_bad_configuration_exit_0_and_2(deployment: Deployment) -> None:
    engine = deployment.engine
    helped = engine.docker("run", "--rm", "--network", "none", NAME, "--help", check=False)
    assert helped.returncode == 0 and helped.stdout.startswith("usage: hookd"), helped
    bad = engine.docker(
        "run", "--rm", "--network", "none", "-e", "HOOKD_SERVER_LISTEN=nowhere", NAME,
        check=False,
    )  # fmt: skip
    assert bad.returncode == 2, bad
    assert bad.stderr.strip().splitlines() == [
        "hookd: config error: server.listen: expected HOST:PORT, got 'nowhere'"
    ]


def test_the_image_holds_no_build_stage_pip_or_package_index_trust(
    deployment: Deployment,
) -> None:
    ca = Path(host_pip_setting("cert") or "/dev/null")
    ca_digest = hashlib.sha256(ca.read_bytes()).hexdigest()
    names: set[str] = set()
    with tarfile.open(fileobj=io.BytesIO(deployment.engine.export(NAME))) as tar:
        for member in tar:
            name = member.name.removeprefix("./")
            names.add(name)
            if member.isfile() and member.size == ca.stat().st_size > 0:
                content = tar.extractfile(member)
                assert content is not None
                assert hashlib.sha256(content.read()).hexdigest() != ca_digest, name
    assert "opt/hookd/bin/hookd" in names
    # Only the empty mount point of the wheels is left of the build stage.
    for gone in ("opt/build", "wheels/", "src/", "opt/hookd/bin/pip"):
        assert not [n for n in names if n.startswith(gone)], gone
    assert not [n for n in names if n.startswith("run/secrets/") or n.endswith("pip.conf")]
