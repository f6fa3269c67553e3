"""Where webhooks may go: https only, public addresses only, checked at creation and again at delivery."""

import pytest

from accounts.audit import Actor
from webhooks.models import DeliveryAttempt, Endpoint, Event
from webhooks.services import WebhookError, endpoint_create
from webhooks.tasks import deliver_event
from webhooks.transport import UnsafeUrl, url_check

pytestmark = pytest.mark.django_db

REFUSED_ADDRESSES = [
    "https://127.0.0.1/hook",  # loopback
    "https://localhost/hook",  # resolves to loopback
    "https://[::1]/hook",
    "https://10.1.2.3/hook",  # private
    "https://172.16.0.1/hook",
    "https://192.168.1.10/hook",
    "https://[fd00:ec2::254]/hook",  # private IPv6 (a cloud's metadata address)
    "https://169.254.169.254/latest/meta-data/",  # link-local: the cloud metadata address
    "https://[fe80::1]/hook",
    "https://100.64.0.1/hook",  # shared address space
    "https://0.0.0.0/hook",
    "https://224.0.0.1/hook",  # multicast
]


@pytest.fixture
def production_rules(settings):
    settings.WEBHOOK_ALLOW_HTTP = False
    settings.WEBHOOK_ALLOW_PRIVATE = False


@pytest.mark.parametrize("url", REFUSED_ADDRESSES)
def test_an_address_that_is_not_public_is_refused(url, production_rules):
    with pytest.raises(UnsafeUrl, match="WEBHOOK_ALLOW_PRIVATE"):
        url_check(url)


@pytest.mark.parametrize("url", REFUSED_ADDRESSES)
def test_an_address_that_is_not_public_is_allowed_with_allow_private(url, settings):
    settings.WEBHOOK_ALLOW_PRIVATE = True
    assert url_check(url).port == 443


def test_a_public_address_over_https_is_allowed(production_rules):
    target = url_check("https://8.8.8.8:8443/hooks?source=sandboxes")
    assert (target.address, target.port, target.path, target.host) == ("8.8.8.8", 8443, "/hooks?source=sandboxes",
                                                                       "8.8.8.8")


def test_plain_http_is_refused_unless_allowed(production_rules, settings):
    with pytest.raises(UnsafeUrl, match="WEBHOOK_ALLOW_HTTP"):
        url_check("http://8.8.8.8/hook")
    settings.WEBHOOK_ALLOW_HTTP = True
    assert url_check("http://8.8.8.8/hook").port == 80


@pytest.mark.parametrize("url", ["ftp://8.8.8.8/hook", "8.8.8.8/hook", "https:///hook", "https://user:pw@8.8.8.8/",
                                 "https://8.8.8.8:99999/", "https://no-such-host.invalid/hook"])
def test_a_url_that_is_not_a_usable_https_url_is_refused(url, production_rules):
    with pytest.raises(UnsafeUrl):
        url_check(url)


def test_creating_an_endpoint_at_a_private_address_is_refused(people, production_rules):
    with pytest.raises(WebhookError, match="refused URL: the host 10.0.0.5 resolves to 10.0.0.5"):
        endpoint_create(url="https://10.0.0.5/hook", account=people.alice.account, actor=Actor.command("tests"))
    assert not Endpoint.objects.exists()


def test_an_unknown_event_type_is_refused(people, production_rules):
    with pytest.raises(WebhookError, match="unknown event type"):
        endpoint_create(url="https://8.8.8.8/hook", account=people.alice.account, event_types=["run.exploded"],
                        actor=Actor.command("tests"))


def test_an_endpoint_needs_exactly_one_owner(people, production_rules):
    with pytest.raises(WebhookError, match="one account or to one organization"):
        endpoint_create(url="https://8.8.8.8/hook", account=people.alice.account, organization=people.acme,
                        actor=Actor.command("tests"))


def test_the_address_is_checked_again_at_delivery(people, api, run_queued_setups, make_endpoint, receiver, settings):
    make_endpoint(account=people.alice.account)  # allowed while WEBHOOK_ALLOW_PRIVATE was on
    api.setup(people.alice.key)
    run_queued_setups()
    settings.WEBHOOK_ALLOW_PRIVATE = False

    deliver_event(Event.objects.get().pk)

    assert receiver.deliveries == []
    attempts = DeliveryAttempt.objects.all()
    assert len(attempts) == 3  # the first and the retries of the test schedule, each refused
    for attempt in attempts:
        assert attempt.status_code is None
        assert attempt.error.startswith("Refused: the host 127.0.0.1 resolves to 127.0.0.1")
