"""Writes on webhooks: endpoints (create, disable, rotate the secret) and recording events in the outbox.

Recording is called by the sandboxes code inside the transaction of the change
that causes the event, so an event exists exactly when its change does. One
row per endpoint that wants the event; its delivery is queued once the
transaction commits (webhooks/delivery.py), and the sweep delivers any whose
queued task was lost.
"""

import json
import logging
from collections.abc import Callable, Iterable
from datetime import datetime, timedelta
from functools import partial
from uuid import UUID

from django.conf import settings
from django.core.serializers.json import DjangoJSONEncoder
from django.db import transaction
from django.db.models import Q
from django.utils import timezone

from accounts.audit import Actor, audit_record
from accounts.models import Account, AuditEvent
from orgs.models import Organization
from webhooks import signing
from webhooks.models import EVENT_TYPES, Endpoint, Event
from webhooks.selectors import endpoint_targets
from webhooks.transport import UnsafeUrl, url_check

logger = logging.getLogger(__name__)

SECRET_ROTATION_GRACE = timedelta(hours=24)


class WebhookError(ValueError):
    """A webhook endpoint that cannot be made as asked; the message says why."""


# --- endpoints ----------------------------------------------------------------------


def event_types_parse(text: str | None) -> list[str]:
    """'run.completed,run.failed' as a list; empty or None: every type. WebhookError names an unknown type."""
    names = [name.strip() for name in (text or "").split(",") if name.strip()]
    unknown = [name for name in names if name not in EVENT_TYPES]
    if unknown:
        raise WebhookError(f"unknown event type(s) {', '.join(unknown)}; the types are {', '.join(EVENT_TYPES)}")
    return list(dict.fromkeys(names))


def endpoint_create(
    *, url: str, account: Account | None = None, organization: Organization | None = None,
    event_types: Iterable[str] = (), actor: Actor,
) -> Endpoint:
    """A new active endpoint with a new secret (endpoint.secret: show it once)."""
    if (account is None) == (organization is None):
        raise WebhookError("an endpoint belongs to one account or to one organization")
    try:
        url_check(url)
    except UnsafeUrl as exc:
        raise WebhookError(f"refused URL: {exc}") from None
    types = event_types_parse(",".join(event_types))
    endpoint = Endpoint(
        url=url, account=account, organization=organization, secret=signing.secret_new(),
        event_types="".join(f",{name}" for name in types) + ("," if types else ""),
    )
    endpoint.full_clean(exclude=["secret"])
    endpoint.save()
    logger.info("Webhook endpoint %s created for %s by %s", endpoint.pk, endpoint.owner_label, actor.label)
    return endpoint


def endpoint_disable(*, endpoint: Endpoint, actor: Actor, reason: str) -> bool:
    """Stop delivering to the endpoint; recorded in the audit trail. False if it was disabled already."""
    with transaction.atomic():
        disabled = Endpoint.objects.filter(pk=endpoint.pk, is_active=True).update(
            is_active=False, disabled_reason=reason[:300]
        )
        if disabled:
            audit_record(
                action=AuditEvent.Action.WEBHOOK_DISABLED, actor=actor, account=endpoint.account_id,
                detail=f"Webhook endpoint #{endpoint.pk} ({endpoint.url}) of {endpoint.owner_label} disabled: {reason}",
            )
    endpoint.is_active, endpoint.disabled_reason = False, reason[:300]
    return bool(disabled)


def endpoint_rotate_secret(*, endpoint: Endpoint, actor: Actor) -> str:
    """A new secret; the old one still signs deliveries (beside the new one) for 24 h. Returns the new secret."""
    endpoint.previous_secret = endpoint.secret
    endpoint.previous_secret_expires_at = timezone.now() + SECRET_ROTATION_GRACE
    endpoint.secret = signing.secret_new()
    endpoint.save(update_fields=["secret", "previous_secret", "previous_secret_expires_at"])
    logger.info("Webhook endpoint %s: secret rotated by %s", endpoint.pk, actor.label)
    return endpoint.secret


# --- recording events (the outbox) ------------------------------------------------------


def _deliver_after_commit(event_ids: list[str], *, here: bool) -> None:
    from webhooks.delivery import events_deliver_after_commit

    events_deliver_after_commit(event_ids, here=here)


class EventOutbox:
    """The events of one change, for the endpoints that want them; `save()` inserts them all at once.

    Built for a set of accounts with one query (their own endpoints and their
    organizations'), so that a change touching no endpoint costs that query
    alone, and a batch of many accounts costs two.
    """

    def __init__(self, account_ids: Iterable[UUID]):
        self.now = timezone.now()
        self.events: list[Event] = []
        self.targets: dict[UUID, list[tuple[int, str]]] = endpoint_targets(list(dict.fromkeys(account_ids)))

    def wants(self, event_type: str, account_id: UUID) -> bool:
        return any(not types or f",{event_type}," in types for _id, types in self.targets.get(account_id, ()))

    def add(self, event_type: str, account_id: UUID, data: dict | Callable[[], dict], *, dedupe_key: str = "") -> None:
        """Record the event for each endpoint of the account that wants it; `data` may be a function, called only then."""
        if not self.wants(event_type, account_id):
            return
        data = data() if callable(data) else data
        body = json.dumps(
            {"type": event_type, "timestamp": self.now.isoformat(), "data": {"account_id": str(account_id), **data}},
            cls=DjangoJSONEncoder,
        )
        for endpoint_id, types in self.targets[account_id]:
            if not types or f",{event_type}," in types:
                self.events.append(Event(endpoint_id=endpoint_id, type=event_type, account_id=account_id, body=body,
                                         dedupe_key=dedupe_key, next_attempt_at=self.now, created_at=self.now))

    def save(self, *, ignore_conflicts: bool = False, deliver_here: bool = False) -> list[Event]:
        """Insert the events; once the transaction commits, queue their delivery (or, `deliver_here`, in a
        worker: try each once first)."""
        if not self.events:
            return []
        Event.objects.bulk_create(self.events, ignore_conflicts=ignore_conflicts)
        # robust: a failure here is logged and never undoes or fails the change, which has committed.
        transaction.on_commit(partial(_deliver_after_commit, [event.pk for event in self.events], here=deliver_here),
                              robust=True)
        return self.events


def _run_data(run) -> dict:
    from sandboxes.serializers import RunSerializer

    return {"run": RunSerializer(run).data}


def _snapshot_data(snapshot) -> dict:
    from sandboxes.serializers import UpdateSnapshotResponseSerializer

    return {"snapshot": UpdateSnapshotResponseSerializer(snapshot).data}


RUN_EVENTS = {"COMPLETED": "run.completed", "FAILED": "run.failed", "CANCELED": "run.canceled"}


def webhook_runs_ended(*, runs: Iterable, outbox: EventOutbox | None = None) -> list[Event]:
    """Record run.completed / run.failed / run.canceled for runs that just ended, as loaded after the change."""
    runs = list(runs)
    own_outbox = outbox is None
    outbox = outbox or EventOutbox(run.account_id for run in runs)
    for run in runs:
        outbox.add(RUN_EVENTS[run.status], run.account_id, partial(_run_data, run))
    return outbox.save() if own_outbox else outbox.events


def webhook_run_ended(*, run_id: str, account_id: UUID) -> list[Event]:
    """Record the event of a run that just ended (the pipeline, in its final transaction).

    The worker tries it once as soon as the transaction commits: queued, it
    would wait behind every setup queued meanwhile.
    """
    from sandboxes.models import SetupRun

    outbox = EventOutbox([account_id])
    if not outbox.targets:
        return []
    webhook_runs_ended(runs=[SetupRun.objects.get(pk=run_id)], outbox=outbox)
    return outbox.save(deliver_here=True)


def sandbox_deleted_reason(actor: Actor) -> str:
    """data.reason of sandbox.deleted: `api`, `staff` (the admin) or `cleanup` (commands and schedules)."""
    if actor.api_key is not None:
        return "api"
    if actor.is_staff_user:
        return "staff"
    return "cleanup"


def webhook_sandboxes_deleted(
    *, snapshots: Iterable, actor: Actor, expired: bool = False, runs_canceled_at: datetime | None = None,
    account_ids: Iterable[UUID] = (),
) -> list[Event]:
    """Record sandbox.deleted for each removed Snapshot row (and snapshot.expired for expired ones, on the
    expiry cleanup), and run.canceled for the runs the delete canceled at `runs_canceled_at`."""
    from sandboxes.models import SetupRun

    snapshots = list(snapshots)
    outbox = EventOutbox([*account_ids, *(snapshot.account_id for snapshot in snapshots)])
    if not outbox.targets:
        return []
    reason = sandbox_deleted_reason(actor)
    if runs_canceled_at is not None:
        canceled = SetupRun.objects.filter(account_id__in=list(outbox.targets), status=SetupRun.Status.CANCELED,
                                           finished_at=runs_canceled_at)
        webhook_runs_ended(runs=canceled, outbox=outbox)
    for snapshot in snapshots:
        outbox.add("sandbox.deleted", snapshot.account_id, lambda s=snapshot: {**_snapshot_data(s), "reason": reason})
        if expired and snapshot.expires_at <= outbox.now:
            outbox.add("snapshot.expired", snapshot.account_id, partial(_snapshot_data, snapshot))
    return outbox.save()


def webhook_live_event(*, event_type: str, account_id: UUID, data: dict) -> list[Event]:
    """Record an event of a live sandbox: sandbox.started, sandbox.stopped, command.completed."""
    outbox = EventOutbox([account_id])
    if not outbox.targets:
        return []
    outbox.add(event_type, account_id, data)
    return outbox.save()


# --- snapshot.expiring ---------------------------------------------------------------


def _expiring_key(snapshot) -> str:
    # Keyed on the expiry: a renewal moves expires_at, and the warning fires again before the new one.
    return f"snapshot.expiring:{snapshot.snapshot_id}:{snapshot.expires_at.isoformat()}"


def webhook_snapshots_expiring_record(*, now: datetime | None = None, batch_size: int = 500) -> int:
    """Record snapshot.expiring once per snapshot and expiry, WEBHOOK_EXPIRY_WARNING before it; returns how many."""
    from sandboxes.models import Snapshot

    now = now or timezone.now()
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
        batch = list(page[:batch_size])
        if not batch:
            return recorded
        last = batch[-1].account_id
        keys = {_expiring_key(snapshot): snapshot for snapshot in batch}
        done = set(Event.objects.filter(dedupe_key__in=list(keys)).values_list("endpoint_id", "dedupe_key"))
        with transaction.atomic():
            outbox = EventOutbox(snapshot.account_id for snapshot in batch)
            for key, snapshot in keys.items():
                outbox.add("snapshot.expiring", snapshot.account_id, partial(_snapshot_data, snapshot), dedupe_key=key)
            outbox.events = [event for event in outbox.events if (event.endpoint_id, event.dedupe_key) not in done]
            recorded += len(outbox.save(ignore_conflicts=True))
        if len(batch) < batch_size:
            return recorded
