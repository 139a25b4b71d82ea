"""Retention: old delivered deliveries and their attempts go, in batches, in the
background; nothing else goes.  A real daemon in-process, with a manual clock."""

from __future__ import annotations

from pathlib import Path

from hookd.clock import ManualClock
from hookd.config import load_config
from hookd.daemon import Daemon
from hookd.models import NewWebhook, Status
from hookd.storage import DeliveryFilter
from hookd.systemd import Notifier
from tests.conftest import Receiver, eventually
from tests.ops.support import SECRET


def _config(tmp_path: Path, **env: str) -> dict[str, str]:
    return {
        "HOOKD_DATABASE_PATH": str(tmp_path / "hookd.db"),
        "HOOKD_SERVER_LISTEN": "127.0.0.1:0",
        "HOOKD_DELIVERY_ALLOW_NETWORKS": "127.0.0.0/8",
        "HOOKD_DELIVERY_POLL_INTERVAL_SECONDS": "0.05",
        "HOOKD_DELIVERY_DRAIN_TIMEOUT_SECONDS": "1",
        "HOOKD_SERVER_STATS_INTERVAL_SECONDS": "0.05",
        "HOOKD_RETENTION_DELIVERED_MAX_AGE_SECONDS": "3600",
        "HOOKD_RETENTION_INTERVAL_SECONDS": "0.05",
        "HOOKD_RETENTION_BATCH_SIZE": "2",
        "HOOKD_RETENTION_BATCH_PAUSE_SECONDS": "0.01",
        **env,
    }


async def test_old_delivered_deliveries_are_swept_in_batches_and_nothing_else(
    tmp_path: Path, receiver: Receiver
) -> None:
    clock = ManualClock()
    daemon = Daemon(load_config(env=_config(tmp_path)), clock=clock, notifier=Notifier(env={}))
    store = daemon.store
    batches: list[int] = []
    delete = store.delete_ended_before

    async def counting_delete(status: Status, cutoff_ms: int, batch: int) -> int:
        deleted = await delete(status, cutoff_ms, batch)
        if status is Status.DELIVERED:
            batches.append(deleted)
        return deleted

    store.delete_ended_before = counting_delete  # type: ignore[method-assign]
    await daemon.start()
    try:
        ok = await store.create_webhook(
            NewWebhook("ws_r", "ok", receiver.status("/ok", 200), ("*",), SECRET, 0, 2000, "u")
        )
        failing = await store.create_webhook(
            NewWebhook(
                "ws_r", "fail", receiver.status("/fail", 500), ("old.*",), SECRET, 5, 2000, "u"
            )
        )
        old = [await store.ingest_event("ws_r", "old.e", {"n": n}) for n in range(5)]
        daemon.scheduler.wake()
        await receiver.wait_for("/ok", 5)
        await receiver.wait_for("/fail", 5)
        page = await store.list_deliveries(None, DeliveryFilter(webhook_id=ok.id), 50)
        old_ok = [d.id for d in page.items]
        assert len(old_ok) == 5

        async def settled() -> bool:
            stats = await store.queue_stats()
            return stats.by_status[Status.DELIVERED.value] == 5 and stats.in_flight == 0

        await eventually(settled)
        swept_before = daemon.metrics.registry.get_sample_value(
            "hookd_retention_deleted_deliveries_total", {"status": "delivered"}
        )
        assert swept_before == 0, "nothing is old enough yet"

        clock.advance(2 * 3600)
        young = await store.ingest_event("ws_r", "young.e", {})
        daemon.scheduler.wake()
        await receiver.wait_for("/ok", 6)

        async def swept() -> bool:
            value = daemon.metrics.registry.get_sample_value(
                "hookd_retention_deleted_deliveries_total", {"status": "delivered"}
            )
            return value == 5

        await eventually(swept)
        for delivery_id in old_ok:
            assert await store.get_delivery(None, delivery_id) is None
            assert await store.list_attempts(delivery_id) == []
        (young_id,) = young.delivery_ids
        kept = await store.get_delivery(None, young_id)
        assert kept is not None and kept.status is Status.DELIVERED
        # Undelivered ones stay: retried, or dead letters younger than their own age.
        for r in old:
            for delivery_id in r.delivery_ids:
                if delivery_id not in old_ok:
                    d = await store.get_delivery(None, delivery_id)
                    assert d is not None and d.webhook_id == failing.id
                    assert d.status in (Status.FAILED, Status.DEAD_LETTER)
        # Batches of at most two, the last one short.
        assert max(batches) == 2 and [b for b in batches if b][:3] == [2, 2, 1]
    finally:
        await daemon.stop()


async def test_a_zero_age_keeps_everything(tmp_path: Path, receiver: Receiver) -> None:
    clock = ManualClock()
    config = load_config(
        env=_config(
            tmp_path,
            HOOKD_RETENTION_DELIVERED_MAX_AGE_SECONDS="0",
            HOOKD_RETENTION_DEAD_LETTER_MAX_AGE_SECONDS="0",
        )
    )
    daemon = Daemon(config, clock=clock, notifier=Notifier(env={}))
    await daemon.start()
    try:
        await daemon.store.create_webhook(
            NewWebhook("ws_z", "ok", receiver.status("/ok", 200), ("*",), SECRET, 0, 2000, "u")
        )
        (delivery_id,) = (await daemon.store.ingest_event("ws_z", "e", {})).delivery_ids
        daemon.scheduler.wake()
        await receiver.wait_for("/ok", 1)
        clock.advance(365 * 86400)

        async def swept_a_few_times() -> bool:
            return daemon.retention_sweeps >= 3

        # Sweeps still run (they also bound the 429 lane) and delete nothing.
        await eventually(swept_a_few_times)
        assert await daemon.store.get_delivery(None, delivery_id) is not None
        for status in ("delivered", "dead_letter"):
            assert (
                daemon.metrics.registry.get_sample_value(
                    "hookd_retention_deleted_deliveries_total", {"status": status}
                )
                == 0
            )
    finally:
        await daemon.stop()


async def test_dead_letters_go_after_their_own_age(tmp_path: Path, receiver: Receiver) -> None:
    clock = ManualClock()
    config = load_config(
        env=_config(tmp_path, HOOKD_RETENTION_DEAD_LETTER_MAX_AGE_SECONDS=str(3 * 3600))
    )
    daemon = Daemon(config, clock=clock, notifier=Notifier(env={}))
    await daemon.start()
    try:
        store = daemon.store
        await store.create_webhook(
            NewWebhook("ws_d", "gone", receiver.status("/fail", 500), ("*",), SECRET, 0, 2000, "u")
        )
        (delivery_id,) = (await store.ingest_event("ws_d", "e", {})).delivery_ids
        daemon.scheduler.wake()

        async def dead() -> bool:
            d = await store.get_delivery(None, delivery_id)
            return d is not None and d.status is Status.DEAD_LETTER

        await eventually(dead)

        def deleted() -> float | None:
            return daemon.metrics.registry.get_sample_value(
                "hookd_retention_deleted_deliveries_total", {"status": "dead_letter"}
            )

        # Older than the delivered age (1 h), younger than its own: kept for replay.
        clock.advance(2 * 3600)
        sweeps = daemon.retention_sweeps

        async def swept_twice() -> bool:
            return daemon.retention_sweeps >= sweeps + 2

        await eventually(swept_twice)
        assert await store.get_delivery(None, delivery_id) is not None
        assert deleted() == 0

        clock.advance(2 * 3600)

        async def gone() -> bool:
            return deleted() == 1

        await eventually(gone)
        assert await store.get_delivery(None, delivery_id) is None
        assert await store.list_attempts(delivery_id) == []
    finally:
        await daemon.stop()
