"""The operator commands on a real database file, beside (and without) a running daemon.

They run in-process through ``hookd.cli.main`` (the daemon is a real subprocess);
logging setup is skipped there, since it is process-wide and belongs to pytest.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from pathlib import Path

import pytest

from hookd import cli
from hookd.models import Status
from tests.ops.support import Serve, create_webhook, get_delivery, wait_until

Cli = Callable[..., tuple[int, str, str]]


@pytest.fixture
def hookd(db: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> Cli:
    for name in list(os.environ):
        if name.startswith("HOOKD_"):
            monkeypatch.delenv(name)
    monkeypatch.setenv("HOOKD_DATABASE_PATH", str(db))
    monkeypatch.setattr(cli, "configure_logging", lambda *args, **kwargs: None)

    def run(*args: str) -> tuple[int, str, str]:
        capsys.readouterr()
        try:
            code = cli.main(list(args))
        except SystemExit as exc:  # argparse's usage errors
            code = int(exc.code or 0)
        out, err = capsys.readouterr()
        return code, out, err

    return run


def _ids(output: str) -> list[str]:
    return [line.split()[0] for line in output.splitlines() if line.strip()]


def test_deliveries_replay_and_webhooks_on_the_daemons_database(
    serve: Callable[..., Serve], db: Path, hookd: Cli
) -> None:
    daemon = serve()
    # Loopback without an allow list: the address policy refuses it, so each
    # delivery is dead-lettered at its first attempt, with no receiver needed.
    hook = create_webhook(db, "http://127.0.0.1:9/unreachable")
    ids = []
    for _ in range(2):
        code, out, err = hookd("events", "send", "--workspace", "ws_ops", "--type", "cli.t")
        assert code == 0, err
        ids.append(json.loads(out)["deliveryIds"][0])
    first, second = ids
    wait_until(
        lambda: all(get_delivery(db, d).status is Status.DEAD_LETTER for d in (first, second))
    )
    assert daemon.stop() == 0

    code, out, _ = hookd("deliveries")
    assert code == 0 and _ids(out) == [second, first], "newest first"
    assert "error=blocked" in out
    assert sorted(_ids(hookd("deliveries", "--status", "dead_letter")[1])) == sorted(ids)
    assert hookd("deliveries", "--status", "delivered")[:2] == (0, "")
    assert _ids(hookd("deliveries", "--webhook", hook.id, "--limit", "1")[1]) == [second]

    assert hookd("replay", first)[:2] == (0, f"replayed {first}: pending\n")
    code, _, err = hookd("replay", first)
    assert code == 1 and "is pending; only dead_letter" in err
    code, _, err = hookd("replay", "0" * 24)
    assert code == 1 and "no delivery" in err
    assert _ids(hookd("deliveries", "--status", "pending")[1]) == [first]

    code, out, _ = hookd("webhooks")
    assert code == 0
    (line,) = out.splitlines()
    assert line.split()[:3] == [hook.id, "ws_ops", "active"]
    assert hook.secret not in out

    # The next daemon takes the replayed delivery: a second attempt, dead again.
    serve()
    wait_until(lambda: get_delivery(db, first).attempt_count == 2)
    wait_until(lambda: get_delivery(db, first).status is Status.DEAD_LETTER)
    assert get_delivery(db, second).attempt_count == 1


def test_usage_errors_exit_2(hookd: Cli) -> None:
    assert hookd("deliveries", "--status", "lost")[0] == 2
    code, _, err = hookd("deliveries", "--limit", "0")
    assert code == 2 and "--limit" in err
    assert hookd("replay")[0] == 2
