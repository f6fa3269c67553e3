"""The audit trail of who may do what: accounts' active flag, admin users' flags, organizations, memberships.

A change to one of these decides who may act on which account (orgs/access.py)
or who may use the admin, so it is recorded as sandbox actions are: an
AuditEvent with who acted, what changed, and each changed value before → after,
written in the transaction of the change.

Two kinds of callers:
- the services (orgs/services.py), used by the management commands;
- the admin's save and delete hooks (accounts/admin_audit.py), where Django's
  forms save the rows themselves: `access_state` reads the row as stored
  before the form saves it, and `access_change_record` compares.

Organizations and memberships are orgs' models: orgs adds them to TRACKED
with `track` from its AppConfig.ready() (orgs/access_changes.py).

Only the fields listed in TRACKED are compared; the rows deleted with an
organization or an account (their memberships) are recorded one by one, so
each account's trail shows the memberships it lost.
"""

from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, replace

from django.contrib.auth.models import User
from django.db import models

from accounts.audit import Actor, audit_event, audit_record_many
from accounts.models import Account, AuditEvent

Action = AuditEvent.Action
NOT_SET = "—"


@dataclass(frozen=True)
class Tracked:
    """What is recorded of one model: its fields (name → label), its actions, and how an event names the row."""

    fields: dict[str, str]
    changed: str
    describe: Callable[[models.Model], str]
    created: str | None = None  # None: creating one is not recorded here
    deleted: str | None = None
    account_id: Callable[[models.Model], object] = lambda row: None
    select_related: tuple[str, ...] = ()
    # Rows deleted with this one (model, the field that points at this one), recorded each.
    cascade: tuple[type[models.Model], str] | None = None


TRACKED: dict[type[models.Model], Tracked] = {
    Account: Tracked(
        fields={"is_active": "active"},
        changed=Action.ACCOUNT_ACTIVE_CHANGED,
        describe=lambda account: f"Account {account.email}",
        account_id=lambda account: account.pk,
    ),
    User: Tracked(
        fields={"is_active": "active", "is_staff": "staff", "is_superuser": "superuser"},
        created=Action.USER_CREATED,
        changed=Action.USER_CHANGED,
        deleted=Action.USER_DELETED,
        describe=lambda user: f"Admin user {user.get_username()}",
    ),
}


def track(model: type[models.Model], tracked: Tracked) -> None:
    """Record the changes of a model of an app above accounts (from its AppConfig.ready())."""
    TRACKED[model] = tracked


def track_deleted_with(model: type[models.Model], *, related: type[models.Model], field: str) -> None:
    """The rows of `related` whose `field` points at a deleted `model` row are recorded each, deleted with it."""
    TRACKED[model] = replace(TRACKED[model], cascade=(related, field))


def is_tracked(model: type[models.Model]) -> bool:
    return model in TRACKED


def access_state(row: models.Model) -> models.Model | None:
    """The row as the database holds it now (before a form saves its changes), or None if it is new."""
    if row.pk is None or row._state.adding or not is_tracked(type(row)):
        return None
    return access_states(type(row), [row.pk]).get(row.pk)


def access_states(model: type[models.Model], pks: Iterable) -> dict:
    """Many rows of one model as stored, by primary key, in one query."""
    pks = [pk for pk in pks if pk is not None]
    if not pks:
        return {}
    return model._default_manager.select_related(*TRACKED[model].select_related).in_bulk(pks)


def _shown(row: models.Model, name: str) -> str:
    value = getattr(row, name)
    if isinstance(value, bool):
        return "yes" if value else "no"
    return NOT_SET if value in (None, "") else str(value)


def _differences(tracked: Tracked, before: models.Model, after: models.Model) -> list[str]:
    changed = []
    for name, label in tracked.fields.items():
        attname = type(after)._meta.get_field(name).attname  # compare ids, not related rows
        if getattr(before, attname) != getattr(after, attname):
            changed.append(f"{label}: {_shown(before, name)} → {_shown(after, name)}")
    return changed


def _values(tracked: Tracked, row: models.Model) -> str:
    return ", ".join(f"{label} {_shown(row, name)}" for name, label in tracked.fields.items())


def access_change_event(*, actor: Actor, before: models.Model | None, after: models.Model) -> AuditEvent | None:
    """The unsaved event of `after` as saved, compared with `before` as stored; None where nothing tracked changed."""
    tracked = TRACKED.get(type(after))
    if tracked is None:
        return None
    if before is None:
        if tracked.created is None:
            return None
        action, detail = tracked.created, f"{tracked.describe(after)}: {_values(tracked, after)}"
    else:
        differences = _differences(tracked, before, after)
        if not differences:
            return None
        action, detail = tracked.changed, f"{tracked.describe(after)}: {'; '.join(differences)}"
    return audit_event(action=action, actor=actor, account=tracked.account_id(after), detail=detail)


def access_change_record(*, actor: Actor, before: models.Model | None, after: models.Model) -> None:
    """Record what a save changed of a tracked row (nothing if no tracked field changed)."""
    event = access_change_event(actor=actor, before=before, after=after)
    if event is not None:
        audit_record_many([event])


def access_changes_record(*, actor: Actor, changes: Iterable[tuple[models.Model | None, models.Model]]) -> None:
    """Record many saves, (before, after) each, in one query."""
    events = [access_change_event(actor=actor, before=before, after=after) for before, after in changes]
    audit_record_many(event for event in events if event is not None)


def access_deletes_record(*, actor: Actor, rows: Sequence[models.Model]) -> None:
    """Record the deletion of tracked rows of one model, and of the rows deleted with them.

    Called before the rows are deleted, in the same transaction.
    """
    if not rows:
        return
    model = type(rows[0])
    tracked = TRACKED.get(model)
    if tracked is None:
        return
    events = []
    if tracked.cascade is not None:
        related, field = tracked.cascade
        with_them = related._default_manager.select_related(*TRACKED[related].select_related).filter(
            **{f"{field}__in": [row.pk for row in rows]}
        )
        reason = f"({model._meta.verbose_name} deleted)"
        events += [_deletion_event(actor, TRACKED[related], row, reason) for row in with_them]
    if tracked.deleted is not None:
        events += [_deletion_event(actor, tracked, row) for row in rows]
    audit_record_many(events)


def _deletion_event(actor: Actor, tracked: Tracked, row: models.Model, reason: str = "") -> AuditEvent:
    detail = f"{tracked.describe(row)}: {_values(tracked, row)}" + (f" {reason}" if reason else "")
    return audit_event(action=tracked.deleted, actor=actor, account=tracked.account_id(row), detail=detail)
