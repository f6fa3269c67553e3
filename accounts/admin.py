"""The back office for accounts, API keys and the audit trail.

The account page is the one place for a person: its sandbox (state, expiry,
repository), its live sandbox (running or how it stopped, from which snapshot,
on which engine, until when if idle) and its last commands (who, what, how they
ended; the names of their environment, never its values), its last setup runs,
its keys and organizations, and buttons for what staff do about it. Each
button posts the same action as the list does, so it asks the same permission
and shows the same confirmation page: Revoke sandbox (sandboxes.revoke_snapshot,
the sandbox list's action), Stop live sandbox (sandboxes.stop_livesandbox; takes
a snapshot first), Kill, on a running command's row
(sandboxes.kill_sandboxcommand), Run setup again (sandboxes.start_setuprun),
Revoke keys (accounts.revoke_apikey) and Deactivate (accounts.deactivate_account;
revokes the sandbox and the keys too, after a confirmation page). A staff user
without a permission is not shown its button, and posting the action anyway
changes nothing.

Actions only call services and report what they did. The audit trail is
read-only for everyone.

A key's scopes (accounts/scopes.py) are chosen on its add form (ticked: the
API_KEY_DEFAULT_SCOPES) and changed on its page, through api_key_scopes_set,
which records the change before → after; the key list and the account page
show them.
"""

import uuid

from django import forms
from django.conf import settings
from django.contrib import admin, messages
from django.contrib.admin import helpers
from django.contrib.auth.admin import UserAdmin
from django.contrib.auth.models import User
from django.core.exceptions import BadRequest
from django.db.models import OuterRef, Prefetch, Q, Subquery
from django.http import HttpResponseRedirect
from django.template.response import TemplateResponse
from django.urls import reverse
from django.utils import timezone
from django.utils.html import format_html, format_html_join
from django.views.decorators.debug import sensitive_variables

from accounts.admin_audit import AuditedAdminMixin
from accounts.audit import Actor
from accounts.models import Account, ApiKey, AuditEvent
from accounts.scopes import ALL_SCOPES, DESCRIPTIONS, scopes_display
from accounts.services import (
    accounts_deactivate,
    api_key_create,
    api_key_scopes_set,
    api_keys_revoke,
)
from config.admin_display import (
    AddFormMixin,
    ReturnToPageAfterActionMixin,
    page_to_return_to,
    secret_shown_once,
    state_badge,
    summary,
)
from config.admin_links import admin_change_url
from config.admin_readonly import ReadOnlyAdminMixin
from config.timefmt import format_moment
from orgs.models import Membership
from sandboxes import selectors as sandbox_selectors
from sandboxes.admin import (
    commands_table,
    failed_step,
    idle_deadline,
    live_engine,
    live_sandbox_state,
    live_started_from,
    recent_commands,
    report_setup_starts,
    repository_display,
    revoke_report,
    run_duration,
    run_status,
    sandbox_state,
)
from sandboxes.models import LiveSandbox, SandboxCommand, SetupRun, Snapshot
from sandboxes.selectors import setup_runs_recent
from sandboxes.services import setup_runs_start

LAST_RUNS_SHOWN = 5

EMPTY = "—"
# The id of the account page's form that posts "Kill selected running commands" (its Kill buttons name it).
KILL_FORM = "kill-command"


def latest_live_sandbox(account: Account) -> LiveSandbox | None:
    """The account's live sandbox, else its last one (a new one starts only when none is live); read once a page."""
    if "_latest_live_sandbox" not in account.__dict__:
        found = LiveSandbox.objects.filter(account=account).order_by("-created_at").first() if account.pk else None
        account._latest_live_sandbox = found
    return account._latest_live_sandbox


class AccountMembershipInline(admin.TabularInline):
    model = Membership
    fk_name = "account"
    extra = 0
    fields = ["organization", "role", "created_at"]
    readonly_fields = ["created_at"]
    verbose_name = "membership"


class ApiKeyInline(admin.TabularInline):
    """The account's keys, read-only: recognised by their visible prefix; the hash is never shown."""

    model = ApiKey
    extra = 0
    fields = ["prefix", "name", "organization", "status", "key_scopes", "created_at", "expires_at", "revoked_at",
              "last_used_at"]
    readonly_fields = fields
    can_delete = False
    show_change_link = True

    def has_add_permission(self, request, obj=None):
        return False  # keys are made with the API key admin's add form, which shows the raw key once

    def has_change_permission(self, request, obj=None):
        return False

    @admin.display(description="status")
    def status(self, key):
        return key_state(key)

    @admin.display(description="scopes")
    def key_scopes(self, key):
        return scopes_display(key.scopes)


def key_status(key: ApiKey) -> str:
    if key.revoked_at is not None:
        return "revoked"
    if key.expires_at is not None and key.expires_at <= timezone.now():
        return "expired"
    return "active"


def key_state(key: ApiKey):
    return state_badge(key_status(key), {"active": "good", "revoked": "bad", "expired": "neutral"}[key_status(key)])


class AccountStateFilter(admin.SimpleListFilter):
    title = "state"
    parameter_name = "is_active__exact"  # the same query as Django's own boolean filter

    def lookups(self, request, model_admin):
        return [("1", "Active"), ("0", "Inactive")]

    def queryset(self, request, queryset):
        if self.value() in ("0", "1"):
            return queryset.filter(is_active=self.value() == "1")
        return queryset


@admin.register(Account)
class AccountAdmin(AuditedAdminMixin, ReturnToPageAfterActionMixin, admin.ModelAdmin):
    list_display = ["person", "email", "organizations", "sandbox", "expires", "last_run_status"]
    list_filter = [AccountStateFilter, "memberships__organization"]
    search_fields = ["id", "name", "email"]
    fieldsets = [
        (None, {"fields": ["id", "name", "email", "state", "created_at", "audit_trail"]}),
        ("Sandbox", {"fields": ["sandbox_state", "expires", "snapshot_id", "repository"]}),
        ("Live sandbox", {"fields": ["live_sandbox", "live_started_from", "live_engine", "live_idle_deadline"]}),
        ("Last commands", {"fields": ["last_commands"]}),
        ("Last setup runs", {"fields": ["last_runs"]}),
    ]
    readonly_fields = ["id", "state", "created_at", "audit_trail", "sandbox_state", "expires", "snapshot_id",
                       "repository", "live_sandbox", "live_started_from", "live_engine", "live_idle_deadline",
                       "last_commands", "last_commands_with_kill", "last_runs"]
    inlines = [AccountMembershipInline, ApiKeyInline]
    actions = ["run_setup_again", "revoke_keys", "deactivate_accounts"]
    change_form_template = "admin/accounts/account/change_form.html"
    deactivate_confirmation_template = "admin/accounts/account/deactivate_confirmation.html"

    def get_fieldsets(self, request, obj=None):
        # Turning an account off goes through Deactivate (which revokes its
        # sandbox and keys too); an inactive account can be made active again here.
        fieldsets = super().get_fieldsets(request, obj)
        if obj is not None and not obj.is_active:
            (title, options), *rest = fieldsets
            fieldsets = [(title, {**options, "fields": [*options["fields"], "is_active"]}), *rest]
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

    @admin.display(description="name", ordering="name")
    def person(self, account):
        if account.is_active:
            return account.name
        return format_html("{} {}", account.name, state_badge("inactive", "neutral"))

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

    @admin.display(description="state")
    def state(self, account):
        return state_badge("active", "good") if account.is_active else state_badge("inactive", "neutral")

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
        runs = setup_runs_recent(account=account, limit=LAST_RUNS_SHOWN) if account.pk else []
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

    @admin.display(description="audit trail")
    def audit_trail(self, account):
        url = reverse("admin:accounts_auditevent_changelist") + f"?account_ref={account.pk}"
        return format_html('<a href="{}">Events of this account</a>', url)

    def change_view(self, request, object_id, form_url="", extra_context=None):
        account = self.get_object(request, object_id)
        tools = self.page_actions(request, account) if account is not None else []
        kill = None
        if account is not None and self.has_kill_permission(request):
            kill = {"id": KILL_FORM, "url": reverse("admin:sandboxes_sandboxcommand_changelist"),
                    "action": "kill_selected_commands", "next": request.get_full_path()}
        return super().change_view(request, object_id, form_url,
                                   {**(extra_context or {}), "page_actions": tools, "kill_form": kill})

    def page_actions(self, request, account) -> list[dict]:
        """The buttons of the account's page: each posts a list action for this one account, then comes back."""
        accounts_list = reverse("admin:accounts_account_changelist")
        has_sandbox = Snapshot.objects.filter(account=account).exists()
        has_keys = ApiKey.objects.filter(account=account, revoked_at__isnull=True).exists()
        live = latest_live_sandbox(account)
        running = live is not None and live.status == LiveSandbox.Status.RUNNING
        # (action, label, the list it posts to, offered, danger, the row it selects)
        offered = [
            ("stop_selected_live_sandboxes", "Stop live sandbox", reverse("admin:sandboxes_livesandbox_changelist"),
             running and self.has_stop_permission(request), False, live.pk if live else None),
            ("revoke_selected_sandboxes", "Revoke sandbox", reverse("admin:sandboxes_snapshot_changelist"),
             has_sandbox and request.user.has_perm("sandboxes.revoke_snapshot"), True, account.pk),
            ("run_setup_again", "Run setup again", accounts_list,
             account.is_active and self.has_start_setup_permission(request), False, account.pk),
            ("revoke_keys", "Revoke keys", accounts_list, has_keys and self.has_revoke_keys_permission(request), True,
             account.pk),
            ("deactivate_accounts", "Deactivate", accounts_list,
             account.is_active and self.has_deactivate_permission(request), True, account.pk),
        ]
        return [
            {"action": action, "label": label, "url": url, "danger": danger, "pk": pk,
             "next": request.get_full_path()}
            for action, label, url, allowed, danger, pk in offered if allowed
        ]

    def get_actions(self, request):
        # No bulk delete: accounts are deactivated (an account's own delete page explains why).
        actions = super().get_actions(request)
        actions.pop("delete_selected", None)
        return actions

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

    def has_revoke_keys_permission(self, request):
        return request.user.has_perm("accounts.revoke_apikey")

    def has_deactivate_permission(self, request):
        return request.user.has_perm("accounts.deactivate_account")

    @admin.action(description="Run setup again", permissions=["start_setup"])
    def run_setup_again(self, request, queryset):
        starts = setup_runs_start(accounts=list(queryset), actor=Actor.from_admin_request(request))
        report_setup_starts(self, request, starts)

    @admin.action(description="Revoke the API keys of selected accounts", permissions=["revoke_keys"])
    def revoke_keys(self, request, queryset):
        revoked = api_keys_revoke(keys=ApiKey.objects.filter(account__in=queryset),
                                  actor=Actor.from_admin_request(request))
        names = ", ".join(str(account) for account in queryset)
        if revoked:
            self.message_user(request, f"Revoked {revoked} key(s) of {names}; they are refused from their next "
                              "request on.", messages.SUCCESS)
        else:
            self.message_user(request, f"{names} had no key left to revoke.", messages.INFO)

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
            "plan": sandbox_selectors.sandboxes_deletion_plan(accounts=accounts),
            "keys": list(keys.select_related("account")),
            "action_checkbox_name": helpers.ACTION_CHECKBOX_NAME,
            "next": page_to_return_to(request),
            "media": self.media,
        }
        request.current_app = self.admin_site.name
        return TemplateResponse(request, self.deactivate_confirmation_template, context)


class KeyStatusFilter(admin.SimpleListFilter):
    title = "status"
    parameter_name = "status"

    def lookups(self, request, model_admin):
        return [("active", "Active"), ("revoked", "Revoked"), ("expired", "Expired")]

    def queryset(self, request, queryset):
        now = timezone.now()
        expired = Q(expires_at__isnull=False, expires_at__lte=now)
        if self.value() == "active":
            return queryset.filter(revoked_at__isnull=True).exclude(expired)
        if self.value() == "revoked":
            return queryset.filter(revoked_at__isnull=False)
        if self.value() == "expired":
            # Revoked wins: a revoked key is listed as revoked, even past its expiry.
            return queryset.filter(expired, revoked_at__isnull=True)
        return queryset


SCOPE_CHOICES = [(scope, f"{scope}: {DESCRIPTIONS[scope]}") for scope in ALL_SCOPES]


def scopes_field(**options) -> forms.MultipleChoiceField:
    return forms.MultipleChoiceField(choices=SCOPE_CHOICES, widget=forms.CheckboxSelectMultiple, required=False,
                                     help_text="What the key may do. A key without a scope is refused the "
                                               "endpoints that need it (403).", **options)


class ApiKeyCreateForm(forms.ModelForm):
    """What a staff user chooses for a new key; the key and its hash are made by api_key_create."""

    scopes = scopes_field()

    class Meta:
        model = ApiKey
        fields = ["account", "organization", "name", "expires_at", "scopes"]

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.fields["scopes"].initial = list(settings.API_KEY_DEFAULT_SCOPES)

    def clean(self):
        cleaned = super().clean()
        account, organization = cleaned.get("account"), cleaned.get("organization")
        if account and organization and not organization.memberships.filter(account=account).exists():
            # The same rule as `manage.py create_api_key --org`.
            self.add_error("organization", f"{account.email} is not a member of {organization.slug}.")
        expires_at = cleaned.get("expires_at")
        if expires_at is not None and expires_at <= timezone.now():
            self.add_error("expires_at", "A new key must expire in the future.")
        return cleaned


class ApiKeyChangeForm(forms.ModelForm):
    """A key's page: its name and its scopes change; the rest is fixed."""

    scopes = scopes_field()

    class Meta:
        model = ApiKey
        fields = ["name", "scopes"]


@admin.register(ApiKey)
class ApiKeyAdmin(AddFormMixin, admin.ModelAdmin):
    # The hash is never shown; the visible prefix is enough to recognise a key.
    list_display = ["prefix", "name", "account", "organization", "status", "key_scopes", "created_at", "expires_at",
                    "revoked_at", "last_used_at"]
    list_filter = [KeyStatusFilter, ("last_used_at", admin.DateFieldListFilter), "organization"]
    search_fields = ["prefix", "name", "account__email", "account__name"]
    list_select_related = ["account", "organization"]
    autocomplete_fields = ["account"]
    actions = ["revoke_selected_keys"]
    add_form = ApiKeyCreateForm
    form = ApiKeyChangeForm
    created_template = "admin/accounts/apikey/created.html"

    def get_fieldsets(self, request, obj=None):
        if obj is None:
            description = "The key is shown once, on the page after saving; only its hash is stored."
            return [(None, {"fields": ApiKeyCreateForm.Meta.fields, "description": description})]
        return super().get_fieldsets(request, obj)

    def get_fields(self, request, obj=None):
        if obj is None:
            return ApiKeyCreateForm.Meta.fields
        return ["prefix", "name", "account", "organization", "status", "scopes", "created_at", "expires_at",
                "revoked_at", "last_used_at"]

    def get_readonly_fields(self, request, obj=None):
        if obj is None:
            return []
        # Only the name and the scopes change after creation: revoking goes
        # through the audited action, and a key's owner and lifetime are fixed.
        return [field for field in self.get_fields(request, obj) if field not in ("name", "scopes")]

    @admin.display(description="status")
    def status(self, key):
        return key_state(key)

    @admin.display(description="scopes")
    def key_scopes(self, key):
        return scopes_display(key.scopes)

    @sensitive_variables("raw_key")
    def save_model(self, request, obj, form, change):
        if change:
            # The scopes through the service, which records them before → after; the name as it is.
            api_key_scopes_set(key=obj, scopes=form.cleaned_data["scopes"], actor=Actor.from_admin_request(request))
            obj.save(update_fields=["name"])
            return
        key, raw_key = api_key_create(
            actor=Actor.from_admin_request(request),
            account=form.cleaned_data["account"],
            organization=form.cleaned_data["organization"],
            name=form.cleaned_data["name"],
            expires_at=form.cleaned_data["expires_at"],
            scopes=form.cleaned_data["scopes"],
        )
        # The admin goes on with `obj` (its history entry, the answer): make it the key just made.
        obj.pk, obj.prefix, obj.key_hash, obj.created_at = key.pk, key.prefix, key.key_hash, key.created_at
        obj._state.adding, obj._state.db = False, key._state.db
        # Only on this object in memory, for the one answer below; it is never stored or logged.
        obj.raw_key_shown_once = raw_key

    @sensitive_variables("raw_key")
    def response_add(self, request, obj, post_url_continue=None):
        raw_key = getattr(obj, "raw_key_shown_once", None)
        if raw_key is None:
            return super().response_add(request, obj, post_url_continue)
        return secret_shown_once(self, request, title="API key created", original=obj, key=obj, raw_key=raw_key)

    def has_delete_permission(self, request, obj=None):
        return False  # revoke instead: a revoked key stays, so the audit trail keeps pointing at it

    def has_revoke_permission(self, request):
        return request.user.has_perm("accounts.revoke_apikey")

    @admin.action(description="Revoke selected keys", permissions=["revoke"])
    def revoke_selected_keys(self, request, queryset):
        selected = queryset.count()
        revoked = api_keys_revoke(keys=queryset, actor=Actor.from_admin_request(request))
        if revoked:
            self.message_user(request, f"Revoked {revoked} key(s); they are refused from their next request on.",
                              messages.SUCCESS)
        if selected - revoked:
            self.message_user(request, f"{selected - revoked} selected key(s) were revoked already.", messages.INFO)


class AuditEventAccountFilter(admin.SimpleListFilter):
    """The target account, by the copied id: events of a deleted account stay reachable.

    Reached from an account's page ("Events of this account"); the side panel
    shows only the chosen account, never a list of every account (which would
    not scale): staff find accounts and actors with the search box.
    """

    title = "account"
    parameter_name = "account_ref"

    def account_ref(self) -> uuid.UUID | None:
        if not self.value():
            return None
        try:
            return uuid.UUID(self.value())
        except ValueError:
            raise BadRequest(f"account_ref must be an account id (a UUID), not {self.value()!r}") from None

    def lookups(self, request, model_admin):
        account_ref = self.account_ref()
        if account_ref is None:
            return []
        account = Account.objects.filter(pk=account_ref).first()
        return [(self.value(), str(account) if account else f"{self.value()} (deleted)")]

    def queryset(self, request, queryset):
        account_ref = self.account_ref()
        return queryset if account_ref is None else queryset.filter(account_ref=account_ref)


@admin.register(AuditEvent)
class AuditEventAdmin(ReadOnlyAdminMixin, admin.ModelAdmin):
    """The audit trail: read-only, and never deletable from the admin, not even by a superuser."""

    list_display = ["when", "action", "result", "actor", "target_account", "detail_summary", "run_id"]
    list_filter = ["action", "outcome", AuditEventAccountFilter]
    # Actors and accounts by text: "alice", "staff user", "API key sk_live_ab", an account id.
    search_fields = ["actor", "account__email", "account__name", "account_ref", "=run_id", "=request_id", "detail"]
    search_help_text = "Actor, account (name, email or id), run id, request id or a word of the detail"
    date_hierarchy = "created_at"
    list_select_related = ["account"]
    fields = ["created_at", "action", "outcome", "actor", "actor_key", "actor_user", "target_account", "run_id",
              "client_ip", "request_id", "detail"]
    readonly_fields = fields

    @admin.display(description="when", ordering="created_at")
    def when(self, event):
        return format_moment(event.created_at)

    @admin.display(description="outcome", ordering="outcome")
    def result(self, event):
        good = event.outcome == AuditEvent.Outcome.SUCCESS
        return state_badge(event.get_outcome_display().lower(), "good" if good else "bad")

    @admin.display(description="detail")
    def detail_summary(self, event):
        return format_html('<span title="{}">{}</span>', event.detail, summary(event.detail, limit=90) or EMPTY)

    @admin.display(description="account")
    def target_account(self, event):
        if event.account is not None:
            url = admin_change_url(Account, event.account_id)
            return format_html('<a href="{}">{}</a>', url, event.account)
        return str(event.account_ref) if event.account_ref else EMPTY


class AuditedUserAdmin(AuditedAdminMixin, UserAdmin):
    """Django's own admin users, unchanged but for the audit trail: adding, changing and deleting one records its
    staff, superuser and active flags, before → after (accounts/access_changes.py)."""


admin.site.unregister(User)
admin.site.register(User, AuditedUserAdmin)
