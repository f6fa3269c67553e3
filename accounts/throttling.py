"""Rate limits per API key, with DRF's throttling on the shared cache.

A view names its `throttle_scope` ("setup", "delete"); settings.API_THROTTLE_RATES
gives each scope its rate (THROTTLE_SETUP_RATE, THROTTLE_DELETE_RATE), None for
no limit. Requests are counted per key, not per address: every client of a
NAT or a CI fleet has its own key, and one key cannot get round its limit by
changing address. The count lives in the default cache (Redis, or the database
table config/migrations creates), so every web process shares it. Over the
limit DRF answers 429 with Retry-After, as JSON (config/errors.py).
https://www.django-rest-framework.org/api-guide/throttling/

How requests are counted: in fixed windows as long as the rate's period, one
counter per key and window, raised with the cache's atomic `incr`. DRF's own
SimpleRateThrottle keeps a list of the key's request times instead, read and
written back whole by every request: two round trips to the cache, a list as
long as the rate to carry each way, and concurrent requests that read the
same list overwrite each other's entry, so a key with parallel connections
gets through more often than its rate. On Redis a counter is one round trip,
also for a window's first request, which opens the counter and gives it its
lifetime (`_count_on_redis`), and concurrent requests cannot lose a count;
the database cache's `incr` reads and writes back, as DRF's list does. What
a fixed window gives up: a key may spend its rate at the end of one window
and again at the start of the next. Each key's windows start at their own
second within the period, so that the keys refused in one window do not all
come back at the same moment.
"""

import logging
import math
import zlib
from dataclasses import dataclass
from functools import lru_cache

from django.conf import settings
from django.core.cache import DEFAULT_CACHE_ALIAS, caches
from django.core.exceptions import ImproperlyConfigured
from django_redis.cache import RedisCache
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError
from rest_framework.exceptions import APIException
from rest_framework.throttling import ScopedRateThrottle

from accounts.models import ApiKey

logger = logging.getLogger(__name__)

# What django-redis raises when Redis does not answer (the database cache's
# failures are the database's, answered 503 by config/errors.py).
CACHE_UNAVAILABLE_ERRORS = (RedisConnectionError, RedisTimeoutError)


class RateLimitsUnavailable(APIException):
    """Redis, where the rate limits count, does not answer: the request is refused (503), not let through."""

    status_code = 503
    default_detail = "The rate limits' store is not answering; try again shortly"
    wait = 5  # DRF's exception handler sends it as Retry-After


@dataclass(frozen=True)
class Window:
    """One counting window of a key: its number and the moment it closes (seconds since the epoch)."""

    number: int
    closes_at: float


def counting_window(counter: str, period: int, now: float) -> Window:
    """The window of `counter` (a key and scope's cache key) that holds the moment `now`."""
    phase = zlib.crc32(counter.encode()) % period
    number = math.floor((now - phase) / period)
    return Window(number=number, closes_at=(number + 1) * period + phase)


def counter_name(scope: str, api_key_id) -> str:
    """The cache key that counts the requests of one API key in one scope (the window's number follows it)."""
    return f"throttle_{scope}_key_{api_key_id}"


class ApiKeyRateThrottle(ScopedRateThrottle):
    """Limits each API key to its view's scope rate."""

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
        return counter_name(self.scope, request.auth.pk)

    def allow_request(self, request, view):
        self.scope = getattr(view, self.scope_attr, None)
        if not self.scope:
            return True
        self.rate = self.get_rate()
        if self.rate is None:
            return True
        self.num_requests, self.duration = self.parse_rate(self.rate)
        counter = self.get_cache_key(request, view)
        if counter is None:
            return True
        self.now = self.timer()
        self.window = counting_window(counter, self.duration, self.now)
        try:
            count = self._count(f"{counter}:{self.window.number}")
        except CACHE_UNAVAILABLE_ERRORS as error:
            logger.warning("Rate limits unavailable, refusing a %s request: %s", self.scope, error)
            raise RateLimitsUnavailable() from error
        return count <= self.num_requests

    def _count(self, key: str) -> int:
        """Counts this request in the window's counter; returns the window's count so far."""
        # The counter outlives its window by a second; the key's next window has a counter of its own.
        lifetime = math.ceil(self.window.closes_at - self.now) + 1
        backend = caches[DEFAULT_CACHE_ALIAS]
        if isinstance(backend, RedisCache):
            return _count_on_redis(backend, key, lifetime)
        try:
            return self.cache.incr(key)
        except ValueError:  # the window's first request
            pass
        if self.cache.add(key, 1, timeout=lifetime):
            return 1
        try:
            return self.cache.incr(key)  # another request of the key opened the window just before
        except ValueError:  # ... and the counter is already gone (the cache dropped it): count afresh
            return 1

    def wait(self):
        return max(1, math.ceil(self.window.closes_at - self.now))


# Raise the counter and, when this made it (its window's first request), give it its lifetime: one round
# trip and one step, so that no counter is ever left without its expiry. django-redis's incr (a script
# that refuses a missing key) and add would make the window's first request two round trips, and most
# keys make a request or two in a window.
COUNT_AND_EXPIRE = """
local count = redis.call('INCR', KEYS[1])
if count == 1 then redis.call('EXPIRE', KEYS[1], ARGV[1]) end
return count
"""


def _count_on_redis(backend: RedisCache, key: str, lifetime: int) -> int:
    client = backend.client.get_client(write=True)
    return _count_and_expire_script(client)(keys=[backend.make_key(key)], args=[lifetime], client=client)


@lru_cache(maxsize=16)  # a client per process; a few more where tests change the cache
def _count_and_expire_script(client):
    """The script, registered once per client: Redis is then sent its SHA1, not its text (EVALSHA)."""
    return client.register_script(COUNT_AND_EXPIRE)
