"""Admin pages whose forms change who may do what: each save and delete goes to the audit trail.

Django's admin saves a form's row itself (save_model, save_formset for the
inlines, delete_model, delete_queryset for "Delete selected"); this mixin
wraps those hooks so that each change of a model listed in
accounts/access_changes.py is recorded with the staff user who made it, in the
transaction of the change (the admin's own where it opens one; "Delete
selected" does not, so each hook opens its own). Add it first among a
ModelAdmin's bases.
"""

from django.db import transaction

from accounts.access_changes import (
    access_changes_record,
    access_deletes_record,
    access_state,
    access_states,
    is_tracked,
)
from accounts.audit import Actor


class AuditedAdminMixin:
    @transaction.atomic
    def save_model(self, request, obj, form, change):
        before = access_state(obj) if change else None
        super().save_model(request, obj, form, change)
        access_changes_record(actor=Actor.from_admin_request(request), changes=[(before, obj)])

    @transaction.atomic
    def delete_model(self, request, obj):
        access_deletes_record(actor=Actor.from_admin_request(request), rows=[obj])
        super().delete_model(request, obj)

    @transaction.atomic
    def delete_queryset(self, request, queryset):
        access_deletes_record(actor=Actor.from_admin_request(request), rows=list(queryset))
        super().delete_queryset(request, queryset)

    @transaction.atomic
    def save_formset(self, request, form, formset, change):
        if not is_tracked(formset.model):
            super().save_formset(request, form, formset, change)
            return
        actor = Actor.from_admin_request(request)
        before = access_states(formset.model, [inline.instance.pk for inline in formset.initial_forms])
        # Recorded before they go: a deleted row has no primary key left to name it by.
        deleted = [before[inline.instance.pk] for inline in formset.deleted_forms if inline.instance.pk in before]
        access_deletes_record(actor=actor, rows=deleted)
        super().save_formset(request, form, formset, change)
        access_changes_record(
            actor=actor,
            changes=[(None, row) for row in formset.new_objects]
            + [(before.get(row.pk), row) for row, _fields in formset.changed_objects],
        )
