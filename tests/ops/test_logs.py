"""Logs: JSON lines off a terminal, console output on one, one record per attempt,
and no secret or API key anywhere in them."""

from __future__ import annotations

import json
import os
import pty
import re
import select
import signal
import subprocess
import time
from collections.abc import Callable
from pathlib import Path

from hookd.logs import REDACTED, UtcTimestamper, redact
from tests.ops.support import (
    HOOKD,
    SECRET,
    Receiver,
    Serve,
    clean_env,
    create_key,
    http,
    run_hookd,
    serve_env,
)

ATTEMPT_FIELDS = {"delivery_id", "webhook_id", "attempt", "status_code", "error", "duration_ms"}


def test_serve_logs_json_lines_with_one_record_per_attempt_and_no_secrets(
    serve: Callable[..., Serve], db: Path, threaded_receiver: Receiver
) -> None:
    daemon = serve(HOOKD_DELIVERY_ALLOW_NETWORKS="127.0.0.0/8", HOOKD_LOGGING_LEVEL="debug")
    key = create_key(db)
    as_key = {"X-Api-Key": key}
    as_bearer = {"Authorization": f"Bearer {key}"}
    wrong_key = key[:-4] + "0000"

    status, body = http(
        "POST",
        daemon.url("/v1/webhooks"),
        {"name": "ok", "url": threaded_receiver.url("/ok"), "events": ["*"], "secret": SECRET},
        as_key,
    )
    assert status == 201, body
    ok_hook = json.loads(body)["data"]["_id"]
    # An endpoint nobody listens on: a connection error, then dead_letter.
    status, body = http(
        "POST",
        daemon.url("/v1/webhooks"),
        {"name": "down", "url": "http://127.0.0.1:9/x", "events": ["*"], "retryAttempts": 0},
        as_bearer,
    )
    assert status == 201, body
    down_hook = json.loads(body)["data"]["_id"]
    down_secret = json.loads(body)["data"]["secret"]
    rotated = SECRET[::-1]
    status, _ = http("PATCH", daemon.url(f"/v1/webhooks/{ok_hook}"), {"secret": rotated}, as_key)
    assert status == 200
    # Rejected credentials must not be echoed into the logs either.
    assert http("GET", daemon.url("/v1/webhooks"), headers={"X-Api-Key": wrong_key})[0] == 401
    status, body = http("POST", daemon.url("/v1/events"), {"type": "ops.logs", "data": {}}, as_key)
    assert status == 202, body
    delivery_ids = set(json.loads(body)["data"]["deliveryIds"])
    assert len(delivery_ids) == 2

    daemon.wait_for("delivery.attempt", count=2)
    assert daemon.stop() == 0

    records = daemon.records()  # every line parses as JSON, or this raises
    assert all({"event", "level", "timestamp"} <= set(r) for r in records)
    assert records[0]["event"] == "hookd.started"
    assert records[-1]["event"] == "hookd.stopped"
    attempts = {r["delivery_id"]: r for r in daemon.events("delivery.attempt")}
    assert set(attempts) == delivery_ids
    for record in attempts.values():
        assert set(record) >= ATTEMPT_FIELDS, record
        assert record["attempt"] == 1 and isinstance(record["duration_ms"], int)
    by_hook = {r["webhook_id"]: r for r in attempts.values()}
    assert by_hook[ok_hook]["status_code"] == 200 and by_hook[ok_hook]["error"] is None
    assert by_hook[ok_hook]["status"] == "delivered"
    assert by_hook[down_hook]["status_code"] is None and by_hook[down_hook]["error"]
    assert by_hook[down_hook]["status"] == "dead_letter"

    output = daemon.output
    for secret in (key, wrong_key, SECRET, rotated, down_secret):
        assert secret not in output
    # Not even a long piece of the key (say, all but its prefix).
    assert key[len(key) // 2 :] not in output


def test_at_the_default_level_plain_successes_are_quiet(
    serve: Callable[..., Serve], db: Path, threaded_receiver: Receiver
) -> None:
    """Info (the default): a failure and what it changes is a line, a plain success none."""
    daemon = serve(HOOKD_DELIVERY_ALLOW_NETWORKS="127.0.0.0/8")
    key = create_key(db)
    hooks = {}
    for name, url in (("ok", threaded_receiver.url("/ok")), ("down", "http://127.0.0.1:9/x")):
        status, body = http(
            "POST",
            daemon.url("/v1/webhooks"),
            {"name": name, "url": url, "events": ["*"], "retryAttempts": 0},
            {"X-Api-Key": key},
        )
        assert status == 201, body
        hooks[name] = json.loads(body)["data"]["_id"]
    status, body = http(
        "POST", daemon.url("/v1/events"), {"type": "ops.quiet", "data": {}}, {"X-Api-Key": key}
    )
    assert status == 202, body
    daemon.wait_for("delivery.attempt")  # the failure's
    # The success was made too (the receiver has it), and stays unlogged.
    deadline = time.monotonic() + 10
    while not threaded_receiver.requests and time.monotonic() < deadline:
        time.sleep(0.05)
    assert threaded_receiver.requests
    assert daemon.stop() == 0
    attempts = daemon.events("delivery.attempt")
    assert [(r["webhook_id"], r["level"], r["status"]) for r in attempts] == [
        (hooks["down"], "info", "dead_letter")
    ]


def test_the_configured_level_filters_records(serve: Callable[..., Serve]) -> None:
    # A fresh database has no API key, which hookd warns about at start.
    daemon = serve(ready="hookd.no_api_keys", HOOKD_LOGGING_LEVEL="warning")
    assert daemon.stop() == 0
    levels = {r["level"] for r in daemon.records()}
    assert levels == {"warning"}, daemon.output


def test_a_terminal_gets_readable_console_output(db: Path) -> None:
    leader, follower = pty.openpty()
    proc = subprocess.Popen(
        [*HOOKD, "serve"],
        env=serve_env(db),
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=follower,
    )
    os.close(follower)
    seen = b""
    try:
        deadline = time.monotonic() + 15
        while b"hookd.started" not in seen and time.monotonic() < deadline:
            ready, _, _ = select.select([leader], [], [], 0.5)
            if ready:
                seen += os.read(leader, 65536)
    finally:
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(15) == 0
        os.close(leader)
    first = seen.decode(errors="replace").splitlines()[0]
    assert "hookd.started" in first
    assert not first.lstrip().startswith("{")


def test_the_redaction_net_catches_credential_fields_and_key_shapes() -> None:
    event = {
        "event": "x",
        "secret": "abc",
        "Authorization": "Bearer whatever",
        "error": "bad key sk_user_0123456789abcdef in header",
        "nested": {"api_key": "k", "ok": "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"},
        "delivery_id": "0123456789abcdef01234567",
    }
    out = redact(None, "info", dict(event))
    assert out["secret"] == REDACTED and out["Authorization"] == REDACTED
    assert out["error"] == f"bad key {REDACTED} in header"
    assert out["nested"] == {"api_key": REDACTED, "ok": REDACTED}
    assert out["delivery_id"] == event["delivery_id"]


def test_cli_logs_carry_no_secret(db: Path) -> None:
    # The CLI prints a new key and a new webhook's secret on stdout by design
    # (shown once); its log stream, stderr, never has them.
    env = clean_env(HOOKD_DATABASE_PATH=str(db), HOOKD_LOGGING_LEVEL="debug")
    created = run_hookd("keys", "create", "--workspace", "ws_cli", env=env)
    assert created.returncode == 0
    key = created.stdout.splitlines()[0]
    hook = run_hookd(
        "webhooks",
        "create",
        "--workspace",
        "ws_cli",
        "--name",
        "n",
        "--url",
        "https://example.com/h",
        "--events",
        "*",
        "--secret",
        SECRET,
        env=env,
    )
    assert hook.returncode == 0, hook.stderr
    assert key.startswith("sk_") and SECRET in hook.stdout
    for result in (created, hook):
        assert key not in result.stderr and SECRET not in result.stderr


def test_timestamps_are_iso_utc_with_microseconds_and_track_the_clock() -> None:
    from datetime import UTC, datetime

    stamper = UtcTimestamper()
    for _ in range(3):
        before = datetime.now(UTC)
        stamp = stamper(None, "info", {})["timestamp"]
        after = datetime.now(UTC)
        assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{6}Z", stamp), stamp
        parsed = datetime.fromisoformat(stamp.replace("Z", "+00:00"))
        assert before.replace(microsecond=before.microsecond // 1000 * 1000) <= parsed
        assert parsed <= after
        time.sleep(0.6)  # crosses a second boundary at least once: the cached prefix moves on
