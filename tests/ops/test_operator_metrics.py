"""The gauges alerts watch besides the queue: the 429 lane and readiness."""

from __future__ import annotations

from pathlib import Path

import pytest

from hookd.clock import ManualClock
from hookd.config import load_config
from hookd.daemon import Daemon
from hookd.lifecycle import Transition
from hookd.models import NewWebhook, Status
from hookd.storage import AttemptRecord, StoreError
from hookd.systemd import Notifier
from tests.ops.support import SECRET


async def test_pause_and_readiness_gauges_follow_the_database(tmp_path: Path) -> None:
    clock = ManualClock()
    config = load_config(env={"HOOKD_DATABASE_PATH": str(tmp_path / "hookd.db")})
    daemon = Daemon(config, clock=clock, notifier=Notifier(env={}))
    reg = daemon.metrics.registry
    store = daemon.store
    await store.open()
    try:
        await daemon.refresh_stats()
        assert reg.get_sample_value("hookd_ready") == 1
        assert reg.get_sample_value("hookd_webhooks_paused") == 0
        assert reg.get_sample_value("hookd_rate_limited_oldest_age_seconds") == 0

        hook = await store.create_webhook(
            NewWebhook("ws_p", "p", "https://example.com/h", ("*",), SECRET, 3, 1000, "u")
        )
        await store.ingest_event("ws_p", "t", {})
        (claim,) = await store.claim_due(1, 90_000, {}, 16)
        now = clock.now_ms()
        limited = Transition(
            Status.RATE_LIMITED, now + 600_000, 0, 1, now, pause_webhook_until=now + 600_000
        )
        await store.record_attempts(
            [
                AttemptRecord(
                    claim.delivery_id,
                    claim.lease_token,
                    hook.id,
                    1,
                    now,
                    5,
                    429,
                    None,
                    "slow down",
                    "429",
                    limited,
                )
            ]
        )
        clock.advance(300)
        await daemon.refresh_stats()
        assert reg.get_sample_value("hookd_webhooks_paused") == 1
        assert reg.get_sample_value("hookd_rate_limited_oldest_age_seconds") == 300
        # The pause is over; the delivery is still in the lane, for longer.
        clock.advance(400)
        await daemon.refresh_stats()
        assert reg.get_sample_value("hookd_webhooks_paused") == 0
        assert reg.get_sample_value("hookd_rate_limited_oldest_age_seconds") == 700
    finally:
        await store.close()
    # A database that cannot be reached is not ready.
    with pytest.raises(StoreError):
        await daemon.refresh_stats()
    assert reg.get_sample_value("hookd_ready") == 0
