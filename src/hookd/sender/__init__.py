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
from hookd.sender.http import CLIENTS, USER_AGENT, Sender
from hookd.sender.signing import signature_headers, signing_key
from hookd.sender.transport import TIMEOUT_MESSAGE, SendResult, Transport

__all__ = [
    "CLIENTS",
    "TIMEOUT_MESSAGE",
    "USER_AGENT",
    "AddressPolicy",
    "BlockedAddressError",
    "SendResult",
    "Sender",
    "Transport",
    "destination_problem",
    "forbidden_reason",
    "is_forbidden",
    "literal_address",
    "signature_headers",
    "signing_key",
    "static_refusal",
]
