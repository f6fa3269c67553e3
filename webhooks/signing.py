"""Standard Webhooks signatures: secrets, and the headers that sign one delivery.

The receiver checks `webhook-signature` against HMAC-SHA256 of
"{webhook-id}.{webhook-timestamp}.{body}", keyed with the secret's bytes
(the base64 after `whsec_`). Several space-separated `v1,<base64>` values
may be sent: during a secret's rotation, one per valid secret. Any Standard
Webhooks library verifies these headers.
https://github.com/standard-webhooks/standard-webhooks/blob/main/spec/standard-webhooks.md
"""

import base64
import hashlib
import hmac
import secrets

SECRET_PREFIX = "whsec_"
SECRET_BYTES = 32  # the specification asks for 24 to 64


def secret_new() -> str:
    return SECRET_PREFIX + base64.b64encode(secrets.token_bytes(SECRET_BYTES)).decode()


def secret_bytes(secret: str) -> bytes:
    return base64.b64decode(secret.removeprefix(SECRET_PREFIX))


def signature(*, secret: str, event_id: str, timestamp: int, body: str) -> str:
    """One `v1,<base64>` signature of the delivery."""
    signed = f"{event_id}.{timestamp}.{body}".encode()
    digest = hmac.new(secret_bytes(secret), signed, hashlib.sha256).digest()
    return "v1," + base64.b64encode(digest).decode()


def signed_headers(*, secrets: list[str], event_id: str, timestamp: int, body: str) -> dict[str, str]:
    """The three headers of a delivery at `timestamp` (seconds), signed with each secret."""
    return {
        "webhook-id": event_id,
        "webhook-timestamp": str(timestamp),
        "webhook-signature": " ".join(
            signature(secret=secret, event_id=event_id, timestamp=timestamp, body=body) for secret in secrets
        ),
    }
