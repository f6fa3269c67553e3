"""The webhook pages of the admin: add an endpoint (its secret shown once), disable, events with attempts, send again."""

import pytest
from django.contrib.auth.models import Permission

from tests.staff import messages_of, offered_actions, viewer
from webhooks.models import Endpoint, Event

pytestmark = pytest.mark.django_db

ENDPOINTS, EVENTS = "/admin/webhooks/endpoint/", "/admin/webhooks/event/"


def test_adding_an_endpoint_shows_its_secret_once(admin_client, people, local_webhooks):
    response = admin_client.post(ENDPOINTS + "add/", {
        "account": people.alice.account.pk, "url": "https://127.0.0.1/hooks",
        "event_type_choices": ["run.completed", "run.failed"]})

    assert response.status_code == 200, response.content[:2000]
    endpoint = Endpoint.objects.get()
    assert endpoint.secret.encode() in response.content
    assert endpoint.event_type_list == ["run.completed", "run.failed"]
    page = admin_client.get(ENDPOINTS + f"{endpoint.pk}/change/")
    assert page.status_code == 200 and endpoint.secret.encode() not in page.content
    assert endpoint.secret.encode() not in admin_client.get(ENDPOINTS).content


def test_an_endpoint_at_a_private_address_or_without_one_owner_is_refused(admin_client, people, settings):
    settings.WEBHOOK_ALLOW_PRIVATE = False
    response = admin_client.post(ENDPOINTS + "add/", {"account": people.alice.account.pk,
                                                      "url": "https://10.0.0.1/hooks"})
    assert b"WEBHOOK_ALLOW_PRIVATE" in response.content
    response = admin_client.post(ENDPOINTS + "add/", {"url": "https://8.8.8.8/hooks"})
    assert b"Choose an account or an organization" in response.content
    assert not Endpoint.objects.exists()


def test_disable_selected_endpoints(admin_client, people, make_endpoint):
    endpoint = make_endpoint(organization=people.acme)
    response = admin_client.post(ENDPOINTS, {"action": "disable_selected_endpoints",
                                             "_selected_action": [endpoint.pk]}, follow=True)
    assert messages_of(response) == ["Disabled 1 endpoint(s); nothing more is sent to them."]
    endpoint.refresh_from_db()
    assert not endpoint.is_active and endpoint.disabled_reason == "disabled by staff"


def test_an_events_page_shows_each_attempt_and_send_again_sends_it(
    admin_client, people, api, run_queued_setups, make_endpoint, receiver, deliver_pending, sync_queue,
    django_capture_on_commit_callbacks,
):
    make_endpoint(account=people.alice.account)
    api.setup(people.alice.key)
    run_queued_setups()
    receiver.answers = [500, 500, 500]
    receiver.answer_body = b"receiver is down"
    [event] = deliver_pending()
    assert event.state == Event.State.FAILED

    page = admin_client.get(EVENTS + f"{event.pk}/change/")
    assert page.status_code == 200
    assert page.content.count(b"receiver is down") == 3
    assert b"Answered 500" in page.content
    listing = admin_client.get(EVENTS + "?state=failed")
    assert event.pk.encode() in listing.content

    with django_capture_on_commit_callbacks(execute=True):
        response = admin_client.post(EVENTS, {"action": "send_again", "_selected_action": [event.pk]}, follow=True)
    assert messages_of(response) == ["Queued 1 event(s) to be sent again, with the same webhook-id."]
    event.refresh_from_db()
    assert event.state == Event.State.DELIVERED
    assert [d.webhook_id for d in receiver.deliveries] == [event.pk] * 4


def test_a_viewer_sees_endpoints_and_events_and_is_offered_no_action(client, people, make_endpoint):
    make_endpoint(account=people.alice.account)
    user = viewer(client)
    user.user_permissions.add(*Permission.objects.filter(codename__in=["view_endpoint", "view_event"]))
    assert offered_actions(client.get(ENDPOINTS)) == []
    assert offered_actions(client.get(EVENTS)) == []
