"""The back office for accounts, API keys and the audit trail.

AccountAdmin here holds what accounts alone know of an account: its fields,
its state, its keys and the Revoke keys action (accounts.revoke_apikey). The
account page staff see is assembled in sandboxes/admin.py (AccountPageAdmin),
the highest app whose data it shows: it extends AccountAdmin with the
account's organizations, sandbox, live sandbox, commands and setup runs, the
buttons for them and Deactivate, and registers itself for Account in
AccountAdmin's place.

Actions only call services and report what they did. The audit trail is
read-only for everyone.

A key's scopes (accounts/scopes.py) are chosen on its add form (ticked: the
API_KEY_DEFAULT_SCOPES) and changed on its page, through api_key_scopes_set,
which records the change before → after; the key list and the account page
show them.
"""

import uuid
from typing import NamedTuple

from django import forms
from django.conf import settings
from django.contrib import admin, messages
from django.contrib.auth.admin import UserAdmin
from django.contrib.auth.models import User
from django.core.exceptions import BadRequest
from django.db.models import Q
from django.urls import reverse
from django.utils import timezone
from django.utils.html import format_html
from django.views.decorators.debug import sensitive_variables

from accounts.admin_audit import AuditedAdminMixin
from accounts.audit import Actor
from accounts.models import Account, ApiKey, AuditEvent
from accounts.scopes import ALL_SCOPES, DESCRIPTIONS, scopes_display
from accounts.services import api_key_create, api_key_scopes_set, api_keys_revoke
from config.admin_display import (
    AddFormMixin,
    ReturnToPageAfterActionMixin,
    secret_shown_once,
    state_badge,
    summary,
)
from config.admin_links import admin_change_url
from config.admin_readonly import ReadOnlyAdminMixin
from config.timefmt import format_moment

EMPTY = "—"


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


class PageAction(NamedTuple):
    """A button of the account's page: it posts the list action `action` of the list at `url` for row `pk`."""

    action: str
    label: str
    url: str
    offered: bool  # the account is in a state for it and the staff user has its permission
    danger: bool
    pk: object


@admin.register(Account)
class AccountAdmin(AuditedAdminMixin, ReturnToPageAfterActionMixin, admin.ModelAdmin):
    """What accounts alone know of an account: its fields, state and keys, and Revoke keys.

    Not the page staff see: sandboxes/admin.py (AccountPageAdmin) extends this
    class with the account's memberships, sandbox, live sandbox, commands and
    runs, their buttons and Deactivate, and registers it for Account in this
    one's place.
    """

    list_display = ["person", "email"]
    list_filter = [AccountStateFilter]
    search_fields = ["id", "name", "email"]
    fieldsets = [
        (None, {"fields": ["id", "name", "email", "state", "created_at", "audit_trail"]}),
    ]
    readonly_fields = ["id", "state", "created_at", "audit_trail"]
    inlines = [ApiKeyInline]
    actions = ["revoke_keys"]
    change_form_template = "admin/accounts/account/change_form.html"

    def get_fieldsets(self, request, obj=None):
        # Turning an account off goes through Deactivate (which revokes its
        # sandbox and keys too); an inactive account can be made active again here.
        fieldsets = super().get_fieldsets(request, obj)
        if obj is not None and not obj.is_active:
            (title, options), *rest = fieldsets
            fieldsets = [(title, {**options, "fields": [*options["fields"], "is_active"]}), *rest]
        return fieldsets

    # --- the list ---------------------------------------------------------------------------

    @admin.display(description="name", ordering="name")
    def person(self, account):
        if account.is_active:
            return account.name
        return format_html("{} {}", account.name, state_badge("inactive", "neutral"))

    # --- the account's page -----------------------------------------------------------------

    @admin.display(description="state")
    def state(self, account):
        return state_badge("active", "good") if account.is_active else state_badge("inactive", "neutral")

    @admin.display(description="audit trail")
    def audit_trail(self, account):
        url = reverse("admin:accounts_auditevent_changelist") + f"?account_ref={account.pk}"
        return format_html('<a href="{}">Events of this account</a>', url)

    def change_view(self, request, object_id, form_url="", extra_context=None):
        account = self.get_object(request, object_id)
        return super().change_view(request, object_id, form_url,
                                   {**(extra_context or {}), **self.page_context(request, account)})

    def page_context(self, request, account: Account | None) -> dict:
        """What the page's template (change_form_template) shows beside the form: its buttons."""
        return {"page_actions": self.page_actions(request, account) if account is not None else []}

    def page_actions(self, request, account) -> list[dict]:
        """The buttons of the account's page: each posts a list action for this one account, then comes back."""
        return [
            {"action": offer.action, "label": offer.label, "url": offer.url, "danger": offer.danger, "pk": offer.pk,
             "next": request.get_full_path()}
            for offer in self.offered_page_actions(request, account) if offer.offered
        ]

    def offered_page_actions(self, request, account) -> list[PageAction]:
        """Every button the page may show, in its order; page_actions keeps those offered."""
        has_keys = ApiKey.objects.filter(account=account, revoked_at__isnull=True).exists()
        return [
            PageAction("revoke_keys", "Revoke keys", reverse("admin:accounts_account_changelist"),
                       has_keys and self.has_revoke_keys_permission(request), True, account.pk),
        ]

    def get_actions(self, request):
        # No bulk delete: accounts are deactivated (an account's own delete page explains why).
        actions = super().get_actions(request)
        actions.pop("delete_selected", None)
        return actions

    # --- actions ----------------------------------------------------------------------------

    def has_revoke_keys_permission(self, request):
        return request.user.has_perm("accounts.revoke_apikey")

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
