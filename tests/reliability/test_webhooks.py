"""Webhooks under faults and load, delivered by real qcluster processes (Redis broker, PostgreSQL).

- A worker killed between recording an event and delivering it: the
  receiver hangs on the first attempt, the qcluster is killed -9 while it
  waits (the attempt is never recorded, the event stays claimed), and a new
  qcluster's sweep (the schedule the migrations create) delivers it once the
  claim has lapsed: same webhook-id, verified, marked delivered.
- 200 setups of 200 accounts of one organization, two qcluster processes:
  each run.completed reaches the organization's endpoint exactly once
  (no event lost, none delivered twice to a receiver that answered 200).
"""

import importlib
import time
from concurrent.futures import ThreadPoolExecutor

import pytest
from django.apps import apps as django_apps
from django.utils import timezone
from django_q.models import Schedule

from accounts.audit import Actor
from accounts.services import account_create, api_key_create
from orgs.models import Membership
from orgs.services import membership_set
from sandboxes.models import SetupRun
from tests.conftest import requires_postgres
from tests.processes import qcluster_command
from tests.reliability.test_worker_death import SCHEDULER_PERIOD, wait_for
from tests.webhooks.receiver import HANG
from webhooks.delivery import CLAIM_MARGIN
from webhooks.models import DeliveryAttempt, Event

pytestmark = [requires_postgres, pytest.mark.postgres, pytest.mark.reliability]

SCHEDULES = importlib.import_module("webhooks.migrations.0002_schedule_delivery_sweep_and_expiry_warnings")
WEBHOOK_TIMEOUT = 2
WEBHOOK_ENVIRONMENT = {"WEBHOOK_ALLOW_HTTP": "1", "WEBHOOK_ALLOW_PRIVATE": "1",
                       "WEBHOOK_TIMEOUT": str(WEBHOOK_TIMEOUT)}
SETUPS = 200


def test_an_event_whose_worker_is_killed_before_delivering_is_delivered_after_restart(
    start_service, people, make_endpoint, receiver
):
    endpoint = make_endpoint(account=people.alice.account, event_types=["run.completed"])
    receiver.answers = [HANG]
    service = start_service(**WEBHOOK_ENVIRONMENT)
    [first_cluster] = [process for process in service.processes if process.name == "qcluster"]

    status, body = service.call("POST", "/api/sandboxes/setup", key=people.alice.key)
    assert status == 200, body
    receiver.wait_for(1, timeout=60)  # the worker is sending it, and the receiver does not answer

    first_cluster.kill()

    [event] = Event.objects.filter(endpoint=endpoint)
    assert (event.state, event.attempts) == (Event.State.PENDING, 1)
    assert event.claimed_until is not None and not DeliveryAttempt.objects.exists(), "the worker died mid-attempt"
    # The migrations' schedule, due now (made again: an earlier test that
    # flushed the database took the migrations' rows with it).
    SCHEDULES.create_schedules(django_apps, schema_editor=None)
    assert Schedule.objects.filter(name=SCHEDULES.DELIVERY_NAME).update(next_run=timezone.now()) == 1
    service.start("qcluster-2", qcluster_command())

    # The first sweep may come before the claim lapses; the next is one interval
    # (a minute) later, seen by the scheduler within its period. A busy machine
    # starts qcluster slowly: a minute of slack on top.
    sweep_interval = SCHEDULES.SCHEDULES[SCHEDULES.DELIVERY_NAME]["minutes"] * 60
    wait_for(service, "the sweep delivering the event",
             WEBHOOK_TIMEOUT + CLAIM_MARGIN + sweep_interval + 2 * SCHEDULER_PERIOD + 60,
             lambda: Event.objects.get(pk=event.pk).state == Event.State.DELIVERED)
    first, second = receiver.deliveries
    assert first.webhook_id == second.webhook_id == event.pk
    assert second.verified, second.error
    assert first.body == second.body
    [attempt] = DeliveryAttempt.objects.filter(event=event)
    assert (attempt.number, attempt.status_code) == (2, 200)


def test_two_hundred_setups_deliver_each_run_completed_exactly_once(
    start_service, people, make_endpoint, receiver
):
    keys = []
    for number in range(SETUPS):
        account = account_create(name=f"Load {number}", email=f"load{number}@example.com")
        membership_set(organization=people.globex, account=account, role=Membership.Role.MEMBER,
                       actor=Actor.command("tests"))
        keys.append(api_key_create(actor=Actor.command("tests"), account=account, name="load")[1])
    make_endpoint(organization=people.globex, event_types=["run.completed"])
    service = start_service(threads=8, qcluster=False, QUEUE_WORKERS="1", **WEBHOOK_ENVIRONMENT)
    service.start("qcluster-1", qcluster_command())
    service.start("qcluster-2", qcluster_command())

    with ThreadPoolExecutor(max_workers=8) as pool:
        answers = list(pool.map(lambda key: service.call("POST", "/api/sandboxes/setup", key=key, timeout=60), keys))
    assert [status for status, _ in answers] == [200] * SETUPS, service.report(str(answers[:3]))
    run_ids = {body["runId"] for _, body in answers}

    wait_for(service, "every run finishing", 600,
             lambda: not SetupRun.objects.filter(pk__in=run_ids, status__in=SetupRun.ACTIVE_STATUSES).exists())
    assert SetupRun.objects.filter(pk__in=run_ids, status=SetupRun.Status.COMPLETED).count() == SETUPS
    wait_for(service, "every event delivered", 120,
             lambda: not Event.objects.exclude(state=Event.State.DELIVERED).exists() and len(receiver.deliveries))
    time.sleep(2)  # anything sent twice would arrive now

    events = dict(Event.objects.values_list("pk", "body"))
    assert len(events) == SETUPS
    received = [delivery.webhook_id for delivery in receiver.deliveries]
    assert sorted(received) == sorted(events), "each event exactly once"
    assert all(delivery.verified for delivery in receiver.deliveries)
    assert {delivery.event["data"]["run"]["id"] for delivery in receiver.deliveries} == run_ids
    assert not DeliveryAttempt.objects.exclude(status_code=200).exists()
