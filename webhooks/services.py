"""Writes on webhooks: endpoints (create, disable, rotate the secret), and the schedule's snapshot.expiring.

Events are recorded through config/events.py into the outbox (webhooks/outbox.py).
"""

import logging
from collections.abc import Iterable
from datetime import datetime, timedelta

from django.db import transaction
from django.utils import timezone

from accounts.audit import Actor, audit_record
from accounts.models import Account, AuditEvent
from config import events
from orgs.models import Organization
from webhooks import signing
from webhooks.models import EVENT_TYPES, Endpoint
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


# --- snapshot.expiring ---------------------------------------------------------------


def webhook_snapshots_expiring_record(*, now: datetime | None = None, batch_size: int = 500) -> int:
    """Record snapshot.expiring once per snapshot and expiry, WEBHOOK_EXPIRY_WARNING before it; returns how many.

    The app whose snapshots they are finds them (its producer in config/events.py); the outbox records them.
    """
    return events.produce("snapshot.expiring", now=now, batch_size=batch_size)
