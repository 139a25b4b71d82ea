"""Checking what a client sent against :mod:`hookd.bodies`, shared by the API and the CLI.

The declarations do the checking (``msgspec``); this module turns their
failures into a :class:`ValidationError` naming the offending field in the
API's camelCase, so the 400 body can say exactly what to fix, and holds the
rules JSON Schema cannot express, applied after decoding.
"""

from __future__ import annotations

import re
import secrets
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any, TypeVar, overload
from urllib.parse import urlsplit

import msgspec
import msgspec.inspect as mi
from msgspec import UNSET, UnsetType

from hookd.bodies import (
    MAX_EVENT_TYPE_CHARS,
    MAX_NAME_CHARS,
    WILDCARD,
    WebhookCreate,
    WebhookUpdate,
    webhook_bodies,
)
from hookd.config import MAX_TIMEOUT_MS
from hookd.models import NewWebhook
from hookd.sender.addresses import AddressPolicy, destination_problem
from hookd.sender.signing import secret_problem
from hookd.storage.base import WebhookChanges

S = TypeVar("S", bound=msgspec.Struct)
T = TypeVar("T")
R = TypeVar("R")


class ValidationError(Exception):
    def __init__(self, field: str, message: str) -> None:
        super().__init__(f"{field}: {message}")
        self.field = field
        self.message = message


# -- the declarations' failures, in the API's words ------------------------------------

_AT = re.compile(r"^(?P<text>.*) - at `\$(?P<path>.*)`$", re.DOTALL)
_STEP = re.compile(r"\.([^.\[]+)|\[(\d+)\]")
_FAILURES: tuple[tuple[str, re.Pattern[str]], ...] = tuple(
    (kind, re.compile(pattern, re.DOTALL))
    for kind, pattern in (
        ("type", r"^Expected `(?P<want>[^`]*)`, got `[^`]*`$"),
        ("min_length", r"^Expected `(?P<want>str|array|object)` of length >= (?P<n>\d+)$"),
        ("max_length", r"^Expected `(?P<want>str|array|object)` of length <= (?P<n>\d+)$"),
        ("ge", r"^Expected `(?P<want>int|float)` >= (?P<n>-?[\d.]+)$"),
        ("le", r"^Expected `(?P<want>int|float)` <= (?P<n>-?[\d.]+)$"),
        ("pattern", r"^Expected `str` matching regex "),
        ("enum", r"^Invalid enum value "),
        ("missing", r"^Object missing required field `(?P<name>.*)`$"),
        ("unknown", r"^Object contains unknown field `(?P<name>.*)`$"),
    )
)
_TYPE_WORDS = (
    ("str", "must be a string"),
    ("int", "must be an integer"),
    ("object", "must be a JSON object"),
    ("array", "must be a list"),
    ("bool", "must be true or false"),
)


def _declared(shape: Any, path: str) -> tuple[mi.Type, dict[str, str]]:
    """What ``shape`` declares at ``path`` (``.events[3].type``) and its own messages."""
    info, messages = _unwrap(mi.type_info(shape))
    for name, _index in _STEP.findall(path):
        if name and isinstance(info, mi.StructType):
            by_name = {f.encode_name: f.type for f in info.fields}
            info, messages = _unwrap(by_name[name])
        elif not name and isinstance(info, mi.ListType):
            info, messages = _unwrap(info.item_type)
    return info, messages


def _unwrap(info: mi.Type) -> tuple[mi.Type, dict[str, str]]:
    messages: dict[str, str] = {}
    while True:
        if isinstance(info, mi.Metadata):
            messages = {**(info.extra or {}).get("messages", {}), **messages}
            info = info.type
        elif isinstance(info, mi.UnionType):
            info = next(t for t in info.types if not isinstance(t, mi.NoneType))
        else:
            return info, messages


def _failure(text: str) -> tuple[str, re.Match[str] | None]:
    for kind, pattern in _FAILURES:
        if found := pattern.match(text):
            return kind, found
    return "other", None


def invalid(exc: msgspec.ValidationError, shape: Any, root: str = "body") -> ValidationError:
    """``exc`` (raised decoding ``shape``) as the field to blame and what is wrong with it.

    msgspec says what failed in a sentence ("Expected `int` >= 0 - at `$.retryAttempts`");
    the constraint that failed is looked up in the declaration, whose ``extra`` may
    hold the message to show (:func:`hookd.bodies.problems`).
    """
    text, path = str(exc), ""
    if located := _AT.match(text):
        text, path = located["text"], located["path"]
    kind, found = _failure(text)
    info, messages = _declared(shape, path)
    # Missing and unknown fields are named in the text, the path being their object's.
    name = found["name"][:64] if found is not None and "name" in found.groupdict() else ""
    inner = path.removeprefix(".")
    field = (f"{inner}.{name}" if inner else name) if name else (inner or root)
    if kind in messages:
        return ValidationError(field, messages[kind])
    if found is None:
        return ValidationError(field, f"is invalid: {text}")
    return ValidationError(field, _generic(kind, found, info))


def _generic(kind: str, found: re.Match[str], info: mi.Type) -> str:
    if kind == "type":
        want = found["want"]
        return next((text for word, text in _TYPE_WORDS if word in want), f"must be {want}")
    if kind == "min_length":
        if found["n"] == "1":
            return "must not be empty"
        unit = "characters" if found["want"] == "str" else "entries"
        return f"must have at least {found['n']} {unit}"
    if kind == "max_length":
        if found["want"] == "str":
            return f"must be at most {found['n']} characters"
        return f"must have at most {found['n']} entries"
    if kind in ("ge", "le"):
        low, high = getattr(info, "ge", None), getattr(info, "le", None)
        if low is not None and high is not None:
            return f"must be between {low} and {high}"
        return f"must be at least {low}" if kind == "ge" else f"must be at most {high}"
    if kind == "enum" and isinstance(info, mi.EnumType):
        values = [f"'{member.value}'" for member in info.cls]
        return f"must be {', '.join(values[:-1])} or {values[-1]}"
    if kind == "missing":
        return "is required"
    if kind == "unknown":
        names = sorted(f.encode_name for f in getattr(info, "fields", ()))
        return f"unknown field; allowed: {', '.join(names) or 'none'}"
    return f"is invalid: {found.string}"


@overload
def read(shape: type[S], value: Any, root: str = "body") -> S: ...
@overload
def read(shape: Any, value: Any, root: str = "body") -> Any: ...
def read(shape: Any, value: Any, root: str = "body") -> Any:
    """``value`` (Python data, as the CLI has it) checked against ``shape``."""
    try:
        return msgspec.convert(value, shape)
    except msgspec.ValidationError as exc:
        raise invalid(exc, shape, root) from None


# -- rules JSON Schema cannot express, applied after decoding ---------------------------


@dataclass(frozen=True, slots=True)
class WebhookFields:
    name: str
    url: str
    events: tuple[str, ...]
    secret: str | None
    retry_attempts: int
    timeout_ms: int

    def new_webhook(self, workspace_id: str, created_by: str) -> NewWebhook:
        """The webhook to create; a secret not given is 32 random bytes as hex."""
        return NewWebhook(
            workspace_id=workspace_id,
            name=self.name,
            url=self.url,
            events=self.events,
            secret=self.secret or secrets.token_hex(32),
            retry_attempts=self.retry_attempts,
            timeout_ms=self.timeout_ms,
            created_by=created_by,
        )


def name(value: str) -> str:
    """A webhook's name, trimmed; its length and characters count after trimming."""
    trimmed = value.strip()
    if not trimmed:
        raise ValidationError("name", "must not be empty")
    if len(trimmed) > MAX_NAME_CHARS:
        raise ValidationError("name", f"must be at most {MAX_NAME_CHARS} characters")
    if any(ord(c) < 0x20 or ord(c) == 0x7F for c in trimmed):
        raise ValidationError("name", "must not contain control characters")
    return trimmed


def url(value: str, allow_networks: Iterable[str], field: str = "url") -> str:
    """The parts of an http(s) URL the declaration's pattern cannot check, and its destination.

    The destination check refuses a URL that obviously leads to internal
    space (no DNS; see sender.addresses): a courtesy to the user, as the
    check that counts runs at connect time.
    """
    if any(ord(c) <= 0x20 or ord(c) == 0x7F for c in value):
        raise ValidationError(field, "must not contain whitespace or control characters (CR/LF)")
    try:
        parts = urlsplit(value)
        port = parts.port
    except ValueError as exc:
        raise ValidationError(field, f"is not a valid URL: {exc}") from None
    if not parts.hostname:
        raise ValidationError(field, "must be an absolute URL with a host")
    if parts.username is not None or parts.password is not None or "@" in parts.netloc:
        raise ValidationError(field, "must not contain credentials (user:password@)")
    if port == 0:
        raise ValidationError(field, "port must be between 1 and 65535")
    if parts.fragment:
        raise ValidationError(field, "must not contain a fragment (#...)")
    problem = destination_problem(value, AddressPolicy(allow_networks))
    if problem is not None:
        raise ValidationError(field, problem)
    return value


def subscriptions(patterns: list[str]) -> tuple[str, ...]:
    """Event patterns without repeats; an exact type is as long as a wildcard's prefix may be."""
    for i, pattern in enumerate(patterns):
        if not pattern.endswith(WILDCARD) and len(pattern) > MAX_EVENT_TYPE_CHARS:
            raise ValidationError(
                f"events[{i}]", f"must be at most {MAX_EVENT_TYPE_CHARS} characters"
            )
    return tuple(dict.fromkeys(patterns))


def secret(value: str) -> str:
    problem = secret_problem(value)
    if problem is not None:
        raise ValidationError("secret", problem)
    return value


def webhook_fields(body: WebhookCreate, allow_networks: Iterable[str] = ()) -> WebhookFields:
    return WebhookFields(
        name=name(body.name),
        url=url(body.url, allow_networks),
        events=subscriptions(body.events),
        secret=secret(body.secret) if body.secret is not None else None,
        retry_attempts=body.retry_attempts,
        timeout_ms=body.timeout_ms,
    )


def _given(value: T | UnsetType) -> T | None:
    return None if isinstance(value, UnsetType) else value


def _checked(value: T | UnsetType, check: Callable[[T], R]) -> R | None:
    return None if isinstance(value, UnsetType) else check(value)


def webhook_changes(body: WebhookUpdate, allow_networks: Iterable[str] = ()) -> WebhookChanges:
    """A PATCH body: only the fields given change."""
    if all(value is UNSET for value in msgspec.structs.astuple(body)):
        # An empty PATCH is almost always a client bug (wrong body sent); say so
        # rather than bumping updatedAt for nothing.
        raise ValidationError("body", "must name at least one field to change")
    return WebhookChanges(
        name=_checked(body.name, name),
        url=_checked(body.url, lambda value: url(value, allow_networks)),
        events=_checked(body.events, subscriptions),
        secret=_checked(body.secret, secret),
        retry_attempts=_given(body.retry_attempts),
        timeout_ms=_given(body.timeout_ms),
        status=_given(body.status),
    )


def validate_new_webhook(
    body: Any, max_timeout_ms: int = MAX_TIMEOUT_MS, allow_networks: Iterable[str] = ()
) -> WebhookFields:
    """A webhook to create from Python data (the CLI's); the API decodes JSON instead."""
    create, _ = webhook_bodies(max_timeout_ms)
    return webhook_fields(read(create, body), allow_networks)


def validate_webhook_update(
    body: Any, max_timeout_ms: int = MAX_TIMEOUT_MS, allow_networks: Iterable[str] = ()
) -> WebhookChanges:
    _, update = webhook_bodies(max_timeout_ms)
    return webhook_changes(read(update, body), allow_networks)
