"""DRF authentication by API key, in the shape of DRF's TokenAuthentication.

A request names its key in exactly one of `x-api-key: <key>` or
`Authorization: Bearer <key>`. The authenticated "user" is the key's account
and `request.auth` is the ApiKey row.
"""

import hmac
from datetime import timedelta

from django.db.models import Q
from django.utils import timezone
from rest_framework import exceptions
from rest_framework.authentication import BaseAuthentication

from accounts.keys import hash_key, looks_like_key
from accounts.models import ApiKey

# last_used_at is a hint for people, not an audit log: writing it on every
# request would turn each read into a write.
LAST_USED_RESOLUTION = timedelta(minutes=1)


def _bearer_token(request) -> str | None:
    header = request.META.get("HTTP_AUTHORIZATION")
    if header is None:
        return None
    scheme, _, token = header.strip().partition(" ")
    if scheme.lower() != "bearer":
        raise exceptions.AuthenticationFailed("Authorization header must be 'Bearer <api key>'")
    return token.strip()


class ApiKeyAuthentication(BaseAuthentication):
    def authenticate(self, request):
        header_key = request.META.get("HTTP_X_API_KEY")
        bearer_key = _bearer_token(request)
        if header_key is not None and bearer_key is not None:
            raise exceptions.AuthenticationFailed("Send the API key in x-api-key or Authorization, not both")
        raw_key = header_key if header_key is not None else bearer_key
        if raw_key is None:
            return None
        raw_key = raw_key.strip()
        if not raw_key:
            raise exceptions.AuthenticationFailed("The API key is empty")
        return self.authenticate_key(raw_key)

    def authenticate_key(self, raw_key: str):
        if not looks_like_key(raw_key):
            raise exceptions.AuthenticationFailed("Invalid API key")
        key_hash = hash_key(raw_key)
        key = ApiKey.objects.select_related("account", "organization").filter(key_hash=key_hash).first()
        if key is None or not hmac.compare_digest(key.key_hash, key_hash):
            raise exceptions.AuthenticationFailed("Invalid API key")
        now = timezone.now()
        if key.revoked_at is not None:
            raise exceptions.AuthenticationFailed("This API key has been revoked")
        if key.expires_at is not None and key.expires_at <= now:
            raise exceptions.AuthenticationFailed("This API key has expired")
        if not key.account.is_active:
            raise exceptions.AuthenticationFailed("The account of this API key is inactive")
        self._touch(key, now)
        return key.account, key

    @staticmethod
    def _touch(key: ApiKey, now):
        if key.last_used_at is None or now - key.last_used_at >= LAST_USED_RESOLUTION:
            # Conditional, so concurrent requests of one key write once.
            ApiKey.objects.filter(pk=key.pk).filter(
                Q(last_used_at__isnull=True) | Q(last_used_at__lte=now - LAST_USED_RESOLUTION)
            ).update(last_used_at=now)
            key.last_used_at = now

    def authenticate_header(self, request):
        # Makes DRF answer 401 (not 403) to an unauthenticated request.
        return 'Bearer realm="api"'
