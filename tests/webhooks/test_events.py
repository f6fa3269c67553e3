"""Which changes record which events, for which endpoints, with what data.

Events are recorded in the transaction of their change (the outbox); these
tests read the recorded rows, and deliver a few to the real receiver.
"""

import io
import json
from datetime import timedelta

import pytest
from django.core.management import call_command
from django.utils import timezone

from accounts.audit import Actor
from sandboxes.models import SetupRun, Snapshot
from sandboxes.services import setup_runs_cancel_queued
from sandboxes.tasks import fail_stale_runs
from tests.sandboxes.seeded_sandboxes import EXPIRED, FRESH, seed_sandbox
from webhooks.models import Event
from webhooks.services import webhook_snapshots_expiring_record

pytestmark = pytest.mark.django_db


def recorded(endpoint=None) -> list[tuple[str, dict]]:
    events = Event.objects.order_by("created_at", "type")
    if endpoint is not None:
        events = events.filter(endpoint=endpoint)
    return [(event.type, json.loads(event.body)) for event in events]


def types(endpoint=None) -> list[str]:
    return [event_type for event_type, _body in recorded(endpoint)]


def snapshot_shape(snapshot: Snapshot) -> dict:
    return {
        "account_id": str(snapshot.account_id), "snapshot_id": snapshot.snapshot_id,
        "expires_at": snapshot.expires_at.isoformat().replace("+00:00", "Z"), "github_repo": snapshot.github_repo,
        "created_at": snapshot.created_at.isoformat().replace("+00:00", "Z"),
    }


def test_a_change_of_an_account_without_endpoints_records_nothing(people, api, run_queued_setups, make_endpoint):
    make_endpoint(account=people.bob.account)
    api.setup(people.alice.key)
    run_queued_setups()
    assert Event.objects.count() == 0


def test_an_organizations_endpoint_receives_its_members_events_only(people, api, run_queued_setups, make_endpoint):
    acme = make_endpoint(organization=people.acme)
    evil = make_endpoint(organization=people.evil)
    api.setup(people.bob.key)  # a member of Acme
    api.setup(people.mallory.key)  # of Evil Corp
    run_queued_setups()
    assert [(t, body["data"]["account_id"]) for t, body in recorded(acme)] == [
        ("run.completed", str(people.bob.account.pk))]
    assert [(t, body["data"]["account_id"]) for t, body in recorded(evil)] == [
        ("run.completed", str(people.mallory.account.pk))]


def test_an_endpoint_receives_only_the_event_types_it_asked_for(people, api, run_queued_setups, make_endpoint):
    only_deletes = make_endpoint(account=people.alice.account, event_types=["sandbox.deleted"])
    everything = make_endpoint(account=people.alice.account)
    api.setup(people.alice.key)
    run_queued_setups()
    api.delete(people.alice.key)
    assert types(only_deletes) == ["sandbox.deleted"]
    assert types(everything) == ["run.completed", "sandbox.deleted"]
    assert len({event.pk for event in Event.objects.all()}) == 3, "one event id per event and endpoint"


def test_a_disabled_endpoint_is_recorded_nothing(people, api, run_queued_setups, make_endpoint):
    endpoint = make_endpoint(account=people.alice.account)
    call_command("disable_webhook", str(endpoint.pk), stdout=io.StringIO())
    api.setup(people.alice.key)
    run_queued_setups()
    assert Event.objects.count() == 0


def test_a_failed_run_records_run_failed_with_its_error(people, api, run_queued_setups, make_endpoint, settings,
                                                         tmp_path):
    make_endpoint(account=people.alice.account)
    settings.SANDBOX_TEMPLATE_DIR = tmp_path / "missing"
    api.setup(people.alice.key)
    [run] = run_queued_setups()
    assert run.status == SetupRun.Status.FAILED
    [(event_type, body)] = recorded()
    assert event_type == "run.failed"
    assert body["data"]["run"]["status"] == "FAILED" and body["data"]["run"]["error"] == run.error


def test_delete_over_the_api_records_sandbox_deleted_with_reason_api(people, api, run_queued_setups, make_endpoint):
    make_endpoint(account=people.alice.account, event_types=["sandbox.deleted"])
    api.setup(people.alice.key)
    run_queued_setups()
    snapshot = Snapshot.objects.get(account=people.alice.account)

    answer = api.delete(people.alice.key).json()

    [(event_type, body)] = recorded()
    assert event_type == "sandbox.deleted"
    assert body["data"] == {"account_id": str(people.alice.account.pk), "reason": "api",
                            "snapshot": answer["deleted_snapshot"]}
    assert body["data"]["snapshot"] == snapshot_shape(snapshot)
    assert set(body) == {"type", "timestamp", "data"}


def test_a_delete_with_nothing_to_delete_records_nothing(people, api, make_endpoint):
    make_endpoint(account=people.alice.account)
    api.delete(people.alice.key)
    assert Event.objects.count() == 0


def test_a_delete_that_cancels_a_queued_run_records_run_canceled(people, api, make_endpoint):
    make_endpoint(account=people.alice.account)
    run_id = api.setup(people.alice.key).json()["runId"]
    api.delete(people.alice.key)
    [(event_type, body)] = recorded()
    assert event_type == "run.canceled"
    assert body["data"]["run"]["id"] == run_id and body["data"]["run"]["status"] == "CANCELED"


def test_staff_canceling_a_queued_run_records_run_canceled(people, api, make_endpoint):
    make_endpoint(organization=people.acme)
    run_id = api.setup(people.bob.key).json()["runId"]
    setup_runs_cancel_queued(runs=SetupRun.objects.all(), actor=Actor.command("tests"))
    [(event_type, body)] = recorded()
    assert (event_type, body["data"]["run"]["id"], body["data"]["run"]["status"]) == (
        "run.canceled", run_id, "CANCELED")


def test_a_revoke_in_the_admin_records_sandbox_deleted_with_reason_staff(
    admin_client, people, api, run_queued_setups, make_endpoint
):
    make_endpoint(account=people.alice.account, event_types=["sandbox.deleted"])
    api.setup(people.alice.key)
    run_queued_setups()
    admin_client.post("/admin/sandboxes/snapshot/", {
        "action": "revoke_selected_sandboxes", "_selected_action": [people.alice.account.pk], "post": "yes"})
    [(event_type, body)] = recorded()
    assert (event_type, body["data"]["reason"]) == ("sandbox.deleted", "staff")


def test_the_expired_cleanup_records_sandbox_deleted_and_snapshot_expired(people, make_endpoint):
    make_endpoint(organization=people.acme)
    expired = seed_sandbox(people.alice.account, expires_in=EXPIRED)
    seed_sandbox(people.bob.account, expires_in=FRESH)

    call_command("cleanup_sandboxes", "--expired", "--yes", stdout=io.StringIO(), stderr=io.StringIO())

    assert [(t, body["data"].get("reason"), body["data"]["snapshot"]) for t, body in recorded()] == [
        ("sandbox.deleted", "cleanup", snapshot_shape(expired)),
        ("snapshot.expired", None, snapshot_shape(expired)),
    ]


def test_a_cleanup_by_another_rule_records_sandbox_deleted_only(people, make_endpoint):
    make_endpoint(account=people.alice.account)
    seed_sandbox(people.alice.account, expires_in=EXPIRED)
    call_command("cleanup_sandboxes", "--account", str(people.alice.account.pk), "--yes",
                 stdout=io.StringIO(), stderr=io.StringIO())
    assert [(t, body["data"]["reason"]) for t, body in recorded()] == [("sandbox.deleted", "cleanup")]


def test_an_expiring_snapshot_records_snapshot_expiring_once(people, make_endpoint, settings):
    make_endpoint(account=people.alice.account)
    soon = seed_sandbox(people.alice.account, expires_in=timedelta(hours=23))
    seed_sandbox(people.bob.account, expires_in=timedelta(hours=1))  # no endpoint of Bob's
    make_endpoint(account=people.carol.account)
    seed_sandbox(people.carol.account, expires_in=timedelta(hours=25))  # not within the warning yet

    assert webhook_snapshots_expiring_record() == 1
    assert webhook_snapshots_expiring_record() == 0

    [(event_type, body)] = recorded()
    assert event_type == "snapshot.expiring"
    assert body["data"] == {"account_id": str(people.alice.account.pk), "snapshot": snapshot_shape(soon)}


def test_a_renewed_snapshot_is_warned_again_before_its_new_expiry(people, make_endpoint):
    make_endpoint(account=people.alice.account)
    seed_sandbox(people.alice.account, expires_in=timedelta(hours=2))
    assert webhook_snapshots_expiring_record() == 1

    Snapshot.objects.update(expires_at=timezone.now() + timedelta(days=7))  # renewed
    assert webhook_snapshots_expiring_record() == 0, "not within the warning of the new expiry yet"
    assert webhook_snapshots_expiring_record(now=timezone.now() + timedelta(days=6, hours=1)) == 1
    assert types() == ["snapshot.expiring", "snapshot.expiring"]


def test_the_expiry_warning_follows_its_setting(people, make_endpoint, settings):
    settings.WEBHOOK_EXPIRY_WARNING = timedelta(hours=1)
    make_endpoint(account=people.alice.account)
    seed_sandbox(people.alice.account, expires_in=timedelta(hours=2))
    assert webhook_snapshots_expiring_record() == 0
    settings.WEBHOOK_EXPIRY_WARNING = timedelta(hours=3)
    assert webhook_snapshots_expiring_record() == 1


def test_recorded_events_are_delivered_to_the_receiver_verified(people, api, run_queued_setups, make_endpoint,
                                                                   receiver, deliver_pending):
    make_endpoint(account=people.alice.account)
    api.setup(people.alice.key)
    run_queued_setups()
    api.delete(people.alice.key)
    deliver_pending()
    assert [(d.verified, d.event["type"]) for d in receiver.deliveries] == [
        (True, "run.completed"), (True, "sandbox.deleted")]


def test_a_run_failed_by_the_stale_run_sweep_records_run_failed(people, make_endpoint):
    from tests.sandboxes.test_pipeline import make_dead_run, stale_start

    make_endpoint(account=people.alice.account)
    run = make_dead_run(people.alice.account, started_at=stale_start())
    assert fail_stale_runs() == 1
    [(event_type, body)] = recorded()
    assert event_type == "run.failed"
    assert body["data"]["run"]["id"] == run.pk and body["data"]["run"]["status"] == "FAILED"
    assert body["data"]["run"]["error"].startswith("The worker running this setup stopped")
