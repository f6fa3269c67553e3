"""The back office's admin site: named after the service, with a front page of what needs attention.

The front page (the admin index) shows, to staff who may see runs and
sandboxes, the setup runs that failed in the last 24 hours, the runs queued
or executing longest, the sandboxes expiring in the next 24 hours, and counts
by state; each links to the list filtered the same way. The models' own
list of links follows below it.
"""

from urllib.parse import urlencode

from django.contrib import admin
from django.urls import reverse
from django.utils import timezone

from sandboxes import selectors
from sandboxes.models import SetupRun
from sandboxes.selectors import EXPIRING_WITHIN

FRONT_PAGE_ROWS = 8


class BackOfficeSite(admin.AdminSite):
    site_header = "Sandbox service back office"
    site_title = "Sandbox service back office"
    index_title = "What needs attention"

    def index(self, request, extra_context=None):
        context = {**(extra_context or {}), "front_page": self.front_page(request)}
        return super().index(request, context)

    def front_page(self, request) -> dict | None:
        user = request.user
        if not (user.has_perm("sandboxes.view_setuprun") and user.has_perm("sandboxes.view_snapshot")):
            return None
        overview = selectors.back_office_overview(now=timezone.now(), within=EXPIRING_WITHIN, limit=FRONT_PAGE_ROWS)
        runs = reverse("admin:sandboxes_setuprun_changelist")
        sandboxes = reverse("admin:sandboxes_snapshot_changelist")
        return {
            "overview": overview,
            "failed_runs_url": _with(runs, status__exact=SetupRun.Status.FAILED, created="24h"),
            "waiting_runs_url": _with(runs, status__in=",".join(SetupRun.ACTIVE_STATUSES),
                                      o=self._oldest_first(request)),
            "expiring_url": _with(sandboxes, expired="soon"),
            "sandbox_states": [
                ("valid", "good", overview.sandboxes_by_state["valid"], _with(sandboxes, expired="no")),
                ("expired", "bad", overview.sandboxes_by_state["expired"], _with(sandboxes, expired="yes")),
            ],
            "run_states": [
                (status.lower(), _run_tone(status), count, _with(runs, status__exact=status))
                for status, count in overview.runs_by_status.items()
            ],
        }

    def _oldest_first(self, request) -> int:
        # The change list sorts by the index of a column in list_display,
        # which starts with the checkbox column when the user has actions.
        run_admin = self._registry[SetupRun]
        columns = list(run_admin.get_list_display(request))
        if run_admin.get_actions(request):
            columns.insert(0, "action_checkbox")
        return columns.index("created")


def _with(url: str, **query) -> str:
    return f"{url}?{urlencode(query)}"


def _run_tone(status: str) -> str:
    # Imported here: this module is imported while the apps' admin modules register, sandboxes.admin among them.
    from sandboxes.admin import RUN_TONES

    return RUN_TONES[status]
