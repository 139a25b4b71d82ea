"""A full disk or a read-only database: the API answers 503 and acknowledges only what it stored."""

from __future__ import annotations

import sqlite3

from tests.api.conftest import Api, api  # noqa: F401 - the fixture is used by name

BIG = "x" * 6000


async def _set(target: Api, pragma: str) -> None:
    # Both connections: the store's own and the one it ingests through.
    store = target.store
    for db in (store._db, await store._ingest_connection()):
        await store._call(lambda conn: conn.execute(pragma).fetchall(), db=db)


async def test_disk_full_answers_503_and_acknowledges_only_stored_events(api: Api) -> None:  # noqa: F811
    key = await api.key("ws_full")
    await api.webhook(key, url="https://crm.example.com/hook")
    (pages,) = await api.store._call(lambda c: c.execute("PRAGMA page_count").fetchone())
    await _set(api, f"PRAGMA max_page_count = {pages + 8}")
    acknowledged: list[str] = []
    refused = 0
    for i in range(60):
        reply = await api.call(
            "POST", "/v1/events", key=key, json_body={"type": "t", "data": {"i": i, "pad": BIG}}
        )
        if reply.status == 202:
            acknowledged.append(reply.body["data"]["_id"])
        else:
            assert reply.status == 503, reply.body
            assert reply.body["code"] == 503
            assert "database" in reply.body["message"]
            refused += 1
    assert acknowledged, "some events fit before the disk filled"
    assert refused > 0, "the disk never filled"
    # Reads keep working while writes are refused.
    listed = await api.call("GET", "/v1/deliveries", key=key)
    assert listed.status == 200

    with sqlite3.connect(api.store.path) as conn:
        stored = {r[0] for r in conn.execute("SELECT id FROM events WHERE workspace_id='ws_full'")}
        fanned = conn.execute(
            "SELECT count(*) FROM deliveries WHERE workspace_id='ws_full'"
        ).fetchone()[0]
        assert conn.execute("PRAGMA integrity_check").fetchall() == [("ok",)]
    assert stored == set(acknowledged), "acknowledged exactly what was stored"
    assert fanned == len(acknowledged)

    await _set(api, "PRAGMA max_page_count = 1073741823")
    again = await api.call("POST", "/v1/events", key=key, json_body={"type": "t", "data": {}})
    assert again.status == 202


async def test_read_only_database_answers_503_for_writes(api: Api) -> None:  # noqa: F811
    key = await api.key("ws_ro")
    created = await api.webhook(key, url="https://crm.example.com/hook")
    await _set(api, "PRAGMA query_only = ON")
    event = await api.call("POST", "/v1/events", key=key, json_body={"type": "t", "data": {}})
    assert event.status == 503
    patch = await api.call(
        "PATCH", f"/v1/webhooks/{created['_id']}", key=key, json_body={"name": "renamed"}
    )
    assert patch.status == 503
    got = await api.call("GET", f"/v1/webhooks/{created['_id']}", key=key)
    assert got.status == 200 and got.body["data"]["name"] == "hook"
    ready = await api.call("GET", "/readyz")
    assert ready.status == 200  # reads work; readiness is about reachability
    await _set(api, "PRAGMA query_only = OFF")
    event = await api.call("POST", "/v1/events", key=key, json_body={"type": "t", "data": {}})
    assert event.status == 202
    with sqlite3.connect(api.store.path) as conn:
        assert conn.execute("SELECT count(*) FROM events").fetchone()[0] == 1
