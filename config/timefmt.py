"""One way to write a moment for people: the date, the time to the second, and the time zone.

`2026-12-01 16:46:28 UTC`, in the service's TIME_ZONE. The admin's lists,
pages and confirmation pages (through the `moment` template filter and the
project's format module, config/formats/) and the management commands'
output all write times with it, so staff compare like with like.
Machine-readable output (JSON, the API) keeps ISO 8601.
"""

from datetime import datetime

from django.utils import dateformat, timezone

# Django's date-format letters (https://docs.djangoproject.com/en/5.2/ref/templates/builtins/#date):
# T is the time zone's abbreviation.
DATETIME_FORMAT = "Y-m-d H:i:s T"
EMPTY = "—"


def format_moment(moment: datetime | None, *, empty: str = EMPTY) -> str:
    """`moment` in the service's time zone, to the second, with the zone's name; `empty` for None."""
    if moment is None:
        return empty
    if timezone.is_aware(moment):
        moment = timezone.localtime(moment)
    return dateformat.format(moment, DATETIME_FORMAT)


def format_duration(seconds: float | None, *, empty: str = EMPTY) -> str:
    """A duration for people: `0.4 s`, `12 s`, `3 min 05 s`, `2 h 07 min`."""
    if seconds is None:
        return empty
    if seconds < 10:
        return f"{seconds:.1f} s"
    whole = int(seconds)
    if whole < 60:
        return f"{whole} s"
    if whole < 3600:
        return f"{whole // 60} min {whole % 60:02d} s"
    return f"{whole // 3600} h {whole % 3600 // 60:02d} min"
