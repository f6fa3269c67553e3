"""Template filters of the back office: moments in the one format (config/timefmt.py)."""

from django import template

from config.timefmt import format_duration, format_moment

register = template.Library()


@register.filter
def moment(value):
    """`{{ snapshot.expires_at|moment }}` → `2026-12-01 16:46:28 UTC`."""
    return format_moment(value)


@register.filter
def duration(seconds):
    return format_duration(seconds)
