"""The webhooks' django-q2 schedules: the delivery sweep (every minute) and the expiry warnings (every 15 minutes)."""

import importlib
from datetime import timedelta

import pytest
from django.apps import apps
from django.utils import timezone
from django_q.models import Schedule

from tests.sandboxes.seeded_sandboxes import seed_sandbox
from webhooks import tasks
from webhooks.models import Event

pytestmark = pytest.mark.django_db

migration = importlib.import_module("webhooks.migrations.0002_schedule_delivery_sweep_and_expiry_warnings")
EXPECTED = {
    migration.DELIVERY_NAME: ("webhooks.tasks.deliver_due_events", Schedule.MINUTES, 1, -1),
    migration.EXPIRING_NAME: ("webhooks.tasks.record_expiring_snapshots", Schedule.MINUTES, 15, -1),
}


def schedules() -> dict:
    return {s.name: (s.func, s.schedule_type, s.minutes, s.repeats)
            for s in Schedule.objects.filter(name__in=migration.SCHEDULES)}


def test_the_migrations_schedule_the_delivery_sweep_and_the_expiry_warnings():
    assert schedules() == EXPECTED


def test_creating_the_schedules_again_keeps_one_of_each_and_their_next_run():
    next_runs = dict(Schedule.objects.filter(name__in=migration.SCHEDULES).values_list("name", "next_run"))
    migration.create_schedules(apps, None)
    migration.create_schedules(apps, None)
    assert schedules() == EXPECTED
    assert dict(Schedule.objects.filter(name__in=migration.SCHEDULES).values_list("name", "next_run")) == next_runs


def test_a_new_schedule_first_runs_one_interval_after_it_is_made():
    Schedule.objects.filter(name__in=migration.SCHEDULES).delete()
    migration.create_schedules(apps, None)
    now = timezone.now()
    for name, (_func, _type, minutes, _repeats) in EXPECTED.items():
        next_run = Schedule.objects.get(name=name).next_run
        assert timedelta(minutes=minutes) - timedelta(seconds=30) < next_run - now <= timedelta(minutes=minutes)


def test_the_scheduled_tasks_do_their_work(people, make_endpoint, receiver, sync_queue):
    make_endpoint(account=people.alice.account)
    seed_sandbox(people.alice.account, expires_in=timedelta(hours=1))

    assert tasks.record_expiring_snapshots() == 1
    Event.objects.update(next_attempt_at=timezone.now() - timedelta(minutes=1))
    assert tasks.deliver_due_events() == 1

    [delivered] = receiver.deliveries
    assert delivered.verified and delivered.event["type"] == "snapshot.expiring"
