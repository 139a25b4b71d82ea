"""``hookd listen`` as a real process, receiving real deliveries from a real daemon."""

from __future__ import annotations

import json
import re
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from hookd.sender.signing import signature_headers
from tests.api.helpers import free_port
from tests.ops.support import (
    HOOKD,
    SECRET,
    Receiver,
    Serve,
    clean_env,
    create_key,
    http,
    run_hookd,
    wait_until,
)
from tests.support.processes import Collected


class Listen(Collected):
    """``hookd listen`` on a free port."""

    def __init__(self, *args: str) -> None:
        self.port = free_port()
        super().__init__([*HOOKD, "listen", "--port", str(self.port), *args], clean_env())
        wait_until(lambda: "receiving on" in self.output, timeout=15)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/hook"


@pytest.fixture
def listen() -> Iterator[Callable[..., Listen]]:
    started: list[Listen] = []

    def start(*args: str) -> Listen:
        started.append(Listen(*args))
        return started[-1]

    yield start
    for process in started:
        process.kill()


def _deliver(daemon: Serve, key: str, url: str, secret: str, data: object) -> dict[str, object]:
    """A webhook to ``url`` and one event through the API; the finished delivery."""
    headers = {"X-Api-Key": key}
    status, body = http(
        "POST",
        daemon.url("/v1/webhooks"),
        {"name": "listen", "url": url, "events": ["*"], "secret": secret, "retryAttempts": 0},
        headers,
    )
    assert status == 201, body
    status, body = http(
        "POST", daemon.url("/v1/events"), {"type": "order.paid", "data": data}, headers
    )
    assert status == 202, body
    (delivery_id,) = json.loads(body)["data"]["deliveryIds"]

    def finished() -> dict[str, object] | None:
        got = json.loads(http("GET", daemon.url(f"/v1/deliveries/{delivery_id}"), None, headers)[1])
        d = got["data"]
        return d if d["status"] in ("delivered", "dead_letter") else None

    wait_until(lambda: finished() is not None, timeout=20)
    found = finished()
    assert found is not None
    return found


def test_a_signed_delivery_is_verified_printed_and_answered(
    serve: Callable[..., Serve], db: Path, listen: Callable[..., Listen]
) -> None:
    daemon = serve(HOOKD_DELIVERY_ALLOW_NETWORKS="127.0.0.0/8")
    key = create_key(db)
    receiver = listen("--secret", SECRET)
    delivery = _deliver(daemon, key, receiver.url, SECRET, {"order": 42, "note": "ünïcode"})
    assert delivery["status"] == "delivered" and delivery["lastStatusCode"] == 200
    wait_until(lambda: "verified:" in receiver.output)
    out = receiver.output
    assert "POST /hook  order.paid" in out
    assert f"event {delivery['eventId']}  webhook-id {delivery['eventId']}" in out
    assert "verified: X-Webhook-Signature and webhook-signature match" in out
    assert '"order": 42' in out and '"note": "ünïcode"' in out
    assert "<- answered 200" in out
    assert SECRET not in out
    assert receiver.stop() == 0


def test_unverified_deliveries_say_why_and_the_answer_can_be_chosen(
    serve: Callable[..., Serve], db: Path, listen: Callable[..., Listen]
) -> None:
    daemon = serve(HOOKD_DELIVERY_ALLOW_NETWORKS="127.0.0.0/8")
    key = create_key(db)
    receiver = listen("--secret", "not-the-webhooks-secret", "--status", "503", "--delay", "300")
    started = time.monotonic()
    delivery = _deliver(daemon, key, receiver.url, SECRET, {"n": 1})
    assert time.monotonic() - started >= 0.3
    # hookd saw the chosen answer: a 503 without Retry-After fails the (only) attempt.
    assert (delivery["status"], delivery["lastStatusCode"]) == ("dead_letter", 503)
    wait_until(lambda: "NOT VERIFIED" in receiver.output)
    assert (
        "NOT VERIFIED: X-Webhook-Signature does not match the body;"
        " webhook-signature does not match"
    ) in receiver.output
    assert "<- answered 503" in receiver.output

    # Signed with the right secret, but five minutes and more ago.
    body = b'{"late": true}'
    old = int(time.time()) - 900
    status, _ = http_raw(
        receiver.url,
        body,
        signature_headers("msg_1", old, body, ["not-the-webhooks-secret"]),
    )
    assert status == 503
    # 900 s, or 901 if a second ticked over between signing and checking.
    wait_until(
        lambda: (
            re.search(r"webhook-timestamp is 90[01] s old \(tolerance 300 s\)", receiver.output)
            is not None
        )
    )
    # No signature at all.
    http_raw(receiver.url, b"{}", {})
    wait_until(lambda: "no X-Webhook-Signature or webhook-signature header" in receiver.output)


def test_forwarding_relays_to_the_app_and_shows_its_answer(
    serve: Callable[..., Serve],
    db: Path,
    listen: Callable[..., Listen],
    threaded_receiver: Receiver,
) -> None:
    # As docs/listen.md says: record what the local receiver answers.
    daemon = serve(
        HOOKD_DELIVERY_ALLOW_NETWORKS="127.0.0.0/8",
        HOOKD_DELIVERY_RECORD_INTERNAL_RESPONSE_BODIES="true",
    )
    key = create_key(db)
    threaded_receiver.status = 202
    receiver = listen("--secret", SECRET, "--forward-to", threaded_receiver.url("/app/hooks"))
    delivery = _deliver(daemon, key, receiver.url, SECRET, {"forward": True})
    # hookd got the application's answer.
    assert (delivery["status"], delivery["lastStatusCode"]) == ("delivered", 202)
    assert delivery["lastResponseBody"] == "ok"
    ((path, headers, body),) = threaded_receiver.requests
    assert path == "/app/hooks" and json.loads(body)["data"] == {"forward": True}
    # The signatures reach the application untouched, so it can verify them itself.
    assert headers["X-Webhook-Id"] == delivery["eventId"] and "webhook-signature" in headers
    wait_until(lambda: "-> forwarded to" in receiver.output)
    assert f"-> forwarded to {threaded_receiver.url('/app/hooks')}: 202 in " in receiver.output

    # An application that is down: hookd gets a 502, and the reason is shown.
    down = listen("--forward-to", f"http://127.0.0.1:{free_port()}/")
    status, _ = http_raw(down.url, b"{}", {})
    assert status == 502
    wait_until(lambda: "failed" in down.output)
    assert "NOT VERIFIED: no --secret given" in down.output


def http_raw(url: str, body: bytes, headers: dict[str, str]) -> tuple[int, bytes]:
    """POST ``body`` as it is, with exactly ``headers`` (a hand-made delivery)."""
    req = urllib.request.Request(url, data=body, method="POST", headers=headers)
    try:
        with urllib.request.urlopen(req, timeout=10) as resp:
            return resp.status, resp.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read()


def test_usage_errors() -> None:
    for args, needle in (
        (("--status", "42"), "--status"),
        (("--delay", "-1"), "--delay"),
        (("--forward-to", "ftp://x"), "--forward-to"),
        (("--port", "70000"), "--port"),
    ):
        done = run_hookd("listen", *args, env=clean_env())
        assert done.returncode == 2 and needle in done.stderr, done.stderr
