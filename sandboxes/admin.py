"""The back office for sandboxes: snapshots (the sandboxes at rest) and setup runs.

Actions only call services (sandboxes/services.py) and report per row what
happened. Each needs a custom permission (Meta.permissions of the models:
sandboxes.revoke_snapshot, start_setuprun, cancel_setuprun); a staff user
without it can look, and is not offered the action. Snapshot rows are never
deleted or edited here: "Revoke selected sandboxes" deletes the repositories
and the snapshot with the row, as DELETE /api/sandboxes does.
"""

from datetime import datetime

from django.contrib import admin, messages
from django.contrib.admin import helpers
from django.db.models import Q
from django.template.response import TemplateResponse
from django.utils import timezone
from django.utils.html import format_html

from accounts.audit import Actor
from config.admin_readonly import ReadOnlyAdminMixin
from sandboxes import selectors, services
from sandboxes.models import SetupRun, Snapshot
from sandboxes.pipeline import STEP_LABELS


def report_setup_starts(model_admin, request, starts: list[services.SetupStart]) -> None:
    """One message per outcome of "Run setup again", naming the accounts and runs."""
    started = [start for start in starts if start.started]
    answered = [start for start in starts if start.run is not None and not start.started]
    skipped = [start for start in starts if start.run is None]
    if started:
        model_admin.message_user(
            request,
            f"Queued a setup run for {len(started)} account(s): "
            + "; ".join(f"{start.account} ({start.run.pk})" for start in started),
            messages.SUCCESS,
        )
    if answered:
        model_admin.message_user(
            request,
            f"{len(answered)} account(s) had a setup run queued or executing already, which goes on: "
            + "; ".join(f"{start.account} ({start.run.pk}, {start.run.status})" for start in answered),
            messages.INFO,
        )
    for start in skipped:
        model_admin.message_user(request, f"No setup for {start.account}: {start.skipped}.", messages.WARNING)


class ExpiredFilter(admin.SimpleListFilter):
    title = "expired"
    parameter_name = "expired"

    def lookups(self, request, model_admin):
        return [("yes", "Yes"), ("no", "No")]

    def queryset(self, request, queryset):
        if self.value() == "yes":
            return queryset.filter(expires_at__lte=timezone.now())
        if self.value() == "no":
            return queryset.filter(expires_at__gt=timezone.now())
        return queryset


class GitHostFilter(admin.SimpleListFilter):
    """Which git host keeps the repository, read from the recorded repository URL.

    Not a column of its own: the URL says it already (the local host records
    file:// URLs, GitHub its http(s):// html_url; providers/local_git.py and
    providers/github.py), a second column could disagree with it, and it
    would need a migration and a backfill for no new information.
    """

    title = "git host"
    parameter_name = "git_host"

    def lookups(self, request, model_admin):
        return [("local", "Local"), ("github", "GitHub"), ("none", "No repository")]

    def queryset(self, request, queryset):
        if self.value() == "local":
            return queryset.filter(github_repo__startswith="file:")
        if self.value() == "github":
            return queryset.filter(Q(github_repo__startswith="https://") | Q(github_repo__startswith="http://"))
        if self.value() == "none":
            return queryset.filter(Q(github_repo__isnull=True) | Q(github_repo=""))
        return queryset


@admin.register(Snapshot)
class SnapshotAdmin(ReadOnlyAdminMixin, admin.ModelAdmin):
    list_display = ["account", "snapshot_id", "repository", "expires_at", "expired", "created_at"]
    list_filter = [ExpiredFilter, ("account__memberships__organization", admin.RelatedFieldListFilter), GitHostFilter]
    search_fields = ["account__id", "account__name", "account__email", "snapshot_id"]
    list_select_related = ["account"]
    fields = ["account", "snapshot_id", "repository", "expires_at", "expired", "created_at", "updated_at"]
    readonly_fields = fields
    actions = ["revoke_selected_sandboxes", "run_setup_again"]
    revoke_confirmation_template = "admin/sandboxes/snapshot/revoke_selected_confirmation.html"

    @admin.display(boolean=True)
    def expired(self, snapshot):
        return snapshot.is_expired

    @admin.display(description="repository", ordering="github_repo")
    def repository(self, snapshot):
        url = snapshot.github_repo or ""
        if not url.startswith(("https://", "http://", "file:")):
            return url or "—"
        return format_html('<a href="{}" rel="noopener noreferrer">{}</a>', url, url)


    def has_revoke_permission(self, request):
        return request.user.has_perm("sandboxes.revoke_snapshot")

    def has_start_setup_permission(self, request):
        return request.user.has_perm("sandboxes.start_setuprun")

    @admin.action(description="Revoke selected sandboxes", permissions=["revoke"])
    def revoke_selected_sandboxes(self, request, queryset):
        """First a page listing what will be deleted; once confirmed, the deletion and a message per row."""
        # By name, on the confirmation page and in the report alike.
        accounts = sorted((s.account for s in queryset.select_related("account")), key=lambda a: (a.name, a.email))
        if request.POST.get("post") == "yes":
            selected = len(request.POST.getlist(helpers.ACTION_CHECKBOX_NAME))
            self._revoke(request, accounts, gone=selected - len(accounts))
            return None  # back to the change list, where the messages show
        plan = selectors.sandboxes_deletion_plan(accounts=accounts)
        context = {
            **self.admin_site.each_context(request),
            "title": "Revoke sandboxes",
            "subtitle": None,
            "opts": self.opts,
            "plan": plan,
            "action_checkbox_name": helpers.ACTION_CHECKBOX_NAME,
            "media": self.media,
        }
        request.current_app = self.admin_site.name
        return TemplateResponse(request, self.revoke_confirmation_template, context)

    def _revoke(self, request, accounts, *, gone: int) -> None:
        deletions = services.sandboxes_delete(accounts=accounts, actor=Actor.from_admin_request(request))
        by_id = {account.pk: account for account in accounts}
        for deletion in deletions:
            account = by_id[deletion.account_id]
            if deletion.ok:
                self.message_user(request, f"Revoked the sandbox of {account}: {_deleted(deletion)}.", messages.SUCCESS)
            else:
                self.message_user(
                    request,
                    f"Could not revoke the sandbox of {account}: {deletion.error}. Its snapshot and record are "
                    "kept; revoking it again finishes the job once the cause is fixed.",
                    messages.ERROR,
                )
        if gone > 0:
            self.message_user(request, f"{gone} selected sandbox(es) were gone already.", messages.INFO)
        failed = sum(1 for deletion in deletions if not deletion.ok)
        if len(deletions) > 1:
            level = messages.WARNING if failed else messages.SUCCESS
            self.message_user(request, f"Revoked {len(deletions) - failed} of {len(deletions)} sandboxes.", level)

    @admin.action(description="Run setup again", permissions=["start_setup"])
    def run_setup_again(self, request, queryset):
        accounts = [snapshot.account for snapshot in queryset.select_related("account")]
        starts = services.setup_runs_start(accounts=accounts, actor=Actor.from_admin_request(request))
        report_setup_starts(self, request, starts)


def _deleted(deletion: services.SandboxDeletion) -> str:
    parts = [f"deleted snapshot {deletion.snapshot.snapshot_id}" if deletion.snapshot else "no snapshot was left"]
    if deletion.repositories:
        parts.append(("repository " if len(deletion.repositories) == 1 else "repositories ")
                     + ", ".join(deletion.repositories))
    else:
        parts.append("no repository was left")
    return " and ".join(parts)


@admin.register(SetupRun)
class SetupRunAdmin(ReadOnlyAdminMixin, admin.ModelAdmin):
    """Runs are read-only: the change page shows the step timeline and, first of all, the error."""

    list_display = ["id", "account", "status", "current_step", "started_by", "created_at", "finished_at"]
    list_filter = ["status"]
    search_fields = ["id", "account__id", "account__email", "account__name"]
    date_hierarchy = "created_at"
    list_select_related = ["account", "api_key"]
    # No "error" field: the page shows it above everything (the template's form_top).
    fields = ["id", "account", "status", "current_step", "output", "started_by", "sandbox_id",
              "created_repository", "task_id", "created_at", "started_at", "finished_at"]
    readonly_fields = fields
    actions = ["cancel_queued_runs"]
    change_form_template = "admin/sandboxes/setuprun/change_form.html"

    @admin.display(description="started by")
    def started_by(self, run):
        # A run without a key was started from the admin (or its key was
        # deleted); the audit trail names who.
        return f"API key {run.api_key.prefix}…" if run.api_key_id else "staff (admin)"

    def render_change_form(self, request, context, add=False, change=False, form_url="", obj=None):
        # The run the admin itself loaded (from the unquoted id in the URL).
        context["timeline"] = _timeline(obj) if obj is not None else []
        return super().render_change_form(request, context, add, change, form_url, obj)

    def has_cancel_permission(self, request):
        return request.user.has_perm("sandboxes.cancel_setuprun")

    @admin.action(description="Cancel queued runs", permissions=["cancel"])
    def cancel_queued_runs(self, request, queryset):
        selected = queryset.count()
        canceled = services.setup_runs_cancel_queued(runs=queryset, actor=Actor.from_admin_request(request))
        if canceled:
            self.message_user(
                request, f"Canceled {len(canceled)} queued run(s): " + ", ".join(run.pk for run in canceled),
                messages.SUCCESS,
            )
        if selected - len(canceled):
            self.message_user(
                request,
                f"{selected - len(canceled)} selected run(s) were not queued (executing or finished) "
                "and were left alone.",
                messages.WARNING if not canceled else messages.INFO,
            )


def _parse_time(value: str | None) -> datetime | None:
    try:
        return datetime.fromisoformat(value) if value else None
    except ValueError:
        return None


def _timeline(run: SetupRun) -> list[dict]:
    """The run's steps as the template shows them: label, times, duration, outcome, detail."""
    entries = []
    for step in run.steps or []:
        started, finished = _parse_time(step.get("started")), _parse_time(step.get("finished"))
        entries.append({
            "name": step.get("name", ""),
            "label": STEP_LABELS.get(step.get("name"), step.get("name", "")),
            "started": started,
            "finished": finished,
            "seconds": (finished - started).total_seconds() if started and finished else None,
            "ok": step.get("ok"),
            "detail": step.get("detail", ""),
        })
    return entries
