"""Long CLI work shows progress on a terminal and only its summary elsewhere."""

from __future__ import annotations

import io
import os
import pty
import subprocess
from pathlib import Path

import pytest

from hookd.lifecycle import Transition
from hookd.models import Status
from hookd.progress import Progress
from hookd.storage import AttemptRecord
from hookd.storage.base import NewEvent
from hookd.storage.sqlite import SqliteStore
from tests.ops.support import HOOKD, WORKSPACE, clean_env, create_webhook, with_store

CLEAR = "\r\x1b[K"


class FakeTerminal(io.StringIO):
    def __init__(self, tty: bool) -> None:
        super().__init__()
        self.tty = tty

    def isatty(self) -> bool:
        return self.tty


class Ticks:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


@pytest.mark.parametrize(
    ("total", "steps", "expected_last"),
    [
        (None, [(10, 0.5), (30, 1.0)], "replaying: 40 deliveries, 27/s, 1.5 s"),
        (200, [(50, 0.5), (50, 0.5)], "replaying: 100/200 (50 %) deliveries, 100/s, 1.0 s"),
        (0, [(0, 2.0)], "replaying: 0/0 deliveries, 0/s, 2.0 s"),
    ],
)
def test_the_line_counts_totals_and_rates(
    total: int | None, steps: list[tuple[int, float]], expected_last: str
) -> None:
    clock, err, out = Ticks(), FakeTerminal(tty=True), io.StringIO()
    progress = Progress(
        "replaying", total=total, unit="deliveries", stream=err, out=out, clock=clock
    )
    for n, seconds in steps:
        clock.now += seconds
        progress.advance(n)
    assert err.getvalue().endswith(CLEAR + expected_last)
    progress.finish("done: 40")
    assert err.getvalue().endswith(CLEAR) and out.getvalue() == "done: 40\n"


def test_redraws_are_throttled_and_a_pipe_gets_only_the_summary() -> None:
    clock, err, out = Ticks(), FakeTerminal(tty=True), io.StringIO()
    progress = Progress("x", stream=err, out=out, clock=clock, interval=0.1)
    for _ in range(100):
        clock.now += 0.01
        progress.advance(1)
    # 1 s of work at one redraw per 0.1 s (the first at once).
    assert err.getvalue().count(CLEAR) == 10
    quiet_err, quiet_out = FakeTerminal(tty=False), io.StringIO()
    quiet = Progress("x", stream=quiet_err, out=quiet_out, clock=clock)
    quiet.advance(5)
    quiet.finish("summary")
    assert quiet_err.getvalue() == "" and quiet_out.getvalue() == "summary\n"


# -- the commands, as processes on a terminal and in a pipe ------------------------------


def _dead_letters(db: Path, count: int) -> str:
    hook = create_webhook(db, "https://example.com/h")

    async def work(store: SqliteStore) -> None:
        for start in range(0, count, 500):
            n = min(500, count - start)
            await store.ingest_events(WORKSPACE, [NewEvent("t", {"n": i}) for i in range(n)])
            claims = await store.claim_due(n, 60_000, {}, n)
            dead = Transition(Status.DEAD_LETTER, None, 1, 0, None, dead_letter_reason="test")
            await store.record_attempts(
                [
                    AttemptRecord(
                        c.delivery_id,
                        c.lease_token,
                        c.webhook_id,
                        1,
                        0,
                        1,
                        500,
                        None,
                        "",
                        "5xx",
                        dead,
                    )
                    for c in claims
                ]
            )

    with_store(db, work)
    return hook.id


def _run(db: Path, *args: str, tty: bool, **env_vars: str) -> tuple[int, str, str]:
    env = clean_env(
        HOOKD_DATABASE_PATH=str(db), HOOKD_RETENTION_BATCH_PAUSE_SECONDS="0", **env_vars
    )
    if not tty:
        done = subprocess.run(
            [*HOOKD, *args], env=env, capture_output=True, text=True, timeout=60, check=False
        )
        return done.returncode, done.stdout, done.stderr
    leader, follower = pty.openpty()
    try:
        proc = subprocess.Popen(
            [*HOOKD, *args], env=env, stdout=subprocess.PIPE, stderr=follower, text=True
        )
        os.close(follower)
        chunks = []
        while True:
            try:
                data = os.read(leader, 4096)
            except OSError:  # the process closed its end
                break
            if not data:
                break
            chunks.append(data)
        out, _ = proc.communicate(timeout=60)
    finally:
        os.close(leader)
    return proc.returncode, out, b"".join(chunks).decode()


def test_bulk_replay_shows_progress_on_a_terminal_only(db: Path) -> None:
    hook_id = _dead_letters(db, 1200)
    code, out, err = _run(db, "replay", "--webhook", hook_id, "--chunk", "100", tty=True)
    assert code == 0, err
    assert out.startswith(f"replayed 1200 dead letters of webhook {hook_id} in ")
    assert f"replaying dead letters of {hook_id}: 100/1,200" in err and CLEAR in err
    # Every one moved exactly once.
    pending = with_store(db, lambda s: s.workspace_queue_stats(WORKSPACE))
    assert pending.by_status["pending"] == 1200 and pending.by_status["dead_letter"] == 0

    code, out, err = _run(db, "replay", "--webhook", hook_id, tty=False)
    assert (code, err) == (0, "")
    assert out.startswith(f"replayed 0 dead letters of webhook {hook_id} in ")


def test_purge_deletes_in_batches_with_progress(db: Path) -> None:
    hook = create_webhook(db, "https://example.com/h")

    async def delivered(store: SqliteStore) -> None:
        await store.ingest_events(WORKSPACE, [NewEvent("t", {}) for _ in range(30)])
        claims = await store.claim_due(30, 60_000, {}, 30)
        ok = Transition(Status.DELIVERED, None, 1, 0, None)
        await store.record_attempts(
            [
                AttemptRecord(
                    c.delivery_id, c.lease_token, hook.id, 1, 0, 1, 200, None, "", "2xx", ok
                )
                for c in claims
            ]
        )

    with_store(db, delivered)
    code, out, err = _run(db, "purge", "--older-than", "3600", tty=False)
    assert (code, err) == (0, "") and out.startswith(
        "deleted 0 delivered deliveries, 0 dead letters"
    )
    # Seven a transaction: five batches, the last short.
    code, out, err = _run(
        db, "purge", "--older-than", "0", tty=True, HOOKD_RETENTION_BATCH_SIZE="7"
    )
    assert code == 0, err
    assert out.startswith("deleted 30 delivered deliveries, 0 dead letters, ")
    assert "deleting old deliveries: 7 deliveries" in err
    stats = with_store(db, lambda s: s.workspace_queue_stats(WORKSPACE))
    assert stats.by_status["delivered"] == 0


def test_usage_of_the_long_commands(db: Path) -> None:
    create_webhook(db, "https://example.com/h")
    for args, needle in (
        (("replay",), "one of them"),
        (("replay", "a" * 24, "--webhook", "b" * 24), "one of them"),
        (("replay", "a" * 24, "--since", "2024-01-01T00:00:00Z"), "--since: only with --webhook"),
        (("replay", "--webhook", "b" * 24, "--since", "yesterday"), "--since: expected"),
        (("replay", "--webhook", "b" * 24, "--chunk", "0"), "--chunk"),
    ):
        code, _, err = _run(db, *args, tty=False)
        assert code == 2 and needle in err, (args, err)
    code, _, err = _run(db, "replay", "--webhook", "b" * 24, tty=False)
    assert code == 1 and "no webhook" in err
    code, _, err = _run(db, "purge", "--older-than", "-1", tty=False)
    assert code == 2 and "--older-than" in err
