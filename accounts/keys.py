"""API key format and hashing.

A key is `sbx_` followed by 43 url-safe characters (32 random bytes). Only its
HMAC-SHA256 under the server's API_KEY_PEPPER is stored, as GitHub and
healthchecks store tokens: a leaked database does not leak usable keys.
"""

import hashlib
import hmac
import re
import secrets

from django.conf import settings

KEY_PREFIX = "sbx_"
VISIBLE_PREFIX_LENGTH = 12
KEY_PATTERN = re.compile(r"^sbx_[A-Za-z0-9_-]{43}$")


def generate_key() -> str:
    return KEY_PREFIX + secrets.token_urlsafe(32)


def hash_key(raw_key: str) -> str:
    return hmac.new(settings.API_KEY_PEPPER.encode(), raw_key.encode(), hashlib.sha256).hexdigest()


def visible_prefix(raw_key: str) -> str:
    return raw_key[:VISIBLE_PREFIX_LENGTH]


def looks_like_key(raw_key: str) -> bool:
    return bool(KEY_PATTERN.match(raw_key))
