"""Liveness, readiness and ``hookd check`` against real daemons."""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from pathlib import Path

from aiohttp import ClientSession

from hookd.config import load_config
from hookd.daemon import Daemon
from hookd.systemd import Notifier
from tests.ops.support import Serve, clean_env, http, run_hookd


def test_probes_and_hookd_check_against_a_running_daemon(
    serve: Callable[..., Serve], db: Path
) -> None:
    daemon = serve()
    status, body = http("GET", daemon.url("/healthz"))
    assert (status, json.loads(body)) == (200, {"status": "ok"})
    status, body = http("GET", daemon.url("/readyz"))
    assert (status, json.loads(body)) == (200, {"status": "ready"})

    env = clean_env(HOOKD_SERVER_LISTEN=daemon.listen[0], HOOKD_DATABASE_PATH=str(db))
    ready = run_hookd("check", env=env)
    assert ready.returncode == 0, ready.stderr
    assert json.loads(ready.stdout) == {"status": "ready"}
    live = run_hookd("check", "--live", env=env)
    assert live.returncode == 0, live.stderr

    assert daemon.stop() == 0
    gone = run_hookd("check", env=env)
    assert gone.returncode == 1
    assert gone.stderr.startswith("hookd: not ready:") and len(gone.stderr.splitlines()) == 1
    assert run_hookd("check", "--live", env=env).returncode == 1


def test_check_against_a_wildcard_listener_asks_loopback(
    serve: Callable[..., Serve], db: Path
) -> None:
    # In the container the API listens on 0.0.0.0; the HEALTHCHECK runs inside it.
    daemon = serve(HOOKD_SERVER_LISTEN="0.0.0.0:0")
    port = daemon.listen[0].rpartition(":")[2]
    env = clean_env(HOOKD_SERVER_LISTEN=f"0.0.0.0:{port}", HOOKD_DATABASE_PATH=str(db))
    result = run_hookd("check", env=env)
    assert result.returncode == 0, result.stderr


async def test_readyz_fails_when_the_scheduler_stalls_or_the_database_is_gone(
    tmp_path: Path,
) -> None:
    config = load_config(
        env={
            "HOOKD_DATABASE_PATH": str(tmp_path / "hookd.db"),
            "HOOKD_SERVER_LISTEN": "127.0.0.1:0",
        }
    )
    daemon = Daemon(config, notifier=Notifier(env={}))
    await daemon.start()
    try:
        host, port = daemon.bound[0]
        async with ClientSession() as client:
            url = f"http://{host}:{port}/readyz"
            async with client.get(url) as resp:
                assert resp.status == 200

            # A scheduler loop that made no progress for far longer than its
            # poll interval is stuck: not ready, and the reason says so.  (The
            # live loop may make real progress between the two lines below, once
            # a poll interval; then the readiness is rightly 200 and we look again.)
            for _ in range(5):
                daemon.scheduler.last_progress = time.monotonic() - 3600
                async with client.get(url) as resp:
                    status = resp.status
                    body = await resp.json()
                if status == 503:
                    break
            assert status == 503, body
            assert body["status"] == "unavailable"
            assert [p.split(":")[0] for p in body["problems"]] == ["scheduler"]

            daemon.scheduler.last_progress = time.monotonic()
            await daemon.store.close()
            async with client.get(url) as resp:
                assert resp.status == 503
                body = await resp.json()
            assert [p.split(":")[0] for p in body["problems"]] == ["database"]
            # Liveness does not depend on either.
            async with client.get(f"http://{host}:{port}/healthz") as resp:
                assert resp.status == 200
            await daemon.store.open()
    finally:
        await daemon.stop()
