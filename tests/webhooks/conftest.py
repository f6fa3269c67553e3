"""Fixtures of the webhook tests: a receiver on 127.0.0.1 and an endpoint pointing at it."""

from datetime import timedelta

import pytest

from accounts.audit import Actor
from tests.reliability.conftest import start_service  # noqa: F401 (the service for real, for test_worker_delivery)
from tests.webhooks.receiver import Receiver
from webhooks.models import Event
from webhooks.services import endpoint_create
from webhooks.tasks import deliver_event


@pytest.fixture
def local_webhooks(settings):
    """Plain http to 127.0.0.1, as the test receiver needs; production refuses both."""
    settings.WEBHOOK_ALLOW_HTTP = True
    settings.WEBHOOK_ALLOW_PRIVATE = True
    settings.WEBHOOK_TIMEOUT = 2
    settings.WEBHOOK_RETRY_SCHEDULE = [timedelta(seconds=0.2)] * 2
    return settings


@pytest.fixture
def receiver():
    started = Receiver().start()
    yield started
    started.stop()


@pytest.fixture
def make_endpoint(local_webhooks, receiver):
    def make(*, account=None, organization=None, event_types=(), url=None):
        endpoint = endpoint_create(url=url or receiver.url, account=account, organization=organization,
                                   event_types=event_types, actor=Actor.command("tests"))
        receiver.secret = endpoint.secret
        return endpoint

    return make


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
