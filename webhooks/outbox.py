"""The events' outbox: webhooks' recorder of the events other apps record (config/events.py).

Recording is called inside the transaction of the change that causes the
event, so an event exists exactly when its change does. One row per endpoint
that wants the event; its delivery is queued once the transaction commits
(webhooks/delivery.py), and the sweep delivers any whose queued task was lost.
"""

import json
from collections.abc import Callable, Iterable
from functools import partial
from uuid import UUID

from django.core.serializers.json import DjangoJSONEncoder
from django.db import transaction
from django.utils import timezone

from webhooks.models import Event
from webhooks.selectors import endpoint_targets


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

    def save(self, *, deliver_here: bool = False, unrecorded_only: bool = False) -> list[Event]:
        """Insert the events; once the transaction commits, queue their delivery (or, `deliver_here`, in a
        worker: try each once first). `unrecorded_only`: leave out the events whose endpoint has one with the
        same dedupe_key already (and ignore a conflict with one recorded meanwhile)."""
        if unrecorded_only and self.events:
            keys = list(dict.fromkeys(event.dedupe_key for event in self.events))
            done = set(Event.objects.filter(dedupe_key__in=keys).values_list("endpoint_id", "dedupe_key"))
            self.events = [event for event in self.events if (event.endpoint_id, event.dedupe_key) not in done]
        if not self.events:
            return []
        Event.objects.bulk_create(self.events, ignore_conflicts=unrecorded_only)
        # robust: a failure here is logged and never undoes or fails the change, which has committed.
        transaction.on_commit(partial(_deliver_after_commit, [event.pk for event in self.events], here=deliver_here),
                              robust=True)
        return self.events


class OutboxRecorder:
    """The recorder webhooks registers in config/events.py (WebhooksConfig.ready())."""

    def batch(self, account_ids: Iterable[UUID]) -> EventOutbox:
        return EventOutbox(account_ids)
