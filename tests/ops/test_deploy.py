"""deploy/: the Grafana dashboard queries what hookd exports, and the alert rules
pass promtool's checks and their unit tests."""

from __future__ import annotations

import json
import re
import subprocess
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import yaml
from prometheus_client.parser import text_string_to_metric_families

from tests.ops.support import ROOT, Serve, http
from tests.support.services import require_binary

DASHBOARD = ROOT / "deploy" / "grafana" / "hookd-dashboard.json"
ALERTS = ROOT / "deploy" / "prometheus" / "hookd-alerts.yml"
ALERT_TESTS = ROOT / "deploy" / "prometheus" / "hookd-alerts.test.yml"

# Series Prometheus makes itself for every target (not in any exposition).
PROMETHEUS_MADE = frozenset({"up"})
_KEYWORDS = frozenset(
    {"by", "without", "on", "ignoring", "group_left", "group_right", "offset", "bool"}
    | {"and", "or", "unless", "inf", "nan"}
)
# Grafana's variables, as a query sees them once substituted.
_GRAFANA_VARIABLES = {
    "$__rate_interval": "5m",
    "$__interval": "1m",
    "$__range": "1h",
    "$job": ".*",
}


def metric_names(expr: str) -> set[str]:
    """The series names a PromQL expression reads."""
    text = re.sub(r'"(?:[^"\\]|\\.)*"', '""', expr)  # strings
    text = re.sub(r"\{[^}]*\}", " ", text)  # label matchers
    text = re.sub(r"\[[^\]]*\]", " ", text)  # ranges and subqueries
    text = re.sub(r"\b(by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)", " ", text)
    text = re.sub(r"\boffset\s+\w+", " ", text)
    names = set()
    for match in re.finditer(r"[A-Za-z_:][A-Za-z0-9_:]*", text):
        rest = text[match.end() :].lstrip()
        name = match.group()
        if rest.startswith("(") or name in _KEYWORDS:
            continue  # a function, or an operator
        names.add(name)
    return names


def test_metric_names_are_read_from_promql() -> None:
    assert metric_names(
        'histogram_quantile(0.9, sum by (le) (rate(a_bucket{job=~"x|by(y)"}[5m])))'
    ) == {"a_bucket"}
    assert metric_names("max by (job) (b offset 15m) - on (job) c > bool 0 and d") == {
        "b",
        "c",
        "d",
    }
    assert metric_names("time() - max(e_seconds)") == {"e_seconds"}


def _panels(panels: list[dict[str, Any]]) -> Iterator[dict[str, Any]]:
    for panel in panels:
        yield panel
        yield from _panels(panel.get("panels", []))


def dashboard_queries() -> list[str]:
    doc = json.loads(DASHBOARD.read_text())
    queries = []
    for panel in _panels(doc["panels"]):
        if panel["type"] == "row":
            continue
        assert panel.get("targets"), f"panel {panel['title']!r} has no query"
        for target in panel["targets"]:
            expr = target["expr"]
            for variable, value in _GRAFANA_VARIABLES.items():
                expr = expr.replace(variable, value)
            assert "$" not in expr, f"unknown variable in {target['expr']!r}"
            queries.append(expr)
    return queries


def alert_rules() -> list[dict[str, Any]]:
    doc = yaml.safe_load(ALERTS.read_text())
    return [rule for group in doc["groups"] for rule in group["rules"]]


def test_every_grafana_query_and_alert_reads_what_a_live_hookd_exports(
    serve: Callable[..., Serve], tmp_path: Path
) -> None:
    promtool = require_binary("promtool", "prometheus")
    daemon = serve()
    status, body = http("GET", daemon.url("/metrics"))
    assert status == 200
    exported = {
        sample.name
        for family in text_string_to_metric_families(body.decode())
        for sample in family.samples
    }
    queries = dashboard_queries()
    assert len(queries) >= 20
    for expr in queries:
        names = metric_names(expr)
        assert names, expr
        assert names <= exported, f"{expr!r} reads {names - exported}, which hookd does not export"
    for rule in alert_rules():
        names = metric_names(rule["expr"])
        assert names and names <= exported | PROMETHEUS_MADE, (rule["alert"], names - exported)
    # And each query is valid PromQL: promtool parses them as recording rules.
    as_rules = tmp_path / "dashboard-queries.yml"
    as_rules.write_text(
        yaml.safe_dump(
            {
                "groups": [
                    {
                        "name": "dashboard",
                        "rules": [
                            {"record": f"dashboard:query_{n}", "expr": e}
                            for n, e in enumerate(queries)
                        ],
                    }
                ]
            }
        )
    )
    checked = subprocess.run(
        [promtool, "check", "rules", str(as_rules)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert checked.returncode == 0, checked.stdout + checked.stderr


def test_the_dashboard_covers_what_operators_watch() -> None:
    read = set().union(*(metric_names(q) for q in dashboard_queries()))
    for wanted in (
        "hookd_delivery_transitions_total",  # deliveries by outcome
        "hookd_attempt_duration_seconds_bucket",  # latency percentiles
        "hookd_queue_deliveries",  # queue depth by status
        "hookd_queue_oldest_due_age_seconds",
        "hookd_webhooks_paused",  # 429 pauses
        "hookd_webhooks_disabled_total",  # 410 deactivations
        "hookd_attempt_results_fenced_total",
        "hookd_events_ingested_total",  # ingest rate
        "process_cpu_seconds_total",
        "process_resident_memory_bytes",
    ):
        assert wanted in read, wanted
    doc = json.loads(DASHBOARD.read_text())
    ids = [p["id"] for p in _panels(doc["panels"])]
    assert len(ids) == len(set(ids)), "panel ids must be unique"


def test_alert_rules_pass_promtool_and_every_alert_has_unit_tests() -> None:
    promtool = require_binary("promtool", "prometheus")
    for args in (["check", "rules", str(ALERTS)], ["test", "rules", str(ALERT_TESTS)]):
        done = subprocess.run(
            [promtool, *args],
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
            cwd=ALERTS.parent,
        )
        assert done.returncode == 0, done.stdout + done.stderr
    alerts = {rule["alert"] for rule in alert_rules()}
    assert alerts >= {
        "HookdQueueGrowing",
        "HookdOldestDueTooOld",
        "HookdDeadLettersRising",
        "HookdWebhookPausedLong",
        "HookdNotReady",
        "HookdDown",
        "HookdFencedWrites",
    }
    tests = yaml.safe_load(ALERT_TESTS.read_text())["tests"]
    fired: set[str] = set()
    quiet: set[str] = set()
    for case in tests:
        for check in case["alert_rule_test"]:
            (fired if check["exp_alerts"] else quiet).add(check["alertname"])
    # Each alert is shown both to fire and to stay quiet.
    assert fired == alerts and quiet == alerts
