"""The scheduled cleanup (hourly) and reconcile (weekly): their django-q2 schedules and their tasks.

What is tested:
- the migrations create both schedules, and creating them again (the data
  migration run twice, or over a schedule an operator changed) leaves one of
  each, with the right function and interval;
- the tasks do the work through the services and leave their results in the
  audit trail;
- on the queue's pages, tasks are named after what they do ("sweep stale
  runs", "setup-sandbox run_…"), and the every-minute sweep leaves no
  successful task behind (what it failed is in the audit trail; a sweep that
  fails is kept).
"""

import importlib
from datetime import timedelta

import pytest
from django.apps import apps
from django.utils import timezone
from django_q.brokers import get_broker
from django_q.conf import Conf
from django_q.models import Schedule, Task
from django_q.monitor import save_task
from django_q.scheduler import scheduler
from django_q.signals import pre_execute
from django_q.signing import SignedPackage

from accounts.audit import Actor
from accounts.models import AuditEvent
from sandboxes import tasks
from sandboxes.models import SetupRun, Snapshot
from sandboxes.services import setup_run_start
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
    events = AuditEvent.objects.filter(action=AuditEvent.Action.RECONCILE, actor="scheduled reconcile")
    assert events.filter(detail=summary).exists()
    assert events.filter(account_ref=people.alice.account.pk, outcome=AuditEvent.Outcome.SUCCESS).exists()


# --- what the scheduled tasks leave on the queue's pages --------------------------------------


def run_schedules_as_a_cluster_would(monkeypatch) -> list[dict]:
    """django-q2's own scheduler, worker and monitor run every due schedule's task in this process.

    django-q2's `sync` mode does it (its documented setting for tests), and
    keeps the database connection, the test's transaction with it, open.
    Returns the task packages as the worker saw them (its pre_execute signal).
    """
    monkeypatch.setattr(Conf, "SYNC", True)
    ran = []

    def seen(sender, task, **kwargs):
        ran.append(dict(task))

    pre_execute.connect(seen, dispatch_uid="tests.seen")
    try:
        Schedule.objects.filter(name__in=TASK_NAMES).update(next_run=timezone.now() - timedelta(minutes=1))
        scheduler(broker=get_broker())
    finally:
        pre_execute.disconnect(dispatch_uid="tests.seen")
    return ran


TASK_NAMES = {
    "sandboxes: fail stale setup runs": "sweep stale runs",
    migration.CLEANUP_NAME: "delete expired sandboxes",
    migration.RECONCILE_NAME: "reconcile database, git host and backend",
}


def test_scheduled_tasks_are_named_after_what_they_do_and_a_successful_sweep_is_not_kept(people, monkeypatch):
    ran = run_schedules_as_a_cluster_would(monkeypatch)

    assert sorted(task["name"] for task in ran) == sorted(TASK_NAMES.values())
    kept = set(Task.objects.values_list("name", flat=True))
    assert kept == {"delete expired sandboxes", "reconcile database, git host and backend"}


def test_a_sweep_that_fails_runs_records_each_in_the_audit_trail_and_a_failed_sweep_is_kept(people, settings,
                                                                                             monkeypatch):
    stale = SetupRun.objects.create(
        account=people.alice.account, status=SetupRun.Status.EXECUTING,
        started_at=timezone.now() - timedelta(seconds=settings.SETUP_RUN_STALE_AFTER + 5),
    )

    ran = run_schedules_as_a_cluster_would(monkeypatch)

    assert AuditEvent.objects.filter(action=AuditEvent.Action.RUN_FAILED, run_id=stale.pk, actor="worker").exists()
    [sweep] = [task for task in ran if task["name"] == "sweep stale runs"]
    assert SetupRun.objects.get(pk=stale.pk).status == SetupRun.Status.FAILED
    assert not Task.objects.filter(name="sweep stale runs").exists()
    # The same sweep, had it raised: django-q2 keeps every failed task.
    failed = {**sweep, "success": False, "result": "Traceback …", "stopped": timezone.now()}
    save_task(failed, get_broker())
    assert Task.objects.filter(name="sweep stale runs", success=False).count() == 1


def test_a_setup_task_is_named_after_its_run(people, django_capture_on_commit_callbacks):
    broker = get_broker()
    broker.purge_queue()

    with django_capture_on_commit_callbacks(execute=True):
        run = setup_run_start(account=people.alice.account, actor=Actor.command("tests"))

    [(_ack, payload)] = broker.dequeue()
    assert SignedPackage.loads(payload)["name"] == f"setup-sandbox {run.pk}"
