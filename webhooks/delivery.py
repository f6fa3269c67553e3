"""Delivering recorded events: claim, sign, POST, record the attempt, and retry on a schedule.

An event is claimed for one attempt in the database (a conditional UPDATE
that only one worker can win) and held until `claimed_until`; two workers
never send the same attempt at once. A 2xx within WEBHOOK_TIMEOUT is
success. Anything else is tried again after the next delay of
WEBHOOK_RETRY_SCHEDULE (with jitter), then the event is marked failed. An
endpoint that has failed for WEBHOOK_DISABLE_AFTER with no success in between
is disabled, and that is recorded in the audit trail.

Short delays (up to INLINE_RETRY_LIMIT) are waited in the task that made the
attempt; longer ones, and events whose task was lost with its worker, are
picked up by the sweep (`deliver_due_events`, scheduled every minute).

Events recorded by a worker (a run's end) are tried once by that worker as
soon as its transaction commits, rather than queued behind the setups
waiting in the same queue; what that attempt does not deliver is queued.
"""

import logging
import random
import time
from datetime import timedelta

from django.conf import settings
from django.db import transaction
from django.db.models import F, Q
from django.utils import timezone
from django_q.tasks import async_task

from accounts.audit import Actor
from config.queue import broker_options
from webhooks import signing, transport
from webhooks.models import DeliveryAttempt, Endpoint, Event
from webhooks.services import endpoint_disable

logger = logging.getLogger(__name__)

INLINE_RETRY_LIMIT = 30  # seconds a delivery task waits for its next attempt instead of leaving it to the sweep
CLAIM_MARGIN = 30  # seconds a claim outlives the request's timeout
SWEEP_GRACE = 10  # seconds an event waits for its queued task before the sweep queues another
SWEEP_LIMIT = 1000
JITTER = 0.2  # each delay is spread by up to ±20%
WEBHOOKS = Actor.command("webhook delivery")


def delivery_enqueue(event_ids: list[str]) -> None:
    """Queue one delivery task per event; an event whose task cannot be queued is left to the sweep."""
    broker = broker_options()
    for event_id in event_ids:
        try:
            async_task("webhooks.tasks.deliver_event", event_id, task_name=f"webhook {event_id}", **broker)
        except Exception:  # the broker is down: the sweep delivers it later
            logger.exception("Could not queue the delivery of webhook event %s; the sweep will", event_id)
            return


def retry_delay(attempt: int) -> timedelta | None:
    """The wait after failed attempt number `attempt` (1-based), with jitter; None after the last one."""
    schedule = settings.WEBHOOK_RETRY_SCHEDULE
    if attempt > len(schedule):
        return None
    return schedule[attempt - 1] * random.uniform(1 - JITTER, 1 + JITTER)


def _claim(event_id: str) -> Event | None:
    now = timezone.now()
    claimed = (
        Event.objects.filter(pk=event_id, state=Event.State.PENDING, next_attempt_at__lte=now,
                             endpoint__is_active=True)
        .filter(Q(claimed_until__isnull=True) | Q(claimed_until__lt=now))
        .update(attempts=F("attempts") + 1,
                claimed_until=now + timedelta(seconds=settings.WEBHOOK_TIMEOUT + CLAIM_MARGIN))
    )
    if not claimed:
        return None
    return Event.objects.select_related("endpoint").get(pk=event_id)


def _attempt(event: Event) -> transport.Answer:
    endpoint = event.endpoint
    headers = signing.signed_headers(
        secrets=endpoint.signing_secrets(timezone.now()), event_id=event.pk, timestamp=int(time.time()),
        body=event.body,
    )
    return transport.post(url=endpoint.url, body=event.body, headers=headers, timeout=settings.WEBHOOK_TIMEOUT)


def _record(event: Event, answer: transport.Answer, started_at) -> timedelta | None:
    """Save the attempt and the event's new state; the delay before the next attempt, if one is due."""
    now = timezone.now()
    delay = None if answer.ok else retry_delay(event.attempts)
    if answer.ok:
        changes = {"state": Event.State.DELIVERED, "delivered_at": now, "last_error": ""}
    elif delay is None:
        changes = {"state": Event.State.FAILED, "last_error": answer.error}
    else:
        changes = {"next_attempt_at": now + delay, "last_error": answer.error}
    disable = False
    with transaction.atomic():
        DeliveryAttempt.objects.create(
            event=event, number=event.attempts, started_at=started_at, duration_ms=answer.duration_ms,
            status_code=answer.status_code, succeeded=answer.ok, error=answer.error,
            response_body=answer.body,
        )
        # Only while this attempt's claim is the event's latest.
        Event.objects.filter(pk=event.pk, attempts=event.attempts).update(claimed_until=None, **changes)
        endpoints = Endpoint.objects.filter(pk=event.endpoint_id)
        if answer.ok:
            endpoints.filter(failing_since__isnull=False).update(failing_since=None)
        else:
            endpoints.filter(failing_since__isnull=True).update(failing_since=now)
            disable = endpoints.filter(
                is_active=True, failing_since__lte=now - settings.WEBHOOK_DISABLE_AFTER
            ).exists()
    if disable:
        endpoint_disable(
            endpoint=event.endpoint, actor=WEBHOOKS,
            reason=f"every delivery failed for {settings.WEBHOOK_DISABLE_AFTER} (last: {answer.error})",
        )
    return delay


def _wait_for_retry(event_id: str) -> bool:
    """Sleep until the event's next attempt if it is pending, held by nobody and due within INLINE_RETRY_LIMIT."""
    now = timezone.now()
    found = (Event.objects.filter(pk=event_id, state=Event.State.PENDING, endpoint__is_active=True)
             .filter(Q(claimed_until__isnull=True) | Q(claimed_until__lt=now))
             .values_list("next_attempt_at", flat=True).first())
    if found is None or found <= now or (found - now).total_seconds() > INLINE_RETRY_LIMIT:
        return False
    time.sleep((found - now).total_seconds())
    return True


def event_deliver(*, event_id: str, wait_for_retries: bool = True) -> bool:
    """Deliver the event if it is due and nobody holds it; True once it is delivered.

    With `wait_for_retries`, a retry due within INLINE_RETRY_LIMIT is waited
    for here; without, one attempt at most.
    """
    while True:
        event = _claim(event_id)
        if event is None:
            if wait_for_retries and _wait_for_retry(event_id):
                continue
            return Event.objects.filter(pk=event_id, state=Event.State.DELIVERED).exists()
        started_at = timezone.now()
        answer = _attempt(event)
        delay = _record(event, answer, started_at)
        logger.info("Webhook %s %s to endpoint %s, attempt %d: %s", event.type, event.pk, event.endpoint_id,
                    event.attempts, "delivered" if answer.ok else answer.error)
        if answer.ok:
            return True
        if not wait_for_retries or delay is None or delay.total_seconds() > INLINE_RETRY_LIMIT:
            return False
        time.sleep(delay.total_seconds())


def events_deliver_after_commit(event_ids: list[str], *, here: bool) -> None:
    """Once the events' transaction has committed: queue their delivery, or (`here`, in a worker) try each
    once at once and queue those still pending (their retries, by the schedule)."""
    if here:
        try:
            event_ids = [event_id for event_id in event_ids
                         if not event_deliver(event_id=event_id, wait_for_retries=False)]
        except Exception:  # the run has ended and committed; its events go to the queue as any others
            logger.exception("Could not deliver webhook events %s at once; queueing them", event_ids)
    delivery_enqueue(event_ids)


def events_redeliver(*, events) -> int:
    """Send the events again ("send again" in the admin): pending at once, whatever their state. Returns how many."""
    ids = list(events.values_list("pk", flat=True))
    count = Event.objects.filter(pk__in=ids).update(
        state=Event.State.PENDING, next_attempt_at=timezone.now(), claimed_until=None
    )
    transaction.on_commit(lambda: delivery_enqueue(ids), robust=True)
    return count


def events_due_enqueue() -> int:
    """The sweep: queue the delivery of every due event whose task is not running (lost, or a long retry)."""
    now = timezone.now()
    due = list(
        Event.objects.filter(state=Event.State.PENDING, next_attempt_at__lte=now - timedelta(seconds=SWEEP_GRACE),
                             endpoint__is_active=True)
        .filter(Q(claimed_until__isnull=True) | Q(claimed_until__lt=now))
        .order_by("next_attempt_at")
        .values_list("pk", flat=True)[:SWEEP_LIMIT]
    )
    delivery_enqueue(due)
    return len(due)
