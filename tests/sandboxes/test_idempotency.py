"""Idempotency-Key on POST /api/sandboxes/setup, DELETE /api/sandboxes and PATCH /api/sandboxes.

What is tested, each through the API: a repeat gets the first answer again
(`Idempotent-Replayed: true`) and does nothing (no second audit event, no
second run, no second delete or renewal); another request with the key is a
422; a key still in flight is a 409 with Retry-After, until a minute has
passed; keys are per API key; a refused request keeps nothing; invalid keys
are a 400; records past 24 hours count as gone and the hourly schedule
removes them. The concurrent case (20 requests with one key at once) is in
test_setup_concurrency.py, on PostgreSQL.
"""

import importlib
import shutil
from datetime import timedelta

import pytest
from django.utils import timezone
from django_q.models import Schedule

from accounts.models import AuditEvent
from sandboxes import tasks
from sandboxes.idempotency import IDEMPOTENCY_KEY_TTL
from sandboxes.models import IdempotencyRecord, SetupRun, Snapshot
from tests.sandboxes.local_git import make_undeletable

pytestmark = pytest.mark.django_db

Action = AuditEvent.Action
KEY = {"Idempotency-Key": "order-42"}


def audited(action) -> int:
    return AuditEvent.objects.filter(action=action).count()


# --- replay -------------------------------------------------------------------------------


def test_a_repeated_setup_gets_the_first_answer_and_does_nothing(people, api, run_queued_setups):
    first = api.setup(people.bob.key, {}, headers=KEY)
    run_queued_setups()  # the run completes: without the key, a new setup would start a new run

    repeat = api.setup(people.bob.key, {}, headers=KEY)

    assert first.status_code == repeat.status_code == 200
    assert repeat.json() == first.json()
    assert repeat["Idempotent-Replayed"] == "true"
    assert not first.has_header("Idempotent-Replayed")
    assert SetupRun.objects.filter(account=people.bob.account).count() == 1
    assert audited(Action.SETUP_REQUESTED) == 1


def test_without_a_key_a_repeat_is_processed_again(people, api, run_queued_setups):
    api.setup(people.bob.key, {})
    run_queued_setups()

    repeat = api.setup(people.bob.key, {})

    assert not repeat.has_header("Idempotent-Replayed")
    assert SetupRun.objects.filter(account=people.bob.account).count() == 2


def test_a_repeated_delete_gets_the_first_answer_and_deletes_nothing_more(people, api, sandbox_set_up):
    first_snapshot = sandbox_set_up(people.bob)
    first = api.delete(people.bob.key, headers=KEY)
    second_snapshot = sandbox_set_up(people.bob)

    repeat = api.delete(people.bob.key, headers=KEY)

    assert repeat.json() == first.json()
    assert repeat.json()["deleted_snapshot"]["snapshot_id"] == first_snapshot.snapshot_id
    assert repeat["Idempotent-Replayed"] == "true"
    assert Snapshot.objects.get(account=people.bob.account).snapshot_id == second_snapshot.snapshot_id
    assert audited(Action.SANDBOX_DELETED) == 1


def test_a_repeated_renewal_gets_the_first_answer_and_renews_nothing_more(people, api, sandbox_set_up):
    sandbox_set_up(people.bob)
    first = api.renew(people.bob.key, {}, headers=KEY)
    renewed = Snapshot.objects.get(account=people.bob.account).expires_at

    repeat = api.renew(people.bob.key, {}, headers=KEY)

    assert repeat.json() == first.json()
    assert repeat["Idempotent-Replayed"] == "true"
    assert Snapshot.objects.get(account=people.bob.account).expires_at == renewed
    assert audited(Action.SANDBOX_RENEWED) == 1


def test_a_failed_delete_is_kept_and_replayed_and_a_new_key_tries_again(people, api, sandbox_set_up, tmp_path):
    sandbox_set_up(people.bob)
    link, moved = make_undeletable(people.bob.account, tmp_path)  # the git host cannot delete it
    failed = api.delete(people.bob.key, headers=KEY)
    link.unlink()
    shutil.move(moved, link)

    repeat = api.delete(people.bob.key, headers=KEY)
    retried = api.delete(people.bob.key, headers={"Idempotency-Key": "order-43"})

    assert failed.status_code == repeat.status_code == 400
    assert repeat.json() == failed.json() and repeat["Idempotent-Replayed"] == "true"
    assert retried.status_code == 200
    assert not Snapshot.objects.filter(account=people.bob.account).exists()


def test_a_renewal_refused_with_a_404_keeps_nothing(people, api):
    first = api.renew(people.bob.key, {}, headers=KEY)  # no snapshot: nothing was changed

    assert first.status_code == 404
    assert not IdempotencyRecord.objects.exists()


# --- other requests with the key ------------------------------------------------------------


@pytest.mark.parametrize("second", [
    ("post", "/api/sandboxes/setup", {"account_id": None}),  # another body
    ("delete", "/api/sandboxes", {}),  # another endpoint
    ("patch", "/api/sandboxes", {}),
])
def test_the_key_with_another_body_or_endpoint_is_a_422_and_does_nothing(people, api, second):
    api.setup(people.bob.key, {}, headers=KEY)
    before = AuditEvent.objects.count()

    method, path, body = second
    response = api.call(method, path, key=people.bob.key, body=body, headers=KEY)

    assert response.status_code == 422
    assert response.json()["status"] == "error"
    assert "different request" in response.json()["error"]
    assert AuditEvent.objects.count() == before


def test_keys_belong_to_their_api_key(people, api):
    alice = api.setup(people.alice.key, {}, headers=KEY)
    bob = api.setup(people.bob.key, {}, headers=KEY)

    assert alice.json()["runId"] != bob.json()["runId"]
    assert not bob.has_header("Idempotent-Replayed")


def test_a_request_refused_before_processing_keeps_nothing(people, api):
    refused = api.setup(people.mallory.key, {"account_id": str(people.bob.account.pk)}, headers=KEY)
    invalid = api.setup(people.mallory.key, {"account_id": "nope"}, headers=KEY)

    accepted = api.setup(people.mallory.key, {}, headers=KEY)

    assert (refused.status_code, invalid.status_code, accepted.status_code) == (403, 400, 200)
    assert not accepted.has_header("Idempotent-Replayed")


# --- in flight ---------------------------------------------------------------------------------


def in_flight(person, *, age: timedelta, path="/api/sandboxes/setup") -> IdempotencyRecord:
    """The record a request that is still being processed (or whose process died) leaves."""
    import hashlib

    return IdempotencyRecord.objects.create(
        api_key=person.api_key, key=KEY["Idempotency-Key"],
        fingerprint=f"POST {path} {hashlib.sha256(b'{}').hexdigest()}",
        created_at=timezone.now() - age,
    )


def test_a_repeat_while_the_first_is_in_flight_is_a_409_with_retry_after(people, api):
    in_flight(people.bob, age=timedelta(seconds=5))

    response = api.setup(people.bob.key, {}, headers=KEY)

    assert response.status_code == 409
    assert response.json()["status"] == "error"
    assert int(response["Retry-After"]) >= 1
    assert not SetupRun.objects.exists()


def test_a_key_left_in_flight_for_over_a_minute_is_taken_over(people, api):
    in_flight(people.bob, age=timedelta(minutes=1, seconds=1))

    response = api.setup(people.bob.key, {}, headers=KEY)
    repeat = api.setup(people.bob.key, {}, headers=KEY)

    assert response.status_code == 200
    assert repeat.json() == response.json() and repeat["Idempotent-Replayed"] == "true"
    assert SetupRun.objects.count() == 1


# --- the key itself --------------------------------------------------------------------------


@pytest.mark.parametrize("key", ["", "x" * 256, "tab\tkey", "ключ", "line\x7f"])
def test_a_key_that_is_not_1_to_255_printable_ascii_characters_is_a_400(people, api, key):
    response = api.setup(people.bob.key, {}, headers={"Idempotency-Key": key})

    assert response.status_code == 400
    assert response.json()["invalid_fields"] == ["Idempotency-Key"]
    assert not SetupRun.objects.exists()


@pytest.mark.parametrize("key", ["a", "x" * 255, "Order 42 / retry ~!"])
def test_keys_of_1_to_255_printable_ascii_characters_are_taken(people, api, key):
    assert api.setup(people.bob.key, {}, headers={"Idempotency-Key": key}).status_code == 200


# --- 24 hours ------------------------------------------------------------------------------------


def test_a_key_kept_for_over_24_hours_counts_as_new(people, api, run_queued_setups):
    first = api.setup(people.bob.key, {}, headers=KEY)
    run_queued_setups()
    IdempotencyRecord.objects.update(created_at=timezone.now() - IDEMPOTENCY_KEY_TTL - timedelta(seconds=1))

    again = api.setup(people.bob.key, {"account_id": None}, headers=KEY)  # even with another body

    assert again.status_code == 200
    assert again.json()["runId"] != first.json()["runId"]
    assert not again.has_header("Idempotent-Replayed")


def test_the_purge_removes_records_past_24_hours_and_keeps_the_rest(people, api):
    api.setup(people.bob.key, {}, headers=KEY)
    api.setup(people.alice.key, {}, headers=KEY)
    IdempotencyRecord.objects.filter(api_key=people.bob.api_key).update(
        created_at=timezone.now() - IDEMPOTENCY_KEY_TTL - timedelta(seconds=1)
    )

    summary = tasks.purge_idempotency_records()

    assert summary == "Removed 1 expired idempotency key(s)"
    assert list(IdempotencyRecord.objects.values_list("api_key", flat=True)) == [people.alice.api_key.pk]


def test_the_purge_is_scheduled_hourly_starting_one_hour_after_the_migration():
    migration = importlib.import_module("sandboxes.migrations.0010_schedule_idempotency_purge")
    [schedule] = Schedule.objects.filter(name=migration.PURGE_NAME)

    assert (schedule.func, schedule.schedule_type, schedule.repeats) == (
        "sandboxes.tasks.purge_idempotency_records", Schedule.HOURLY, -1
    )
    assert schedule.next_run > timezone.now() + timedelta(minutes=30)


def test_the_purge_schedule_is_created_once_however_often_the_migration_runs():
    from django.apps import apps

    migration = importlib.import_module("sandboxes.migrations.0010_schedule_idempotency_purge")
    Schedule.objects.filter(name=migration.PURGE_NAME).update(schedule_type=Schedule.DAILY)

    migration.create_schedule(apps, None)
    migration.create_schedule(apps, None)

    [schedule] = Schedule.objects.filter(name=migration.PURGE_NAME)
    assert schedule.schedule_type == Schedule.HOURLY


# --- from a browser ------------------------------------------------------------------------------


@pytest.mark.parametrize("path, method", [("/api/sandboxes/setup", "POST"), ("/api/sandboxes", "DELETE"),
                                          ("/api/sandboxes", "PATCH")])
def test_a_browser_may_send_the_key_cross_origin(api, path, method):
    response = api.client.options(path, headers={
        "Origin": "https://app.example.com",
        "Access-Control-Request-Method": method,
        "Access-Control-Request-Headers": "x-api-key, content-type, idempotency-key",
    })

    assert response.status_code == 200
    allowed = {name.strip().lower() for name in response["access-control-allow-headers"].split(",")}
    assert "idempotency-key" in allowed


def test_a_browser_can_read_that_an_answer_was_replayed(people, api):
    headers = {**KEY, "Origin": "https://app.example.com"}
    api.setup(people.bob.key, {}, headers=headers)

    repeat = api.setup(people.bob.key, {}, headers=headers)

    assert repeat["Idempotent-Replayed"] == "true"
    exposed = {name.strip().lower() for name in repeat["access-control-expose-headers"].split(",")}
    assert "idempotent-replayed" in exposed
