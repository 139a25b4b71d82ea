"""Reading what a client sent: JSON bodies, query parameters, path ids.

A body is decoded straight into its declaration (:mod:`hookd.bodies`) by
msgspec.  JSON is held to stricter rules than a JSON parser's own, because
the event body is stored once and sent to receivers in other languages:
``NaN``/``Infinity``, numbers that overflow a double, lone UTF-16 surrogates,
duplicate object keys and nesting deeper than :data:`MAX_DEPTH` are all 400s
rather than bytes some receiver's parser chokes on.  msgspec refuses the
first three itself; for repeated keys and depth, and to name any problem
precisely, :func:`parse_json` is the strict parser of record.
"""

from __future__ import annotations

import functools
import json
import math
import re
from collections.abc import Iterable
from typing import Any, TypeVar, overload

import msgspec
from aiohttp import web

from hookd.api.errors import ApiError, bad_request, not_found
from hookd.bodies import MAX_DEPTH
from hookd.ids import is_id, parse_iso_ms
from hookd.validation import invalid

MIN_LIMIT = 1
MAX_LIMIT = 200
DEFAULT_LIMIT = 50
MAX_CURSOR_CHARS = 64
JSON_MEDIA_TYPE = "application/json"

S = TypeVar("S", bound=msgspec.Struct)

_SURROGATE = re.compile("[\ud800-\udfff]")
# In JSON text a lone surrogate can only be written as a \uD800-\uDFFF escape:
# strict UTF-8 decoding refuses encoded surrogates.
_SURROGATE_ESCAPE = re.compile(rb"\\u[dD][89abcdefABCDEF]")


async def _raw_body(request: web.Request) -> bytes:
    limit = request.client_max_size
    if request.content_length is not None and request.content_length > limit:
        raise ApiError(413, f"body: larger than the {limit} bytes allowed")
    try:
        raw = await request.read()
    except web.HTTPRequestEntityTooLarge:
        raise ApiError(413, f"body: larger than the {limit} bytes allowed") from None
    if raw and request.content_type != JSON_MEDIA_TYPE:
        sent = request.headers.get("Content-Type", "")
        raise ApiError(
            415,
            f"Content-Type: expected {JSON_MEDIA_TYPE}, got {sent[:100]!r}"
            if sent
            else f"Content-Type: expected {JSON_MEDIA_TYPE} (header missing)",
        )
    charset = request.charset
    if raw and charset is not None and charset.lower() not in ("utf-8", "utf8"):
        raise ApiError(415, f"Content-Type: charset must be utf-8, got {charset[:40]!r}")
    return raw


@overload
async def read_body(request: web.Request, shape: type[S]) -> S: ...
@overload
async def read_body(request: web.Request, shape: Any) -> Any: ...
async def read_body(request: web.Request, shape: Any) -> Any:
    """The request's body decoded into ``shape``; a body that is required must not be empty."""
    raw = await _raw_body(request)
    if not raw:
        if not accepts_none(shape):
            raise bad_request("body", "is required: a JSON object")
        return None
    return decode(raw, shape)


@functools.cache
def accepts_none(shape: Any) -> bool:
    try:
        msgspec.convert(None, shape)
    except msgspec.ValidationError:
        return False
    return True


@functools.cache
def _decoder(shape: Any) -> msgspec.json.Decoder[Any]:
    return msgspec.json.Decoder(shape)


_ENCODER = msgspec.json.Encoder()


def decode(raw: bytes, shape: Any) -> Any:
    """``raw`` JSON as ``shape``, or a 400 naming the problem, JSON's before the fields'."""
    try:
        value = _decoder(shape).decode(raw)
    except msgspec.ValidationError as exc:
        parse_json(raw)
        raise invalid(exc, shape) from None
    except (msgspec.DecodeError, RecursionError):
        parse_json(raw)
        raise bad_request("body", "invalid JSON") from None  # pragma: no cover - named above
    if _may_break_strict_rules(raw, value):
        parse_json(raw)
    return value


def _may_break_strict_rules(raw: bytes, value: Any) -> bool:
    """Whether ``raw`` may nest too deep or repeat a key, which msgspec lets through.

    Nesting needs at least that many brackets.  For repeated keys, count
    colons: each member of an object is written with one ``:`` outside
    strings, so ``raw`` has one per member written plus those inside its
    strings.  ``value`` encoded again has one per member kept plus those in
    the strings kept, and a repeated key keeps one member fewer (request
    bodies omit defaults when encoded, so nothing is added).  Unless an escape
    wrote a colon (``\\u003a``), the counts are equal only if no key repeats.
    """
    return (
        _may_nest_too_deep(raw)
        or b"\\u003" in raw
        or raw.count(b":") != _ENCODER.encode(value).count(b":")
    )


def _may_nest_too_deep(raw: bytes) -> bool:
    return raw.count(b"{") + raw.count(b"[") > MAX_DEPTH


def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not valid JSON")


def _finite_float(text: str) -> float:
    value = float(text)
    if not math.isfinite(value):
        raise ValueError(f"number {text[:40]} is out of range")
    return value


def _no_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in pairs:
        if key in out:
            raise ValueError(f"duplicate key {key[:64]!r}")
        out[key] = value
    return out


# Built once: json.loads with hooks would build a new decoder for every body.
_DECODER = json.JSONDecoder(
    parse_constant=_reject_constant,
    parse_float=_finite_float,
    object_pairs_hook=_no_duplicates,
)


def parse_json(raw: bytes) -> Any:
    """``raw`` parsed by the strict rules above, or a 400 naming the first problem."""
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        raise bad_request("body", "is not valid UTF-8") from None
    try:
        value = _DECODER.decode(text)
    except RecursionError:
        raise bad_request("body", f"JSON is nested deeper than {MAX_DEPTH} levels") from None
    except json.JSONDecodeError as exc:
        raise bad_request(
            "body", f"invalid JSON: {exc.msg} (line {exc.lineno}, column {exc.colno})"
        ) from None
    except ValueError as exc:  # the hooks above, and ints too long to convert
        raise bad_request("body", f"invalid JSON: {exc}") from None
    # The walk costs about as much as the parse.  Skip it when the raw bytes
    # already rule out what it looks for: nesting needs at least that many
    # brackets, and a lone surrogate needs its escape.
    if _may_nest_too_deep(raw) or _SURROGATE_ESCAPE.search(raw):
        _check_tree(value)
    return value


def _check_tree(value: Any) -> None:
    # Iterative on purpose: a recursive walk is what the depth limit protects against.
    stack: list[tuple[Any, int]] = [(value, 0)]
    while stack:
        item, depth = stack.pop()
        if isinstance(item, str):
            if _SURROGATE.search(item):
                raise bad_request("body", "contains a lone UTF-16 surrogate (\\ud800-\\udfff)")
        elif isinstance(item, dict):
            if depth + 1 > MAX_DEPTH:
                raise bad_request("body", f"JSON is nested deeper than {MAX_DEPTH} levels")
            for key, child in item.items():
                if _SURROGATE.search(key):
                    raise bad_request("body", "contains a lone UTF-16 surrogate (\\ud800-\\udfff)")
                stack.append((child, depth + 1))
        elif isinstance(item, list):
            if depth + 1 > MAX_DEPTH:
                raise bad_request("body", f"JSON is nested deeper than {MAX_DEPTH} levels")
            stack.extend((child, depth + 1) for child in item)


def query(request: web.Request, allowed: Iterable[str] = ()) -> dict[str, str]:
    """Query parameters, each at most once; an unknown one is a 400 (typos filter nothing)."""
    if not request.query_string:
        return {}
    names = frozenset(allowed)
    out: dict[str, str] = {}
    for key, value in request.query.items():
        if key not in names:
            hint = f"; allowed: {', '.join(sorted(names))}" if names else "; none are accepted"
            raise bad_request(key[:64] or "(empty name)", f"unknown query parameter{hint}")
        if key in out:
            raise bad_request(key, "given more than once")
        out[key] = value
    return out


def parse_limit(params: dict[str, str]) -> int:
    text = params.get("limit")
    if text is None:
        return DEFAULT_LIMIT
    if not text.isascii() or not text.isdigit() or len(text) > 3:
        raise bad_request("limit", f"must be an integer between {MIN_LIMIT} and {MAX_LIMIT}")
    value = int(text)
    if not MIN_LIMIT <= value <= MAX_LIMIT:
        raise bad_request("limit", f"must be an integer between {MIN_LIMIT} and {MAX_LIMIT}")
    return value


def parse_cursor(params: dict[str, str]) -> str | None:
    cursor = params.get("cursor")
    if cursor is None:
        return None
    if not cursor or len(cursor) > MAX_CURSOR_CHARS:
        raise bad_request("cursor", "is not a cursor returned by this list")
    return cursor


def parse_timestamp(value: Any, field: str) -> int:
    if not isinstance(value, str):
        raise bad_request(field, "must be an ISO 8601 timestamp string")
    if len(value) > 40:
        raise bad_request(field, "must be an ISO 8601 timestamp such as 2024-06-01T10:00:00.000Z")
    try:
        return parse_iso_ms(value)
    except (ValueError, OverflowError, OSError):
        raise bad_request(
            field, "must be an ISO 8601 timestamp with a zone, such as 2024-06-01T10:00:00.000Z"
        ) from None


def path_id(request: web.Request, name: str = "id") -> str:
    """A resource id from the path; one that cannot exist is simply not found."""
    value = request.match_info.get(name, "")
    if not is_id(value):
        raise not_found()
    return value
