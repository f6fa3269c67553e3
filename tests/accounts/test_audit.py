"""The audit trail: an event for every setup request, delete, revoke, key and run outcome.

What is pinned:
- every API answer carries X-Request-ID: the client's own when it is sane,
  a new one otherwise; the event of the request carries the same id, the
  client's IP, the key's prefix and owner, the target account and the run;
- setup requests (new run or answered with the active one), deletes (success
  and failure), admin revokes, key creation and revocation, run completion,
  failure and cancellation each write one event;
- events are written in the transaction of their change: a delete that fails
  at the git host writes a failure event and removes nothing, and when the
  event cannot be written (the database refuses it, through a trigger) the
  change does not happen either.
"""

from contextlib import contextmanager
from pathlib import Path

import pytest
from django.conf import settings
from django.db import DatabaseError, connection

from accounts.audit import Actor
from accounts.models import ApiKey, AuditEvent
from accounts.services import api_key_create, api_keys_revoke
from sandboxes.models import SetupRun, Snapshot
from sandboxes.services import setup_run_start, setup_runs_cancel_queued
from tests.sandboxes.local_git import make_undeletable
from tests.sandboxes.test_delete import repository_path, snapshot_files
from tests.staff import operator

pytestmark = pytest.mark.django_db

Action, Outcome = AuditEvent.Action, AuditEvent.Outcome
CLIENT_IP = "203.0.113.7"


def set_up(api, person, run_queued_setups) -> Snapshot:
    assert api.setup(person.key).status_code == 200
    [run] = run_queued_setups()
    assert run.status == SetupRun.Status.COMPLETED, run.error
    return Snapshot.objects.get(account=person.account)


def only_event(action) -> AuditEvent:
    [event] = AuditEvent.objects.filter(action=action)
    return event


@contextmanager
def audit_trail_refusing_writes():
    """Make the database refuse new audit events, as a full disk or a lost connection would."""
    with connection.cursor() as cursor:
        if connection.vendor == "postgresql":
            cursor.execute(
                "CREATE FUNCTION refuse_audit_events() RETURNS trigger AS $$ "
                "BEGIN RAISE EXCEPTION 'the audit trail refuses writes'; END; $$ LANGUAGE plpgsql"
            )
            cursor.execute(
                "CREATE TRIGGER refuse_audit_events BEFORE INSERT ON accounts_auditevent "
                "FOR EACH ROW EXECUTE FUNCTION refuse_audit_events()"
            )
        else:
            cursor.execute(
                "CREATE TRIGGER refuse_audit_events BEFORE INSERT ON accounts_auditevent "
                "BEGIN SELECT RAISE(ABORT, 'the audit trail refuses writes'); END"
            )
    try:
        yield
    finally:
        with connection.cursor() as cursor:
            if connection.vendor == "postgresql":
                cursor.execute("DROP TRIGGER refuse_audit_events ON accounts_auditevent")
                cursor.execute("DROP FUNCTION refuse_audit_events()")
            else:
                cursor.execute("DROP TRIGGER refuse_audit_events")


# --- X-Request-ID ---------------------------------------------------------------------------------


def test_every_api_answer_carries_a_request_id(people, api):
    answers = [
        api.setup(people.alice.key),
        api.setup("sbx_not-a-real-key"),
        api.setup(None),
        api.setup(people.mallory.key, {"account_id": str(people.alice.account.pk)}),
        api.runs(people.alice.key, runId="run_nope"),
        api.delete(people.alice.key),
    ]

    assert [answer.status_code for answer in answers] == [200, 401, 401, 403, 404, 200]
    ids = [answer["X-Request-ID"] for answer in answers]
    assert all(len(request_id) == 32 for request_id in ids)
    assert len(set(ids)) == len(ids)


def test_a_sane_request_id_from_the_client_is_kept_and_recorded(people, api):
    response = api.setup(people.alice.key, headers={"X-Request-ID": "client-42.retry_1"})

    assert response["X-Request-ID"] == "client-42.retry_1"
    assert only_event(Action.SETUP_REQUESTED).request_id == "client-42.retry_1"


@pytest.mark.parametrize("offered", ["two words", "x" * 129, "semi;colon", "<script>"])
def test_an_odd_request_id_from_the_client_is_replaced(people, api, offered):
    response = api.setup(people.alice.key, headers={"X-Request-ID": offered})

    assert response["X-Request-ID"] != offered
    assert len(response["X-Request-ID"]) == 32
    assert only_event(Action.SETUP_REQUESTED).request_id == response["X-Request-ID"]


# --- API requests ---------------------------------------------------------------------------------


def test_a_setup_request_records_key_owner_account_run_ip_and_request_id(people, api):
    response = api.setup(people.alice.key, {"account_id": str(people.bob.account.pk)}, REMOTE_ADDR=CLIENT_IP)

    event = only_event(Action.SETUP_REQUESTED)
    assert event.outcome == Outcome.SUCCESS
    assert event.actor == f"API key {people.alice.api_key.prefix}… of alice@example.com"
    assert event.actor_key == people.alice.api_key
    assert event.actor_user is None
    assert (event.account, event.account_ref) == (people.bob.account, people.bob.account.pk)
    assert event.run_id == response.json()["runId"]
    assert event.client_ip == CLIENT_IP
    assert event.request_id == response["X-Request-ID"]


def test_a_setup_answered_with_the_active_run_is_recorded_too(people, api):
    first = api.setup(people.alice.key).json()["runId"]

    second = api.setup(people.alice.key)

    assert second.json()["runId"] == first
    events = AuditEvent.objects.filter(action=Action.SETUP_REQUESTED).order_by("id")
    assert [event.run_id for event in events] == [first, first]
    assert events[1].request_id == second["X-Request-ID"]
    assert "already queued" in events[1].detail


def test_a_delete_records_what_it_deleted(people, api, run_queued_setups):
    snapshot = set_up(api, people.alice, run_queued_setups)

    response = api.delete(people.alice.key, REMOTE_ADDR=CLIENT_IP)

    event = only_event(Action.SANDBOX_DELETED)
    assert (event.outcome, event.account_ref) == (Outcome.SUCCESS, people.alice.account.pk)
    assert event.actor_key == people.alice.api_key
    assert (event.client_ip, event.request_id) == (CLIENT_IP, response["X-Request-ID"])
    assert snapshot.snapshot_id in event.detail
    assert Path(repository_path(people.alice.account)).name.removesuffix(".git") in event.detail


def test_a_failing_delete_records_the_failure_and_removes_nothing(people, api, run_queued_setups, tmp_path):
    snapshot = set_up(api, people.alice, run_queued_setups)
    repository, moved = make_undeletable(people.alice.account, tmp_path)

    response = api.delete(people.alice.key)

    assert response.status_code == 400
    event = only_event(Action.SANDBOX_DELETED)
    assert event.outcome == Outcome.FAILURE
    assert event.detail == response.json()["error"]
    assert event.request_id == response["X-Request-ID"]
    assert Snapshot.objects.get(account=people.alice.account).snapshot_id == snapshot.snapshot_id
    assert all(path.is_file() for path in snapshot_files(snapshot.snapshot_id))
    assert moved.is_dir()


def test_a_delete_that_found_nothing_is_recorded_as_nothing_to_delete(people, api, client):
    response = api.delete(people.alice.key)

    assert (response.status_code, response.json()["deleted_snapshot"]) == (200, None)
    event = only_event(Action.NOTHING_TO_DELETE)
    assert (event.outcome, event.account_ref) == (Outcome.SUCCESS, people.alice.account.pk)
    assert event.detail == "No snapshot and no repository to delete"
    assert not AuditEvent.objects.filter(action__in=[Action.SANDBOX_DELETED, Action.SANDBOX_REVOKED]).exists()

    operator(client)
    page = client.get("/admin/accounts/auditevent/").content.decode()
    listed = page.split('id="result_list"')[1].split("</table>")[0]
    assert "Delete found no sandbox" in listed
    assert "Sandbox deleted" not in listed


# --- the worker -------------------------------------------------------------------------------------


def test_a_completed_run_is_recorded_by_the_worker(people, api, run_queued_setups):
    snapshot = set_up(api, people.alice, run_queued_setups)
    run = SetupRun.objects.get(account=people.alice.account)

    event = only_event(Action.RUN_COMPLETED)

    assert (event.outcome, event.run_id, event.account_ref, event.actor) == (
        Outcome.SUCCESS, run.pk, people.alice.account.pk, "worker"
    )
    assert snapshot.snapshot_id in event.detail


def test_a_failed_run_is_recorded_with_its_error(people, api, run_queued_setups):
    Path(settings.GIT_ROOT).write_text("a file where the git root should be")
    run_id = api.setup(people.alice.key).json()["runId"]

    run_queued_setups()

    event = only_event(Action.RUN_FAILED)
    assert (event.outcome, event.run_id, event.account_ref) == (Outcome.FAILURE, run_id, people.alice.account.pk)
    assert event.detail == SetupRun.objects.get(pk=run_id).error
    assert not AuditEvent.objects.filter(action=Action.RUN_COMPLETED).exists()


# --- the admin -------------------------------------------------------------------------------------


def test_admin_actions_record_the_staff_user_ip_and_request_id(client, people, api, run_queued_setups):
    staff = operator(client)
    set_up(api, people.alice, run_queued_setups)
    queued = api.setup(people.bob.key).json()["runId"]

    revoke = client.post(
        "/admin/sandboxes/snapshot/",
        {"action": "revoke_selected_sandboxes", "_selected_action": [people.alice.account.pk], "post": "yes"},
        REMOTE_ADDR=CLIENT_IP,
    )
    cancel = client.post(
        "/admin/sandboxes/setuprun/", {"action": "cancel_queued_runs", "_selected_action": [queued]},
        REMOTE_ADDR=CLIENT_IP,
    )
    revoke_key = client.post(
        "/admin/accounts/apikey/", {"action": "revoke_selected_keys", "_selected_action": [people.carol.api_key.pk]},
        REMOTE_ADDR=CLIENT_IP,
    )

    for action, response, account in [
        (Action.SANDBOX_REVOKED, revoke, people.alice.account),
        (Action.RUN_CANCELED, cancel, people.bob.account),
        (Action.KEY_REVOKED, revoke_key, people.carol.account),
    ]:
        event = only_event(action)
        assert (event.actor, event.actor_user, event.actor_key) == ("staff user operator", staff, None)
        assert (event.account_ref, event.client_ip) == (account.pk, CLIENT_IP)
        assert event.request_id == response["X-Request-ID"]
    assert only_event(Action.RUN_CANCELED).run_id == queued
    assert not AuditEvent.objects.filter(action=Action.SANDBOX_DELETED).exists()


# --- the same transaction ----------------------------------------------------------------------------


def test_no_run_is_queued_when_its_event_cannot_be_written(people):
    with audit_trail_refusing_writes(), pytest.raises((DatabaseError, RuntimeError)):
        setup_run_start(account=people.alice.account, actor=Actor.command("tests"))

    assert not SetupRun.objects.exists()


def test_no_key_is_made_when_its_event_cannot_be_written(people):
    with audit_trail_refusing_writes(), pytest.raises(DatabaseError):
        api_key_create(account=people.bob.account, name="unrecorded", actor=Actor.command("tests"))

    assert not ApiKey.objects.filter(name="unrecorded").exists()


def test_a_key_stays_usable_when_its_revocation_cannot_be_recorded(people, api):
    with audit_trail_refusing_writes(), pytest.raises(DatabaseError):
        api_keys_revoke(keys=ApiKey.objects.filter(pk=people.bob.api_key.pk), actor=Actor.command("tests"))

    assert ApiKey.objects.get(pk=people.bob.api_key.pk).revoked_at is None
    assert api.setup(people.bob.key).status_code == 200


def test_a_run_stays_queued_when_its_cancellation_cannot_be_recorded(people, api):
    queued = api.setup(people.alice.key).json()["runId"]

    with audit_trail_refusing_writes(), pytest.raises(DatabaseError):
        setup_runs_cancel_queued(runs=SetupRun.objects.filter(pk=queued), actor=Actor.command("tests"))

    assert SetupRun.objects.get(pk=queued).status == SetupRun.Status.QUEUED
