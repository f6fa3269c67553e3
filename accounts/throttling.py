"""Rate limits per API key, with DRF's throttling on the shared cache.

A view names its `throttle_scope` ("setup", "delete"); settings.API_THROTTLE_RATES
gives each scope its rate (THROTTLE_SETUP_RATE, THROTTLE_DELETE_RATE), None for
no limit. Requests are counted per key, not per address: every client of a
NAT or a CI fleet has its own key, and one key cannot get round its limit by
changing address. The count lives in the default cache (Redis, or the database
table config/migrations creates), so every web process shares it. Over the
limit DRF answers 429 with Retry-After, as JSON (config/errors.py).
https://www.django-rest-framework.org/api-guide/throttling/
"""

from django.conf import settings
from django.core.exceptions import ImproperlyConfigured
from rest_framework.throttling import ScopedRateThrottle

from accounts.models import ApiKey


class ApiKeyRateThrottle(ScopedRateThrottle):
    """Limits each API key to its view's scope rate."""

    cache_format = "throttle_%(scope)s_key_%(ident)s"

    def get_rate(self):
        # Read per request, not once at import as DRF's THROTTLE_RATES is, so
        # settings overridden in tests (and a reload) take effect.
        rates = settings.API_THROTTLE_RATES
        if self.scope not in rates:
            raise ImproperlyConfigured(f"No rate for throttle scope {self.scope!r} in API_THROTTLE_RATES")
        return rates[self.scope]

    def get_cache_key(self, request, view):
        if not isinstance(request.auth, ApiKey):
            return None  # not authenticated by key: authentication has answered already
        return self.cache_format % {"scope": self.scope, "ident": request.auth.pk}
