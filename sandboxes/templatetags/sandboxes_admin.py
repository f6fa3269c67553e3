"""Template filters of the sandbox back office: a run's state, failed step and duration, a repository."""

from django import template

from sandboxes import admin as sandboxes_admin

register = template.Library()


@register.filter
def run_status(status):
    return sandboxes_admin.run_status(status)


@register.filter
def failed_step(run):
    return sandboxes_admin.failed_step(run)


@register.filter
def run_duration(run):
    return sandboxes_admin.run_duration(run)


@register.filter
def repository(url):
    return sandboxes_admin.repository_display(url)


@register.filter
def sandbox_state(snapshot):
    return sandboxes_admin.sandbox_state(snapshot)
