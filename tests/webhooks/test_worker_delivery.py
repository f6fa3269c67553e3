"""Webhooks delivered by a real django-q2 cluster (Redis broker, PostgreSQL) after setups made over HTTP.

- run.completed reaches the receiver within 2 s of the run's end (the median
  of five setups), signed so that the standardwebhooks package verifies it;
- a receiver that answers 500 twice gets the event three times with one
  webhook-id, and the event is marked delivered.

Needs PostgreSQL (DATABASE_URL=postgres://…) and Redis on 127.0.0.1:6379.
"""

import statistics
import time
from datetime import datetime

import pytest

from tests.conftest import requires_postgres
from webhooks.models import Event

pytestmark = [requires_postgres, pytest.mark.postgres]

WEBHOOK_ENVIRONMENT = {"WEBHOOK_ALLOW_HTTP": "1", "WEBHOOK_ALLOW_PRIVATE": "1", "QUEUE_WORKERS": "2"}


def finished_epoch(run: dict) -> float:
    return datetime.fromisoformat(run["finishedAt"].replace("Z", "+00:00")).timestamp()


def test_run_completed_is_delivered_within_two_seconds_of_the_runs_end(start_service, people, make_endpoint,
                                                                      receiver):
    service = start_service(**WEBHOOK_ENVIRONMENT)
    persons = [people.alice, people.bob, people.carol, people.dave, people.mallory]
    secrets = {person.account.pk: make_endpoint(account=person.account).secret for person in persons}

    latencies = []
    for number, person in enumerate(persons, start=1):
        receiver.secret = secrets[person.account.pk]
        status, body = service.call("POST", "/api/sandboxes/setup", key=person.key)
        assert status == 200, service.report(f"setup answered {status} {body}")
        run = service.wait_for_run(person.key, body["runId"])
        assert run["status"] == "COMPLETED", service.report(str(run))
        [delivery] = receiver.wait_for(number, timeout=15)[number - 1:]
        assert delivery.verified, delivery.error
        assert delivery.event["type"] == "run.completed"
        assert delivery.event["data"]["run"]["id"] == run["id"]
        latencies.append(delivery.received_epoch - finished_epoch(run))

    assert statistics.median(latencies) < 2, latencies
    assert set(Event.objects.values_list("state", flat=True)) == {Event.State.DELIVERED}


def test_a_receiver_that_fails_twice_gets_the_event_three_times_with_one_id(start_service, people, make_endpoint,
                                                                           receiver):
    service = start_service(WEBHOOK_RETRY_SCHEDULE="1s 1s 1h", **WEBHOOK_ENVIRONMENT)
    make_endpoint(account=people.alice.account, event_types=["run.completed"])
    receiver.answers = [500, 500]

    status, body = service.call("POST", "/api/sandboxes/setup", key=people.alice.key)
    assert status == 200, body
    deliveries = receiver.wait_for(3, timeout=30)

    assert [d.verified for d in deliveries] == [True, True, True]
    [event] = Event.objects.all()
    assert {d.webhook_id for d in deliveries} == {event.pk}
    deadline = time.monotonic() + 10
    while event.state != Event.State.DELIVERED and time.monotonic() < deadline:
        time.sleep(0.1)
        event.refresh_from_db()
    assert (event.state, event.attempts) == (Event.State.DELIVERED, 3)
    assert [a.status_code for a in event.delivery_attempts.all()] == [500, 500, 200]
    time.sleep(1.5)
    assert len(receiver.deliveries) == 3, "nothing more after the 200"
