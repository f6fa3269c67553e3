"""A worker that dies mid-run: kill -9 the qcluster while a run is EXECUTING.

The account's repository exists before the setup, with a git pre-receive
hook that sleeps: the run's push hangs at the real boundary, with the run
EXECUTING in its `provision` step. The test then kills the whole qcluster
(SIGKILL to its process group: the cluster, its worker and the git push
under it) and starts a new one. The new cluster's scheduler fires the stale
run sweep (the django-q2 schedule the migrations create), which marks the
run FAILED once it is SETUP_RUN_TIMEOUT + SETUP_RUN_GRACE old (10 + 2 s
here), and takes down the sandbox it left. Then a new setup for the account
completes on the new cluster.
"""

import importlib
import os
import time

import pytest
from django.utils import timezone
from django_q.models import Schedule

from sandboxes.models import SetupRun
from sandboxes.providers import get_git_host
from sandboxes.providers.base import repository_name_for
from tests.conftest import requires_postgres
from tests.processes import qcluster_command

pytestmark = [requires_postgres, pytest.mark.postgres, pytest.mark.reliability]

SETUP_RUN_TIMEOUT = 10
SETUP_RUN_GRACE = 2
SCHEDULER_PERIOD = 30  # django-q2's cluster runs its scheduler every 30 s (django_q/cluster.py, guard)
SWEEP_NAME = importlib.import_module("sandboxes.migrations.0002_schedule_stale_run_sweep").SWEEP_NAME


def wait_for(service, what: str, timeout: float, check):
    deadline = time.monotonic() + timeout
    last = None
    while time.monotonic() < deadline:
        service.check_running()
        last = check()
        if last:
            return last
        time.sleep(0.3)
    pytest.fail(service.report(f"{what} did not happen within {timeout:.0f} s; last seen: {last}"))


def run_of(service, key: str, run_id: str) -> dict:
    status, body = service.call("GET", f"/api/tasks/runs?runId={run_id}", key=key)
    assert status == 200, service.report(f"polling answered {status} {body}")
    return body["runs"][0]


@pytest.fixture
def hanging_repository(settings, people, tmp_path):
    """Alice's repository, whose pre-receive hook sleeps (and writes its pid, to be sure it is gone)."""
    account = people.alice.account
    repository = get_git_host().ensure_repository(
        name=repository_name_for(account_name=account.name, account_id=account.pk), description="hangs"
    ).repository
    hook = settings.GIT_ROOT / f"{repository.name}.git" / "hooks" / "pre-receive"
    pid_file = tmp_path / "hook.pid"
    hook.write_text(f"#!/bin/sh\necho $$ > {pid_file}\nexec sleep 120\n")
    hook.chmod(0o755)
    yield hook, pid_file
    if pid_file.exists():  # never leave the sleeping hook behind
        try:
            os.kill(int(pid_file.read_text()), 9)
        except (ProcessLookupError, ValueError):
            pass


def test_a_run_whose_worker_is_killed_is_failed_by_the_sweep_and_a_new_setup_completes(
    start_service, people, hanging_repository
):
    hook, pid_file = hanging_repository
    alice = people.alice
    service = start_service(SETUP_RUN_TIMEOUT=str(SETUP_RUN_TIMEOUT), SETUP_RUN_GRACE=str(SETUP_RUN_GRACE))
    [first_cluster] = [process for process in service.processes if process.name == "qcluster"]

    status, body = service.call("POST", "/api/sandboxes/setup", key=alice.key)
    assert status == 200, body
    run_id = body["runId"]
    wait_for(service, "the push hanging in the pre-receive hook", 30,
             lambda: pid_file.exists() and run_of(service, alice.key, run_id)["metadata"]["currentStep"] == "provision")
    run = SetupRun.objects.get(pk=run_id)
    assert run.status == SetupRun.Status.EXECUTING

    first_cluster.kill()  # kill -9, the cluster and everything under it

    hook_pid = int(pid_file.read_text())
    wait_for(service, "the hook dying with the worker", 10, lambda: not _alive(hook_pid))
    time.sleep(1)
    assert SetupRun.objects.get(pk=run_id).status == SetupRun.Status.EXECUTING, "nobody is left to finish it"

    # The git host is healthy again; a new cluster comes up, whose scheduler
    # fires the sweep at its first pass (the schedule is due).
    hook.unlink()
    Schedule.objects.update_or_create(
        name=SWEEP_NAME,
        defaults={"func": "sandboxes.tasks.fail_stale_runs", "schedule_type": Schedule.MINUTES, "minutes": 1,
                  "repeats": -1, "next_run": timezone.now()},
    )
    service.start("qcluster-2", qcluster_command())

    stale_after = SETUP_RUN_TIMEOUT + SETUP_RUN_GRACE
    wait_for(service, "the sweep failing the run", stale_after + SCHEDULER_PERIOD + 15,
             lambda: SetupRun.objects.get(pk=run_id).status == SetupRun.Status.FAILED)
    run = SetupRun.objects.get(pk=run_id)
    assert run.error.startswith("The worker running this setup stopped before it finished"), run.error
    assert (run.finished_at - run.started_at).total_seconds() >= stale_after, "failed only once it was stale"
    assert not list((service.sandbox_root / "sandboxes").glob("sbx_*")), "the sweep shut the sandbox down"

    status, body = service.call("POST", "/api/sandboxes/setup", key=alice.key)
    assert status == 200, body
    assert body["runId"] != run_id
    new_run = wait_for(service, "the new setup completing", 60,
                       lambda: finished(run_of(service, alice.key, body["runId"])))
    assert new_run["status"] == "COMPLETED", service.report(f"the new run ended {new_run}")


def finished(run: dict) -> dict | None:
    return run if run["status"] not in SetupRun.ACTIVE_STATUSES else None


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # A zombie is dead for our purpose; its parent was killed and init reaps it.
    try:
        with open(f"/proc/{pid}/stat") as stat:
            return stat.read().split()[2] != "Z"
    except OSError:
        return False
