"""One active setup run per account, however many requests arrive at once.

What is tested:
- ten simultaneous setup requests for one account (ten threads, each its
  own client and database connection, on PostgreSQL with real transactions)
  all answer 200 with the same runId, and exactly one SetupRun exists;
- twenty simultaneous setup requests with one Idempotency-Key: exactly one
  is processed (one run, one audit event); each of the others gets the kept
  answer or a 409 with Retry-After, and after its retries the same runId;
- the database itself refuses a second active run for an account (the
  conditional unique constraint), while finished runs do not count;
- one request after another: a second request while the first run is queued
  answers the same run; once that run has completed, a new request starts a
  new run.
"""

import threading
import time
from concurrent.futures import ThreadPoolExecutor

import pytest
from django.db import IntegrityError, connection, transaction
from rest_framework.test import APIClient

from accounts.models import AuditEvent
from sandboxes.models import IdempotencyRecord, SetupRun
from tests.conftest import requires_postgres

REQUESTS = 10


@requires_postgres
def test_simultaneous_setup_requests_for_one_account_share_one_run(transactional_db, people):
    start = threading.Barrier(REQUESTS)

    def request_setup():
        try:
            client = APIClient()
            start.wait(timeout=10)
            response = client.post("/api/sandboxes/setup", headers={"x-api-key": people.alice.key})
            return response.status_code, response.json()
        finally:
            connection.close()

    with ThreadPoolExecutor(max_workers=REQUESTS) as pool:
        futures = [pool.submit(request_setup) for _ in range(REQUESTS)]
        # result() raises what a thread raised, so no failure is lost.
        answers = [future.result(timeout=60) for future in futures]

    assert [status for status, _ in answers] == [200] * REQUESTS
    run_ids = {body["runId"] for _, body in answers}
    assert len(run_ids) == 1
    [run] = SetupRun.objects.filter(account=people.alice.account)
    assert run.pk in run_ids
    assert run.status == SetupRun.Status.QUEUED


IDEMPOTENT_REQUESTS = 20


@requires_postgres
def test_simultaneous_setups_with_one_idempotency_key_are_processed_once(transactional_db, people, settings):
    settings.API_THROTTLE_RATES = {**settings.API_THROTTLE_RATES, "setup": None}  # the retries are not the point
    start = threading.Barrier(IDEMPOTENT_REQUESTS)
    headers = {"x-api-key": people.alice.key, "Idempotency-Key": "setup-once"}

    def request_setup_until_answered():
        """The first answer, then the 409s' retries (Retry-After shortened for the test) until a 200."""
        try:
            client = APIClient()
            start.wait(timeout=10)
            answers = []
            for _attempt in range(100):
                response = client.post("/api/sandboxes/setup", headers=headers)
                answers.append((response.status_code, response.json(), response.get("Idempotent-Replayed"),
                                response.get("Retry-After")))
                if response.status_code != 409:
                    return answers
                time.sleep(0.05)
            return answers
        finally:
            connection.close()

    with ThreadPoolExecutor(max_workers=IDEMPOTENT_REQUESTS) as pool:
        futures = [pool.submit(request_setup_until_answered) for _ in range(IDEMPOTENT_REQUESTS)]
        histories = [future.result(timeout=120) for future in futures]

    finals = [history[-1] for history in histories]
    assert [status for status, *_ in finals] == [200] * IDEMPOTENT_REQUESTS
    assert len({body["runId"] for _, body, *_ in finals}) == 1
    processed = [final for final in finals if final[2] is None]
    assert len(processed) == 1, "exactly one request was processed; every other answer was replayed"
    conflicts = [answer for history in histories for answer in history[:-1]]
    assert all(status == 409 and int(retry_after) >= 1 for status, _, _, retry_after in conflicts)
    [run] = SetupRun.objects.filter(account=people.alice.account)
    assert run.pk == finals[0][1]["runId"]
    assert AuditEvent.objects.filter(action=AuditEvent.Action.SETUP_REQUESTED).count() == 1
    assert IdempotencyRecord.objects.get().state == IdempotencyRecord.State.DONE


@requires_postgres
def test_the_database_refuses_a_second_active_run_for_an_account(transactional_db, people):
    SetupRun.objects.create(account=people.alice.account, status=SetupRun.Status.QUEUED)

    with pytest.raises(IntegrityError), transaction.atomic():
        SetupRun.objects.create(account=people.alice.account, status=SetupRun.Status.EXECUTING)

    assert SetupRun.objects.filter(account=people.alice.account).count() == 1


@pytest.mark.django_db
@pytest.mark.parametrize("active", [SetupRun.Status.QUEUED, SetupRun.Status.EXECUTING])
def test_the_database_allows_one_active_run_per_account_on_any_database(people, active):
    for finished in (SetupRun.Status.COMPLETED, SetupRun.Status.FAILED, SetupRun.Status.CANCELED):
        SetupRun.objects.create(account=people.alice.account, status=finished)
    SetupRun.objects.create(account=people.alice.account, status=active)
    SetupRun.objects.create(account=people.bob.account, status=active)

    for second in SetupRun.ACTIVE_STATUSES:
        with pytest.raises(IntegrityError), transaction.atomic():
            SetupRun.objects.create(account=people.alice.account, status=second)

    assert (
        SetupRun.objects.filter(
            account=people.alice.account, status__in=SetupRun.ACTIVE_STATUSES
        ).count()
        == 1
    )


@pytest.mark.django_db
def test_a_second_request_while_the_run_is_queued_answers_the_same_run(people, api):
    first = api.setup(people.alice.key)
    second = api.setup(people.alice.key)

    assert first.status_code == second.status_code == 200
    assert second.json()["runId"] == first.json()["runId"]
    assert SetupRun.objects.filter(account=people.alice.account).count() == 1


@pytest.mark.django_db
def test_a_request_after_the_run_completed_starts_a_new_run(people, api, run_queued_setups):
    first_id = api.setup(people.alice.key).json()["runId"]
    [first] = run_queued_setups()
    assert first.status == SetupRun.Status.COMPLETED, first.error

    response = api.setup(people.alice.key)

    assert response.status_code == 200
    second_id = response.json()["runId"]
    assert second_id != first_id
    assert SetupRun.objects.get(pk=second_id).status == SetupRun.Status.QUEUED
    assert SetupRun.objects.filter(account=people.alice.account).count() == 2


@pytest.mark.django_db
def test_requests_for_different_accounts_get_different_runs(people, api):
    alices = api.setup(people.alice.key).json()["runId"]
    bobs = api.setup(people.bob.key).json()["runId"]

    assert alices != bobs
    assert SetupRun.objects.get(pk=alices).account == people.alice.account
    assert SetupRun.objects.get(pk=bobs).account == people.bob.account
