"""The back office for sandboxes: snapshots (the sandboxes at rest), setup runs, live sandboxes and their commands.

Actions only call services (sandboxes/services.py, sandboxes/live.py) and
report per row what happened. Each needs a custom permission (Meta.permissions
of the models: sandboxes.revoke_snapshot, start_setuprun, cancel_setuprun,
stop_livesandbox, kill_sandboxcommand); a staff user without it can look, and
is not offered the action. Snapshot rows are never deleted or edited here:
"Revoke selected sandboxes" deletes the repositories and the snapshot with the
row, as DELETE /api/sandboxes does.

A command is shown by who ran it, what (command, arguments, folder), the names
of its environment variables and how it ended; never the values of its
environment, and never its output, which may print them.

The account page is assembled here (AccountPageAdmin, at the end), sandboxes
being the highest app whose data it shows: it extends accounts' AccountAdmin
(accounts/admin.py) with the account's memberships (orgs/admin.py's inline),
its sandbox, live sandbox, commands and runs and the buttons for them, and is
registered for Account in AccountAdmin's place.
"""

import logging
import re
import shlex
from datetime import datetime, timedelta

from django.conf import settings
from django.contrib import admin, messages
from django.contrib.admin import helpers
from django.db.models import OuterRef, Prefetch, Q, Subquery
from django.db.models.functions import Length
from django.http import HttpResponseRedirect
from django.template.response import TemplateResponse
from django.urls import reverse
from django.utils import timezone
from django.utils.html import format_html, format_html_join

from accounts.admin import AccountAdmin, PageAction
from accounts.audit import Actor
from accounts.models import Account, ApiKey
from accounts.services import accounts_deactivate
from config.admin_display import (
    ReturnToPageAfterActionMixin,
    page_to_return_to,
    short_id,
    state_badge,
    summary,
)
from config.admin_links import admin_change_url
from config.admin_readonly import ReadOnlyAdminMixin
from config.timefmt import format_duration, format_moment
from orgs.admin import AccountMembershipInline
from orgs.models import Membership
from sandboxes import live, selectors, services
from sandboxes.models import LiveSandbox, SandboxCommand, SetupRun, Snapshot
from sandboxes.pipeline import STEP_LABELS
from sandboxes.selectors import EXPIRING_WITHIN

logger = logging.getLogger(__name__)
EMPTY = "—"
LAST_COMMANDS_SHOWN = 10


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


# --- live sandboxes and their commands ---------------------------------------------------------

LIVE_STATES = {
    LiveSandbox.Status.PENDING: ("starting", "waiting"),
    LiveSandbox.Status.RUNNING: ("running", "good"),
    LiveSandbox.Status.STOPPING: ("stopping", "waiting"),
    LiveSandbox.Status.STOPPED: ("stopped", "neutral"),
    LiveSandbox.Status.FAILED: ("failed", "bad"),
}
STOP_REASONS = {
    LiveSandbox.StopReason.API: "by the client",
    LiveSandbox.StopReason.IDLE: "idle",
    LiveSandbox.StopReason.STAFF: "by staff",
    LiveSandbox.StopReason.DELETED: "sandbox deleted",
    LiveSandbox.StopReason.LOST: "its start or stop never finished",
}


def live_sandbox_state(sandbox: LiveSandbox | None):
    """The live sandbox's state in words ("running", "stopped" and why, …); "no live sandbox" for None."""
    if sandbox is None:
        return state_badge("no live sandbox", "neutral")
    word, tone = LIVE_STATES.get(sandbox.status, (sandbox.status, "neutral"))
    badge = state_badge(word, tone)
    if sandbox.status == LiveSandbox.Status.STOPPING:
        return format_html("{} (taking its snapshot)", badge)
    if sandbox.stop_reason:
        return format_html("{} ({})", badge, STOP_REASONS.get(sandbox.stop_reason, sandbox.stop_reason))
    return badge


def live_started_from(sandbox: LiveSandbox | None) -> str:
    """Which snapshot the sandbox started from, or the starter layout."""
    if sandbox is None or sandbox.status == LiveSandbox.Status.PENDING:
        return EMPTY
    if sandbox.started_from:
        return f"snapshot {sandbox.started_from}"
    return "the starter layout (no valid snapshot)" if sandbox.started_at else EMPTY


def live_engine(sandbox: LiveSandbox | None) -> str:
    """Which backend and engine hold it: "local backend on web-1", "docker, unix:///var/run/docker.sock on web-1"."""
    if sandbox is None:
        return EMPTY
    address, _, host = sandbox.engine.partition("#")
    if sandbox.backend == "local" or address == "local":
        return f"local backend on {host}" if host else "local backend"
    return f"{sandbox.backend}, {address}" + (f" on {host}" if host else "")


def idle_deadline(sandbox: LiveSandbox | None, *, now=None) -> str:
    """When a running sandbox is stopped for being idle (its last activity plus SANDBOX_IDLE_TIMEOUT)."""
    if sandbox is None or sandbox.status != LiveSandbox.Status.RUNNING or sandbox.last_activity_at is None:
        return EMPTY
    deadline = sandbox.last_activity_at + settings.SANDBOX_IDLE_TIMEOUT
    left = (deadline - (now or timezone.now())).total_seconds()
    if left <= 0:
        return f"{format_moment(deadline)} (passed: the next sweep stops it)"
    return f"{format_moment(deadline)} (in {format_duration(left)})"


COMMAND_TONES = {
    SandboxCommand.Status.RUNNING: "waiting",
    SandboxCommand.Status.TIMED_OUT: "bad",
    SandboxCommand.Status.KILLED: "neutral",
    SandboxCommand.Status.FAILED: "bad",
}


def command_state(record: SandboxCommand):
    """How the command ended, in words: "running", "finished" (green with exit code 0), "timed out", …"""
    if record.status == SandboxCommand.Status.FINISHED:
        return state_badge("finished", "good" if record.exit_code == 0 else "bad")
    return state_badge(record.get_status_display().lower(), COMMAND_TONES.get(record.status, "neutral"))


def command_who(record: SandboxCommand) -> str:
    """The key that ran it, by its visible prefix and its name."""
    key = record.api_key
    if key is None:
        return EMPTY
    return f"{key.prefix}… ({key.name})" if key.name else f"{key.prefix}…"


def command_line(record: SandboxCommand) -> str:
    """The command and its arguments as one line (quoted for reading; it was run as an argument list)."""
    return shlex.join([record.command, *(str(arg) for arg in record.args or [])])


def command_duration(record: SandboxCommand, *, now=None) -> str:
    if record.status == SandboxCommand.Status.RUNNING:
        return "running " + format_duration(((now or timezone.now()) - record.created_at).total_seconds())
    if record.duration_ms is None:
        return EMPTY
    return format_duration(record.duration_ms / 1000)


def command_exit_code(record: SandboxCommand) -> str:
    return EMPTY if record.exit_code is None else str(record.exit_code)


def moment_on_two_lines(moment) -> str:
    """A moment in a narrow column: the date, and below it the time and zone (each kept on one line)."""
    date, _, time = format_moment(moment).partition(" ")
    return format_html('<span class="nowrap">{}</span> <span class="nowrap">{}</span>', date, time)


def commands_table(records, *, kill_form: str = "", table_id: str = "") -> str:
    """The commands as a table: when, who, what, folder, environment names, state, exit code, duration.

    `kill_form`: the id of a form on the page that posts "Kill selected
    commands"; a running command's row gets a Kill button submitting it with
    the command's id. (The buttons sit inside the page's own form, and a form
    cannot hold another: the button names its form instead.)
    """
    if not records:
        return "No command yet."

    def kill_button(record):
        if not kill_form or record.status != SandboxCommand.Status.RUNNING:
            return ""
        return format_html('<button type="submit" form="{}" name="_selected_action" value="{}" '
                           'class="button kill-command" id="kill-{}">Kill</button>', kill_form, record.pk, record.pk)

    rows = format_html_join(
        "", '<tr class="command"><td class="nowrap"><a href="{}" title="{}">{}</a></td><td>{}</td>'
        '<td>{}</td><td class="wrap"><code>{}</code></td><td class="wrap"><code>{}</code></td><td class="wrap">{}</td>'
        '<td class="nowrap">{}</td><td>{}</td><td class="nowrap">{}</td><td class="nowrap">{}</td></tr>',
        ((admin_change_url(SandboxCommand, record.pk), record.pk, short_id(record.pk, keep=8),
          moment_on_two_lines(record.created_at), command_who(record), summary(command_line(record), limit=120),
          record.cwd or ".", ", ".join(record.env_names or []) or EMPTY, command_state(record),
          command_exit_code(record), command_duration(record), kill_button(record)) for record in records),
    )
    return format_html(
        '<table class="sandbox-commands"{}><thead><tr><th>command</th><th>when</th><th>who (API key)</th>'
        "<th>what</th><th>folder</th><th>environment (names)</th><th>status</th><th>exit code</th>"
        "<th>duration</th><th></th></tr></thead><tbody>{}</tbody></table>",
        format_html(' id="{}"', table_id) if table_id else "", rows,
    )


def recent_commands(commands) -> list[SandboxCommand]:
    """The last commands of a queryset of them, with their keys, without their output (never shown)."""
    return list(commands.select_related("api_key").defer("stdout", "stderr")[:LAST_COMMANDS_SHOWN])


def account_link(account) -> str:
    return format_html('<a href="{}">{}</a>', admin_change_url(type(account), account.pk), account)


@admin.register(LiveSandbox)
class LiveSandboxAdmin(ReadOnlyAdminMixin, ReturnToPageAfterActionMixin, admin.ModelAdmin):
    """Live sandboxes: whose, running or how it stopped, from which snapshot, on which engine, until when."""

    list_display = ["sandbox", "account", "state", "started_from", "engine_display", "idle_deadline", "started",
                    "stopped"]
    list_filter = ["status", "stop_reason", "backend", CreatedFilter]
    search_fields = ["id", "account__id", "account__name", "account__email"]
    search_help_text = "Account (name, email or id) or sandbox id"
    list_select_related = ["account"]
    fields = ["id", "account_link", "state", "error", "started_from", "engine_display", "runtime_id",
              "idle_deadline", "created_at", "started_at", "last_activity_at", "stopped_at", "snapshot_id",
              "commands"]
    readonly_fields = fields
    actions = ["stop_selected_live_sandboxes"]

    @admin.display(description="sandbox", ordering="id")
    def sandbox(self, sandbox):
        return sandbox.pk

    @admin.display(description="status", ordering="status")
    def state(self, sandbox):
        return live_sandbox_state(sandbox)

    @admin.display(description="started from")
    def started_from(self, sandbox):
        return live_started_from(sandbox)

    @admin.display(description="engine", ordering="engine")
    def engine_display(self, sandbox):
        return live_engine(sandbox)

    @admin.display(description="idle deadline", ordering="last_activity_at")
    def idle_deadline(self, sandbox):
        return idle_deadline(sandbox)

    @admin.display(description="started", ordering="created_at")
    def started(self, sandbox):
        return format_moment(sandbox.started_at or sandbox.created_at)

    @admin.display(description="stopped", ordering="stopped_at")
    def stopped(self, sandbox):
        return format_moment(sandbox.stopped_at) if not sandbox.is_live else EMPTY

    @admin.display(description="account")
    def account_link(self, sandbox):
        return account_link(sandbox.account)

    @admin.display(description="commands")
    def commands(self, sandbox):
        url = reverse("admin:sandboxes_sandboxcommand_changelist") + f"?sandbox__id__exact={sandbox.pk}"
        recent = recent_commands(sandbox.commands.all())
        return format_html('{}<p><a href="{}">All commands of this sandbox</a></p>', commands_table(recent), url)

    def has_stop_permission(self, request):
        return request.user.has_perm("sandboxes.stop_livesandbox")

    @admin.action(description="Stop selected live sandboxes (a snapshot is taken first)", permissions=["stop"])
    def stop_selected_live_sandboxes(self, request, queryset):
        actor = Actor.from_admin_request(request)
        stopped, failed, not_running = 0, 0, []
        for sandbox in queryset.select_related("account"):
            # Re-checked here, and again by the service (which stops only a running sandbox, in one update).
            if sandbox.status != LiveSandbox.Status.RUNNING:
                not_running.append(sandbox)
                continue
            try:
                snapshot = live.live_sandbox_stop(sandbox=sandbox, actor=actor, reason=LiveSandbox.StopReason.STAFF)
            except live.NoRunningSandbox:
                not_running.append(sandbox)
                continue
            except live.LiveSandboxError as exc:
                failed += 1
                # The service's sentence says what failed, and that the sandbox is still running.
                self.message_user(request, f"Sandbox {sandbox.pk} of {sandbox.account}: {exc}", messages.ERROR)
                continue
            except Exception as exc:
                logger.exception("Stopping live sandbox %s from the admin failed", sandbox.pk)
                failed += 1
                self.message_user(request, f"Sandbox {sandbox.pk} of {sandbox.account} could not be stopped: an "
                                  f"unexpected error ({type(exc).__name__}); the server's log has the details.",
                                  messages.ERROR)
                continue
            stopped += 1
            taken = f"snapshot {snapshot.snapshot_id} taken" if snapshot else "no snapshot taken"
            self.message_user(request, f"Stopped sandbox {sandbox.pk} of {sandbox.account}: {taken}.",
                              messages.SUCCESS)
        if not_running:
            self.message_user(request, f"{len(not_running)} selected sandbox(es) were not running and were left "
                              "alone: " + ", ".join(f"{sandbox.pk} ({sandbox.status})" for sandbox in not_running),
                              messages.INFO)
        tried = stopped + failed
        if tried + len(not_running) > 1:
            self.message_user(request, f"Stopped {stopped} of {tried} running sandbox(es) selected"
                              + (f"; {failed} could not be stopped and are still running." if failed else "."),
                              messages.WARNING if failed else messages.SUCCESS)


@admin.register(SandboxCommand)
class SandboxCommandAdmin(ReadOnlyAdminMixin, ReturnToPageAfterActionMixin, admin.ModelAdmin):
    """Commands run in live sandboxes: who, what, how they ended; the names of their environment, never its values."""

    list_display = ["command_id", "account", "who", "what", "folder", "state", "exit_code", "duration", "when"]
    list_filter = ["status", "background", CreatedFilter]
    search_fields = ["id", "account__id", "account__name", "account__email", "=sandbox__id", "command"]
    search_help_text = "Account (name, email or id), command id, sandbox id or the command's name"
    date_hierarchy = "created_at"
    list_select_related = ["account", "api_key"]
    fields = ["id", "sandbox_link", "account_link", "who", "what", "folder", "environment", "background",
              "timeout", "state", "exit_code", "duration", "output", "error", "created_at", "finished_at"]
    readonly_fields = fields
    actions = ["kill_selected_commands"]

    @admin.display(description="command", ordering="id")
    def command_id(self, record):
        return format_html('<span title="{}">{}</span>', record.pk, short_id(record.pk))

    @admin.display(description="who (API key)")
    def who(self, record):
        return command_who(record)

    @admin.display(description="what", ordering="command")
    def what(self, record):
        line = command_line(record)
        return format_html('<code title="{}">{}</code>', line, summary(line, limit=80))

    @admin.display(description="folder", ordering="cwd")
    def folder(self, record):
        return format_html("<code>{}</code>", record.cwd or ".")

    @admin.display(description="environment")
    def environment(self, record):
        names = ", ".join(record.env_names or [])
        return f"{names} (names only; the values are never kept)" if names else EMPTY

    @admin.display(description="timeout")
    def timeout(self, record):
        return format_duration(record.timeout_ms / 1000)

    @admin.display(description="status", ordering="status")
    def state(self, record):
        return command_state(record)

    @admin.display(description="exit code", ordering="exit_code")
    def exit_code(self, record):
        return command_exit_code(record)

    @admin.display(description="duration", ordering="duration_ms")
    def duration(self, record):
        return command_duration(record)

    @admin.display(description="when", ordering="created_at")
    def when(self, record):
        return format_moment(record.created_at)

    @admin.display(description="output")
    def output(self, record):
        # Its size only: a command's output may print its environment's values.
        def size(name, length, truncated):
            return f"{name} {length or 0} characters" + (" (cut at the limit)" if truncated else "")

        return (f"{size('stdout', record.stdout_length, record.stdout_truncated)}, "
                f"{size('stderr', record.stderr_length, record.stderr_truncated)}; not shown here (it may print "
                "the environment's values)")

    @admin.display(description="sandbox")
    def sandbox_link(self, record):
        return format_html('<a href="{}">{}</a>', admin_change_url(LiveSandbox, record.sandbox_id), record.sandbox_id)

    @admin.display(description="account")
    def account_link(self, record):
        return account_link(record.account)

    def get_queryset(self, request):
        # The output is never shown here, only its length: never loaded either.
        return super().get_queryset(request).defer("stdout", "stderr").annotate(
            stdout_length=Length("stdout"), stderr_length=Length("stderr"))

    def has_kill_permission(self, request):
        return request.user.has_perm("sandboxes.kill_sandboxcommand")

    @admin.action(description="Kill selected running commands", permissions=["kill"])
    def kill_selected_commands(self, request, queryset):
        actor = Actor.from_admin_request(request)
        killed, failed, not_running = 0, 0, []
        # Loaded whole (the list defers the output): the kill keeps what the command printed.
        for record in queryset.defer(None).select_related("sandbox", "account"):
            # Re-checked here, and again by the service (which records only a running command as killed).
            if record.status != SandboxCommand.Status.RUNNING:
                not_running.append(record)
                continue
            try:
                was_running = live.command_kill(record=record, actor=actor)
            except live.LiveSandboxError as exc:
                failed += 1
                self.message_user(request, f"Command {record.pk} of {record.account}: {exc}", messages.ERROR)
                continue
            except Exception as exc:
                logger.exception("Killing command %s from the admin failed", record.pk)
                failed += 1
                self.message_user(request, f"Command {record.pk} of {record.account} could not be killed: an "
                                  f"unexpected error ({type(exc).__name__}); the server's log has the details.",
                                  messages.ERROR)
                continue
            if not was_running:
                not_running.append(record)
                continue
            killed += 1
            self.message_user(request, f"Killed command {record.pk} ({summary(command_line(record), limit=60)}) "
                              f"of {record.account}.", messages.SUCCESS)
        if not_running:
            self.message_user(request, f"{len(not_running)} selected command(s) had ended already and were left "
                              "alone: " + ", ".join(record.pk for record in not_running), messages.INFO)
        tried = killed + failed
        if tried + len(not_running) > 1:
            self.message_user(request, f"Killed {killed} of {tried} running command(s) selected"
                              + (f"; {failed} could not be killed." if failed else "."),
                              messages.WARNING if failed else messages.SUCCESS)


# --- the account page --------------------------------------------------------------------------------------------

LAST_RUNS_SHOWN = 5
# The id of the account page's form that posts "Kill selected running commands" (its Kill buttons name it).
KILL_FORM = "kill-command"


def latest_live_sandbox(account: Account) -> LiveSandbox | None:
    """The account's live sandbox, else its last one (a new one starts only when none is live); read once a page."""
    if "_latest_live_sandbox" not in account.__dict__:
        found = LiveSandbox.objects.filter(account=account).order_by("-created_at").first() if account.pk else None
        account._latest_live_sandbox = found
    return account._latest_live_sandbox


class AccountPageAdmin(AccountAdmin):
    """The account page staff see, assembled here: accounts' AccountAdmin (fields, state, keys, Revoke keys) with
    what orgs and sandboxes know of the account. Registered for Account in AccountAdmin's place (below).

    The page is the one place for a person: its sandbox (state, expiry,
    repository), its live sandbox (running or how it stopped, from which
    snapshot, on which engine, until when if idle) and its last commands (who,
    what, how they ended; the names of their environment, never its values),
    its last setup runs, its keys and organizations, and buttons for what staff
    do about it. Each button posts the same action as the list does, so it asks
    the same permission and shows the same confirmation page: Revoke sandbox
    (sandboxes.revoke_snapshot, the sandbox list's action), Stop live sandbox
    (sandboxes.stop_livesandbox; takes a snapshot first), Kill, on a running
    command's row (sandboxes.kill_sandboxcommand), Run setup again
    (sandboxes.start_setuprun), Revoke keys (accounts.revoke_apikey) and
    Deactivate (accounts.deactivate_account; revokes the sandbox and the keys
    too, after a confirmation page). A staff user without a permission is not
    shown its button, and posting the action anyway changes nothing.
    """

    list_display = ["person", "email", "organizations", "sandbox", "expires", "last_run_status"]
    list_filter = [*AccountAdmin.list_filter, "memberships__organization"]
    fieldsets = [
        *AccountAdmin.fieldsets,
        ("Sandbox", {"fields": ["sandbox_state", "expires", "snapshot_id", "repository"]}),
        ("Live sandbox", {"fields": ["live_sandbox", "live_started_from", "live_engine", "live_idle_deadline"]}),
        ("Last commands", {"fields": ["last_commands"]}),
        ("Last setup runs", {"fields": ["last_runs"]}),
    ]
    readonly_fields = [*AccountAdmin.readonly_fields, "sandbox_state", "expires", "snapshot_id", "repository",
                       "live_sandbox", "live_started_from", "live_engine", "live_idle_deadline", "last_commands",
                       "last_commands_with_kill", "last_runs"]
    inlines = [AccountMembershipInline, *AccountAdmin.inlines]
    actions = ["run_setup_again", *AccountAdmin.actions, "deactivate_accounts"]
    deactivate_confirmation_template = "admin/accounts/account/deactivate_confirmation.html"

    def get_fieldsets(self, request, obj=None):
        fieldsets = super().get_fieldsets(request, obj)
        if self.has_kill_permission(request):
            # The same table, with a Kill button on each running command's row.
            fieldsets = [(title, {**options, "fields": ["last_commands_with_kill" if field == "last_commands" else field
                                                        for field in options["fields"]]})
                         for title, options in fieldsets]
        return fieldsets

    def get_queryset(self, request):
        # One query for the page and one for its memberships, however many rows.
        last_run = SetupRun.objects.filter(account=OuterRef("pk")).order_by("-created_at")
        memberships = Membership.objects.select_related("organization").order_by("organization__name")
        return (
            super()
            .get_queryset(request)
            .select_related("snapshot")
            .prefetch_related(Prefetch("memberships", queryset=memberships))
            .annotate(
                last_run_status=Subquery(last_run.values("status")[:1]),
                last_run_id=Subquery(last_run.values("pk")[:1]),
            )
        )

    # --- the list ---------------------------------------------------------------------------

    @admin.display(description="organizations")
    def organizations(self, account):
        return ", ".join(f"{m.organization.name} ({m.role})" for m in account.memberships.all()) or EMPTY

    @admin.display(description="sandbox", ordering="snapshot__expires_at")
    def sandbox(self, account):
        snapshot = getattr(account, "snapshot", None)
        if snapshot is None:
            return sandbox_state(None)
        return format_html('<a href="{}" title="{}">{}</a>', admin_change_url(Snapshot, snapshot.pk),
                           snapshot.snapshot_id, sandbox_state(snapshot))

    @admin.display(description="expires", ordering="snapshot__expires_at")
    def expires(self, account):
        snapshot = getattr(account, "snapshot", None)
        return format_moment(snapshot.expires_at) if snapshot else EMPTY

    @admin.display(description="last run", ordering="last_run_status")
    def last_run_status(self, account):
        if not account.last_run_id:
            return EMPTY
        url = admin_change_url(SetupRun, account.last_run_id)
        return format_html('<a href="{}">{}</a>', url, run_status(account.last_run_status))

    # --- the account's page -----------------------------------------------------------------

    @admin.display(description="sandbox")
    def sandbox_state(self, account):
        return sandbox_state(getattr(account, "snapshot", None))

    @admin.display(description="snapshot id")
    def snapshot_id(self, account):
        snapshot = getattr(account, "snapshot", None)
        if snapshot is None:
            return EMPTY
        return format_html('<a href="{}">{}</a>', admin_change_url(Snapshot, snapshot.pk), snapshot.snapshot_id)

    @admin.display(description="repository")
    def repository(self, account):
        snapshot = getattr(account, "snapshot", None)
        return repository_display(snapshot.github_repo) if snapshot else EMPTY

    @admin.display(description="live sandbox")
    def live_sandbox(self, account):
        sandbox = latest_live_sandbox(account)
        if sandbox is None:
            return format_html("{} No live sandbox was started yet.", live_sandbox_state(None))
        link = format_html('<a href="{}">{}</a>', admin_change_url(LiveSandbox, sandbox.pk), sandbox.pk)
        since = (f"since {format_moment(sandbox.started_at or sandbox.created_at)}" if sandbox.is_live
                 else f"at {format_moment(sandbox.stopped_at)}")
        error = format_html('<br><span class="live-sandbox-error">{}</span>', sandbox.error) if sandbox.error else ""
        return format_html("{} {} {}{}", live_sandbox_state(sandbox), since, link, error)

    @admin.display(description="started from")
    def live_started_from(self, account):
        return live_started_from(latest_live_sandbox(account))

    @admin.display(description="engine")
    def live_engine(self, account):
        return live_engine(latest_live_sandbox(account))

    @admin.display(description="idle deadline")
    def live_idle_deadline(self, account):
        return idle_deadline(latest_live_sandbox(account))

    @admin.display(description="last commands")
    def last_commands(self, account, *, kill_form: str = ""):
        if not account.pk:
            return EMPTY
        records = recent_commands(SandboxCommand.objects.filter(account=account))
        url = reverse("admin:sandboxes_sandboxcommand_changelist") + f"?account__id__exact={account.pk}"
        more = format_html('<p><a href="{}">All commands of this account</a></p>', url) if records else ""
        return format_html("{}{}", commands_table(records, kill_form=kill_form, table_id="account-commands"), more)

    @admin.display(description="last commands")
    def last_commands_with_kill(self, account):
        return self.last_commands(account, kill_form=KILL_FORM)

    @admin.display(description="last runs")
    def last_runs(self, account):
        runs = selectors.setup_runs_recent(account=account, limit=LAST_RUNS_SHOWN) if account.pk else []
        if not runs:
            return "No setup run yet."
        rows = format_html_join(
            "", '<tr class="account-run"><td><a href="{}" title="{}">{}</a></td><td>{}</td><td>{}</td><td>{}</td>'
            "<td>{}</td><td>{}</td></tr>",
            ((admin_change_url(SetupRun, run.pk), run.pk, run.pk, format_moment(run.created_at), run_status(run.status),
              failed_step(run) or EMPTY, run_duration(run), summary(run.error, limit=120) or EMPTY) for run in runs),
        )
        return format_html(
            '<table class="account-runs" id="account-runs"><thead><tr><th>run</th><th>created</th><th>status</th>'
            "<th>failed step</th><th>duration</th><th>error</th></tr></thead><tbody>{}</tbody></table>", rows
        )

    def page_context(self, request, account: Account | None) -> dict:
        # Beside the buttons, the form the Kill buttons of the commands' table post.
        kill = None
        if account is not None and self.has_kill_permission(request):
            kill = {"id": KILL_FORM, "url": reverse("admin:sandboxes_sandboxcommand_changelist"),
                    "action": "kill_selected_commands", "next": request.get_full_path()}
        return {**super().page_context(request, account), "kill_form": kill}

    def offered_page_actions(self, request, account) -> list[PageAction]:
        accounts_list = reverse("admin:accounts_account_changelist")
        has_sandbox = Snapshot.objects.filter(account=account).exists()
        live = latest_live_sandbox(account)
        running = live is not None and live.status == LiveSandbox.Status.RUNNING
        return [
            PageAction("stop_selected_live_sandboxes", "Stop live sandbox",
                       reverse("admin:sandboxes_livesandbox_changelist"), running and self.has_stop_permission(request),
                       False, live.pk if live else None),
            PageAction("revoke_selected_sandboxes", "Revoke sandbox", reverse("admin:sandboxes_snapshot_changelist"),
                       has_sandbox and request.user.has_perm("sandboxes.revoke_snapshot"), True, account.pk),
            PageAction("run_setup_again", "Run setup again", accounts_list,
                       account.is_active and self.has_start_setup_permission(request), False, account.pk),
            *super().offered_page_actions(request, account),
            PageAction("deactivate_accounts", "Deactivate", accounts_list,
                       account.is_active and self.has_deactivate_permission(request), True, account.pk),
        ]

    def render_delete_form(self, request, context):
        # Refused when the account has a sandbox, keys or runs (their admins
        # allow no delete): the page offers Deactivate instead.
        account = context.get("object")
        if account is not None and account.is_active and self.has_deactivate_permission(request):
            context["deactivate"] = {"pk": account.pk, "next": admin_change_url(Account, account.pk)}
        return super().render_delete_form(request, context)

    # --- actions ----------------------------------------------------------------------------

    def has_start_setup_permission(self, request):
        return request.user.has_perm("sandboxes.start_setuprun")

    def has_stop_permission(self, request):
        return request.user.has_perm("sandboxes.stop_livesandbox")

    def has_kill_permission(self, request):
        return request.user.has_perm("sandboxes.kill_sandboxcommand")

    def has_deactivate_permission(self, request):
        return request.user.has_perm("accounts.deactivate_account")

    @admin.action(description="Run setup again", permissions=["start_setup"])
    def run_setup_again(self, request, queryset):
        starts = services.setup_runs_start(accounts=list(queryset), actor=Actor.from_admin_request(request))
        report_setup_starts(self, request, starts)

    @admin.action(description="Deactivate selected accounts (revokes their sandbox and API keys)",
                  permissions=["deactivate"])
    def deactivate_accounts(self, request, queryset):
        """First a page listing what goes (the same plan as "Revoke sandboxes"); once confirmed, the deactivation."""
        accounts = sorted(queryset, key=lambda a: (a.name, a.email))
        if request.POST.get("post") == "yes":
            results = accounts_deactivate(accounts=accounts, actor=Actor.from_admin_request(request))
            for result in results:
                keys = f"{result.keys_revoked} key(s) revoked"
                if result.sandbox.ok:
                    self.message_user(request, f"Deactivated {result.account}: {keys}, "
                                      f"{revoke_report(result.sandbox)}.", messages.SUCCESS)
                else:
                    self.message_user(request, f"Deactivated {result.account} ({keys}), but could not revoke its "
                                      f"sandbox: {result.sandbox.error}. Revoke the sandbox again once the cause "
                                      "is fixed.", messages.ERROR)
            return HttpResponseRedirect(page_to_return_to(request) or request.get_full_path())
        keys = ApiKey.objects.filter(account__in=accounts, revoked_at__isnull=True).order_by("account__name", "prefix")
        context = {
            **self.admin_site.each_context(request),
            "title": "Deactivate accounts",
            "subtitle": None,
            "opts": self.opts,
            "accounts": accounts,
            "plan": selectors.sandboxes_deletion_plan(accounts=accounts),
            "keys": list(keys.select_related("account")),
            "action_checkbox_name": helpers.ACTION_CHECKBOX_NAME,
            "next": page_to_return_to(request),
            "media": self.media,
        }
        request.current_app = self.admin_site.name
        return TemplateResponse(request, self.deactivate_confirmation_template, context)


# accounts/admin.py registered its AccountAdmin (imported above, so always first); this page takes its place.
admin.site.unregister(Account)
admin.site.register(Account, AccountPageAdmin)
