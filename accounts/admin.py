"""The back office for accounts, API keys and the audit trail.

Actions only call services and report what they did. Revoking a key needs the
custom permission accounts.revoke_apikey; starting setups needs
sandboxes.start_setuprun (a staff user without them can look, and is not
offered the actions). The audit trail is read-only for everyone.
"""

import uuid

from django import forms
from django.contrib import admin, messages
from django.core.exceptions import BadRequest
from django.db.models import OuterRef, Prefetch, Q, Subquery
from django.template.response import TemplateResponse
from django.urls import reverse
from django.utils import timezone
from django.utils.html import format_html
from django.views.decorators.debug import sensitive_variables

from accounts.audit import Actor
from accounts.models import Account, ApiKey, AuditEvent
from accounts.services import api_key_create, api_keys_revoke
from config.admin_links import admin_change_url
from config.admin_readonly import ReadOnlyAdminMixin
from orgs.models import Membership
from sandboxes.admin import report_setup_starts
from sandboxes.models import SetupRun, Snapshot
from sandboxes.services import setup_runs_start

EMPTY = "—"


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
    fields = ["prefix", "name", "organization", "status", "created_at", "expires_at", "revoked_at", "last_used_at"]
    readonly_fields = fields
    can_delete = False
    show_change_link = True

    def has_add_permission(self, request, obj=None):
        return False  # keys are made with the API key admin's add form, which shows the raw key once

    def has_change_permission(self, request, obj=None):
        return False

    @admin.display(description="status")
    def status(self, key):
        return key_status(key)


def key_status(key: ApiKey) -> str:
    if key.revoked_at is not None:
        return "revoked"
    if key.expires_at is not None and key.expires_at <= timezone.now():
        return "expired"
    return "active"


@admin.register(Account)
class AccountAdmin(admin.ModelAdmin):
    list_display = ["name", "email", "id", "organizations", "sandbox", "last_run_status", "is_active", "created_at"]
    list_filter = ["is_active", "memberships__organization"]
    search_fields = ["id", "name", "email"]
    readonly_fields = ["id", "created_at", "audit_trail"]
    inlines = [AccountMembershipInline, ApiKeyInline]
    actions = ["run_setup_again"]

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

    @admin.display(description="organizations")
    def organizations(self, account):
        return ", ".join(f"{m.organization.name} ({m.role})" for m in account.memberships.all()) or EMPTY

    @admin.display(description="snapshot")
    def sandbox(self, account):
        snapshot = getattr(account, "snapshot", None)
        if snapshot is None:
            return EMPTY
        url = admin_change_url(Snapshot, snapshot.pk)
        state = "expired" if snapshot.is_expired else "expires"
        return format_html('<a href="{}">{}</a> ({} {})', url, snapshot.snapshot_id, state,
                           f"{snapshot.expires_at:%Y-%m-%d %H:%M} UTC")

    @admin.display(description="last run", ordering="last_run_status")
    def last_run_status(self, account):
        if not account.last_run_id:
            return EMPTY
        url = admin_change_url(SetupRun, account.last_run_id)
        return format_html('<a href="{}">{}</a>', url, account.last_run_status)

    @admin.display(description="audit trail")
    def audit_trail(self, account):
        url = reverse("admin:accounts_auditevent_changelist") + f"?account_ref={account.pk}"
        return format_html('<a href="{}">Events of this account</a>', url)

    def has_start_setup_permission(self, request):
        return request.user.has_perm("sandboxes.start_setuprun")

    @admin.action(description="Run setup again", permissions=["start_setup"])
    def run_setup_again(self, request, queryset):
        starts = setup_runs_start(accounts=list(queryset), actor=Actor.from_admin_request(request))
        report_setup_starts(self, request, starts)


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


class ApiKeyCreateForm(forms.ModelForm):
    """What a staff user chooses for a new key; the key and its hash are made by api_key_create."""

    class Meta:
        model = ApiKey
        fields = ["account", "organization", "name", "expires_at"]

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


@admin.register(ApiKey)
class ApiKeyAdmin(admin.ModelAdmin):
    # The hash is never shown; the visible prefix is enough to recognise a key.
    list_display = ["prefix", "name", "account", "organization", "status", "created_at", "expires_at",
                    "revoked_at", "last_used_at"]
    list_filter = [KeyStatusFilter, ("last_used_at", admin.DateFieldListFilter), "organization"]
    search_fields = ["prefix", "name", "account__email", "account__name"]
    list_select_related = ["account", "organization"]
    autocomplete_fields = ["account"]
    actions = ["revoke_selected_keys"]
    add_form = ApiKeyCreateForm
    created_template = "admin/accounts/apikey/created.html"

    def get_fieldsets(self, request, obj=None):
        if obj is None:
            description = "The key is shown once, on the page after saving; only its hash is stored."
            return [(None, {"fields": ApiKeyCreateForm.Meta.fields, "description": description})]
        return super().get_fieldsets(request, obj)

    def get_fields(self, request, obj=None):
        if obj is None:
            return ApiKeyCreateForm.Meta.fields
        return ["prefix", "name", "account", "organization", "status", "created_at", "expires_at", "revoked_at",
                "last_used_at"]

    def get_readonly_fields(self, request, obj=None):
        if obj is None:
            return []
        # Only the name changes after creation: revoking goes through the
        # audited action, and a key's owner and lifetime are fixed.
        return [field for field in self.get_fields(request, obj) if field != "name"]

    def get_form(self, request, obj=None, **kwargs):
        if obj is None:
            kwargs["form"] = self.add_form
        return super().get_form(request, obj, **kwargs)

    @admin.display(description="status")
    def status(self, key):
        return key_status(key)

    @sensitive_variables("raw_key")
    def save_model(self, request, obj, form, change):
        if change:
            super().save_model(request, obj, form, change)
            return
        key, raw_key = api_key_create(
            actor=Actor.from_admin_request(request),
            account=form.cleaned_data["account"],
            organization=form.cleaned_data["organization"],
            name=form.cleaned_data["name"],
            expires_at=form.cleaned_data["expires_at"],
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
        # Answered directly, never through a redirect and a message: a message
        # would keep the key in the session or a cookie until it is shown.
        context = {
            **self.admin_site.each_context(request),
            "title": "API key created",
            "subtitle": None,
            "opts": self.opts,
            "key": obj,
            "raw_key": raw_key,
        }
        request.current_app = self.admin_site.name
        return TemplateResponse(request, self.created_template, context)

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
    """The target account, by the copied id: events of a deleted account stay reachable."""

    title = "account"
    parameter_name = "account_ref"

    def lookups(self, request, model_admin):
        present = AuditEvent.objects.filter(account_ref__isnull=False).values("account_ref")
        return [(str(account.pk), str(account)) for account in Account.objects.filter(pk__in=present)]

    def queryset(self, request, queryset):
        if self.value():
            try:
                account_ref = uuid.UUID(self.value())
            except ValueError:
                raise BadRequest(f"account_ref must be an account id (a UUID), not {self.value()!r}") from None
            return queryset.filter(account_ref=account_ref)
        return queryset


@admin.register(AuditEvent)
class AuditEventAdmin(ReadOnlyAdminMixin, admin.ModelAdmin):
    """The audit trail: read-only, and never deletable from the admin, not even by a superuser."""

    list_display = ["created_at", "action", "outcome", "actor", "target_account", "run_id", "client_ip", "request_id"]
    list_filter = ["action", "outcome", "actor", AuditEventAccountFilter]
    search_fields = ["actor", "account__email", "account__name", "=run_id", "=request_id", "detail"]
    date_hierarchy = "created_at"
    list_select_related = ["account"]
    fields = ["created_at", "action", "outcome", "actor", "actor_key", "actor_user", "target_account", "run_id",
              "client_ip", "request_id", "detail"]
    readonly_fields = fields

    @admin.display(description="account")
    def target_account(self, event):
        if event.account is not None:
            url = admin_change_url(Account, event.account_id)
            return format_html('<a href="{}">{}</a>', url, event.account)
        return str(event.account_ref) if event.account_ref else EMPTY

