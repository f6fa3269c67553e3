"""django-q2 tasks of webhooks: thin wrappers that take ids and call the delivery code."""

from webhooks import delivery, services


def deliver_event(event_id: str) -> bool:
    return delivery.event_deliver(event_id=event_id)


def deliver_due_events() -> int:
    """Every minute: queue the events that are due and have no task running."""
    return delivery.events_due_enqueue()


def record_expiring_snapshots() -> int:
    """Every 15 minutes: record snapshot.expiring for snapshots within WEBHOOK_EXPIRY_WARNING of their expiry."""
    return services.webhook_snapshots_expiring_record()
