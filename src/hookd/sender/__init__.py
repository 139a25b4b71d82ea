"""Everything about talking to a receiver: HTTP, signatures, address policy."""

from __future__ import annotations

from hookd.sender.addresses import (
    AddressPolicy,
    BlockedAddressError,
    destination_problem,
    forbidden_reason,
    is_forbidden,
    literal_address,
    static_refusal,
)
from hookd.sender.http import TIMEOUT_MESSAGE, USER_AGENT, Sender, SendResult
from hookd.sender.signing import signature_headers, signing_key

__all__ = [
    "TIMEOUT_MESSAGE",
    "USER_AGENT",
    "AddressPolicy",
    "BlockedAddressError",
    "SendResult",
    "Sender",
    "destination_problem",
    "forbidden_reason",
    "is_forbidden",
    "literal_address",
    "signature_headers",
    "signing_key",
    "static_refusal",
]
