"""Request signing: the hookd hex signature and the Standard Webhooks trio.

``X-Webhook-Signature`` is the lowercase hex HMAC-SHA256 of the body;
``webhook-signature`` is ``v1,<base64 HMAC-SHA256 of "id.timestamp.body">``.
With several active secrets (a rotation's grace period) each header carries
one signature per secret: comma-separated hex values, space-separated ``v1,``
entries, so a receiver holding either secret verifies.
"""

from __future__ import annotations

import base64
import binascii
import hmac
from collections.abc import Sequence

WHSEC_PREFIX = "whsec_"


def signing_key(secret: str) -> bytes:
    """The HMAC key: the secret's UTF-8 bytes, or the decoded bytes of ``whsec_<base64>``."""
    if secret.startswith(WHSEC_PREFIX):
        try:
            return base64.b64decode(secret[len(WHSEC_PREFIX) :], validate=True)
        except binascii.Error:
            # Not valid base64 after all: treat it as an opaque string, as written.
            pass
    return secret.encode("utf-8")


# The least key material a secret may hold.  Standard Webhooks recommends 24 to 64
# random bytes; below 16 an HMAC key is guessable offline from one signed request.
MIN_KEY_BYTES = 16


def secret_problem(secret: str) -> str | None:
    """Why ``secret`` may not sign, or None: the one rule for the API and the CLI."""
    if secret.startswith(WHSEC_PREFIX):
        try:
            key = base64.b64decode(secret[len(WHSEC_PREFIX) :], validate=True)
        except binascii.Error:
            return "whsec_ secrets must be followed by valid base64"
        if len(key) < MIN_KEY_BYTES:
            return (
                f"the base64 after whsec_ must decode to at least {MIN_KEY_BYTES} bytes"
                f" (24 to 64 random bytes are recommended); it decodes to {len(key)}"
            )
        return None
    size = len(secret.encode("utf-8"))
    if size < MIN_KEY_BYTES:
        return (
            f"must be at least {MIN_KEY_BYTES} bytes of UTF-8 (the signing key); this one is {size}"
        )
    return None


def hex_signature(key: bytes, body: bytes) -> str:
    # hmac.digest is the one-shot C path: no HMAC object per signature.
    return hmac.digest(key, body, "sha256").hex()


def standard_signature(key: bytes, msg_id: str, timestamp: int, body: bytes) -> str:
    signed = b"%s.%d.%s" % (msg_id.encode("utf-8"), timestamp, body)
    return "v1," + base64.b64encode(hmac.digest(key, signed, "sha256")).decode("ascii")


# Secret -> HMAC key.  A box signs for the same few thousand webhooks again
# and again; decoding a whsec_ secret on every attempt is wasted work.
_KEYS: dict[str, bytes] = {}
_KEYS_MAX = 16_384


def _cached_key(secret: str) -> bytes:
    key = _KEYS.get(secret)
    if key is None:
        if len(_KEYS) >= _KEYS_MAX:
            _KEYS.clear()
        key = _KEYS[secret] = signing_key(secret)
    return key


def signature_headers(
    msg_id: str, timestamp: int, body: bytes, secrets: Sequence[str]
) -> dict[str, str]:
    stamp = str(timestamp)
    if len(secrets) == 1:
        # The common case (no rotation in progress), without the joins.
        key = _cached_key(secrets[0])
        hex_value = hex_signature(key, body)
        standard = standard_signature(key, msg_id, timestamp, body)
    else:
        keys = [_cached_key(s) for s in secrets]
        hex_value = ",".join(hex_signature(k, body) for k in keys)
        standard = " ".join(standard_signature(k, msg_id, timestamp, body) for k in keys)
    return {
        "X-Webhook-Id": msg_id,
        "X-Webhook-Timestamp": stamp,
        "X-Webhook-Signature": hex_value,
        "webhook-id": msg_id,
        "webhook-timestamp": stamp,
        "webhook-signature": standard,
    }
