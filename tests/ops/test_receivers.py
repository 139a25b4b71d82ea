"""Every program of docs/receivers.md, run against real deliveries from a running hookd.

The programs are read out of the markdown, so the page and what is tested
cannot drift apart.  Node programs get their npm packages from a cache
outside the repository (``HOOKD_NPM_CACHE``, default /var/cache/hookd-tests/npm),
one directory per set of package versions, installed once with npm.
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
import re
import shutil
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from hookd.sender.signing import signature_headers
from tests.api.helpers import free_port
from tests.ops.support import ROOT, Serve, clean_env, create_key, http, serve_env, wait_until
from tests.support.processes import Collected
from tests.support.services import require_binary

DOC = ROOT / "docs" / "receivers.md"
NPM_PACKAGES = {"standardwebhooks": "1.1.1"}
PLAIN_SECRET = "recipe-secret-" + hashlib.sha256(b"recipes").hexdigest()[:24]
WHSEC_SECRET = "whsec_" + base64.b64encode(hashlib.sha256(b"whsec recipes").digest()).decode()


def snippets() -> dict[str, tuple[str, str]]:
    """name -> (language, code) of every ``<!-- snippet: name -->`` block."""
    found = re.findall(
        r"<!-- snippet: ([\w-]+) -->\n```(\w+)\n(.*?)\n```", DOC.read_text(), flags=re.S
    )
    out = {name: (lang, code + "\n") for name, lang, code in found}
    assert len(out) == len(found), "snippet names must be unique"
    return out


SNIPPETS = snippets()


def test_the_page_has_every_recipe() -> None:
    assert set(SNIPPETS) == {
        "python-standardwebhooks",
        "python-hmac",
        "node-standardwebhooks",
        "node-crypto",
        "python-dedup",
        "python-fast-ack",
        "python-backpressure",
    }


class Program(Collected):
    """A snippet running as its own process on ``port``."""

    def __init__(self, command: list[str], env: dict[str, str], cwd: Path, port: int) -> None:
        super().__init__(command, env, cwd)
        self.port = port

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/webhooks"

    def post(self, body: bytes, headers: dict[str, str]) -> int:
        request = urllib.request.Request(self.url, data=body, method="POST", headers=headers)
        try:
            with urllib.request.urlopen(request, timeout=10) as resp:
                return int(resp.status)
        except urllib.error.HTTPError as exc:
            return exc.code


@dataclass
class Recipes:
    daemon: Serve
    key: str
    workdir: Path
    node_path: Path | None = None
    started: list[Program] = field(default_factory=list)

    def run(self, name: str, secret: str, **env: str) -> Program:
        lang, code = SNIPPETS[name]
        suffix = {"python": ".py", "javascript": ".js"}[lang]
        source = self.workdir / f"{name}-{len(self.started)}{suffix}"
        source.write_text(code)
        port = free_port()
        variables = clean_env(WEBHOOK_SECRET=secret, PORT=str(port), **env)
        if lang == "python":
            command = [sys.executable, str(source)]
        else:
            assert self.node_path is not None, "node programs need the npm cache"
            command = [require_binary("node", "nodejs"), str(source)]
            variables["NODE_PATH"] = str(self.node_path)
        program = Program(command, variables, self.workdir, port)
        self.started.append(program)

        def listening() -> bool:
            assert program.proc.poll() is None, program.output
            with socket.socket() as s:
                return s.connect_ex(("127.0.0.1", port)) == 0

        wait_until(listening, timeout=20)
        return program

    def api(self, method: str, path: str, body: Any = None) -> Any:
        status, raw = http(method, self.daemon.url(path), body, {"X-Api-Key": self.key})
        assert 200 <= status < 300, (status, raw)
        return json.loads(raw)["data"]

    def webhook(self, url: str, secret: str, events: list[str]) -> dict[str, Any]:
        return self.api(  # type: ignore[no-any-return]
            "POST",
            "/v1/webhooks",
            {"name": "recipe", "url": url, "events": events, "secret": secret, "retryAttempts": 0},
        )

    def send(self, event_type: str, data: Any = None) -> tuple[str, list[str]]:
        accepted = self.api("POST", "/v1/events", {"type": event_type, "data": data or {}})
        return accepted["_id"], accepted["deliveryIds"]

    def delivery(self, delivery_id: str) -> dict[str, Any]:
        return self.api("GET", f"/v1/deliveries/{delivery_id}")  # type: ignore[no-any-return]

    def wait_status(self, delivery_id: str, *statuses: str) -> dict[str, Any]:
        wait_until(lambda: self.delivery(delivery_id)["status"] in statuses, timeout=20)
        return self.delivery(delivery_id)


def _npm_modules(npm: str) -> Path:
    """node_modules with NPM_PACKAGES, installed once per set of versions."""
    cache = Path(os.environ.get("HOOKD_NPM_CACHE", "/var/cache/hookd-tests/npm"))
    tag = "-".join(f"{name}@{version}" for name, version in sorted(NPM_PACKAGES.items()))
    target = cache / tag
    if not (target / "node_modules" / ".complete").exists():
        cache.mkdir(parents=True, exist_ok=True)
        building = cache / f"{tag}.{os.getpid()}.tmp"
        shutil.rmtree(building, ignore_errors=True)
        building.mkdir()
        done = subprocess.run(
            [
                npm,
                "install",
                "--prefix",
                str(building),
                "--no-audit",
                "--no-fund",
                "--no-save",
                *(f"{name}@{version}" for name, version in NPM_PACKAGES.items()),
            ],
            capture_output=True,
            text=True,
            timeout=300,
            check=False,
        )
        assert done.returncode == 0, done.stdout + done.stderr
        (building / "node_modules" / ".complete").write_text(tag)
        try:
            building.rename(target)  # atomic: a concurrent run may have won
        except OSError:
            shutil.rmtree(building, ignore_errors=True)
    return target / "node_modules"


@pytest.fixture(scope="module")
def recipes(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Recipes]:
    root = tmp_path_factory.mktemp("recipes")
    db = root / "hookd.db"
    daemon = Serve(serve_env(db, HOOKD_DELIVERY_ALLOW_NETWORKS="127.0.0.0/8"))
    found = Recipes(daemon, create_key(db), root)
    try:
        yield found
    finally:
        for program in found.started:
            program.kill()
        daemon.stop()


@pytest.fixture(scope="module")
def node(recipes: Recipes) -> Recipes:
    require_binary("node", "nodejs")
    recipes.node_path = _npm_modules(require_binary("npm", "npm"))
    return recipes


def _kind(secret: str) -> str:
    return "whsec" if secret.startswith("whsec_") else "plain"


@pytest.mark.parametrize("secret", [PLAIN_SECRET, WHSEC_SECRET], ids=_kind)
@pytest.mark.parametrize(
    "name", ["python-standardwebhooks", "python-hmac", "node-standardwebhooks", "node-crypto"]
)
def test_a_verifier_accepts_hookd_and_refuses_forgeries(
    request: pytest.FixtureRequest, recipes: Recipes, name: str, secret: str
) -> None:
    if name.startswith("node-"):
        request.getfixturevalue("node")
    program = recipes.run(name, secret)
    event_type = f"recipe.{name.replace('-', '_')}.{_kind(secret)}"
    hook = recipes.webhook(program.url, secret, [event_type])
    event_id, (delivery_id,) = recipes.send(event_type, {"order": 42, "name": "Zoë"})
    delivery = recipes.wait_status(delivery_id, "delivered", "dead_letter")
    assert (delivery["status"], delivery["lastStatusCode"]) == ("delivered", 204), program.output
    wait_until(lambda: f"verified {event_id} {event_type}" in program.output)

    # Forgeries: a changed body, another secret, a stale timestamp.
    body = json.dumps({"id": "x", "type": event_type, "data": {"order": 1}}).encode()
    now = int(time.time())
    good = signature_headers("msg_forged", now, body, [secret])
    assert program.post(body + b" ", {**good, "Content-Type": "application/json"}) == 400
    other = signature_headers("msg_forged", now, body, ["another-secret-123"])
    assert program.post(body, other) == 400
    stale = signature_headers("msg_forged", now - 3600, body, [secret])
    # The hex signature does not cover the timestamp; the Standard one does.
    assert program.post(body, stale) == 400
    assert program.post(body, good) == 204
    # (The program's output is read by a thread of the test: wait for it.)
    wait_until(lambda: program.output.count("rejected") == 3)

    # During a rotation hookd signs with both secrets: the receiver still on
    # the old one keeps verifying.
    recipes.api("PATCH", f"/v1/webhooks/{hook['_id']}", {"secret": "rotated-secret-0123456789"})
    event_id, (delivery_id,) = recipes.send(event_type)
    assert recipes.wait_status(delivery_id, "delivered", "dead_letter")["status"] == "delivered"
    wait_until(lambda: f"verified {event_id}" in program.output)


def test_deduplication_processes_an_event_once(recipes: Recipes) -> None:
    program = recipes.run("python-dedup", PLAIN_SECRET, DATABASE=str(recipes.workdir / "dedup.db"))
    # Two webhooks of the workspace on one endpoint: the same event twice.
    for _ in range(2):
        recipes.webhook(program.url, PLAIN_SECRET, ["dedup.*"])
    event_id, delivery_ids = recipes.send("dedup.created")
    assert len(delivery_ids) == 2
    for delivery_id in delivery_ids:
        assert recipes.wait_status(delivery_id, "delivered", "dead_letter")["status"] == (
            "delivered"
        )
    wait_until(lambda: program.output.count(event_id) == 2)
    assert program.output.count(f"processed {event_id}") == 1
    assert program.output.count(f"duplicate {event_id}") == 1


def test_answering_fast_and_working_later(recipes: Recipes) -> None:
    program = recipes.run("python-fast-ack", PLAIN_SECRET)
    recipes.webhook(program.url, PLAIN_SECRET, ["slow.*"])
    event_id, (delivery_id,) = recipes.send("slow.report")
    delivery = recipes.wait_status(delivery_id, "delivered", "dead_letter")
    assert (delivery["status"], delivery["lastStatusCode"]) == ("delivered", 202)
    (attempt,) = recipes.delivery(delivery_id)["attempts"]
    # Answered long before the two seconds of work were done.
    assert attempt["durationMs"] < 1000
    wait_until(lambda: f"accepted {event_id}" in program.output)
    assert f"processed {event_id}" not in program.output
    wait_until(lambda: f"processed {event_id}" in program.output)


def test_429_pauses_the_endpoint_and_410_deactivates_the_webhook(recipes: Recipes) -> None:
    busy = recipes.run("python-backpressure", PLAIN_SECRET, MAX_IN_PROGRESS="0")
    hook = recipes.webhook(busy.url, PLAIN_SECRET, ["busy.*"])
    event_id, (delivery_id,) = recipes.send("busy.x")
    assert recipes.wait_status(delivery_id, "rate_limited")["lastStatusCode"] == 429
    stats = recipes.api("GET", f"/v1/webhooks/{hook['_id']}/stats")
    assert stats["pausedUntil"] is not None and stats["status"] == "active"
    wait_until(lambda: f"busy {event_id}" in busy.output)

    gone = recipes.run("python-backpressure", PLAIN_SECRET, ENDPOINT_RETIRED="1")
    hook = recipes.webhook(gone.url, PLAIN_SECRET, ["gone.*"])
    event_id, (delivery_id,) = recipes.send("gone.x")
    assert recipes.wait_status(delivery_id, "dead_letter")["lastStatusCode"] == 410
    webhook = recipes.api("GET", f"/v1/webhooks/{hook['_id']}")
    assert webhook["status"] == "inactive" and "410" in webhook["disabledReason"]

    fine = recipes.run("python-backpressure", PLAIN_SECRET)
    recipes.webhook(fine.url, PLAIN_SECRET, ["fine.*"])
    event_id, (delivery_id,) = recipes.send("fine.x")
    assert recipes.wait_status(delivery_id, "delivered")["lastStatusCode"] == 204
    wait_until(lambda: f"processed {event_id}" in fine.output)
