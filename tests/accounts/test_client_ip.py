"""The client's address in the audit trail, through the proxies the service trusts (TRUSTED_PROXY_COUNT).

With no trusted proxy (the default) the address is the connection's peer and
an X-Forwarded-For the client sends is ignored, so it cannot put another
address in the trail. Behind one proxy, which appends the address it
received the request from, the client is the last address of the header,
whatever the client wrote before it; behind two, the one before it.
"""

import pytest

from accounts.models import AuditEvent

pytestmark = pytest.mark.django_db

PROXY = "10.0.0.2"
CLIENT = "203.0.113.7"
FORGED = "198.51.100.66"


def recorded_ip(api, person, **meta) -> str | None:
    response = api.setup(person.key, REMOTE_ADDR=PROXY, **meta)
    assert response.status_code == 200, response.content
    [event] = AuditEvent.objects.filter(action=AuditEvent.Action.SETUP_REQUESTED)
    return event.client_ip


def test_without_trusted_proxies_the_peer_address_is_recorded(people, api):
    assert recorded_ip(api, people.alice) == PROXY


def test_without_trusted_proxies_a_forwarded_for_header_is_ignored(people, api):
    assert recorded_ip(api, people.alice, HTTP_X_FORWARDED_FOR=FORGED) == PROXY


def test_behind_one_proxy_the_address_it_forwards_is_recorded(people, api, settings):
    settings.TRUSTED_PROXY_COUNT = 1

    assert recorded_ip(api, people.alice, HTTP_X_FORWARDED_FOR=CLIENT) == CLIENT


def test_behind_one_proxy_a_client_cannot_put_another_address_before_its_own(people, api, settings):
    settings.TRUSTED_PROXY_COUNT = 1

    assert recorded_ip(api, people.alice, HTTP_X_FORWARDED_FOR=f"{FORGED}, nonsense, {CLIENT}") == CLIENT


def test_behind_two_proxies_the_address_the_first_one_saw_is_recorded(people, api, settings):
    settings.TRUSTED_PROXY_COUNT = 2

    assert recorded_ip(api, people.alice, HTTP_X_FORWARDED_FOR=f"{FORGED}, {CLIENT}, 10.0.0.1") == CLIENT


def test_behind_two_proxies_a_header_with_one_address_records_no_address(people, api, settings):
    """The request did not come through both proxies: no address is better than a forged one."""
    settings.TRUSTED_PROXY_COUNT = 2

    assert recorded_ip(api, people.alice, HTTP_X_FORWARDED_FOR=FORGED) is None
