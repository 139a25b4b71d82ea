"""Helpers of the cluster tests: the database from the test's side, and a workspace
with its key and webhooks made on it before any node starts."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import asyncpg

from hookd.keys import generate_key
from hookd.models import NewWebhook
from hookd.storage.postgres import PostgresStore
from tests.ops.support import Serve, http


def fetch(url: str, sql: str, *args: Any) -> list[tuple[Any, ...]]:
    """Rows of ``sql``, read on a connection of the test's own."""

    async def go() -> list[tuple[Any, ...]]:
        conn = await asyncpg.connect(url)
        try:
            return [tuple(r) for r in await conn.fetch(sql, *args)]
        finally:
            await conn.close()

    return asyncio.run(go())


def provision(url: str, workspace: str, webhooks: list[dict[str, Any]]) -> tuple[str, list[str]]:
    """A workspace key (its plaintext) and the webhooks (their ids), in order.

    Each webhook is given as ``name``, ``url``, ``events`` and any other field
    of ``NewWebhook`` that differs from these defaults.
    """
    key = generate_key(platform=False)

    async def go() -> list[str]:
        store = PostgresStore(url, listen=False)
        await store.open()
        try:
            await store.ensure_workspace(workspace)
            await store.create_api_key(workspace, key.digest, key.prefix, "user_cluster")
            ids = []
            for fields in webhooks:
                new = {
                    "workspace_id": workspace,
                    "secret": f"secret-{len(ids):04d}-0123456789",
                    "retry_attempts": 3,
                    "timeout_ms": 1000,
                    "created_by": "user_cluster",
                    **fields,
                }
                ids.append((await store.create_webhook(NewWebhook(**new))).id)
            return ids
        finally:
            await store.close()

    return key.plaintext, asyncio.run(go())


def post_events(node: Serve, key: str, events: list[dict[str, Any]]) -> tuple[int, Any]:
    """``POST /v1/events/batch`` to ``node``: the status and the decoded answer."""
    status, raw = http(
        "POST",
        node.url("/v1/events/batch"),
        {"events": events},
        {"Authorization": f"Bearer {key}"},
        timeout=60,
    )
    return status, json.loads(raw)
