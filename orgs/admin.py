"""The back office for organizations and their members, and the memberships shown on an account's page."""

from django.contrib import admin
from django.db.models import Count

from accounts.admin_audit import AuditedAdminMixin
from config.admin_display import state_badge
from orgs.models import Membership, Organization


class MembershipInline(admin.TabularInline):
    model = Membership
    extra = 0
    fields = ["account", "role", "created_at"]
    readonly_fields = ["created_at"]
    raw_id_fields = ["account"]
    verbose_name = "member"


class AccountMembershipInline(admin.TabularInline):
    """An account's organizations, on the account's page (assembled in sandboxes/admin.py, AccountPageAdmin)."""

    model = Membership
    fk_name = "account"
    extra = 0
    fields = ["organization", "role", "created_at"]
    readonly_fields = ["created_at"]
    verbose_name = "membership"


@admin.register(Organization)
class OrganizationAdmin(AuditedAdminMixin, admin.ModelAdmin):
    # The id is on the organization's page; "staff" in words rather than a tick.
    list_display = ["name", "slug", "kind", "members", "created_at"]
    list_filter = ["is_staff"]
    search_fields = ["id", "name", "slug"]
    prepopulated_fields = {"slug": ["name"]}
    inlines = [MembershipInline]

    def get_queryset(self, request):
        return super().get_queryset(request).annotate(member_count=Count("memberships"))

    @admin.display(description="kind", ordering="is_staff")
    def kind(self, organization):
        if organization.is_staff:
            return state_badge("staff: may act on any account", "waiting")
        return "customer"

    @admin.display(description="members", ordering="member_count")
    def members(self, organization):
        return organization.member_count


@admin.register(Membership)
class MembershipAdmin(AuditedAdminMixin, admin.ModelAdmin):
    list_display = ["account", "organization", "role", "created_at"]
    list_filter = ["role", "organization"]
    search_fields = ["account__email", "account__name", "organization__name"]
    list_select_related = ["account", "organization"]
    raw_id_fields = ["account"]
