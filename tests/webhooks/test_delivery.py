"""Delivering events to a real receiver on 127.0.0.1 that verifies each one with the standardwebhooks package."""

import time
from datetime import timedelta

import pytest
from django.utils import timezone

from accounts.audit import Actor
from accounts.models import AuditEvent
from sandboxes.models import SetupRun
from tests.webhooks.receiver import HANG
from webhooks import delivery
from webhooks.models import DeliveryAttempt, Endpoint, Event
from webhooks.services import endpoint_rotate_secret
from webhooks.tasks import deliver_due_events, deliver_event

pytestmark = pytest.mark.django_db


@pytest.fixture
def completed_run_event(people, api, run_queued_setups, make_endpoint):
    """An endpoint of Alice's account, and the run.completed event of her setup, recorded but not delivered."""
    endpoint = make_endpoint(account=people.alice.account)
    api.setup(people.alice.key)
    [run] = run_queued_setups()
    assert run.status == SetupRun.Status.COMPLETED, run.error
    [event] = Event.objects.filter(endpoint=endpoint)
    return event


def test_a_completed_run_is_delivered_signed_as_the_specification_says(completed_run_event, receiver, api, people):
    assert deliver_event(completed_run_event.pk) is True

    [delivered] = receiver.deliveries
    assert delivered.verified, delivered.error
    assert delivered.webhook_id == completed_run_event.pk
    assert abs(int(delivered.headers["webhook-timestamp"]) - time.time()) < 5
    assert delivered.headers["content-type"] == "application/json"
    body = delivered.event
    assert body["type"] == "run.completed"
    assert body["data"]["account_id"] == str(people.alice.account.pk)
    # The run as GET /api/tasks/runs shows it.
    [polled] = api.runs(people.alice.key, runId=body["data"]["run"]["id"]).json()["runs"]
    assert body["data"]["run"] == polled
    completed_run_event.refresh_from_db()
    assert completed_run_event.state == Event.State.DELIVERED
    [attempt] = completed_run_event.delivery_attempts.all()
    assert (attempt.number, attempt.status_code, attempt.succeeded, attempt.response_body) == (1, 200, True, "ok")


def test_a_delivery_signed_with_another_secret_does_not_verify(completed_run_event, receiver):
    receiver.secret = "whsec_" + "QUJD" * 8  # not the endpoint's
    deliver_event(completed_run_event.pk)
    [delivered] = receiver.deliveries
    assert not delivered.verified


def test_a_receiver_that_answers_500_twice_gets_the_event_three_times_with_one_id(completed_run_event, receiver):
    receiver.answers = [500, 500]

    assert deliver_event(completed_run_event.pk) is True

    deliveries = receiver.deliveries
    assert len(deliveries) == 3
    assert {d.webhook_id for d in deliveries} == {completed_run_event.pk}
    assert all(d.verified for d in deliveries)
    assert len({d.body for d in deliveries}) == 1
    completed_run_event.refresh_from_db()
    assert (completed_run_event.state, completed_run_event.attempts) == (Event.State.DELIVERED, 3)
    assert [(a.number, a.status_code, a.succeeded) for a in completed_run_event.delivery_attempts.all()] == [
        (1, 500, False), (2, 500, False), (3, 200, True)]


def test_an_event_that_fails_every_attempt_is_marked_failed(completed_run_event, receiver):
    receiver.answers = [503, 503, 503]

    assert deliver_event(completed_run_event.pk) is False

    completed_run_event.refresh_from_db()
    assert completed_run_event.state == Event.State.FAILED
    assert completed_run_event.last_error == "Answered 503"
    assert completed_run_event.delivery_attempts.count() == 3  # the first and the two retries of the schedule
    assert deliver_event(completed_run_event.pk) is False
    assert len(receiver.deliveries) == 3, "a failed event is not sent again by itself"


def test_a_receiver_that_hangs_is_cut_at_the_timeout(completed_run_event, receiver, settings):
    settings.WEBHOOK_TIMEOUT = 1
    settings.WEBHOOK_RETRY_SCHEDULE = [timedelta(hours=1)]
    receiver.answers = [HANG]

    started = time.monotonic()
    assert deliver_event(completed_run_event.pk) is False
    took = time.monotonic() - started

    assert 1 <= took < 3, took
    [attempt] = DeliveryAttempt.objects.all()
    assert attempt.status_code is None and attempt.error == "No answer within 1 s"
    assert 1000 <= attempt.duration_ms < 3000
    completed_run_event.refresh_from_db()
    assert completed_run_event.state == Event.State.PENDING
    # The next attempt waits for the schedule's delay (an hour here, give or take the jitter).
    wait = completed_run_event.next_attempt_at - timezone.now()
    assert timedelta(minutes=45) < wait < timedelta(minutes=75)


def test_a_redirect_is_not_followed(completed_run_event, receiver, settings):
    settings.WEBHOOK_RETRY_SCHEDULE = [timedelta(hours=1)]
    receiver.answers = [302]
    receiver.extra_headers = {"Location": receiver.url + "/elsewhere"}

    assert deliver_event(completed_run_event.pk) is False

    assert [d.path for d in receiver.deliveries] == ["/hooks"]
    [attempt] = DeliveryAttempt.objects.all()
    assert (attempt.status_code, attempt.succeeded) == (302, False)


def test_only_the_first_kib_of_the_answer_is_read_and_kept(completed_run_event, receiver):
    receiver.answer_body = b"x" * 100_000
    deliver_event(completed_run_event.pk)
    [attempt] = DeliveryAttempt.objects.all()
    assert attempt.response_body == "x" * 1024


def test_an_event_claimed_by_one_worker_is_not_sent_by_another(completed_run_event, receiver):
    assert delivery._claim(completed_run_event.pk) is not None
    assert delivery._claim(completed_run_event.pk) is None
    assert deliver_event(completed_run_event.pk) is False
    assert receiver.deliveries == []


def test_the_sweep_delivers_an_event_whose_worker_died_holding_it(completed_run_event, receiver, sync_queue):
    assert delivery._claim(completed_run_event.pk) is not None  # then the worker died
    assert deliver_due_events() == 0, "held by a worker that may still be sending it"

    Event.objects.filter(pk=completed_run_event.pk).update(
        claimed_until=timezone.now() - timedelta(seconds=1), next_attempt_at=timezone.now() - timedelta(minutes=1)
    )
    assert deliver_due_events() == 1

    [delivered] = receiver.deliveries
    assert delivered.verified and delivered.webhook_id == completed_run_event.pk
    completed_run_event.refresh_from_db()
    assert completed_run_event.state == Event.State.DELIVERED


def test_the_sweep_leaves_delivered_and_fresh_events_alone(completed_run_event, receiver, sync_queue):
    assert deliver_due_events() == 0, "its own task is queued already"
    deliver_event(completed_run_event.pk)
    Event.objects.update(next_attempt_at=timezone.now() - timedelta(minutes=1))
    assert deliver_due_events() == 0
    assert len(receiver.deliveries) == 1


def test_an_endpoint_failing_for_three_days_is_disabled_and_audited(completed_run_event, receiver, settings):
    settings.WEBHOOK_RETRY_SCHEDULE = [timedelta(hours=1)]
    receiver.answers = [500]
    endpoint = completed_run_event.endpoint
    Endpoint.objects.filter(pk=endpoint.pk).update(failing_since=timezone.now() - timedelta(days=3, minutes=1))

    deliver_event(completed_run_event.pk)

    endpoint.refresh_from_db()
    assert not endpoint.is_active
    assert "every delivery failed for 3 days" in endpoint.disabled_reason
    [audit] = AuditEvent.objects.filter(action=AuditEvent.Action.WEBHOOK_DISABLED)
    assert audit.account_id == endpoint.account_id and f"#{endpoint.pk}" in audit.detail
    # A disabled endpoint is sent nothing more.
    Event.objects.update(next_attempt_at=timezone.now())
    assert deliver_event(completed_run_event.pk) is False
    assert len(receiver.deliveries) == 1


def test_an_endpoint_failing_for_less_than_three_days_stays_and_a_success_clears_it(
    completed_run_event, receiver, settings
):
    receiver.answers = [500]
    endpoint = completed_run_event.endpoint
    Endpoint.objects.filter(pk=endpoint.pk).update(failing_since=timezone.now() - timedelta(days=2))

    assert deliver_event(completed_run_event.pk) is True  # 500, then 200 on the retry

    endpoint.refresh_from_db()
    assert endpoint.is_active and endpoint.failing_since is None
    assert not AuditEvent.objects.filter(action=AuditEvent.Action.WEBHOOK_DISABLED).exists()


def test_after_a_rotation_both_secrets_sign_for_a_day(completed_run_event, receiver):
    old = completed_run_event.endpoint.secret
    new = endpoint_rotate_secret(endpoint=completed_run_event.endpoint, actor=Actor.command("tests"))
    assert new != old and new.startswith("whsec_")

    deliver_event(completed_run_event.pk)

    [delivered] = receiver.deliveries
    assert len(delivered.headers["webhook-signature"].split(" ")) == 2
    from standardwebhooks.webhooks import Webhook
    for secret in (old, new):
        Webhook(secret).verify(delivered.body, delivered.headers)

    Endpoint.objects.update(previous_secret_expires_at=timezone.now() - timedelta(seconds=1))
    endpoint = Endpoint.objects.get()
    assert endpoint.signing_secrets(timezone.now()) == [new]


def test_send_again_delivers_a_failed_event_once_more(completed_run_event, receiver, sync_queue, django_capture_on_commit_callbacks):
    receiver.answers = [500, 500, 500]
    deliver_event(completed_run_event.pk)
    assert Event.objects.get().state == Event.State.FAILED

    with django_capture_on_commit_callbacks(execute=True):
        assert delivery.events_redeliver(events=Event.objects.all()) == 1

    assert len(receiver.deliveries) == 4
    event = Event.objects.get()
    assert (event.state, event.attempts) == (Event.State.DELIVERED, 4)


def test_the_worker_that_ends_a_run_delivers_its_event_as_soon_as_it_commits(
    people, api, run_queued_setups, make_endpoint, receiver, django_capture_on_commit_callbacks
):
    make_endpoint(account=people.alice.account)
    api.setup(people.alice.key)
    with django_capture_on_commit_callbacks(execute=True):
        run_queued_setups()

    [delivered] = receiver.deliveries
    assert delivered.verified and delivered.event["type"] == "run.completed"
    assert Event.objects.get().state == Event.State.DELIVERED


def test_an_event_the_worker_could_not_deliver_at_once_is_queued_and_retried(
    people, api, run_queued_setups, make_endpoint, receiver, django_capture_on_commit_callbacks, sync_queue
):
    make_endpoint(account=people.alice.account)
    receiver.answers = [500]
    api.setup(people.alice.key)
    with django_capture_on_commit_callbacks(execute=True):
        run_queued_setups()

    # The worker's attempt failed; the queued task waited for the retry's delay and sent it again.
    assert [d.webhook_id for d in receiver.deliveries] == [Event.objects.get().pk] * 2
    event = Event.objects.get()
    assert (event.state, event.attempts) == (Event.State.DELIVERED, 2)
