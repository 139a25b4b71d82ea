"""The CLI commands that work on the store: keys, webhooks, events, deliveries,
replay, purge and migrate (``hookd.cli`` parses the command line and runs them)."""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any

from hookd.clock import SystemClock
from hookd.components import build_store, describe_store
from hookd.config import Config
from hookd.ids import iso_ms, parse_iso_ms
from hookd.keys import generate_key, new_owner_id
from hookd.maintenance import bulk_replay_command, purge_command
from hookd.models import Status
from hookd.storage import DeliveryFilter, Store


class UsageError(Exception):
    """Bad command-line input: one line on stderr, exit 2."""


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


async def run_with_store(args: argparse.Namespace, config: Config) -> int:
    """Run the store command ``args`` names on the configured store."""
    store = build_store(config)
    await store.open()
    try:
        return await _dispatch(args, store, config)
    finally:
        await store.close()
