"""The scheduled cleanup (hourly) and reconcile (weekly): their django-q2 schedules and their tasks.

What is tested:
- the migrations create both schedules, and creating them again (the data
  migration run twice, or over a schedule an operator changed) leaves one of
  each, with the right function and interval;
- the tasks do the work through the services and leave their results in the
  audit trail.
"""

import importlib

import pytest
from django.apps import apps
from django_q.models import Schedule

from accounts.models import AuditEvent
from sandboxes import tasks
from sandboxes.models import Snapshot
from tests.sandboxes.seeded_sandboxes import (
    FRESH,
    make_repository,
    repository_path,
    sandbox_is_gone,
    seed_sandbox,
)

pytestmark = pytest.mark.django_db

migration = importlib.import_module("sandboxes.migrations.0004_schedule_cleanup_and_reconcile")


def schedules() -> dict[str, tuple[str, str, int]]:
    return {
        schedule.name: (schedule.func, schedule.schedule_type, schedule.repeats)
        for schedule in Schedule.objects.filter(name__in=migration.SCHEDULES)
    }


EXPECTED = {
    migration.CLEANUP_NAME: ("sandboxes.tasks.cleanup_expired_sandboxes", Schedule.HOURLY, -1),
    migration.RECONCILE_NAME: ("sandboxes.tasks.reconcile_sandboxes", Schedule.WEEKLY, -1),
}


def test_the_migrations_schedule_the_hourly_cleanup_and_the_weekly_reconcile():
    assert schedules() == EXPECTED


def test_creating_the_schedules_again_keeps_one_of_each():
    migration.create_schedules(apps, None)
    migration.create_schedules(apps, None)

    assert schedules() == EXPECTED
    assert Schedule.objects.filter(name__in=migration.SCHEDULES).count() == 2


def test_creating_the_schedules_again_repairs_a_changed_one():
    Schedule.objects.filter(name=migration.CLEANUP_NAME).update(func="sandboxes.tasks.gone", schedule_type="D")

    migration.create_schedules(apps, None)

    assert schedules() == EXPECTED


def test_the_scheduled_functions_exist():
    for func, _type, _repeats in EXPECTED.values():
        module, name = func.rsplit(".", 1)
        assert callable(getattr(importlib.import_module(module), name))


def test_the_hourly_task_deletes_the_expired_sandboxes_and_records_it(people):
    expired = seed_sandbox(people.alice.account)
    fresh = seed_sandbox(people.bob.account, expires_in=FRESH)

    summary = tasks.cleanup_expired_sandboxes()

    assert sandbox_is_gone(expired)
    assert Snapshot.objects.filter(pk=fresh.pk).exists()
    assert summary.startswith("Cleanup of sandboxes expired: selected 1, deleted 1, failed 0")
    event = AuditEvent.objects.get(action=AuditEvent.Action.CLEANUP)
    assert (event.actor, event.detail) == ("scheduled cleanup of expired sandboxes", summary)
    assert AuditEvent.objects.filter(
        action=AuditEvent.Action.SANDBOX_DELETED, account_ref=people.alice.account.pk,
        actor="scheduled cleanup of expired sandboxes",
    ).exists()


def test_the_weekly_task_fixes_what_is_out_of_step_and_records_it(people):
    make_repository(people.alice.account)  # no snapshot: an orphan

    summary = tasks.reconcile_sandboxes()

    assert not repository_path(people.alice.account).exists()
    assert "1 orphan repositories" in summary and "fixed 1, failed 0" in summary
    events = AuditEvent.objects.filter(actor="scheduled reconcile")
    assert events.filter(action=AuditEvent.Action.RECONCILE, detail=summary).exists()
    assert events.filter(action=AuditEvent.Action.RECONCILE_FIXED, account_ref=people.alice.account.pk,
                         outcome=AuditEvent.Outcome.SUCCESS).exists()
