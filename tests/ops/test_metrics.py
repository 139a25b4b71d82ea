"""Metrics as Prometheus sees them: promtool on the live exposition, and a real
Prometheus server scraping a running hookd."""

from __future__ import annotations

import asyncio
import json
import re
import socket
import subprocess
import urllib.parse
from collections.abc import Callable
from pathlib import Path

from prometheus_client.parser import text_string_to_metric_families

from hookd.clock import ManualClock
from hookd.config import load_config
from hookd.daemon import Daemon
from hookd.metrics import Metrics
from hookd.models import NewWebhook, Status
from hookd.policy import METRIC_CLASSES
from hookd.storage.sqlite import SqliteStore
from hookd.systemd import Notifier
from tests.ops.support import (
    SECRET,
    Receiver,
    Serve,
    create_key,
    http,
    wait_until,
)
from tests.support.services import require_binary

Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]

FAMILIES = {
    "hookd_events_ingested": "counter",
    "hookd_deliveries_created": "counter",
    "hookd_attempts": "counter",
    "hookd_delivery_transitions": "counter",
    "hookd_attempt_duration_seconds": "histogram",
    "hookd_attempts_in_flight": "gauge",
    "hookd_queue_deliveries": "gauge",
    "hookd_queue_leased_deliveries": "gauge",
    "hookd_queue_oldest_due_age_seconds": "gauge",
    "hookd_webhooks_disabled": "counter",
    "hookd_database_size_bytes": "gauge",
    "hookd_retention_deleted_deliveries": "counter",
    "hookd_requests_resent": "counter",
    "hookd_webhooks_paused": "gauge",
    "hookd_rate_limited_oldest_age_seconds": "gauge",
    "hookd_ready": "gauge",
    "hookd_build_info": "gauge",
}


def scrape(url: str) -> str:
    status, body = http("GET", url)
    assert status == 200
    return body.decode()


def samples(text: str) -> Samples:
    out: Samples = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            out[(s.name, frozenset(s.labels.items()))] = s.value
    return out


def value(text: str, name: str, **labels: str) -> float | None:
    return samples(text).get((name, frozenset(labels.items())))


def deliver_one(daemon: Serve, db: Path, receiver: Receiver) -> str:
    """Webhook and event through the API, as an application would; the delivery id."""
    key = create_key(db)
    headers = {"X-Api-Key": key}
    status, body = http(
        "POST",
        daemon.url("/v1/webhooks"),
        {"name": "metrics", "url": receiver.url(), "events": ["*"], "secret": SECRET},
        headers,
    )
    assert status == 201, body
    status, body = http(
        "POST", daemon.url("/v1/events"), {"type": "ops.metrics", "data": {"n": 1}}, headers
    )
    assert status == 202, body
    (delivery_id,) = json.loads(body)["data"]["deliveryIds"]
    wait_until(lambda: len(receiver.requests) == 1)
    return str(delivery_id)


def test_promtool_accepts_the_live_exposition_on_both_listeners(
    serve: Callable[..., Serve], db: Path, threaded_receiver: Receiver
) -> None:
    promtool = require_binary("promtool", "prometheus")
    daemon = serve(
        HOOKD_DELIVERY_ALLOW_NETWORKS="127.0.0.0/8",
        HOOKD_SERVER_METRICS_LISTEN="127.0.0.1:0",
    )
    assert len(daemon.listen) == 2
    deliver_one(daemon, db, threaded_receiver)
    # The stats task refreshes the queue gauges from the database on its own.
    wait_until(
        lambda: (
            value(scrape(daemon.url("/metrics", 1)), "hookd_queue_deliveries", status="delivered")
            == 1
        )
    )

    for listener in (0, 1):
        text = scrape(daemon.url("/metrics", listener))
        check = subprocess.run(
            [promtool, "check", "metrics"],
            input=text,
            capture_output=True,
            text=True,
            timeout=30,
            check=False,
        )
        assert check.returncode == 0 and not (check.stdout + check.stderr).strip(), (
            check.stdout + check.stderr
        )

    families = {f.name: f.type for f in text_string_to_metric_families(text)}
    for name, kind in FAMILIES.items():
        assert families.get(name) == kind, name
    got = samples(text)
    # Every label set exists from the start, at zero unless something happened.
    for outcome in METRIC_CLASSES:
        expected = 1.0 if outcome == "2xx" else 0.0
        assert got[("hookd_attempts_total", frozenset({("outcome", outcome)}))] == expected
    for status in ("delivered", "failed", "rate_limited", "dead_letter"):
        expected = 1.0 if status == "delivered" else 0.0
        assert got[("hookd_delivery_transitions_total", frozenset({("status", status)}))] == (
            expected
        )
    for status in Status:
        assert ("hookd_queue_deliveries", frozenset({("status", status.value)})) in got
    assert got[("hookd_attempt_duration_seconds_count", frozenset())] == 1
    assert got[("hookd_database_size_bytes", frozenset())] > 0
    assert got[("hookd_attempts_in_flight", frozenset())] == 0
    assert got[("hookd_requests_resent_total", frozenset())] == 0
    build = [labels for (name, labels) in got if name == "hookd_build_info"]
    assert build and ("version", "0.1.0") in build[0]
    # Bounded labels only: no id, URL or free text ever becomes a label value.
    for name, labels in got:
        if not name.startswith("hookd_"):
            continue
        for label, label_value in labels:
            assert not re.fullmatch(r"[0-9a-f]{24}", label_value), (name, label)
            assert "://" not in label_value and "/" not in label_value, (name, label)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _query(prometheus: str, expr: str) -> float | None:
    status, body = http(
        "GET", f"{prometheus}/api/v1/query?" + urllib.parse.urlencode({"query": expr})
    )
    assert status == 200, body
    result = json.loads(body)["data"]["result"]
    if not result:
        return None
    return float(result[0]["value"][1])


def test_a_real_prometheus_sees_a_delivery_in_the_counters(
    serve: Callable[..., Serve], db: Path, threaded_receiver: Receiver, tmp_path: Path
) -> None:
    binary = require_binary("prometheus")
    daemon = serve(HOOKD_DELIVERY_ALLOW_NETWORKS="127.0.0.0/8")
    port = _free_port()
    config = tmp_path / "prometheus.yml"
    config.write_text(
        "global:\n"
        "  scrape_interval: 500ms\n"
        "  evaluation_interval: 500ms\n"
        "scrape_configs:\n"
        "  - job_name: hookd\n"
        "    scrape_interval: 500ms\n"
        "    scrape_timeout: 500ms\n"
        "    static_configs:\n"
        f"      - targets: ['{daemon.listen[0]}']\n"
    )
    log = (tmp_path / "prometheus.log").open("w")
    prom = subprocess.Popen(
        [
            binary,
            f"--config.file={config}",
            f"--storage.tsdb.path={tmp_path / 'tsdb'}",
            f"--web.listen-address=127.0.0.1:{port}",
        ],
        stdin=subprocess.DEVNULL,
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    base = f"http://127.0.0.1:{port}"
    try:

        def ready() -> bool:
            try:
                return http("GET", f"{base}/-/ready", timeout=2)[0] == 200
            except OSError:
                assert prom.poll() is None, (tmp_path / "prometheus.log").read_text()
                return False

        wait_until(ready, timeout=30)
        wait_until(lambda: _query(base, 'up{job="hookd"}') == 1, timeout=30)
        # Before any delivery the series exist, at zero.
        assert _query(base, 'hookd_attempts_total{outcome="2xx"}') == 0

        deliver_one(daemon, db, threaded_receiver)

        wait_until(lambda: _query(base, 'hookd_attempts_total{outcome="2xx"}') == 1, timeout=30)
        assert _query(base, 'hookd_delivery_transitions_total{status="delivered"}') == 1
        assert _query(base, "hookd_attempt_duration_seconds_count") == 1
        assert _query(base, 'sum(hookd_attempts_total{outcome!="2xx"})') == 0
        wait_until(
            lambda: _query(base, 'hookd_queue_deliveries{status="delivered"}') == 1, timeout=30
        )
    finally:
        prom.terminate()
        try:
            prom.wait(15)
        except subprocess.TimeoutExpired:
            prom.kill()
            prom.wait(5)
        log.close()


def test_events_posted_to_the_api_are_counted(
    serve: Callable[..., Serve], db: Path, threaded_receiver: Receiver
) -> None:
    daemon = serve(HOOKD_DELIVERY_ALLOW_NETWORKS="127.0.0.0/8")
    deliver_one(daemon, db, threaded_receiver)
    text = scrape(daemon.url("/metrics"))
    assert value(text, "hookd_events_ingested_total") == 1
    assert value(text, "hookd_deliveries_created_total") == 1


async def test_queue_gauges_report_depth_lag_and_size(tmp_path: Path) -> None:
    clock = ManualClock()
    config = load_config(env={"HOOKD_DATABASE_PATH": str(tmp_path / "hookd.db")})
    daemon = Daemon(config, clock=clock, notifier=Notifier(env={}))
    await daemon.store.open()
    try:
        await daemon.store.create_webhook(
            NewWebhook("ws_g", "g", "https://example.com/h", ("*",), SECRET, 3, 1000, "u")
        )
        for n in range(3):
            await daemon.store.ingest_event("ws_g", "t", {"n": n})
        clock.advance(42)
        await daemon.refresh_stats()
    finally:
        await daemon.store.close()
    reg = daemon.metrics.registry
    assert reg.get_sample_value("hookd_queue_deliveries", {"status": "pending"}) == 3
    assert reg.get_sample_value("hookd_queue_deliveries", {"status": "delivered"}) == 0
    assert reg.get_sample_value("hookd_queue_oldest_due_age_seconds") == 42
    assert (reg.get_sample_value("hookd_database_size_bytes") or 0) > 0


async def test_ingest_counts_new_events_and_their_deliveries_not_repeats(
    store: SqliteStore,
) -> None:
    metrics = Metrics()
    for url in ("https://a.example/h", "https://b.example/h"):
        await store.create_webhook(NewWebhook("ws_i", "h", url, ("*",), SECRET, 3, 1000, "u"))
    first = await store.ingest_event("ws_i", "t", {}, "key-1")
    repeat = await store.ingest_event("ws_i", "t", {}, "key-1")
    assert repeat.duplicate
    metrics.observe_ingest(first)
    metrics.observe_ingest(repeat)
    assert metrics.registry.get_sample_value("hookd_events_ingested_total") == 1
    assert metrics.registry.get_sample_value("hookd_deliveries_created_total") == 2


async def test_a_request_resent_on_a_fresh_connection_is_counted(tmp_path: Path) -> None:
    """The daemon's sender counts into the daemon's metrics: the receiver answers
    one request on a keep-alive connection, then closes it on the next one
    without a byte, and the next goes again on a new connection."""
    requests = 0

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        nonlocal requests
        while True:
            head = await reader.readuntil(b"\r\n\r\n")
            length = int(re.search(rb"(?i)content-length: *(\d+)", head)[1])  # type: ignore[index]
            await reader.readexactly(length)
            requests += 1
            if requests == 2:
                writer.close()
                return
            writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n")

    server = await asyncio.start_server(handle, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    config = load_config(
        env={
            "HOOKD_DATABASE_PATH": str(tmp_path / "hookd.db"),
            "HOOKD_DELIVERY_ALLOW_NETWORKS": "127.0.0.0/8",
        }
    )
    daemon = Daemon(config, notifier=Notifier(env={}))
    await daemon.delivery.sender.start()
    try:
        for _ in range(2):
            result = await daemon.delivery.sender.send(f"http://127.0.0.1:{port}/", b"{}", {}, 2000)
            assert result.status_code == 200, result
    finally:
        await daemon.delivery.sender.close()
        server.close()
    assert requests == 3
    assert daemon.metrics.registry.get_sample_value("hookd_requests_resent_total") == 1
