"""Admin pages that only show rows: what they list changes through actions and services."""


class ReadOnlyAdminMixin:
    """No add, change or delete form: a plain edit would skip the service that records and
    cleans up (the repository and snapshot of a sandbox, the audit trail)."""

    def has_add_permission(self, request, obj=None):
        return False

    def has_change_permission(self, request, obj=None):
        return False

    def has_delete_permission(self, request, obj=None):
        return False
