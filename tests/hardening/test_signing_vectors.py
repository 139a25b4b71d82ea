"""hookd.sender.signing against published vectors and the reference verifier.

- Standard Webhooks: the ``sign`` vector of the reference libraries
  (libraries/python/tests/test_webhooks.py and libraries/go/webhook_test.go in
  github.com/standard-webhooks/standard-webhooks).
- GitHub: the X-Hub-Signature-256 example of "Validating webhook deliveries".
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import time

import pytest
import standardwebhooks
from standardwebhooks.webhooks import WebhookVerificationError

from hookd.sender.signing import (
    MIN_KEY_BYTES,
    hex_signature,
    secret_problem,
    signature_headers,
    signing_key,
    standard_signature,
)

# Standard Webhooks reference vector.  (The secret ends in "LaLaSw" in the published
# tests; a "...LaLSYs" variant that circulates does not reproduce the signature.)
SW_SECRET = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
SW_MSG_ID = "msg_p5jXN8AQM9LWM0D4loKWxJek"
SW_TIMESTAMP = 1614265330
SW_PAYLOAD = b'{"test": 2432232314}'
SW_EXPECTED = "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE="

# GitHub's documented example.
GH_SECRET = "It's a Secret to Everybody"
GH_PAYLOAD = b"Hello, World!"
GH_EXPECTED = "757107ea0eb2509fc211221cce984b8a37570b6d7586c22c46f4379c8b043e17"


def test_standard_webhooks_published_vector() -> None:
    key = signing_key(SW_SECRET)
    assert key == base64.b64decode("MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw")
    assert standard_signature(key, SW_MSG_ID, SW_TIMESTAMP, SW_PAYLOAD) == SW_EXPECTED


def test_standard_webhooks_vector_through_the_request_headers() -> None:
    headers = signature_headers(SW_MSG_ID, SW_TIMESTAMP, SW_PAYLOAD, [SW_SECRET])
    assert headers["webhook-id"] == SW_MSG_ID
    assert headers["webhook-timestamp"] == str(SW_TIMESTAMP)
    assert headers["webhook-signature"] == SW_EXPECTED
    assert headers["X-Webhook-Id"] == SW_MSG_ID
    assert headers["X-Webhook-Timestamp"] == str(SW_TIMESTAMP)


def test_reference_library_agrees_on_the_vector() -> None:
    from datetime import UTC, datetime

    reference = standardwebhooks.Webhook(SW_SECRET)
    signed = reference.sign(
        SW_MSG_ID, datetime.fromtimestamp(SW_TIMESTAMP, tz=UTC), SW_PAYLOAD.decode()
    )
    assert signed == SW_EXPECTED


def test_github_published_vector() -> None:
    assert hex_signature(GH_SECRET.encode("utf-8"), GH_PAYLOAD) == GH_EXPECTED
    headers = signature_headers("evt", 1, GH_PAYLOAD, [GH_SECRET])
    # GitHub sends "sha256=<hex>"; hookd's X-Webhook-Signature is the bare hex.
    assert headers["X-Webhook-Signature"] == GH_EXPECTED


def test_reference_verifier_accepts_live_headers_for_both_secret_forms() -> None:
    now = int(time.time())
    body = b'{"id":"e","type":"t","data":{"n":1}}'
    plain = "plain-secret-0123456789"
    for secret, verifier_secret in (
        (SW_SECRET, SW_SECRET),
        # A plain secret's key is its UTF-8 bytes, which the reference library
        # takes in base64 form.
        (plain, base64.b64encode(plain.encode()).decode()),
    ):
        headers = signature_headers("msg_1", now, body, [secret])
        payload = standardwebhooks.Webhook(verifier_secret).verify(body, headers)
        assert payload["data"] == {"n": 1}
        tampered = body.replace(b'"n":1', b'"n":2')
        with pytest.raises(WebhookVerificationError):
            standardwebhooks.Webhook(verifier_secret).verify(tampered, headers)


def test_two_secrets_give_two_signatures_in_each_header() -> None:
    now = int(time.time())
    body = b"{}"
    new, old = "new-secret-0123456789", SW_SECRET
    headers = signature_headers("msg_2", now, body, [new, old])
    entries = headers["webhook-signature"].split(" ")
    assert len(entries) == 2 and all(e.startswith("v1,") for e in entries)
    hexes = headers["X-Webhook-Signature"].split(",")
    assert hexes == [
        hmac.new(new.encode(), body, hashlib.sha256).hexdigest(),
        hmac.new(signing_key(old), body, hashlib.sha256).hexdigest(),
    ]
    for verifier_secret in (base64.b64encode(new.encode()).decode(), old):
        standardwebhooks.Webhook(verifier_secret).verify(body, headers)


def _whsec(size: int) -> str:
    return "whsec_" + base64.b64encode(b"k" * size).decode()


@pytest.mark.parametrize(
    ("secret", "problem"),
    [
        # The published vectors are strong enough.
        (SW_SECRET, None),
        (GH_SECRET, None),
        # Plain secrets: their UTF-8 bytes are the key.
        ("k" * MIN_KEY_BYTES, None),
        ("k" * (MIN_KEY_BYTES - 1), "must be at least 16 bytes of UTF-8 (the signing key)"),
        ("abcdefgh", "this one is 8"),
        # Bytes, not characters: six 3-byte characters are 18 bytes.
        ("秘密秘密秘密", None),
        ("秘密秘密秘", "this one is 15"),
        # whsec_: the decoded bytes are the key.
        (_whsec(MIN_KEY_BYTES), None),
        (_whsec(MIN_KEY_BYTES - 1), "must decode to at least 16 bytes"),
        ("whsec_aw==", "it decodes to 1"),
        ("whsec_", "it decodes to 0"),
        ("whsec_***", "whsec_ secrets must be followed by valid base64"),
        ("whsec_" + "A" * 30 + "=", "valid base64"),
    ],
)
def test_a_secret_holds_at_least_16_bytes_of_key_material(secret: str, problem: str | None) -> None:
    found = secret_problem(secret)
    if problem is None:
        assert found is None
    else:
        assert found is not None and problem in found, found


def test_whsec_parsing() -> None:
    # An undecodable whsec_ value (refused by the API) would sign with its bytes as written.
    assert signing_key("whsec_***") == b"whsec_***"
    # Non-ASCII secrets are keyed by their UTF-8 bytes.
    assert signing_key("sécret-ü") == "sécret-ü".encode()
