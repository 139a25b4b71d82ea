"""The ``hookd`` command line.

Exit statuses: 0 success, 1 operational failure (not found, not ready),
2 bad usage or configuration (one line on stderr naming the key).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
import urllib.error
import urllib.request
from collections.abc import Coroutine, Sequence
from typing import Any

from hookd import __version__
from hookd import copy as copy_command
from hookd.commands import UsageError, run_with_store
from hookd.config import Config, ConfigError, load_config
from hookd.daemon import serve, split_listen
from hookd.ids import WORKSPACE_ID_PROBLEM, is_workspace_id
from hookd.logs import configure_logging
from hookd.models import Status
from hookd.storage import IdempotencyConflict, QuotaExceeded, StoreError


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
        return asyncio.run(run_with_store(args, config))
    except UsageError as exc:
        print(f"hookd: {exc}", file=sys.stderr)
        return 2
    except (StoreError, QuotaExceeded, IdempotencyConflict) as exc:
        print(f"hookd: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130


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
