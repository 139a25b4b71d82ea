"""Everything about talking to a receiver: HTTP, signatures, address policy."""

from __future__ import annotations

from hookd.sender.addresses import AddressPolicy, BlockedAddressError, is_forbidden
from hookd.sender.http import TIMEOUT_MESSAGE, USER_AGENT, Sender, SendResult
from hookd.sender.signing import signature_headers, signing_key

__all__ = [
    "TIMEOUT_MESSAGE",
    "USER_AGENT",
    "AddressPolicy",
    "BlockedAddressError",
    "SendResult",
    "Sender",
    "is_forbidden",
    "signature_headers",
    "signing_key",
]
