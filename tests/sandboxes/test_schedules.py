"""The scheduled cleanup (hourly) and reconcile (weekly): their django-q2 schedules and their tasks.

What is tested:
- the migrations create both schedules, and creating them again (the data
  migration run twice, or over a schedule an operator changed) leaves one of
  each, with the right function and interval;
- each first runs one interval after it is created: a worker's first start
  (django-q2's own scheduler over the real Schedule rows) runs neither, and a
  deployment whose schedules an earlier 0004 made due at once, with the
  reconcile fixing by default, is moved to the same footing by 0005;
- the tasks do the work through the services and leave their results in the
  audit trail; the scheduled reconcile only reports unless RECONCILE_AUTOFIX
  is on, read when it runs.
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
from django_q.models import Schedule, Success, Task
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
repair = importlib.import_module("sandboxes.migrations.0005_schedules_wait_one_interval_and_reconcile_reports")
SWEEP_NAME = importlib.import_module("sandboxes.migrations.0002_schedule_stale_run_sweep").SWEEP_NAME
INTERVALS = {migration.CLEANUP_NAME: timedelta(hours=1), migration.RECONCILE_NAME: timedelta(weeks=1)}


def worker_starts(monkeypatch) -> None:
    """What a starting qcluster does first: django-q2's scheduler over the Schedule rows.

    Each task made from a due schedule runs at once, in this process, through
    django-q2's own worker and monitor (its `sync` mode), and its result is saved.
    """
    monkeypatch.setattr(Conf, "SYNC", True)
    scheduler(broker=get_broker())


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


def test_the_migrations_schedule_the_first_runs_one_interval_ahead():
    now = timezone.now()
    for name, interval in INTERVALS.items():
        schedule = Schedule.objects.get(name=name)
        # Made when the test database was migrated, moments ago.
        assert now + interval - timedelta(minutes=10) < schedule.next_run <= now + interval
        assert schedule.task is None


def test_new_schedules_first_run_one_interval_after_they_are_created():
    Schedule.objects.filter(name__in=migration.SCHEDULES).delete()

    before = timezone.now()
    migration.create_schedules(apps, None)
    after = timezone.now()

    for name, interval in INTERVALS.items():
        assert before + interval <= Schedule.objects.get(name=name).next_run <= after + interval


def test_creating_the_schedules_again_keeps_their_next_run():
    due = timezone.now() + timedelta(minutes=5)
    Schedule.objects.filter(name__in=migration.SCHEDULES).update(next_run=due)

    migration.create_schedules(apps, None)

    assert set(Schedule.objects.filter(name__in=migration.SCHEDULES).values_list("next_run", flat=True)) == {due}


def test_a_workers_first_start_runs_neither_the_cleanup_nor_the_reconcile(people, monkeypatch):
    make_repository(people.alice.account)  # an orphan a reconcile with fix would delete
    expired = seed_sandbox(people.bob.account)

    worker_starts(monkeypatch)

    assert Schedule.objects.get(name=SWEEP_NAME).task  # the every-minute sweep was due, and ran
    assert not Schedule.objects.filter(name__in=migration.SCHEDULES, task__isnull=False).exists()
    assert not Success.objects.filter(func__in=[func for func, _type, _repeats in EXPECTED.values()]).exists()
    assert repository_path(people.alice.account).exists()
    assert Snapshot.objects.filter(pk=expired.pk).exists()


def as_an_earlier_0004_left_them():
    """Due at once, never run; and a reconcile told to fix by its stored arguments."""
    Schedule.objects.filter(name__in=migration.SCHEDULES).update(next_run=timezone.now() - timedelta(minutes=1))
    Schedule.objects.filter(name=migration.RECONCILE_NAME).update(kwargs="{'fix': True}")


def test_0005_moves_schedules_an_earlier_0004_made_due_to_one_interval_ahead(people, monkeypatch):
    as_an_earlier_0004_left_them()
    make_repository(people.alice.account)

    before = timezone.now()
    repair.wait_one_interval_and_drop_stored_arguments(apps, None)

    for name, interval in INTERVALS.items():
        assert Schedule.objects.get(name=name).next_run >= before + interval
    reconcile = Schedule.objects.get(name=migration.RECONCILE_NAME)
    assert (reconcile.args, reconcile.kwargs) == (None, None)
    worker_starts(monkeypatch)
    assert not Schedule.objects.filter(name__in=migration.SCHEDULES, task__isnull=False).exists()
    assert repository_path(people.alice.account).exists()


def test_0005_keeps_the_time_of_a_schedule_that_has_run():
    ran = timezone.now() + timedelta(minutes=3)
    Schedule.objects.filter(name=migration.CLEANUP_NAME).update(next_run=ran, task="a1b2c3")

    repair.wait_one_interval_and_drop_stored_arguments(apps, None)

    assert Schedule.objects.get(name=migration.CLEANUP_NAME).next_run == ran


def run_the_reconcile_schedule(monkeypatch) -> Success:
    """The reconcile schedule as stored, come due: django-q2 runs it from the row's func and arguments."""
    Schedule.objects.filter(name=migration.RECONCILE_NAME).update(next_run=timezone.now() - timedelta(seconds=1))
    worker_starts(monkeypatch)
    return Success.objects.get(func="sandboxes.tasks.reconcile_sandboxes")


def test_the_scheduled_reconcile_only_reports_by_default(people, monkeypatch, settings):
    settings.RECONCILE_AUTOFIX = False
    make_repository(people.alice.account)

    task = run_the_reconcile_schedule(monkeypatch)

    assert repository_path(people.alice.account).exists()
    assert "1 orphan repositories" in task.result and "nothing changed" in task.result
    assert not AuditEvent.objects.filter(
        action__in=[AuditEvent.Action.RECONCILE_FIXED, AuditEvent.Action.RECONCILE_FIX_FAILED]
    ).exists()


def test_the_scheduled_reconcile_fixes_with_autofix_on_even_over_an_earlier_0004(people, monkeypatch, settings):
    as_an_earlier_0004_left_them()
    repair.wait_one_interval_and_drop_stored_arguments(apps, None)
    settings.RECONCILE_AUTOFIX = True
    make_repository(people.alice.account)

    task = run_the_reconcile_schedule(monkeypatch)

    assert not repository_path(people.alice.account).exists()
    assert "fixed 1, failed 0" in task.result
    assert AuditEvent.objects.filter(action=AuditEvent.Action.RECONCILE_FIXED, actor="scheduled reconcile").exists()


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


def test_the_weekly_task_fixes_what_is_out_of_step_and_records_it(people, settings):
    settings.RECONCILE_AUTOFIX = True
    make_repository(people.alice.account)  # no snapshot: an orphan

    summary = tasks.reconcile_sandboxes()

    assert not repository_path(people.alice.account).exists()
    assert "1 orphan repositories" in summary and "fixed 1, failed 0" in summary
    events = AuditEvent.objects.filter(actor="scheduled reconcile")
    assert events.filter(action=AuditEvent.Action.RECONCILE, detail=summary).exists()
    assert events.filter(action=AuditEvent.Action.RECONCILE_FIXED, account_ref=people.alice.account.pk,
                         outcome=AuditEvent.Outcome.SUCCESS).exists()



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
    "sandboxes: remove expired idempotency keys": "remove expired idempotency keys",
    "webhooks: deliver events whose delivery is due": "deliver due webhooks",
    "webhooks: warn of expiring snapshots": "warn of expiring snapshots",
    "sandboxes: stop idle live sandboxes": "stop idle live sandboxes",
}


def test_scheduled_tasks_are_named_after_what_they_do_and_a_successful_sweep_is_not_kept(people, monkeypatch):
    ran = run_schedules_as_a_cluster_would(monkeypatch)

    assert sorted(task["name"] for task in ran) == sorted(TASK_NAMES.values())
    kept = set(Task.objects.values_list("name", flat=True))
    # The every-minute sweeps (stale runs, due webhooks, idle live sandboxes) leave nothing when they succeed.
    assert kept == {"delete expired sandboxes", "reconcile database, git host and backend",
                    "remove expired idempotency keys", "warn of expiring snapshots"}


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
