"""The back office for sandboxes: snapshots (the sandboxes at rest) and setup runs.

Actions only call services (sandboxes/services.py) and report per row what
happened. Each needs a custom permission (Meta.permissions of the models:
sandboxes.revoke_snapshot, start_setuprun, cancel_setuprun); a staff user
without it can look, and is not offered the action. Snapshot rows are never
deleted or edited here: "Revoke selected sandboxes" deletes the repositories
and the snapshot with the row, as DELETE /api/sandboxes does.
"""

import re
from datetime import datetime, timedelta

from django.contrib import admin, messages
from django.contrib.admin import helpers
from django.db.models import Q
from django.http import HttpResponseRedirect
from django.template.response import TemplateResponse
from django.utils import timezone
from django.utils.html import format_html

from accounts.audit import Actor
from config.admin_display import page_to_return_to, short_id, state_badge, summary
from config.admin_links import admin_change_url
from config.admin_readonly import ReadOnlyAdminMixin
from config.timefmt import format_duration, format_moment
from sandboxes import selectors, services
from sandboxes.models import SetupRun, Snapshot
from sandboxes.pipeline import STEP_LABELS
from sandboxes.selectors import EXPIRING_WITHIN


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


def sandbox_state(snapshot: Snapshot | None):
    """The sandbox's state in words: "valid", "expired", or "no sandbox"."""
    if snapshot is None:
        return state_badge("no sandbox", "neutral")
    return state_badge("expired", "bad") if snapshot.is_expired else state_badge("valid", "good")


RUN_TONES = {
    SetupRun.Status.COMPLETED: "good",
    SetupRun.Status.FAILED: "bad",
    SetupRun.Status.QUEUED: "waiting",
    SetupRun.Status.EXECUTING: "waiting",
    SetupRun.Status.CANCELED: "neutral",
}


def run_status(status: str | None):
    """A run's status in words ("failed", "completed", …), in the colour of its meaning."""
    if not status:
        return "—"
    return state_badge(status.lower(), RUN_TONES.get(status, "neutral"))


ACCOUNT_ID = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}")


def repository_display(url: str | None, *, short: bool = False):
    """The repository as staff can open it: a link for http(s), the path for a local (file://) one.

    A browser does not open a file:// link from a web page, so a local
    repository is shown as the path to clone. `short` shows only the
    repository's name (a list column), with the whole URL or path on hover.
    """
    url = url or ""
    if not url:
        return "—"
    target = url.removeprefix("file://") if url.startswith("file://") else url
    # The list shows the name, its account id shortened (the account is in its own column).
    text = ACCOUNT_ID.sub(lambda m: m.group(0)[:8] + "…", target.rstrip("/").rsplit("/", 1)[-1]) if short else target
    if url.startswith(("https://", "http://")):
        return format_html('<a href="{}" rel="noopener noreferrer" target="_blank" title="{}">{}</a>', url, url, text)
    return format_html('<code class="repository-path" title="{}">{}</code>', target, text)


class ExpiredFilter(admin.SimpleListFilter):
    """Valid, expired, or valid and expiring within 24 hours (the front page's "expiring soon")."""

    title = "state"
    parameter_name = "expired"

    def lookups(self, request, model_admin):
        return [("no", "Valid"), ("soon", "Valid, expiring within 24 hours"), ("yes", "Expired")]

    def queryset(self, request, queryset):
        now = timezone.now()
        if self.value() == "yes":
            return queryset.filter(expires_at__lte=now)
        if self.value() == "no":
            return queryset.filter(expires_at__gt=now)
        if self.value() == "soon":
            return queryset.filter(expires_at__gt=now, expires_at__lte=now + EXPIRING_WITHIN)
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
    """The sandboxes: whose, valid or expired, until when, and where the repository is."""

    list_display = ["account", "state", "expires", "repository", "updated"]
    list_filter = [ExpiredFilter, ("account__memberships__organization", admin.RelatedFieldListFilter), GitHostFilter]
    search_fields = ["account__id", "account__name", "account__email", "snapshot_id"]
    list_select_related = ["account"]
    fields = ["account_link", "snapshot_id", "state", "expires", "repository_full", "created_at", "updated_at"]
    readonly_fields = fields
    actions = ["revoke_selected_sandboxes", "run_setup_again"]
    revoke_confirmation_template = "admin/sandboxes/snapshot/revoke_selected_confirmation.html"

    @admin.display(description="state", ordering="expires_at")
    def state(self, snapshot):
        return sandbox_state(snapshot)

    @admin.display(description="expires", ordering="expires_at")
    def expires(self, snapshot):
        return format_moment(snapshot.expires_at)

    @admin.display(description="updated", ordering="updated_at")
    def updated(self, snapshot):
        return format_moment(snapshot.updated_at)

    @admin.display(description="repository", ordering="github_repo")
    def repository(self, snapshot):
        return repository_display(snapshot.github_repo, short=True)

    @admin.display(description="repository")
    def repository_full(self, snapshot):
        return repository_display(snapshot.github_repo)

    @admin.display(description="account")
    def account_link(self, snapshot):
        return format_html('<a href="{}">{}</a>', admin_change_url(type(snapshot.account), snapshot.account_id),
                           snapshot.account)


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
            # Back to the page the action came from (an account's page), or the change list; the messages show there.
            return HttpResponseRedirect(page_to_return_to(request) or request.get_full_path())
        plan = selectors.sandboxes_deletion_plan(accounts=accounts)
        context = {
            **self.admin_site.each_context(request),
            "title": "Revoke sandboxes",
            "subtitle": None,
            "opts": self.opts,
            "plan": plan,
            "accounts": [item.account for item in plan.sandboxes],
            "action_checkbox_name": helpers.ACTION_CHECKBOX_NAME,
            "next": page_to_return_to(request),
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
                self.message_user(request, f"Revoked the sandbox of {account}: {revoke_report(deletion)}.", messages.SUCCESS)
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


def revoke_report(deletion: services.SandboxDeletion) -> str:
    """What revoking one sandbox deleted, in words: "deleted snapshot snap_… and repository …"."""
    parts = [f"deleted snapshot {deletion.snapshot.snapshot_id}" if deletion.snapshot else "no snapshot was left"]
    if deletion.repositories:
        parts.append(("repository " if len(deletion.repositories) == 1 else "repositories ")
                     + ", ".join(deletion.repositories))
    else:
        parts.append("no repository was left")
    return " and ".join(parts)


def failed_step(run: SetupRun) -> str:
    """The step a failed run stopped at ("" for a run that did not fail)."""
    if run.status != SetupRun.Status.FAILED:
        return ""
    failed = [step.get("name", "") for step in run.steps or [] if step.get("ok") is False]
    return failed[-1] if failed else run.current_step


def run_duration(run: SetupRun) -> str:
    """How long the run took; for a run still going, how long it has been queued or executing."""
    if run.started_at is None:
        if run.status == SetupRun.Status.QUEUED:
            return "queued " + format_duration((timezone.now() - run.created_at).total_seconds())
        return "—"
    end = run.finished_at
    if end is None:
        return "running " + format_duration((timezone.now() - run.started_at).total_seconds())
    return format_duration((end - run.started_at).total_seconds())


class CreatedFilter(admin.SimpleListFilter):
    """Runs created in the last 24 hours or 7 days (the front page's "failed in the last 24 hours")."""

    title = "created"
    parameter_name = "created"
    PERIODS = {"24h": timedelta(hours=24), "7d": timedelta(days=7)}

    def lookups(self, request, model_admin):
        return [("24h", "Last 24 hours"), ("7d", "Last 7 days")]

    def queryset(self, request, queryset):
        period = self.PERIODS.get(self.value())
        return queryset.filter(created_at__gte=timezone.now() - period) if period else queryset


@admin.register(SetupRun)
class SetupRunAdmin(ReadOnlyAdminMixin, admin.ModelAdmin):
    """Runs are read-only: the change page shows the step timeline and, first of all, the error."""

    list_display = ["run", "account", "state", "failed_step", "error_summary", "created", "duration"]
    list_filter = ["status", CreatedFilter]
    search_fields = ["id", "account__id", "account__email", "account__name"]
    date_hierarchy = "created_at"
    list_select_related = ["account", "api_key"]
    # No "error" field: the page shows it above everything (the template's form_top).
    fields = ["id", "account", "status", "current_step", "output", "started_by", "sandbox_id",
              "created_repository", "task_id", "created_at", "started_at", "finished_at"]
    readonly_fields = fields
    actions = ["cancel_queued_runs"]
    change_form_template = "admin/sandboxes/setuprun/change_form.html"

    @admin.display(description="run", ordering="id")
    def run(self, run):
        return format_html('<span title="{}">{}</span>', run.pk, short_id(run.pk))

    @admin.display(description="status", ordering="status")
    def state(self, run):
        return run_status(run.status)

    @admin.display(description="failed step")
    def failed_step(self, run):
        return failed_step(run) or "—"

    @admin.display(description="error")
    def error_summary(self, run):
        if not run.error:
            return "—"
        return format_html('<span title="{}">{}</span>', run.error, summary(run.error, limit=60))

    @admin.display(description="created", ordering="created_at")
    def created(self, run):
        return format_moment(run.created_at)

    @admin.display(description="duration")
    def duration(self, run):
        return run_duration(run)

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
