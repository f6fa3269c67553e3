"""The setup task as django-q2 runs it: a failed run raises once the failure is on the run.

django-q2 records a task as failed only when its function raises; the run
itself holds the error and the steps. A completed run, a canceled one and a
second delivery return quietly.
"""

from pathlib import Path

import pytest
from django.conf import settings

from sandboxes.models import SetupRun
from sandboxes.tasks import SetupRunFailed, run_setup
from tests.sandboxes.test_pipeline import request_setup

pytestmark = pytest.mark.django_db


def test_the_task_of_a_failed_run_raises_with_the_runs_error(people, api):
    Path(settings.GIT_ROOT).write_text("a file where the git root should be")
    run_id = request_setup(api, people.alice)

    with pytest.raises(SetupRunFailed) as raised:
        run_setup(run_id)

    run = SetupRun.objects.get(pk=run_id)
    assert run.status == SetupRun.Status.FAILED
    assert str(raised.value) == f"Setup run {run_id} failed: {run.error}"


def test_the_task_of_a_completed_run_returns_quietly(people, api):
    run_id = request_setup(api, people.alice)

    assert run_setup(run_id) is None
    assert SetupRun.objects.get(pk=run_id).status == SetupRun.Status.COMPLETED


def test_the_task_of_a_canceled_run_returns_quietly(people, api):
    run_id = request_setup(api, people.alice)
    assert api.delete(people.alice.key).status_code == 200

    assert run_setup(run_id) is None
    assert SetupRun.objects.get(pk=run_id).status == SetupRun.Status.CANCELED


def test_a_second_delivery_of_a_failed_runs_task_does_not_raise_again(people, api):
    Path(settings.GIT_ROOT).write_text("a file where the git root should be")
    run_id = request_setup(api, people.alice)
    with pytest.raises(SetupRunFailed):
        run_setup(run_id)

    assert run_setup(run_id) is None
