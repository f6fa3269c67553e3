"""manage.py create_webhook, list_webhooks, disable_webhook and rotate_webhook_secret."""

import base64
import io

import pytest
from django.core.management import CommandError, call_command

from accounts.models import AuditEvent
from webhooks.models import Endpoint

pytestmark = pytest.mark.django_db


def run(*args) -> tuple[str, str]:
    out, err = io.StringIO(), io.StringIO()
    call_command(*args, stdout=out, stderr=err)
    return out.getvalue(), err.getvalue()


def test_create_webhook_prints_the_secret_alone_on_the_last_line(people, local_webhooks):
    out, err = run("create_webhook", "--account", str(people.alice.account.pk), "--url", "https://127.0.0.1/h",
                   "--events", "run.completed, sandbox.deleted")
    secret = out.strip().splitlines()[-1]
    endpoint = Endpoint.objects.get()
    assert secret == endpoint.secret and secret.startswith("whsec_")
    assert len(base64.b64decode(secret.removeprefix("whsec_"))) >= 24
    assert endpoint.account == people.alice.account and endpoint.is_active
    assert endpoint.event_type_list == ["run.completed", "sandbox.deleted"]
    assert f"Created webhook endpoint {endpoint.pk}" in err


def test_create_webhook_for_an_organization_by_slug_receives_every_type(people, local_webhooks):
    run("create_webhook", "--org", people.acme.slug, "--url", "https://127.0.0.1/h")
    endpoint = Endpoint.objects.get()
    assert endpoint.organization == people.acme and endpoint.event_type_list == []


@pytest.mark.parametrize("args, message", [
    (["--account", "not-a-uuid", "--url", "https://8.8.8.8/"], "No account"),
    (["--org", "no-such-org", "--url", "https://8.8.8.8/"], "No organization"),
    (["--account", "ALICE", "--url", "http://8.8.8.8/"], "https"),
    (["--account", "ALICE", "--url", "https://10.0.0.1/"], "WEBHOOK_ALLOW_PRIVATE"),
    (["--account", "ALICE", "--url", "https://8.8.8.8/", "--events", "run.done"], "unknown event type"),
    (["--account", "ALICE", "--url", "https://8.8.8.8/", "--events", ""], "--events is empty"),
])
def test_create_webhook_refuses_what_it_cannot_use(people, args, message):
    args = [str(people.alice.account.pk) if arg == "ALICE" else arg for arg in args]
    with pytest.raises(CommandError, match=message):
        run("create_webhook", *args)
    assert not Endpoint.objects.exists()


def test_create_webhook_needs_an_owner_and_only_one(people):
    with pytest.raises(CommandError):
        run("create_webhook", "--url", "https://8.8.8.8/")
    with pytest.raises(CommandError):
        run("create_webhook", "--account", str(people.alice.account.pk), "--org", "acme", "--url", "https://8.8.8.8/")


def test_list_and_disable_webhook(people, local_webhooks):
    run("create_webhook", "--account", str(people.alice.account.pk), "--url", "https://127.0.0.1/a")
    run("create_webhook", "--org", "acme", "--url", "https://127.0.0.1/b", "--events", "run.failed")
    first, second = Endpoint.objects.order_by("pk")

    out, _err = run("list_webhooks")
    assert out.splitlines() == [
        f"{first.pk}\tactive\taccount {people.alice.account.pk}\tall\thttps://127.0.0.1/a",
        f"{second.pk}\tactive\torganization acme\trun.failed\thttps://127.0.0.1/b",
    ]
    assert first.secret not in out and second.secret not in out

    out, _err = run("disable_webhook", str(first.pk))
    assert out.strip() == f"Disabled webhook endpoint {first.pk} (https://127.0.0.1/a)"
    first.refresh_from_db()
    assert not first.is_active
    [audit] = AuditEvent.objects.filter(action=AuditEvent.Action.WEBHOOK_DISABLED)
    assert audit.actor == "disable_webhook" and audit.account_id == people.alice.account.pk
    assert "disabled already" in run("disable_webhook", str(first.pk))[0]
    assert run("list_webhooks")[0].splitlines()[0].split("\t")[1] == "disabled (disabled by command)"
    with pytest.raises(CommandError, match="No webhook endpoint"):
        run("disable_webhook", "12345")
    with pytest.raises(CommandError, match="No webhook endpoint"):
        run("disable_webhook", "abc")


def test_rotate_webhook_secret_prints_the_new_secret_and_keeps_the_old_for_a_day(people, local_webhooks):
    old = run("create_webhook", "--account", str(people.alice.account.pk), "--url", "https://127.0.0.1/a")[0].strip()
    endpoint = Endpoint.objects.get()
    out, err = run("rotate_webhook_secret", str(endpoint.pk))
    new = out.strip().splitlines()[-1]
    endpoint.refresh_from_db()
    assert new == endpoint.secret != old
    assert endpoint.previous_secret == old
    assert "the old one is valid until" in err
