"""Moments and durations for people (config/timefmt.py), and the admin's format module that follows it."""

from datetime import UTC, datetime

from django.utils import formats, timezone

from config.timefmt import format_duration, format_moment

MOMENT = datetime(2026, 12, 1, 16, 46, 28, 500, tzinfo=UTC)


def test_a_moment_is_written_to_the_second_with_the_time_zone():
    assert format_moment(MOMENT) == "2026-12-01 16:46:28 UTC"
    assert format_moment(None) == "—"


def test_a_moment_is_written_in_the_services_time_zone(settings):
    settings.TIME_ZONE = "Europe/Berlin"
    with timezone.override("Europe/Berlin"):
        assert format_moment(MOMENT) == "2026-12-01 17:46:28 CET"


def test_the_admins_date_format_is_the_same_one():
    assert formats.date_format(timezone.localtime(MOMENT), "DATETIME_FORMAT") == format_moment(MOMENT)


def test_durations_read_as_seconds_minutes_or_hours():
    assert [format_duration(s) for s in (0.42, 12.9, 185, 7625, None)] == [
        "0.4 s", "12 s", "3 min 05 s", "2 h 07 min", "—"
    ]
