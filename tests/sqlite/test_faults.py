"""A full disk or a database that refuses writes: the API answers 503 and acknowledges
only what it stored, reads go on, and writes work again once the fault is gone."""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator

import pytest

from tests.api.conftest import Api
from tests.sqlite.support import (
    INGEST_THREAD,
    SCHEDULER_THREAD,
    WriteRefusal,
    another_process,
    on_connect,
)

BIG = "x" * 6000


async def test_disk_full_answers_503_and_acknowledges_only_stored_events(api: Api) -> None:
    key = await api.key("ws_full")
    await api.webhook(key, url="https://crm.example.com/hook")
    path = api.store.path
    with another_process(path) as conn:
        # Room to give back later, as an operator frees disk space.
        conn.execute("CREATE TABLE ballast (b BLOB)")
        conn.execute(
            "WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < 64)"
            " INSERT INTO ballast SELECT zeroblob(4000) FROM n"
        )
        (pages,) = conn.execute("PRAGMA page_count").fetchone()
    limited: list[str] = []

    def disk_nearly_full(conn: sqlite3.Connection, thread: str) -> None:
        if thread == INGEST_THREAD:
            conn.execute(f"PRAGMA max_page_count = {pages + 8}")
            limited.append(thread)

    acknowledged: list[str] = []
    refused = 0
    with on_connect(disk_nearly_full):  # the ingest connection opens at the first event
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
    assert limited == [INGEST_THREAD]
    assert acknowledged, "some events fit before the disk filled"
    assert refused > 0, "the disk never filled"
    # Reads keep working while writes are refused.
    listed = await api.call("GET", "/v1/deliveries", key=key)
    assert listed.status == 200

    with another_process(path) as conn:
        stored = {r[0] for r in conn.execute("SELECT id FROM events WHERE workspace_id='ws_full'")}
        fanned = conn.execute(
            "SELECT count(*) FROM deliveries WHERE workspace_id='ws_full'"
        ).fetchone()[0]
        assert conn.execute("PRAGMA integrity_check").fetchall() == [("ok",)]
        conn.execute("DROP TABLE ballast")  # space freed
    assert stored == set(acknowledged), "acknowledged exactly what was stored"
    assert fanned == len(acknowledged)

    again = await api.call("POST", "/v1/events", key=key, json_body={"type": "t", "data": {}})
    assert again.status == 202


@pytest.fixture
def refusal() -> Iterator[WriteRefusal]:
    refusal = WriteRefusal()
    with on_connect(refusal.install):
        yield refusal


@pytest.fixture
def refusing_api(refusal: WriteRefusal, api: Api) -> tuple[Api, WriteRefusal]:
    """The API on a store whose every connection opened under ``refusal``."""
    # (Requested after ``refusal``: the scheduler's and the admin connection
    # opened under it; ingest's opens at the first event.)
    assert len(refusal.installed) == 2 and SCHEDULER_THREAD in refusal.installed
    return api, refusal


async def test_a_database_that_refuses_writes_answers_503_for_writes(
    refusing_api: tuple[Api, WriteRefusal],
) -> None:
    api, refusal = refusing_api
    key = await api.key("ws_ro")
    created = await api.webhook(key, url="https://crm.example.com/hook")
    refusal.switch(api.store.path, True)
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
    assert INGEST_THREAD in refusal.installed
    refusal.switch(api.store.path, False)
    event = await api.call("POST", "/v1/events", key=key, json_body={"type": "t", "data": {}})
    assert event.status == 202
    with another_process(api.store.path) as conn:
        assert conn.execute("SELECT count(*) FROM events").fetchone()[0] == 1
