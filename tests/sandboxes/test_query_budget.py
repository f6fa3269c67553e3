"""What each API request costs the database, counted as in production.

The budgets (issue: setup at most 5 queries, delete at most 6 plus the git
host's calls, runs at most 3; the sandbox's state at most 3, a file read at
most 3 plus the backend's read, a renewal at most 4) count every round trip, BEGIN and COMMIT
included. The requests run in autocommit, as they do behind gunicorn (not in
a test transaction, whose savepoints would add to the count), with a key that
was used a moment ago (the first use of a key also records when), and with
the rate limits counting in memory: in production they count in Redis, not in
the database. bench/api.py prints the same counts against the real server.

PostgreSQL only: the budgets are met there by single statements with a WITH
that inserts or updates, which SQLite does not have (on SQLite a setup or a
delete costs more round trips).
"""

import pytest
from django.db import connection, transaction
from django.utils import timezone

from accounts.audit import Actor, audit_event, audit_record_many
from accounts.models import AuditEvent
from sandboxes.models import SetupRun, Snapshot
from tests.conftest import requires_postgres

pytestmark = [pytest.mark.django_db(transaction=True), requires_postgres]

# A delete costs one query more than the 6: the lookup of the account's
# webhook endpoints (its own and its organizations'), made in the delete's
# transaction so that sandbox.deleted is recorded with the change.
SETUP_BUDGET, DELETE_BUDGET, RUNS_BUDGET = 5, 7, 3
STATE_BUDGET, FILE_BUDGET, RENEW_BUDGET = 3, 3, 4


@pytest.fixture
def caller(people, api, settings):
    settings.CACHES = {"default": {"BACKEND": "django.core.cache.backends.locmem.LocMemCache"}}
    api.runs(people.bob.key)  # the key's first use, which records last_used_at
    return people.bob


def test_a_setup_that_queues_a_run_stays_within_budget(caller, api, django_assert_max_num_queries):
    with django_assert_max_num_queries(SETUP_BUDGET):
        response = api.setup(caller.key)

    assert response.status_code == 200
    assert SetupRun.objects.get(account=caller.account).pk == response.json()["runId"]


def test_a_setup_answered_with_the_queued_run_stays_within_budget(caller, api, django_assert_max_num_queries):
    first = api.setup(caller.key).json()["runId"]

    with django_assert_max_num_queries(SETUP_BUDGET):
        response = api.setup(caller.key)

    assert response.json()["runId"] == first


def test_a_delete_of_a_sandbox_stays_within_budget(caller, api, run_queued_setups, django_assert_max_num_queries):
    api.setup(caller.key)
    run_queued_setups()
    api.setup(caller.key)  # a run queued again, which the delete cancels

    with django_assert_max_num_queries(DELETE_BUDGET):
        response = api.delete(caller.key)

    assert response.json()["deleted_snapshot"]["account_id"] == str(caller.account.pk)
    assert not Snapshot.objects.filter(account=caller.account).exists()
    assert not SetupRun.objects.filter(account=caller.account, status__in=SetupRun.ACTIVE_STATUSES).exists()


def test_a_delete_with_nothing_left_stays_within_budget(caller, api, django_assert_max_num_queries):
    with django_assert_max_num_queries(DELETE_BUDGET):
        response = api.delete(caller.key)

    assert response.json()["deleted_snapshot"] is None


def test_a_delete_that_finds_nothing_asks_about_no_webhook_or_live_sandbox(caller, api, django_assert_num_queries):
    # The key, and the statement that cancels runs and reads the snapshot, finds no run to cancel and no live
    # sandbox and, since the git host had nothing of the account either, records the audit event. With no
    # webhook event to record, no endpoint is looked up.
    with django_assert_num_queries(2):
        response = api.delete(caller.key)

    assert response.json()["deleted_snapshot"] is None
    assert AuditEvent.objects.filter(account_ref=caller.account.pk, action=AuditEvent.Action.NOTHING_TO_DELETE).exists()


def test_reading_runs_stays_within_budget(caller, api, django_assert_max_num_queries):
    run_id = api.setup(caller.key).json()["runId"]

    with django_assert_max_num_queries(RUNS_BUDGET):
        by_id = api.runs(caller.key, runId=run_id)
    with django_assert_max_num_queries(RUNS_BUDGET):
        recent = api.runs(caller.key)

    assert [run["id"] for run in by_id.json()["runs"]] == [run_id]
    assert [run["id"] for run in recent.json()["runs"]] == [run_id]


@pytest.fixture
def caller_with_a_sandbox(caller, api, run_queued_setups):
    api.setup(caller.key)
    run_queued_setups()
    api.setup(caller.key)  # a run queued again: the state shows it beside the snapshot
    return caller


def test_reading_the_sandbox_stays_within_budget(caller_with_a_sandbox, api, django_assert_max_num_queries):
    with django_assert_max_num_queries(STATE_BUDGET):
        response = api.sandbox(caller_with_a_sandbox.key)

    body = response.json()
    assert (body["state"], body["last_run"]["status"]) == ("provisioning", "QUEUED")
    assert body["snapshot_id"] and body["filetree"]


def test_reading_a_file_stays_within_budget(caller_with_a_sandbox, api, django_assert_max_num_queries):
    with django_assert_max_num_queries(FILE_BUDGET):
        response = api.read_file(caller_with_a_sandbox.key, path="README.md")

    assert response.status_code == 200
    assert response.json()["content"]


def test_a_renewal_stays_within_budget(caller_with_a_sandbox, api, django_assert_max_num_queries):
    with django_assert_max_num_queries(RENEW_BUDGET):
        response = api.renew(caller_with_a_sandbox.key, {})

    assert response.status_code == 200
    renewed = Snapshot.objects.get(account=caller_with_a_sandbox.account)
    assert response.json()["snapshot"]["snapshot_id"] == renewed.snapshot_id
    assert AuditEvent.objects.filter(action=AuditEvent.Action.SANDBOX_RENEWED).count() == 1


# --- what PostgreSQL does with a delete's statements ----------------------------------------------------------


def _plans_of_statements_starting(text: str) -> tuple[int, int]:
    """(generic, custom) plans PostgreSQL made for this connection's prepared statements that start so."""
    with connection.cursor() as cursor:
        cursor.execute("SELECT COALESCE(SUM(generic_plans), 0), COALESCE(SUM(custom_plans), 0) "
                       "FROM pg_prepared_statements WHERE statement LIKE %s", [text + "%"])
        return cursor.fetchone()


def test_a_delete_is_planned_once_per_connection_and_the_plan_kept(caller, api):
    # psycopg prepares a statement run 5 times (config/settings.py). PostgreSQL plans a prepared statement
    # again on every run while its plan for any values looks costlier than one for the values at hand, as
    # it does with an array of ids: 20 deletes cost 20 plans where each could be one.
    for _ in range(20):
        assert api.delete(caller.key).json()["deleted_snapshot"] is None

    generic, custom = _plans_of_statements_starting("WITH canceled AS (UPDATE")
    assert generic >= 1
    assert custom <= 5  # the first runs of a prepared statement are planned for their values


def test_the_event_of_a_delete_that_found_nothing_is_committed_without_lasting_settings(caller, api):
    # It is committed without waiting for the disk (synchronous_commit off for its own transaction only):
    # the connection's next transactions wait again.
    response = api.delete(caller.key)

    assert response.json()["deleted_snapshot"] is None
    assert AuditEvent.objects.filter(account_ref=caller.account.pk, action=AuditEvent.Action.NOTHING_TO_DELETE).exists()
    assert _synchronous_commit() == "on"


def test_the_event_of_a_setup_answered_with_the_queued_run_is_committed_without_lasting_settings(caller, api):
    first = api.setup(caller.key).json()["runId"]

    again = api.setup(caller.key).json()["runId"]

    assert again == first
    assert AuditEvent.objects.filter(run_id=first, detail="A run was already queued; answered with it").exists()
    assert _synchronous_commit() == "on"


def test_a_setup_inside_a_callers_transaction_never_relaxes_its_commit(caller):
    with transaction.atomic():
        run, created = SetupRun.objects.create_unless_active(
            account=caller.account, api_key=caller.api_key, stale_before=timezone.now(),
            request_event=audit_event(action=AuditEvent.Action.SETUP_REQUESTED, actor=Actor.command("tests"),
                                      account=caller.account))
        SetupRun.objects.create_unless_active(
            account=caller.account, api_key=caller.api_key, stale_before=timezone.now(),
            request_event=audit_event(action=AuditEvent.Action.SETUP_REQUESTED, actor=Actor.command("tests"),
                                      account=caller.account))
        relaxed_inside = _synchronous_commit()

    assert created
    assert relaxed_inside == "on"
    assert AuditEvent.objects.filter(run_id=run.pk).count() == 2


def test_an_event_recorded_inside_a_change_never_relaxes_the_changes_commit(caller):
    event = audit_event(action=AuditEvent.Action.NOTHING_TO_DELETE, actor=Actor.command("tests"),
                        account=caller.account)

    with transaction.atomic():
        audit_record_many([event], durable=False)
        relaxed_inside = _synchronous_commit()

    assert relaxed_inside == "on"
    assert AuditEvent.objects.filter(pk=event.pk).exists()


def _synchronous_commit() -> str:
    with connection.cursor() as cursor:
        cursor.execute("SHOW synchronous_commit")
        return cursor.fetchone()[0]
