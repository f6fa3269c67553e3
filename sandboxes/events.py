"""The events of sandboxes, recorded through config/events.py inside the transaction of the change.

Each event's data is shaped here, from the API's own serializers, so whoever
keeps the events (webhooks) has it as the API would answer it:
run.completed / run.failed / run.canceled, sandbox.deleted, snapshot.expired,
snapshot.expiring (from a schedule), and the live sandbox's sandbox.started,
sandbox.stopped and command.completed.
"""

from collections.abc import Iterable
from datetime import datetime
from functools import partial
from uuid import UUID

from django.conf import settings
from django.db import transaction
from django.db.models import Q

from accounts.audit import Actor
from config import events
from config.events import Batch
from sandboxes.models import SetupRun, Snapshot
from sandboxes.serializers import RunSerializer, UpdateSnapshotResponseSerializer, represent

RUN_EVENTS = {"COMPLETED": "run.completed", "FAILED": "run.failed", "CANCELED": "run.canceled"}


def _run_data(run) -> dict:
    return {"run": represent(RunSerializer, run)}


def _snapshot_data(snapshot) -> dict:
    return {"snapshot": represent(UpdateSnapshotResponseSerializer, snapshot)}


def runs_ended(*, runs: Iterable, batch: Batch | None = None) -> list:
    """Record run.completed / run.failed / run.canceled for runs that just ended, as loaded after the change."""
    runs = list(runs)
    own_batch = batch is None
    batch = batch or events.batch(run.account_id for run in runs)
    for run in runs:
        batch.add(RUN_EVENTS[run.status], run.account_id, partial(_run_data, run))
    return batch.save() if own_batch else []


def run_ended(*, run_id: str, account_id: UUID) -> list:
    """Record the event of a run that just ended (the pipeline, in its final transaction).

    The worker tries it once as soon as the transaction commits: queued, it
    would wait behind every setup queued meanwhile.
    """
    batch = events.batch([account_id])
    if not batch.targets:
        return []
    runs_ended(runs=[SetupRun.objects.get(pk=run_id)], batch=batch)
    return batch.save(deliver_here=True)


def sandbox_deleted_reason(actor: Actor) -> str:
    """data.reason of sandbox.deleted: `api`, `staff` (the admin) or `cleanup` (commands and schedules)."""
    if actor.api_key is not None:
        return "api"
    if actor.is_staff_user:
        return "staff"
    return "cleanup"


def sandboxes_deleted(
    *, snapshots: Iterable, actor: Actor, expired: bool = False, runs_canceled_at: datetime | None = None,
    account_ids: Iterable[UUID] = (),
) -> list:
    """Record sandbox.deleted for each removed Snapshot row (and snapshot.expired for expired ones, on the
    expiry cleanup), and run.canceled for the runs the delete canceled at `runs_canceled_at`."""
    snapshots = list(snapshots)
    batch = events.batch([*account_ids, *(snapshot.account_id for snapshot in snapshots)])
    if not batch.targets:
        return []
    reason = sandbox_deleted_reason(actor)
    if runs_canceled_at is not None:
        canceled = SetupRun.objects.filter(account_id__in=list(batch.targets), status=SetupRun.Status.CANCELED,
                                           finished_at=runs_canceled_at)
        runs_ended(runs=canceled, batch=batch)
    for snapshot in snapshots:
        batch.add("sandbox.deleted", snapshot.account_id, lambda s=snapshot: {**_snapshot_data(s), "reason": reason})
        if expired and snapshot.expires_at <= batch.now:
            batch.add("snapshot.expired", snapshot.account_id, partial(_snapshot_data, snapshot))
    return batch.save()


def live_event(*, event_type: str, account_id: UUID, data: dict) -> list:
    """Record an event of a live sandbox: sandbox.started, sandbox.stopped, command.completed."""
    return events.record(event_type, account_id=account_id, data=data)


# --- snapshot.expiring ---------------------------------------------------------------


def _expiring_key(snapshot) -> str:
    # Keyed on the expiry: a renewal moves expires_at, and the warning fires again before the new one.
    return f"snapshot.expiring:{snapshot.snapshot_id}:{snapshot.expires_at.isoformat()}"


def snapshots_expiring_record(*, now: datetime, batch_size: int) -> int:
    """Record snapshot.expiring once per snapshot and expiry, WEBHOOK_EXPIRY_WARNING before it; returns how many.

    The producer of snapshot.expiring (registered in SandboxesConfig.ready(), run by the schedule).
    """
    with_endpoints = Q(account__webhook_endpoints__is_active=True) | Q(
        account__memberships__organization__webhook_endpoints__is_active=True
    )
    candidates = (
        Snapshot.objects.filter(expires_at__gt=now, expires_at__lte=now + settings.WEBHOOK_EXPIRY_WARNING)
        .filter(pk__in=Snapshot.objects.filter(with_endpoints).values("pk"))
        .order_by("account_id")
    )
    recorded, last = 0, None
    while True:
        page = candidates if last is None else candidates.filter(account_id__gt=last)
        found = list(page[:batch_size])
        if not found:
            return recorded
        last = found[-1].account_id
        with transaction.atomic():
            batch = events.batch(snapshot.account_id for snapshot in found)
            for snapshot in found:
                batch.add("snapshot.expiring", snapshot.account_id, partial(_snapshot_data, snapshot),
                          dedupe_key=_expiring_key(snapshot))
            recorded += len(batch.save(unrecorded_only=True))
        if len(found) < batch_size:
            return recorded
