"""Configuration: frozen dataclasses loaded from TOML, overridden by ``HOOKD_*``.

Every key lives in exactly one section dataclass below; ``config.example.toml``
documents each with its default and a test keeps the two equal.  An
environment variable ``HOOKD_<SECTION>_<KEY>`` overrides the file.  Any
problem raises :class:`ConfigError` whose message names the key, and the CLI
turns that into one line on stderr and exit status 2.
"""

from __future__ import annotations

import dataclasses
import ipaddress
import json
import os
import tomllib
import typing
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

# Largest timeoutMs a webhook may have; the lease must outlast it.
MAX_TIMEOUT_MS = 60_000
MIN_TIMEOUT_MS = 100
MAX_RETRY_ATTEMPTS = 20
# Events one batch request may carry at most, whatever the quota says.
MAX_BATCH_EVENTS = 500


class ConfigError(Exception):
    """A configuration value is missing, malformed or inconsistent."""

    def __init__(self, key: str, problem: str) -> None:
        super().__init__(f"config error: {key}: {problem}")
        self.key = key
        self.problem = problem


@dataclass(frozen=True)
class ServerConfig:
    listen: str = "127.0.0.1:8080"
    # Where /metrics is served besides the main listener; "" means only there.
    metrics_listen: str = ""
    max_body_bytes: int = 1_048_576
    # Seconds a client may take to send its request headers and body.
    client_timeout_seconds: float = 30.0
    # How often the queue-depth, scheduling-lag and database-size gauges are read
    # from the database (one small query each time, off the event loop).
    stats_interval_seconds: float = 5.0
    # "auto" (uvloop when installed, else asyncio's own loop), "uvloop" or "asyncio".
    event_loop: str = "auto"


@dataclass(frozen=True)
class DatabaseConfig:
    path: str = "./var/hookd.db"
    busy_timeout_ms: int = 5000
    # A postgresql:// URL: when set, PostgreSQL is used and `path` ignored.
    url: str = ""
    # A file whose first line is the PostgreSQL password (else the URL's, or
    # PGPASSWORD / ~/.pgpass as libpq finds them).
    password_file: str = ""
    # Connections in this process's pools; a delivering process holds one
    # control connection more (LISTEN, leadership).
    pool_size: int = 10


@dataclass(frozen=True)
class DeliveryConfig:
    # CIDRs outbound requests may reach despite the address policy.
    allow_networks: tuple[str, ...] = ()
    # Whether what receivers at those networks answer is recorded and shown (attempts'
    # responseBody, test sends, replays).  Off: every tenant may point a webhook at
    # them, and would otherwise read internal services' answers (docs/security.md).
    record_internal_response_bodies: bool = False
    # The HTTP client: "hookd" (its own HTTP/1.1 client) or "aiohttp" (aiohttp's
    # ClientSession); docs/http-client.md compares them.
    client: str = "hookd"
    # Delivery processes: 1 is `hookd serve` alone; N > 1 adds N-1 `hookd worker`
    # processes (docs/delivery.md, "Using every core").
    workers: int = 1
    # Attempts in flight at once, over all webhooks (per process).
    concurrency: int = 1024
    # Attempts in flight at once towards one webhook (per process).  An endpoint
    # answering in 50 ms gets at most 32 / 0.05 s = 640 requests/s; a dead one
    # holds 32 of the 1,024 slots.
    per_webhook_concurrency: int = 32
    # Most deliveries claimed by one database round trip.
    batch_size: int = 256
    # The largest timeoutMs a webhook may have (the API accepts 100 up to this).
    max_timeout_ms: int = MAX_TIMEOUT_MS
    # How long a claim is valid; must exceed max_timeout_ms plus lease_margin_seconds.
    lease_seconds: float = 90.0
    lease_margin_seconds: float = 15.0
    # Longest idle wait between looks at the queue when nothing wakes the scheduler.
    poll_interval_seconds: float = 1.0
    # On SIGTERM, how long in-flight attempts may take before their leases are released.
    drain_timeout_seconds: float = 20.0
    # Response bytes read from a receiver at most; the first 256 characters are stored.
    max_response_bytes: int = 8192
    # Failure backoff: full jitter over min(cap, base * 2**n) seconds...
    backoff_base_seconds: float = 5.0
    backoff_cap_seconds: float = 3600.0
    # ...unless a schedule is given: delay n is drawn from [s/2, s] of its n-th entry
    # (the last entry repeats).
    retry_schedule_seconds: tuple[float, ...] = ()
    # The 429 lane: Retry-After is clamped to this many seconds.
    retry_after_max_seconds: float = 3600.0
    # The 429 lane's own backoff when the receiver sends no usable Retry-After.
    rate_limit_backoff_base_seconds: float = 10.0
    rate_limit_backoff_cap_seconds: float = 900.0
    # A delivery leaves the 429 lane for dead_letter after this many 429s...
    rate_limit_max_count: int = 50
    # ...or once this long has passed since its first 429.
    rate_limit_max_age_seconds: float = 86400.0
    # After a secret change the previous secret keeps signing this long.
    secret_grace_seconds: float = 86400.0
    # Seconds an event's idempotency key is remembered.
    idempotency_window_seconds: float = 86400.0


@dataclass(frozen=True)
class LoggingConfig:
    level: str = "info"
    # "auto": JSON lines unless stderr is a terminal; or "json" / "console".
    format: str = "auto"


@dataclass(frozen=True)
class RetentionConfig:
    # Delivered deliveries (and their attempts) older than this are deleted; 0 keeps
    # them forever.
    delivered_max_age_seconds: float = 604_800.0
    # Dead letters older than this are deleted too (kept longer: an operator may
    # still replay them); 0 keeps them forever.
    dead_letter_max_age_seconds: float = 2_592_000.0
    # Deliveries deleted per transaction: small enough that the claim loop, which
    # shares the database, never waits long behind one.
    batch_size: int = 500
    # Pause between two batches of one sweep, so deletion never crowds out delivery.
    batch_pause_seconds: float = 0.2
    # Time between sweeps; the first sweep runs at start.  A sweep works until
    # nothing is left to delete, or for at most this long.
    interval_seconds: float = 600.0


@dataclass(frozen=True)
class QuotasConfig:
    # Webhooks one workspace may have (a create beyond it is 429).
    webhooks_per_workspace: int = 100
    # Deliveries one request may create: its events times the active webhooks
    # subscribed to each (beyond it the whole request is 413, nothing stored).
    deliveries_per_request: int = 10_000
    # Events one POST /v1/events/batch may carry (at most 500).
    events_per_batch: int = 500


@dataclass(frozen=True)
class Config:
    server: ServerConfig = field(default_factory=ServerConfig)
    database: DatabaseConfig = field(default_factory=DatabaseConfig)
    delivery: DeliveryConfig = field(default_factory=DeliveryConfig)
    logging: LoggingConfig = field(default_factory=LoggingConfig)
    retention: RetentionConfig = field(default_factory=RetentionConfig)
    quotas: QuotasConfig = field(default_factory=QuotasConfig)


_SECTIONS: dict[str, type[Any]] = {
    f.name: typing.get_type_hints(Config)[f.name] for f in dataclasses.fields(Config)
}


def _coerce(key: str, hint: Any, value: Any, from_env: bool) -> Any:
    origin = typing.get_origin(hint)
    if origin is tuple:
        (item_hint, _ellipsis) = typing.get_args(hint)
        if from_env:
            text = str(value).strip()
            if text.startswith("["):
                try:
                    value = json.loads(text)
                except json.JSONDecodeError as exc:
                    raise ConfigError(key, f"not a JSON list: {exc.msg}") from None
            else:
                value = [part.strip() for part in text.split(",") if part.strip()]
        if not isinstance(value, list):
            raise ConfigError(key, f"expected a list, got {type(value).__name__}")
        return tuple(_coerce(key, item_hint, item, from_env) for item in value)
    if hint is bool:
        if from_env and isinstance(value, str):
            lowered = value.strip().lower()
            if lowered in ("1", "true", "yes", "on"):
                return True
            if lowered in ("0", "false", "no", "off"):
                return False
        if not isinstance(value, bool):
            raise ConfigError(key, f"expected true or false, got {value!r}")
        return value
    if hint is int:
        if from_env and isinstance(value, str):
            try:
                return int(value.strip())
            except ValueError:
                raise ConfigError(key, f"expected an integer, got {value!r}") from None
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(key, f"expected an integer, got {value!r}")
        return value
    if hint is float:
        if from_env and isinstance(value, str):
            try:
                return float(value.strip())
            except ValueError:
                raise ConfigError(key, f"expected a number, got {value!r}") from None
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise ConfigError(key, f"expected a number, got {value!r}")
        return float(value)
    if hint is str:
        if not isinstance(value, str):
            raise ConfigError(key, f"expected a string, got {value!r}")
        return value
    raise ConfigError(key, f"unsupported type {hint!r}")  # pragma: no cover


def _build_section(
    section: str, cls: type[Any], raw: Mapping[str, Any], env: Mapping[str, str]
) -> Any:
    hints = typing.get_type_hints(cls)
    known = {f.name for f in dataclasses.fields(cls)}
    for key in raw:
        if key not in known:
            raise ConfigError(f"{section}.{key}", "unknown key")
    values: dict[str, Any] = {}
    for name in known:
        dotted = f"{section}.{name}"
        env_name = f"HOOKD_{section.upper()}_{name.upper()}"
        if env_name in env:
            values[name] = _coerce(env_name, hints[name], env[env_name], from_env=True)
        elif name in raw:
            values[name] = _coerce(dotted, hints[name], raw[name], from_env=False)
    return cls(**values)


def _check_positive(key: str, value: float) -> None:
    if value <= 0:
        raise ConfigError(key, f"must be greater than 0, got {value}")


def _check_database_url(url: str) -> None:
    parts = urlsplit(url)
    if parts.scheme not in ("postgresql", "postgres"):
        # Named without the URL itself: it may carry a password.
        raise ConfigError(
            "database.url", f"expected a postgresql:// URL, got scheme {parts.scheme!r}"
        )
    try:
        parts.port  # noqa: B018 - raises on a malformed port
    except ValueError:
        raise ConfigError("database.url", "the port is not a number") from None
    if not parts.hostname and "host=" not in parts.query:
        raise ConfigError("database.url", "names no host")


def _parse_listen(key: str, value: str) -> None:
    host, sep, port = value.rpartition(":")
    if not sep or not host or not port.isdigit() or not 0 <= int(port) <= 65535:
        raise ConfigError(key, f"expected HOST:PORT, got {value!r}")


def validate(config: Config) -> Config:
    """Reject values that parse but cannot work together."""
    d = config.delivery
    _parse_listen("server.listen", config.server.listen)
    if config.server.metrics_listen:
        _parse_listen("server.metrics_listen", config.server.metrics_listen)
    _check_positive("server.max_body_bytes", config.server.max_body_bytes)
    _check_positive("server.client_timeout_seconds", config.server.client_timeout_seconds)
    _check_positive("server.stats_interval_seconds", config.server.stats_interval_seconds)
    if config.server.event_loop not in ("auto", "uvloop", "asyncio"):
        raise ConfigError(
            "server.event_loop", f"expected auto/uvloop/asyncio, got {config.server.event_loop!r}"
        )
    db = config.database
    if db.url:
        _check_database_url(db.url)
    elif not db.path:
        raise ConfigError("database.path", "must not be empty")
    _check_positive("database.busy_timeout_ms", db.busy_timeout_ms)
    if not 2 <= db.pool_size <= 1000:
        raise ConfigError("database.pool_size", f"must be between 2 and 1000, got {db.pool_size}")
    for cidr in d.allow_networks:
        try:
            ipaddress.ip_network(cidr, strict=False)
        except ValueError:
            raise ConfigError("delivery.allow_networks", f"not a CIDR: {cidr!r}") from None
    if d.client not in ("hookd", "aiohttp"):
        raise ConfigError("delivery.client", f"expected hookd or aiohttp, got {d.client!r}")
    if not 1 <= d.workers <= 64:
        raise ConfigError("delivery.workers", f"must be between 1 and 64, got {d.workers}")
    for name in (
        "concurrency",
        "per_webhook_concurrency",
        "batch_size",
        "lease_seconds",
        "poll_interval_seconds",
        "max_response_bytes",
        "backoff_base_seconds",
        "backoff_cap_seconds",
        "retry_after_max_seconds",
        "rate_limit_backoff_base_seconds",
        "rate_limit_backoff_cap_seconds",
        "rate_limit_max_count",
        "rate_limit_max_age_seconds",
        "idempotency_window_seconds",
    ):
        _check_positive(f"delivery.{name}", getattr(d, name))
    for name in ("lease_margin_seconds", "drain_timeout_seconds", "secret_grace_seconds"):
        if getattr(d, name) < 0:
            raise ConfigError(f"delivery.{name}", "must not be negative")
    for entry in d.retry_schedule_seconds:
        if entry <= 0:
            raise ConfigError("delivery.retry_schedule_seconds", "entries must be > 0")
    if not MIN_TIMEOUT_MS <= d.max_timeout_ms <= MAX_TIMEOUT_MS:
        raise ConfigError(
            "delivery.max_timeout_ms", f"must be between {MIN_TIMEOUT_MS} and {MAX_TIMEOUT_MS}"
        )
    needed = d.max_timeout_ms / 1000 + d.lease_margin_seconds
    if d.lease_seconds <= needed:
        # A lease shorter than the longest request lets a second worker take a
        # delivery that is still being sent, and the receiver sees a needless duplicate.
        raise ConfigError(
            "delivery.lease_seconds",
            f"must exceed max_timeout_ms ({d.max_timeout_ms / 1000:g}s) plus "
            f"lease_margin_seconds ({d.lease_margin_seconds:g}s), got {d.lease_seconds:g}",
        )
    r = config.retention
    for name in ("delivered_max_age_seconds", "dead_letter_max_age_seconds"):
        if getattr(r, name) < 0:
            raise ConfigError(f"retention.{name}", "must not be negative")
    quotas = config.quotas
    _check_positive("quotas.webhooks_per_workspace", quotas.webhooks_per_workspace)
    _check_positive("quotas.deliveries_per_request", quotas.deliveries_per_request)
    if not 1 <= quotas.events_per_batch <= MAX_BATCH_EVENTS:
        raise ConfigError(
            "quotas.events_per_batch",
            f"must be between 1 and {MAX_BATCH_EVENTS}, got {quotas.events_per_batch}",
        )
    _check_positive("retention.batch_size", r.batch_size)
    _check_positive("retention.interval_seconds", r.interval_seconds)
    if r.batch_pause_seconds < 0:
        raise ConfigError("retention.batch_pause_seconds", "must not be negative")
    if config.logging.level.lower() not in ("debug", "info", "warning", "error", "critical"):
        raise ConfigError(
            "logging.level", f"expected debug/info/warning/error, got {config.logging.level!r}"
        )
    if config.logging.format not in ("auto", "json", "console"):
        raise ConfigError(
            "logging.format", f"expected auto/json/console, got {config.logging.format!r}"
        )
    return config


def load_config(
    path: str | os.PathLike[str] | None = None, env: Mapping[str, str] | None = None
) -> Config:
    """Load ``path`` (optional) and apply ``HOOKD_*`` overrides from ``env``."""
    environ = os.environ if env is None else env
    raw: dict[str, Any] = {}
    if path is not None:
        try:
            raw = tomllib.loads(Path(path).read_text(encoding="utf-8"))
        except FileNotFoundError:
            raise ConfigError("--config", f"file not found: {path}") from None
        except tomllib.TOMLDecodeError as exc:
            raise ConfigError("--config", f"invalid TOML in {path}: {exc}") from None
    for section, value in raw.items():
        if section not in _SECTIONS:
            raise ConfigError(section, "unknown section")
        if not isinstance(value, dict):
            raise ConfigError(section, "expected a table")
    for env_name in environ:
        # A typo in an override would otherwise be ignored silently.
        if (
            env_name.startswith("HOOKD_")
            and env_name not in _known_env_names()
            and env_name not in _NON_CONFIG_ENV
        ):
            raise ConfigError(env_name, "unknown configuration variable")
    sections = {
        name: _build_section(name, cls, raw.get(name, {}), environ)
        for name, cls in _SECTIONS.items()
    }
    return validate(Config(**sections))


# HOOKD_ variables that are not configuration keys.
_NON_CONFIG_ENV = frozenset({"HOOKD_CONFIG"})


def _known_env_names() -> frozenset[str]:
    names = set()
    for section, cls in _SECTIONS.items():
        for f in dataclasses.fields(cls):
            names.add(f"HOOKD_{section.upper()}_{f.name.upper()}")
    return frozenset(names)


def defaults_as_dict() -> dict[str, dict[str, Any]]:
    """Built-in defaults in the shape ``tomllib`` gives for config.example.toml."""
    out: dict[str, dict[str, Any]] = {}
    for section, cls in _SECTIONS.items():
        instance = cls()
        out[section] = {
            f.name: list(v) if isinstance(v := getattr(instance, f.name), tuple) else v
            for f in dataclasses.fields(cls)
        }
    return out
