"""Fixtures of the webhook tests: a receiver on 127.0.0.1 and an endpoint pointing at it."""

import pytest

from tests.reliability.conftest import start_service  # noqa: F401 (the service for real, for test_worker_delivery)
from tests.webhooks.receiver import Receiver, local_webhooks, make_endpoint, receiver  # noqa: F401 (fixtures)
from webhooks.models import Event
from webhooks.tasks import deliver_event


@pytest.fixture
def deliver_pending():
    """Deliver every pending event the way a django-q2 worker would (the task function itself)."""

    def deliver() -> list[Event]:
        ids = list(Event.objects.filter(state=Event.State.PENDING).order_by("created_at").values_list("pk", flat=True))
        for event_id in ids:
            deliver_event(event_id)
        return list(Event.objects.filter(pk__in=ids))

    return deliver


@pytest.fixture
def sync_queue(monkeypatch):
    """django-q2 runs each queued task at once, in the test (its `sync` option; read once at import)."""
    from django_q.conf import Conf

    monkeypatch.setattr(Conf, "SYNC", True)
