"""The operator commands on a real database file, beside (and without) a running daemon.

They run in-process through ``hookd.cli.main`` (the daemon is a real subprocess);
logging setup is skipped there, since it is process-wide and belongs to pytest.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

from hookd.models import Status
from tests.ops.conftest import Cli
from tests.ops.support import Serve, create_webhook, get_delivery, http, wait_until


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


def test_a_refused_write_is_one_line_naming_why(hookd: Cli) -> None:
    url = "https://example.com/hook"
    create = ("webhooks", "create", "--workspace", "ws_q", "--name", "n", "--url", url)
    assert hookd(*create, "--events", "a.*")[0] == 0
    code, out, err = hookd(*create, "--events", "a.*", HOOKD_QUOTAS_WEBHOOKS_PER_WORKSPACE="1")
    assert (code, out) == (1, "")
    assert err.startswith("hookd: webhooks_per_workspace: ") and err.count("\n") == 1

    send = ("events", "send", "--workspace", "ws_q", "--idempotency-key", "k")
    assert hookd(*send, "--type", "a.one")[0] == 0
    code, out, err = hookd(*send, "--type", "a.two")
    assert (code, out) == (1, "")
    assert err.startswith("hookd: ") and "idempotency" in err and err.count("\n") == 1
    assert hookd(*create, "--events", "*", HOOKD_QUOTAS_WEBHOOKS_PER_WORKSPACE="2")[0] == 0
    code, out, err = hookd(  # two deliveries
        "events",
        "send",
        "--workspace",
        "ws_q",
        "--type",
        "a.x",
        HOOKD_QUOTAS_DELIVERIES_PER_REQUEST="1",
    )
    assert (code, out) == (1, "")
    assert err.startswith("hookd: deliveries_per_request: ") and err.count("\n") == 1


def test_webhook_secrets_follow_the_apis_rule(hookd: Cli) -> None:
    create = ("webhooks", "create", "--workspace", "ws_cli", "--name", "n")
    create += ("--url", "https://crm.example.com/hook", "--events", "*")
    for weak, problem in (
        ("whsec_aw==", "the base64 after whsec_ must decode to at least 16 bytes"),
        ("k" * 15, "must be at least 16 bytes of UTF-8 (the signing key); this one is 15"),
    ):
        code, out, err = hookd(*create, "--secret", weak)
        assert (code, out) == (2, ""), err
        assert err.startswith("hookd: --secret: ") and problem in err, err
        assert len(err.strip().splitlines()) == 1
    code, out, _ = hookd(*create, "--secret", "k" * 16)
    assert code == 0 and json.loads(out)["secret"] == "k" * 16


def test_events_send_holds_data_to_the_apis_rules(hookd: Cli) -> None:
    send = ("events", "send", "--workspace", "ws_cli", "--type")
    deepest = "[" * 31 + "]" * 31
    code, out, err = hookd(*send, "cli.t", "--data", deepest, "--idempotency-key", "k-1")
    assert code == 0, err
    assert json.loads(out)["duplicate"] is False
    for args, error in (
        (("cli.t", "--data", "[" * 32 + "]" * 32), "--data: nested deeper than 31 levels"),
        (("cli.t", "--data", "9" * 309), "--data: invalid JSON: number 999"),
        (("cli.t", "--data", '{"a": 1, "a": 2}'), "--data: invalid JSON: duplicate key 'a'"),
        # Not a JSON value on its own: nothing after it may become part of the event.
        (("cli.t", "--data", '1, "idempotencyKey": "x"'), "--data: invalid JSON: Extra data"),
        (("not a type", "--data", "{}"), "--type: must be dotted words"),
        (("cli.t", "--idempotency-key", "has space"), "--idempotency-key: must be printable"),
    ):
        code, out, err = hookd(*send, *args)
        assert (code, out) == (2, ""), (args, out)
        assert err.startswith(f"hookd: {error}"), (args, err)


# Header-safe candidates: each goes to the API as X-Workspace-Id (as UTF-8 bytes).
WORKSPACE_CANDIDATES = [
    "ws_1",
    "ws_a-b_C",
    "ws_" + "a" * 61,
    "ws_" + "a" * 62,
    "ws_",
    "ws_ü",
    "ws_\uff11",  # a full-width digit one
    "ws_a b",
    "ws_a.b",
    "WS_1",
    "123",
]


def test_keys_create_takes_exactly_the_workspace_ids_the_api_takes(
    serve: Callable[..., Serve], hookd: Cli
) -> None:
    daemon = serve()
    code, out, err = hookd("keys", "create")
    assert code == 0, err
    platform_key = out.splitlines()[0]
    verdicts = []
    for candidate in WORKSPACE_CANDIDATES:
        header = candidate.encode().decode("latin-1")  # urllib sends latin-1: the UTF-8 bytes
        status, _ = http(
            "GET",
            daemon.url("/v1/webhooks"),
            headers={"X-Api-Key": platform_key, "X-Workspace-Id": header},
        )
        assert status in (200, 400), (candidate, status)
        code, out, err = hookd("keys", "create", "--workspace", candidate)
        verdicts.append((candidate, status == 200, code == 0))
        if code != 0:
            assert (code, out) == (2, "") and err.startswith("hookd: --workspace: expected"), err
    assert [v for v in verdicts if v[1] != v[2]] == [], "the CLI and the API disagree"
    assert sum(api for _, api, _ in verdicts) == 3  # the first three
    # Not even sendable as a header, and refused all the same.
    for value in ("ws_a\n", "ws_a\t"):
        assert hookd("keys", "create", "--workspace", value)[0] == 2
    for command in (("webhooks", "--workspace"), ("events", "send", "--type", "t", "--workspace")):
        code, _, err = hookd(*command, "ws_ü")
        assert code == 2 and err.startswith("hookd: --workspace: expected"), (command, err)
