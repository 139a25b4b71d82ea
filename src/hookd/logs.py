"""structlog, configured once per process.

JSON lines when stderr is not a terminal (journald, Docker, files), readable
console output when it is.  Event names are stable identifiers
(``delivery.attempt``), and context (delivery_id, webhook_id) is bound, not
formatted into messages.  Secrets and API keys are never passed to a logger;
the redaction processor below is the net under that rule, not the rule.

Records of the standard library's ``logging`` (aiohttp, asyncio) go through the
same renderer, so a JSON consumer never meets a line it cannot parse.
"""

from __future__ import annotations

import logging
import re
import sys
import time
from collections.abc import MutableMapping
from typing import Any, TextIO

import structlog

_LEVELS = {
    "debug": logging.DEBUG,
    "info": logging.INFO,
    "warning": logging.WARNING,
    "error": logging.ERROR,
    "critical": logging.CRITICAL,
}

REDACTED = "[redacted]"

# Field names whose values are credentials whatever they hold.
_SECRET_FIELDS = frozenset(
    {
        "secret",
        "secrets",
        "previous_secret",
        "api_key",
        "key",
        "authorization",
        "x-api-key",
        "password",
        "token",
    }
)

# hookd API keys (``sk_user_…`` and ``sk_…``) and Standard Webhooks secrets
# (``whsec_…``), should one slip into a message or an error text.
_SECRET_PATTERN = re.compile(r"\b(?:sk|whsec)_[A-Za-z0-9_+/=-]{8,}")


def _scrub(value: Any) -> Any:
    if isinstance(value, str):
        # The substring tests are what every line pays; the regex runs only
        # when one of the prefixes is there at all.
        if "sk_" in value or "whsec_" in value:
            return _SECRET_PATTERN.sub(REDACTED, value)
        return value
    if isinstance(value, dict):
        return {
            k: REDACTED if str(k).lower() in _SECRET_FIELDS else _scrub(v) for k, v in value.items()
        }
    if isinstance(value, list | tuple):
        return [_scrub(v) for v in value]
    return value


# Field name -> whether it names a credential.  Log calls use a few dozen
# distinct names; lower-casing each of them on every line was a third of
# what a log line cost.
_SECRET_NAME: dict[str, bool] = {}


def _secret_name(name: str) -> bool:
    known = _SECRET_NAME.get(name)
    if known is None:
        if len(_SECRET_NAME) >= 4096:
            _SECRET_NAME.clear()
        known = _SECRET_NAME[name] = str(name).lower() in _SECRET_FIELDS
    return known


def redact(
    _logger: Any, _method: str, event_dict: MutableMapping[str, Any]
) -> MutableMapping[str, Any]:
    for name, value in event_dict.items():
        if _secret_name(name):
            event_dict[name] = REDACTED
        elif value is None or type(value) is int:
            continue
        else:
            event_dict[name] = _scrub(value)
    return event_dict


class UtcTimestamper:
    """``timestamp`` as ISO 8601 UTC with microseconds, like structlog's
    ``TimeStamper(fmt="iso", utc=True)`` but formatting the date and time
    once per second instead of building a datetime for every line."""

    __slots__ = ("_cache",)

    def __init__(self) -> None:
        self._cache: tuple[int, str] = (-1, "")

    def __call__(
        self, _logger: Any, _method: str, event_dict: MutableMapping[str, Any]
    ) -> MutableMapping[str, Any]:
        now = time.time()
        second = int(now)
        cached_second, prefix = self._cache  # one tuple: safe across threads
        if second != cached_second:
            prefix = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(second))
            self._cache = (second, prefix)
        event_dict["timestamp"] = f"{prefix}.{int((now - second) * 1e6):06d}Z"
        return event_dict


def configure_logging(level: str = "info", fmt: str = "auto", stream: TextIO | None = None) -> None:
    out = stream or sys.stderr
    use_console = fmt == "console" or (fmt == "auto" and out.isatty())
    renderer: structlog.typing.Processor
    if use_console:
        renderer = structlog.dev.ConsoleRenderer()
    else:
        renderer = structlog.processors.JSONRenderer()
    threshold = _LEVELS[level.lower()]
    shared: list[structlog.typing.Processor] = [
        structlog.contextvars.merge_contextvars,
        structlog.processors.add_log_level,
        UtcTimestamper(),
    ]
    structlog.configure(
        processors=[
            *shared,
            structlog.processors.format_exc_info,
            redact,
            renderer,
        ],
        wrapper_class=structlog.make_filtering_bound_logger(threshold),
        # One write() per line (print() makes two): with worker processes
        # sharing the stream, a line is never torn by another process's line.
        logger_factory=structlog.WriteLoggerFactory(file=out),
        cache_logger_on_first_use=True,
    )
    handler = logging.StreamHandler(out)
    handler.setFormatter(
        structlog.stdlib.ProcessorFormatter(
            foreign_pre_chain=[*shared, structlog.stdlib.add_logger_name],
            processors=[
                structlog.stdlib.ProcessorFormatter.remove_processors_meta,
                structlog.processors.format_exc_info,
                redact,
                renderer,
            ],
        )
    )
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
    root.addHandler(handler)
    # Libraries are chatty at debug; their warnings are what an operator needs.
    root.setLevel(max(threshold, logging.WARNING))
