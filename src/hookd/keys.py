"""API keys: generation and digests. Only the SHA-256 digest is ever stored."""

from __future__ import annotations

import hashlib
import secrets
from dataclasses import dataclass

PLATFORM_PREFIX = "sk_user_"
WORKSPACE_PREFIX = "sk_"
# Characters kept for listing a key; far too few to guess the rest.
DISPLAY_CHARS = 12


@dataclass(frozen=True, slots=True)
class NewKey:
    plaintext: str
    digest: bytes
    prefix: str


def digest_key(plaintext: str) -> bytes:
    return hashlib.sha256(plaintext.encode("utf-8")).digest()


def generate_key(platform: bool) -> NewKey:
    plaintext = (PLATFORM_PREFIX if platform else WORKSPACE_PREFIX) + secrets.token_hex(24)
    return NewKey(plaintext, digest_key(plaintext), plaintext[:DISPLAY_CHARS])


def new_owner_id() -> str:
    return "user_" + secrets.token_hex(4)
