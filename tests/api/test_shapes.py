"""The declarations' checks: their failures in the API's words, and strict JSON kept strict."""

from __future__ import annotations

import math
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from hookd.api.errors import ApiError
from hookd.api.inputs import decode, parse_json
from hookd.bodies import (
    EmptyReplayRequest,
    EventBatchCreate,
    EventCreate,
    EventType,
    IdempotencyKey,
    webhook_bodies,
)
from hookd.validation import ValidationError, read, validate_new_webhook, validate_webhook_update

HOOK = {"name": "n", "url": "https://crm.example.com/hook", "events": ["a.b"]}
EVENT = {"type": "a", "data": 1}


@pytest.mark.parametrize(
    ("shape", "value", "root", "field", "message"),
    [
        (EventCreate, [], "body", "body", "must be a JSON object"),
        (EventCreate, {"data": 1}, "body", "type", "is required"),
        (
            EventCreate,
            {**EVENT, "x": 1},
            "body",
            "x",
            "unknown field; allowed: data, idempotencyKey, type",
        ),
        (EventCreate, {**EVENT, "type": 7}, "body", "type", "must be a string"),
        (EventCreate, {**EVENT, "type": ""}, "body", "type", "must not be empty"),
        (
            EventCreate,
            {**EVENT, "type": "t" * 201},
            "body",
            "type",
            "must be at most 200 characters",
        ),
        (
            EventCreate,
            {**EVENT, "type": "a\n"},
            "body",
            "type",
            "must be dotted words of letters, digits, '_' or '-'",
        ),
        (
            EventCreate,
            {**EVENT, "idempotencyKey": ""},
            "body",
            "idempotencyKey",
            "must be 1 to 255 characters",
        ),
        (EventCreate, {**EVENT, "idempotencyKey": 5}, "body", "idempotencyKey", "must be a string"),
        (EventBatchCreate, {"events": {}}, "body", "events", "must be a list of events"),
        (
            EventBatchCreate,
            {"events": [EVENT] * 501},
            "body",
            "events",
            "must have at most 500 entries",
        ),
        (EventBatchCreate, {"events": [EVENT, 3]}, "body", "events[1]", "must be a JSON object"),
        (
            EventBatchCreate,
            {"events": [EVENT, {"data": 1}]},
            "body",
            "events[1].type",
            "is required",
        ),
        (
            EventBatchCreate,
            {"events": [{**EVENT, "idempotencyKey": "a b"}]},
            "body",
            "events[0].idempotencyKey",
            "must be printable ASCII without spaces",
        ),
        (
            EventType,
            "a b",
            "eventType",
            "eventType",
            "must be dotted words of letters, digits, '_' or '-'",
        ),
        (
            IdempotencyKey,
            "é",
            "Idempotency-Key",
            "Idempotency-Key",
            "must be printable ASCII without spaces",
        ),
        (
            EmptyReplayRequest,
            {"force": True},
            "body",
            "force",
            "unknown field; this action takes no fields",
        ),
    ],
)
def test_a_failure_names_the_field_and_says_what_is_wrong(
    shape: Any, value: Any, root: str, field: str, message: str
) -> None:
    with pytest.raises(ValidationError) as failed:
        read(shape, value, root)
    assert (failed.value.field, failed.value.message) == (field, message)


@pytest.mark.parametrize(
    ("body", "field", "message"),
    [
        ({"url": 1}, "url", "must be a string"),
        ({"events": "a"}, "events", "must be a list of event types"),
        ({"events": ["x" * 201]}, "events[0]", "must be at most 200 characters"),
        ({"events": ["x" * 201 + ".*"]}, "events[0]", "must be at most 200 characters"),
        (
            {"events": ["ok", "*.a"]},
            "events[1]",
            "must be dotted words of letters, digits, '_' or '-'",
        ),
        ({"retryAttempts": True}, "retryAttempts", "must be an integer"),
        ({"retryAttempts": -1}, "retryAttempts", "must be between 0 and 20"),
        ({"timeoutMs": 30_001}, "timeoutMs", "must be between 100 and 30000"),
        ({"secret": ""}, "secret", "must be 1 to 512 characters"),
        (
            {"secret": "short"},
            "secret",
            "must be at least 16 bytes of UTF-8 (the signing key); this one is 5",
        ),
        (
            {"secret": "whsec_aw=="},
            "secret",
            "the base64 after whsec_ must decode to at least 16 bytes"
            " (24 to 64 random bytes are recommended); it decodes to 1",
        ),
        ({"secret": "abcdefgh\n"}, "secret", "must not contain whitespace or control characters"),
        ({"secret": "whsec_!!!!!!!!"}, "secret", "whsec_ secrets must be followed by valid base64"),
        ({"name": " \t"}, "name", "must not be empty"),
        ({"url": "ftp://a.example.com/"}, "url", "must be an absolute http:// or https:// URL"),
        (
            {"url": "https://u:p@a.example.com/"},
            "url",
            "must not contain credentials (user:password@)",
        ),
    ],
)
def test_webhook_bodies_are_checked_against_the_configured_timeout(
    body: dict[str, Any], field: str, message: str
) -> None:
    for check in (validate_new_webhook, validate_webhook_update):
        with pytest.raises(ValidationError) as failed:
            check({**HOOK, **body} if check is validate_new_webhook else body, 30_000)
        assert (failed.value.field, failed.value.message) == (field, message), check


def test_the_configured_timeout_bounds_and_caps_the_default() -> None:
    assert validate_new_webhook(HOOK, 5_000).timeout_ms == 5_000
    assert validate_new_webhook(HOOK).timeout_ms == 10_000
    create, update = webhook_bodies(5_000)
    assert webhook_bodies(5_000) == (create, update)
    with pytest.raises(ValidationError, match="between 100 and 5000"):
        validate_webhook_update({"status": "inactive", "timeoutMs": 5_001}, 5_000)
    with pytest.raises(ValidationError, match="must be 'active' or 'inactive'"):
        validate_webhook_update({"status": "paused"}, 5_000)
    with pytest.raises(ValidationError, match="must name at least one field"):
        validate_webhook_update({})


# -- the fast path accepts exactly what the strict parser accepts -----------------------

KEYS = st.sampled_from(["a", "b", "a:b", ":", "\\u003a", "\\u003A", "\\u00e9", "\\ud800", "é"])
SCALARS = st.sampled_from(
    [
        "1",
        "-0",
        "0.5",
        "1e999",
        "-1e400",
        "1e-400",
        "NaN",
        "Infinity",
        "true",
        "null",
        "9" * 30,
        "9" * 5000,
        '"s:t"',
        '"\\ud83d\\ude00"',
        '"\\ude00"',
        '"\\\\ud800"',
        '"\\u003a"',
    ]
)


def _json(children: st.SearchStrategy[str]) -> st.SearchStrategy[str]:
    arrays = st.lists(children, max_size=4).map(lambda xs: "[" + ",".join(xs) + "]")
    members = st.lists(st.tuples(KEYS, children), max_size=4)
    objects = members.map(lambda kv: "{" + ",".join(f'"{k}":{v}' for k, v in kv) + "}")
    return st.one_of(arrays, objects)


TEXTS = st.tuples(st.integers(0, 34), st.recursive(SCALARS, _json, max_leaves=24)).map(
    lambda t: ("[" * t[0] + t[1] + "]" * t[0]).encode()
)


def _outcome(parse: Any, raw: bytes) -> tuple[str, Any]:
    try:
        return "ok", parse(raw)
    except ApiError as exc:
        return "refused", exc.message


@settings(max_examples=400, deadline=None, database=None, derandomize=True)
@given(raw=TEXTS)
def test_decoding_refuses_exactly_what_the_strict_parser_refuses(raw: bytes) -> None:
    fast = _outcome(lambda r: decode(r, Any), raw)
    strict = _outcome(parse_json, raw)
    assert fast[0] == strict[0], (raw[:200], fast, strict)
    if fast[0] == "ok":
        assert fast[1] == strict[1] or _nan_free_equal(fast[1], strict[1])
    else:
        assert fast[1] == strict[1]


def _nan_free_equal(a: Any, b: Any) -> bool:
    # -0.0 == 0.0 and the like: compare what JSON can tell apart.
    if isinstance(a, float) and isinstance(b, float):
        return math.isclose(a, b)
    return bool(a == b)
