"""The ``hookd`` command line.

Exit statuses: 0 success, 1 operational failure (not found, not ready),
2 bad usage or configuration (one line on stderr naming the key).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
import urllib.error
import urllib.request
from collections.abc import Awaitable, Callable, Coroutine, Sequence
from typing import Any

from hookd import __version__
from hookd import copy as copy_command
from hookd.clock import SystemClock
from hookd.components import build_store, describe_store
from hookd.config import Config, ConfigError, load_config
from hookd.daemon import serve, split_listen
from hookd.ids import WORKSPACE_ID_PROBLEM, is_workspace_id, iso_ms, parse_iso_ms
from hookd.keys import generate_key, new_owner_id
from hookd.logs import configure_logging
from hookd.maintenance import bulk_replay_command, purge_command
from hookd.models import Status
from hookd.storage import DeliveryFilter, IdempotencyConflict, QuotaExceeded, Store, StoreError


class UsageError(Exception):
    """Bad command-line input: one line on stderr, exit 2."""


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="hookd", description="Webhook delivery daemon.")
    p.add_argument("--version", action="version", version=f"hookd {__version__}")
    p.add_argument(
        "--config",
        default=os.environ.get("HOOKD_CONFIG"),
        help="TOML configuration file (default: $HOOKD_CONFIG, else built-in defaults)",
    )
    sub = p.add_subparsers(dest="command", required=True)

    sub.add_parser("serve", help="run the daemon: API, scheduler and metrics")
    sub.add_parser("migrate", help="create or migrate the database's schema, then exit")
    copy_command.add_parser(sub)
    wk = sub.add_parser(
        "worker", help="an extra delivery process (started by serve when delivery.workers > 1)"
    )
    wk.add_argument("--index", type=int, default=1)
    ck = sub.add_parser("check", help="exit 0 if the running daemon is ready, 1 if not")
    ck.add_argument(
        "--live",
        action="store_true",
        help="ask /healthz (the process answers) instead of /readyz (it can deliver)",
    )

    keys = sub.add_parser("keys", help="manage API keys").add_subparsers(
        dest="keys_command", required=True
    )
    kc = keys.add_parser("create", help="create a key; its first output line is the key")
    kc.add_argument(
        "--workspace",
        help="workspace key for this workspace (created if needed); "
        "without it, a platform key (sk_user_...) for every workspace",
    )
    kc.add_argument("--owner", help="who the key belongs to (shown as createdBy)")
    keys.add_parser("list", help="list keys (prefixes only)")
    kr = keys.add_parser("revoke", help="revoke a key by id")
    kr.add_argument("key_id")

    wh = sub.add_parser("webhooks", help="list webhooks, or create one")
    wh_sub = wh.add_subparsers(dest="webhooks_command")
    wc = wh_sub.add_parser("create", help="create a webhook")
    wc.add_argument("--workspace", required=True)
    wc.add_argument("--name", required=True)
    wc.add_argument("--url", required=True)
    wc.add_argument("--events", required=True, help="comma-separated event types or patterns")
    wc.add_argument("--secret")
    wc.add_argument("--retry-attempts", type=int, default=3)
    wc.add_argument("--timeout-ms", type=int)
    wh.add_argument("--workspace", dest="list_workspace")

    ev = sub.add_parser("events", help="ingest events").add_subparsers(
        dest="events_command", required=True
    )
    es = ev.add_parser("send", help="ingest one event")
    es.add_argument("--workspace", required=True)
    es.add_argument("--type", required=True)
    es.add_argument("--data", default="{}", help="JSON value")
    es.add_argument("--idempotency-key")

    dl = sub.add_parser("deliveries", help="list deliveries, newest first")
    dl.add_argument("--status", choices=[s.value for s in Status])
    dl.add_argument("--webhook")
    dl.add_argument("--limit", type=int, default=50)

    rp = sub.add_parser(
        "replay",
        help="put a dead_letter delivery back in the queue, or all of a webhook's (--webhook)",
    )
    rp.add_argument("delivery_id", nargs="?")
    rp.add_argument("--webhook", help="replay every dead letter of this webhook")
    rp.add_argument("--since", help="with --webhook: only those created at or after (ISO 8601)")
    rp.add_argument("--chunk", type=int, default=500, help="deliveries per transaction")

    ls = sub.add_parser(
        "listen", help="a development receiver: verify, print and answer each delivery"
    )
    ls.add_argument("--port", type=int, default=9000)
    ls.add_argument("--host", default="127.0.0.1", help="address to listen on")
    ls.add_argument("--secret", help="the webhook's signing secret, to verify signatures")
    ls.add_argument("--status", type=int, default=200, help="HTTP status to answer")
    ls.add_argument("--delay", type=int, default=0, metavar="MS", help="wait before answering")
    ls.add_argument("--forward-to", metavar="URL", help="relay each request to this URL")

    pg = sub.add_parser(
        "purge",
        help="run the retention sweep now (old deliveries and what they leave), with progress",
    )
    pg.add_argument(
        "--older-than",
        type=float,
        help="delivered deliveries' age in seconds (default: retention.delivered_max_age_seconds;"
        " dead letters by retention.dead_letter_max_age_seconds)",
    )
    return p


def _run(main: Coroutine[Any, Any, int], event_loop: str) -> int:
    """Run the daemon's coroutine on the configured event loop.

    uvloop (libuv) roughly halves the event loop's own cost per socket event,
    which is most of what a delivery costs besides the database; "auto" uses
    it where it is installed and falls back to asyncio's loop.
    """
    if event_loop != "asyncio":
        try:
            import uvloop
        except ImportError:
            if event_loop == "uvloop":
                raise UsageError("server.event_loop: uvloop is not installed") from None
        else:
            with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
                return runner.run(main)
    return asyncio.run(main)


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    try:
        config = load_config(args.config)
    except ConfigError as exc:
        print(f"hookd: {exc}", file=sys.stderr)
        return 2
    configure_logging(config.logging.level, config.logging.format)
    try:
        if args.command == "serve":
            return _run(serve(config, args.config), config.server.event_loop)
        if args.command == "worker":
            from hookd.workers import run_worker

            return _run(run_worker(config, args.index), config.server.event_loop)
        if args.command == "check":
            return _check(config, "/healthz" if args.live else "/readyz")
        if args.command == "listen":
            return _listen(args)
        if args.command == "copy":
            return asyncio.run(copy_command.command(args))
        for option in ("workspace", "list_workspace"):
            # The API's rule for X-Workspace-Id: an id the API refuses is no use here.
            value = getattr(args, option, None)
            if value is not None and not is_workspace_id(value):
                raise UsageError(f"--workspace: {WORKSPACE_ID_PROBLEM}")
        return asyncio.run(_with_store(config, lambda store: _dispatch(args, store, config)))
    except UsageError as exc:
        print(f"hookd: {exc}", file=sys.stderr)
        return 2
    except (StoreError, QuotaExceeded, IdempotencyConflict) as exc:
        print(f"hookd: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130


async def _with_store(config: Config, fn: Callable[[Store], Awaitable[int]]) -> int:
    store = build_store(config)
    await store.open()
    try:
        return await fn(store)
    finally:
        await store.close()


def _print_json(value: Any) -> None:
    print(json.dumps(value, indent=2))


async def _dispatch(args: argparse.Namespace, store: Store, config: Config) -> int:
    if args.command == "migrate":
        # Opening the store did it (under the backend's lock: once however
        # many nodes start at the same time).
        print(f"schema up to date: {describe_store(config)}")
        return 0
    if args.command == "keys":
        return await _keys(args, store)
    if args.command == "webhooks":
        return await _webhooks(args, store, config)
    if args.command == "events":
        return await _events(args, store)
    if args.command == "deliveries":
        return await _deliveries(args, store)
    if args.command == "replay":
        return await _replay(args, store)
    if args.command == "purge":
        return await _purge(args, store, config)
    raise UsageError(f"unknown command {args.command}")  # pragma: no cover


async def _keys(args: argparse.Namespace, store: Store) -> int:
    if args.keys_command == "create":
        workspace = args.workspace
        if workspace is not None:
            await store.ensure_workspace(workspace)
        key = generate_key(platform=workspace is None)
        owner = args.owner or new_owner_id()
        record = await store.create_api_key(workspace, key.digest, key.prefix, owner)
        print(key.plaintext)
        print(
            f"id={record.id} kind={'platform' if workspace is None else 'workspace'}"
            f" workspace={workspace or '*'} owner={owner}"
            " (the key is shown only now; store it safely)"
        )
        return 0
    if args.keys_command == "list":
        for k in await store.list_api_keys():
            state = "revoked" if k.revoked_at else "active"
            print(
                f"{k.id}  {k.prefix}...  workspace={k.workspace_id or '*'}  owner={k.owner}"
                f"  created={iso_ms(k.created_at)}  {state}"
            )
        return 0
    if args.keys_command == "revoke":
        if await store.revoke_api_key(args.key_id):
            print(f"revoked {args.key_id}")
            return 0
        print(f"hookd: no active key with id {args.key_id}", file=sys.stderr)
        return 1
    raise UsageError("keys: expected create, list or revoke")  # pragma: no cover


async def _webhooks(args: argparse.Namespace, store: Store, config: Config) -> int:
    if args.webhooks_command == "create":
        from hookd.validation import ValidationError, validate_new_webhook

        try:
            fields = validate_new_webhook(
                {
                    "name": args.name,
                    "url": args.url,
                    "events": [e.strip() for e in args.events.split(",") if e.strip()],
                    "retryAttempts": args.retry_attempts,
                    **({"timeoutMs": args.timeout_ms} if args.timeout_ms is not None else {}),
                    **({"secret": args.secret} if args.secret is not None else {}),
                },
                max_timeout_ms=config.delivery.max_timeout_ms,
                allow_networks=config.delivery.allow_networks,
            )
        except ValidationError as exc:
            raise UsageError(f"--{exc.field.lower()}: {exc.message}") from None
        webhook = await store.create_webhook(fields.new_webhook(args.workspace, "cli"))
        _print_json(
            {
                "_id": webhook.id,
                "workspaceId": webhook.workspace_id,
                "name": webhook.name,
                "url": webhook.url,
                "events": list(webhook.events),
                "secret": webhook.secret,
                "retryAttempts": webhook.retry_attempts,
                "timeoutMs": webhook.timeout_ms,
                "status": webhook.status.value,
            }
        )
        return 0
    cursor: str | None = None
    while True:
        page = await store.list_webhooks(args.list_workspace, 200, cursor)
        for w in page.items:
            reason = f"  ({w.disabled_reason})" if w.disabled_reason else ""
            print(f"{w.id}  {w.workspace_id}  {w.status.value:8}  {w.name}  {w.url}{reason}")
        if page.next_cursor is None:
            return 0
        cursor = page.next_cursor


def _event_usage(field: str, problem: str) -> UsageError:
    """The API's complaint about an event, naming this command's option."""
    option = {"body": "--data", "data": "--data", "type": "--type"}.get(field)
    return UsageError(f"{option or '--idempotency-key'}: {problem}")


async def _events(args: argparse.Namespace, store: Store) -> int:
    from hookd.api.errors import ApiError
    from hookd.api.inputs import event_from_parts
    from hookd.validation import ValidationError

    try:
        event = event_from_parts(
            args.type, args.data.encode("utf-8", "surrogateescape"), args.idempotency_key
        )
    except ApiError as exc:
        field, _, problem = exc.message.partition(": ")
        raise _event_usage(field, problem) from None
    except ValidationError as exc:
        raise _event_usage(exc.field, exc.message) from None
    result = await store.ingest_event(args.workspace, event.type, event.data, event.idempotency_key)
    _print_json(
        {
            "eventId": result.event.id,
            "deliveryIds": list(result.delivery_ids),
            "duplicate": result.duplicate,
        }
    )
    return 0


async def _deliveries(args: argparse.Namespace, store: Store) -> int:
    if not 1 <= args.limit <= 200:
        raise UsageError("--limit: must be between 1 and 200")
    status = Status(args.status) if args.status else None
    flt = DeliveryFilter(status=status, webhook_id=args.webhook)
    page = await store.list_deliveries(None, flt, args.limit)
    for d in page.items:
        code = d.last_status_code if d.last_status_code is not None else "-"
        print(
            f"{d.id}  {d.status.value:12}  attempts={d.attempt_count}  last={code}"
            f"  webhook={d.webhook_id}  type={d.event_type}  created={iso_ms(d.created_at)}"
            + (f"  error={d.last_error}" if d.last_error else "")
        )
    return 0


async def _replay(args: argparse.Namespace, store: Store) -> int:
    if (args.delivery_id is None) == (args.webhook is None):
        raise UsageError("replay: give a delivery id or --webhook ID (one of them)")
    if args.webhook is not None:
        return await _bulk_replay(args, store)
    if args.since is not None:
        raise UsageError("--since: only with --webhook")
    delivery = await store.get_delivery(None, args.delivery_id)
    if delivery is None:
        print(f"hookd: no delivery {args.delivery_id}", file=sys.stderr)
        return 1
    if delivery.status is not Status.DEAD_LETTER:
        # Checked first: the store answers "pending" both for a replay it queued
        # and for refusing one that was pending already.
        print(
            f"hookd: delivery {args.delivery_id} is {delivery.status.value};"
            " only dead_letter deliveries can be replayed",
            file=sys.stderr,
        )
        return 1
    replay = await store.claim_for_replay(None, args.delivery_id, lease_ms=0)
    if replay.claim is not None:
        # The CLI sends nothing itself: the lease goes straight back, and the
        # running daemon's scheduler takes the delivery as it would any due one.
        await store.release([(args.delivery_id, replay.claim.lease_token)])
    elif not replay.found or replay.status is not Status.PENDING:
        state = replay.status.value if replay.status else "gone"
        reason = "its webhook was deleted" if replay.status is Status.DEAD_LETTER else state
        print(f"hookd: delivery {args.delivery_id} cannot be replayed: {reason}", file=sys.stderr)
        return 1
    print(f"replayed {args.delivery_id}: pending")
    return 0


async def _bulk_replay(args: argparse.Namespace, store: Store) -> int:
    since_ms = None
    if args.since is not None:
        try:
            since_ms = parse_iso_ms(args.since)
        except ValueError:
            raise UsageError("--since: expected an ISO 8601 time with a zone") from None
    if not 1 <= args.chunk <= 100_000:
        raise UsageError("--chunk: must be between 1 and 100000")
    return await bulk_replay_command(store, args.webhook, since_ms, args.chunk)


async def _purge(args: argparse.Namespace, store: Store, config: Config) -> int:
    if args.older_than is not None and args.older_than < 0:
        raise UsageError("--older-than: must not be negative")
    return await purge_command(store, config, SystemClock().now_ms(), args.older_than)


def _listen(args: argparse.Namespace) -> int:
    from hookd.listen import listen

    if not 0 <= args.port <= 65535:
        raise UsageError("--port: must be between 0 and 65535")
    if not 100 <= args.status <= 599:
        raise UsageError("--status: must be an HTTP status between 100 and 599")
    if args.delay < 0:
        raise UsageError("--delay: must not be negative")
    if args.forward_to is not None and not args.forward_to.startswith(("http://", "https://")):
        raise UsageError("--forward-to: expected an http:// or https:// URL")
    try:
        return asyncio.run(
            listen(
                args.host,
                args.port,
                secret=args.secret,
                status=args.status,
                delay_ms=args.delay,
                forward_to=args.forward_to,
            )
        )
    except OSError as exc:
        print(f"hookd: listen: {exc}", file=sys.stderr)
        return 1


def _check(config: Config, path: str) -> int:
    host, port = split_listen(config.server.listen)
    # A wildcard listener answers on loopback; that is where a HEALTHCHECK runs.
    if host in ("", "0.0.0.0"):
        host = "127.0.0.1"
    elif host == "::":
        host = "::1"
    if ":" in host:
        host = f"[{host}]"
    url = f"http://{host}:{port}{path}"
    try:
        with urllib.request.urlopen(url, timeout=5) as resp:
            ok = resp.status == 200
            body = resp.read(2048).decode("utf-8", "replace")
    except urllib.error.HTTPError as exc:
        # 503 from /readyz carries the reasons; show them.
        detail = exc.read(2048).decode("utf-8", "replace").strip()
        print(f"hookd: not ready: HTTP {exc.code} {detail}", file=sys.stderr)
        return 1
    except (urllib.error.URLError, OSError) as exc:
        print(f"hookd: not ready: {url}: {exc}", file=sys.stderr)
        return 1
    print(body.strip() if ok else f"not ready: {body.strip()}")
    return 0 if ok else 1


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
