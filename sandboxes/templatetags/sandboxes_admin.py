"""Template filters of the sandbox back office: a run's state, failed step and duration, a repository.

The same functions as the admin's columns (sandboxes/admin.py), so a page and a list show a thing alike.
"""

from django import template

from sandboxes import admin as sandboxes_admin

register = template.Library()

register.filter("run_status", sandboxes_admin.run_status)
register.filter("failed_step", sandboxes_admin.failed_step)
register.filter("run_duration", sandboxes_admin.run_duration)
register.filter("repository", sandboxes_admin.repository_display)
register.filter("sandbox_state", sandboxes_admin.sandbox_state)
