"""Reading what a client sent: JSON bodies, query parameters, path ids.

A body is decoded straight into its declaration (:mod:`hookd.bodies`) by
msgspec.  JSON is held to stricter rules than a JSON parser's own, because
the event body is stored once and sent to receivers in other languages:
``NaN``/``Infinity``, numbers that overflow a double (integers included),
lone UTF-16 surrogates, duplicate object keys, an event's data nested deeper
than :data:`MAX_DATA_DEPTH` and any body deeper than :data:`MAX_DEPTH` are
all 400s rather than bytes some receiver's parser chokes on.  msgspec refuses
some of these itself; for the rest, and to name any problem precisely,
:func:`parse_json` is the strict parser of record.

The body's bytes are read here too: a ``Content-Encoding`` of ``gzip`` or
``deflate`` is decoded here, under ``server.max_body_bytes`` for the decoded
bytes (the server leaves bodies as sent; see :mod:`hookd.api.listener`), so
an undecodable body is a 400 naming its coding and a compression bomb a 413.
"""

from __future__ import annotations

import functools
import json
import math
import re
import sys
import zlib
from collections.abc import Callable, Iterable
from typing import Any, TypeVar, overload

import msgspec
from aiohttp import web

from hookd.api.errors import ApiError, bad_request, not_found, too_large
from hookd.bodies import MAX_DATA_DEPTH, MAX_DEPTH, EventCreate, free_json
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


def check_declared_size(request: web.BaseRequest) -> None:
    """A 413 at once for a body whose Content-Length is over the limit: it is never read."""
    limit = request.client_max_size
    if request.content_length is not None and request.content_length > limit:
        raise too_large(limit)


async def read_raw(request: web.BaseRequest) -> bytes:
    """The body's bytes as sent (aiohttp keeps them for the next read), within the limit.

    A client that goes away mid-body raises ``ConnectionError``, which the error
    middleware logs quietly: there is no one left to answer.
    """
    check_declared_size(request)
    try:
        return await request.read()
    except web.HTTPRequestEntityTooLarge:
        raise too_large(request.client_max_size) from None
    except web.RequestPayloadError:
        # Bad chunked framing, mostly.  Its text quotes the client's bytes: not repeated.
        raise bad_request("body", "malformed (chunked encoding or framing)") from None


# Content codings a body may use, with the zlib window bits that decode them.
_CODINGS = {"gzip": 16 + zlib.MAX_WBITS, "x-gzip": 16 + zlib.MAX_WBITS, "deflate": zlib.MAX_WBITS}


def decode_content(raw: bytes, coding_header: str, limit: int) -> bytes:
    """``raw`` decoded as ``Content-Encoding: coding_header`` says, to at most ``limit`` bytes."""
    codings = [c.strip().lower() for c in coding_header.split(",")]
    codings = [c for c in codings if c and c != "identity"]
    if not codings:
        return raw
    if len(codings) > 1 or codings[0] not in _CODINGS:
        shown = ", ".join(codings)[:60]
        raise ApiError(
            415, f"Content-Encoding: {shown} is not supported; send gzip, deflate or identity"
        )
    coding = codings[0]
    if not raw:
        return raw
    wbits = _CODINGS[coding]
    try:
        return _inflate(raw, wbits, limit)
    except zlib.error:
        if coding != "deflate":
            raise bad_request("Content-Encoding", f"the body is not valid {coding} data") from None
    # "deflate" is zlib data, but some clients send the raw deflate stream.
    try:
        return _inflate(raw, -zlib.MAX_WBITS, limit)
    except zlib.error:
        raise bad_request("Content-Encoding", "the body is not valid deflate data") from None


def _inflate(raw: bytes, wbits: int, limit: int) -> bytes:
    out = bytearray()
    data = raw
    while True:
        inflater = zlib.decompressobj(wbits)
        out += inflater.decompress(data, limit + 1 - len(out))
        if len(out) > limit:
            raise ApiError(413, f"body: larger than the {limit} bytes allowed, once decoded")
        if not inflater.eof:
            raise zlib.error("the data ends before its stream does")
        data = inflater.unused_data
        if not data:
            return bytes(out)
        # Concatenated gzip members are one body, as gzip(1) reads them; the
        # one thing allowed after a zlib stream is nothing.
        if wbits <= zlib.MAX_WBITS:
            raise zlib.error("data after the end of the stream")


async def _raw_body(request: web.Request) -> bytes:
    raw = await read_raw(request)
    coding = ",".join(request.headers.getall("Content-Encoding", []))
    if coding:
        raw = decode_content(raw, coding, request.client_max_size)
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
    brackets = _brackets(raw)
    if brackets > MAX_DATA_DEPTH:
        for field, data in free_json(value):
            # Each level opens a bracket: re-encoding (in C) and counting rules
            # out most data before the walk in Python, which cost a batch of
            # 100 small events more than the rest of its checks together.
            if _brackets(_ENCODER.encode(data)) > MAX_DATA_DEPTH and _deeper_than(
                data, MAX_DATA_DEPTH
            ):
                raise bad_request(field, f"nested deeper than {MAX_DATA_DEPTH} levels")
    if _may_break_strict_rules(raw, value, brackets):
        parse_json(raw)
    return value


def event_from_parts(event_type: str, data: bytes, idempotency_key: str | None) -> EventCreate:
    """An event given as its parts (the CLI's), held to the rules of a request body.

    ``data`` is checked as a JSON value on its own first, so that nothing
    written after it can become part of the event around it.
    """
    parse_json(data)
    try:
        type_json = _ENCODER.encode(event_type)
        key_json = None if idempotency_key is None else _ENCODER.encode(idempotency_key)
    except UnicodeEncodeError:  # a command line that is not UTF-8
        raise bad_request("type", "is not valid UTF-8") from None
    key = b"" if key_json is None else b',"idempotencyKey":' + key_json
    body = b'{"type":%s,"data":%s%s}' % (type_json, data, key)
    event: EventCreate = decode(body, EventCreate)
    return event


def _may_break_strict_rules(raw: bytes, value: Any, brackets: int) -> bool:
    """Whether ``raw`` may break a rule msgspec lets through.

    Nesting needs at least that many brackets, and an integer that overflows
    a double at least 309 digits in a row.  For repeated keys, count colons:
    each member of an object is written with one ``:`` outside strings, so
    ``raw`` has one per member written plus those inside its strings.
    ``value`` encoded again has one per member kept plus those in the strings
    kept, and a repeated key keeps one member fewer (request bodies omit
    defaults when encoded, so nothing is added).  Unless an escape wrote a
    colon (``\\u003a``), the counts are equal only if no key repeats.
    """
    return (
        brackets > MAX_DEPTH
        or _may_overflow_a_double(raw)
        or b"\\u003" in raw
        or raw.count(b":") != _ENCODER.encode(value).count(b":")
    )


def _brackets(raw: bytes) -> int:
    return raw.count(b"{") + raw.count(b"[")


# Every digit as "1", everything else as a space: a run of 309 ones is a number
# (or a string) of 309 digits.  translate and ``in`` are two fast passes in C; a
# regular expression for digit runs took 25 times as long on a 57 KB body.
_DIGITS_AS_ONES = bytes(0x31 if 0x30 <= b <= 0x39 else 0x20 for b in range(256))
# The largest double is 1.797...e308: no integer of fewer digits overflows one.
_DOUBLE_DIGITS = len(str(int(sys.float_info.max)))
_DIGIT_RUN = b"1" * _DOUBLE_DIGITS


def _may_overflow_a_double(raw: bytes) -> bool:
    return len(raw) >= _DOUBLE_DIGITS and _DIGIT_RUN in raw.translate(_DIGITS_AS_ONES)


def _deeper_than(value: Any, limit: int) -> bool:
    # Iterative on purpose: a recursive walk is what the depth limit protects against.
    stack: list[tuple[Any, int]] = [(value, 0)]
    while stack:
        item, depth = stack.pop()
        if isinstance(item, dict):
            children: Iterable[Any] = item.values()
        elif isinstance(item, list):
            children = item
        else:
            continue
        if depth + 1 > limit:
            return True
        stack.extend((child, depth + 1) for child in children)
    return False


def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not valid JSON")


def _shown_number(text: str) -> str:
    return text if len(text) <= 40 else f"{text[:20]}... ({len(text)} characters)"


def _finite_float(text: str) -> float:
    value = float(text)
    if not math.isfinite(value):
        raise ValueError(f"number {_shown_number(text)} overflows a double")
    return value


def _int_within_a_double(text: str) -> int:
    """An integer, refused (as a float would be) if its value overflows a double.

    Such integers are valid JSON, but receivers in JavaScript, Go (float64)
    and others read them as infinity or fail; 10**308 still fits.
    """
    try:
        if len(text.lstrip("-")) > _DOUBLE_DIGITS:
            raise OverflowError
        value = int(text)
        float(value)  # OverflowError exactly when the double would be infinite
    except OverflowError:
        raise ValueError(f"number {_shown_number(text)} overflows a double") from None
    return value


def _no_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in pairs:
        if key in out:
            raise ValueError(f"duplicate key {key[:64]!r}")
        out[key] = value
    return out


def _strict_decoder(parse_int: Callable[[str], int] | None) -> json.JSONDecoder:
    return json.JSONDecoder(
        parse_constant=_reject_constant,
        parse_float=_finite_float,
        parse_int=parse_int,
        object_pairs_hook=_no_duplicates,
    )


# Built once: json.loads with hooks would build a new decoder for every body.
# The integer rule is a hook called for every integer, needed only where a run
# of digits is long enough to overflow a double.
_DECODER = _strict_decoder(None)
_DECODER_LONG_DIGITS = _strict_decoder(_int_within_a_double)


def parse_json(raw: bytes) -> Any:
    """``raw`` parsed by the strict rules above, or a 400 naming the first problem."""
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        raise bad_request("body", "is not valid UTF-8") from None
    try:
        decoder = _DECODER_LONG_DIGITS if _may_overflow_a_double(raw) else _DECODER
        value = decoder.decode(text)
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
    if _brackets(raw) > MAX_DEPTH or _SURROGATE_ESCAPE.search(raw):
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
