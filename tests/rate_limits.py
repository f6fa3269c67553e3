"""Rate limits in tests: starting a test's requests in one counting window."""

import time

from accounts.throttling import ApiKeyRateThrottle, counter_name, counting_window


def start_of_a_window(settings, *api_keys):
    """Waits, if need be, until no counting window of these keys closes within the next few seconds.

    A few: 2 seconds, or 60% of a shorter window; time enough for the
    requests the test makes next to count in the same window.
    """
    while True:
        now = time.time()
        closing_soon = [
            window.closes_at
            for window, period in _windows(settings, api_keys, now)
            if window.closes_at - now < min(2, 0.6 * period)
        ]
        if not closing_soon:
            return
        time.sleep(max(closing_soon) - now + 0.01)


def _windows(settings, api_keys, now):
    for scope, rate in settings.API_THROTTLE_RATES.items():
        if rate is None:
            continue
        _, period = ApiKeyRateThrottle().parse_rate(rate)
        for api_key in api_keys:
            yield counting_window(counter_name(scope, api_key.pk), period, now), period
