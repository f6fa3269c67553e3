"""The accounts back office: accounts, API keys and the audit trail in the Django admin.

What is pinned:
- accounts are found by id, name or email; the list shows organizations, the
  snapshot with its expiry and the last run's status in a fixed number of
  queries; the change page has memberships and keys inline, keys by their
  visible prefix and never their hash; "Run setup again" queues a run;
- an API key is created from the admin through api_key_create: the raw key
  is on the one answer to the save, works against the API, and is nowhere
  else (not in the database, the session, the admin history, the audit
  trail or the logs); a key of an organization is only for its members;
- "Revoke selected keys" sets revoked_at and the key is refused from its
  next request; keys filter by active / revoked / expired and by last use;
  keys are not deleted here;
- the audit trail is read-only, cannot be deleted even by a superuser, and
  filters by action, actor and account;
- staff with view permissions only see all of it and are offered no action;
- accounts' own AccountAdmin, which sandboxes/admin.py extends into the page
  staff see, passes Django's checks without it.
"""

import logging
import re
from datetime import timedelta

import pytest
from django.contrib import admin
from django.contrib.admin.models import LogEntry
from django.contrib.sessions.models import Session
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.utils import timezone

from accounts.admin import AccountAdmin
from accounts.audit import Actor
from accounts.keys import KEY_PATTERN, hash_key
from accounts.models import Account, ApiKey, AuditEvent
from accounts.services import api_key_create, api_keys_revoke
from config.admin_links import admin_change_url
from config.timefmt import format_moment
from sandboxes.admin import AccountPageAdmin
from sandboxes.models import SetupRun, Snapshot
from tests.staff import messages_of, offered_actions, operator, viewer

pytestmark = pytest.mark.django_db

ACCOUNTS = "/admin/accounts/account/"
KEYS = "/admin/accounts/apikey/"
EVENTS = "/admin/accounts/auditevent/"


def set_up(api, person, run_queued_setups) -> Snapshot:
    assert api.setup(person.key).status_code == 200
    [run] = run_queued_setups()
    assert run.status == SetupRun.Status.COMPLETED, run.error
    return Snapshot.objects.get(account=person.account)


def unescape(content: bytes) -> str:
    return content.decode().replace("&lt;", "<").replace("&gt;", ">")


# --- accounts -----------------------------------------------------------------------------------


@pytest.mark.parametrize("term", ["id", "name", "email"])
def test_an_account_is_found_by_id_name_or_email(admin_client, people, term):
    query = {"id": str(people.bob.account.pk), "name": "Bob", "email": "bob@example.com"}[term]

    response = admin_client.get(ACCOUNTS, {"q": query})

    assert [account.pk for account in response.context["cl"].result_list] == [people.bob.account.pk]


def test_the_account_list_shows_organizations_snapshot_expiry_and_last_run(
    admin_client, people, api, run_queued_setups
):
    snapshot = set_up(api, people.alice, run_queued_setups)
    api.setup(people.dave.key)

    response = admin_client.get(ACCOUNTS)

    page = response.content.decode()
    assert "Acme (owner)" in page
    assert "Acme (member), Globex (member)" in page
    assert f'title="{snapshot.snapshot_id}"><span class="state state-good">valid</span></a>' in page
    assert f'<td class="field-expires">{format_moment(snapshot.expires_at)}</td>' in page
    assert '<span class="state state-good">completed</span>' in page
    assert '<span class="state state-waiting">queued</span>' in page
    rows = {account.pk: account for account in response.context["cl"].result_list}
    assert rows[people.alice.account.pk].last_run_status == SetupRun.Status.COMPLETED
    assert rows[people.dave.account.pk].last_run_status == SetupRun.Status.QUEUED
    assert rows[people.bob.account.pk].last_run_status is None


def test_an_expired_snapshot_says_expired_in_the_account_list(admin_client, people, api, run_queued_setups):
    snapshot = set_up(api, people.alice, run_queued_setups)
    Snapshot.objects.filter(pk=snapshot.pk).update(expires_at=timezone.now() - timedelta(days=1))

    page = admin_client.get(ACCOUNTS).content.decode()

    assert f'title="{snapshot.snapshot_id}"><span class="state state-bad">expired</span></a>' in page
    assert "icon-yes.svg" not in page and "icon-no.svg" not in page


def test_the_account_list_takes_the_same_queries_for_more_accounts(admin_client, people, api, run_queued_setups):
    set_up(api, people.alice, run_queued_setups)
    admin_client.get(ACCOUNTS)  # warm the session and the content types
    with CaptureQueriesContext(connection) as one_sandbox:
        admin_client.get(ACCOUNTS)
    for person in (people.bob, people.carol, people.mallory):
        set_up(api, person, run_queued_setups)

    with CaptureQueriesContext(connection) as four_sandboxes:
        admin_client.get(ACCOUNTS)

    assert len(four_sandboxes) == len(one_sandbox) <= 10


def test_the_account_page_has_memberships_and_keys_inline_without_the_hash(admin_client, people):
    org_key = api_key_create(
        actor=Actor.command("tests"), account=people.alice.account, organization=people.acme, name="acme ci"
    )[0]

    response = admin_client.get(admin_change_url(Account, people.alice.account.pk))

    assert response.status_code == 200
    page = response.content.decode()
    [memberships, keys] = response.context["inline_admin_formsets"]
    assert memberships.formset.model.__name__ == "Membership"
    assert [form.instance.organization for form in memberships.formset.forms] == [people.acme]
    assert keys.formset.model is ApiKey
    assert {form.instance.pk for form in keys.formset.forms} == {people.alice.api_key.pk, org_key.pk}
    assert people.alice.api_key.prefix in page and org_key.prefix in page
    assert people.alice.api_key.key_hash not in page and org_key.key_hash not in page
    assert people.alice.key not in page
    assert f"{EVENTS}?account_ref={people.alice.account.pk}" in page


def test_run_setup_again_from_the_account_list(client, people):
    operator(client)

    response = client.post(
        ACCOUNTS, {"action": "run_setup_again", "_selected_action": [people.bob.account.pk]}, follow=True
    )

    run = SetupRun.objects.get(account=people.bob.account)
    assert messages_of(response) == [f"Queued a setup run for 1 account(s): {people.bob.account} ({run.pk})"]


# --- creating keys ------------------------------------------------------------------------------


def create_key(client, **fields):
    # The scopes ticked by default, as the form shows them.
    data = {"account": "", "organization": "", "name": "", "expires_at_0": "", "expires_at_1": "",
            "scopes": ["sandboxes:read", "sandboxes:setup"], **fields}
    return client.post(f"{KEYS}add/", data)


def test_the_add_form_asks_for_account_organization_name_expiry_and_scopes_only(client, people):
    operator(client)

    response = client.get(f"{KEYS}add/")

    assert response.status_code == 200
    assert list(response.context["adminform"].form.fields) == ["account", "organization", "name", "expires_at",
                                                                 "scopes"]
    assert response.context["adminform"].form["scopes"].initial == ["sandboxes:read", "sandboxes:setup"]
    assert b"key_hash" not in response.content


def test_the_add_form_makes_a_key_with_the_scopes_ticked(client, people, api):
    operator(client)

    response = create_key(client, account=people.bob.account.pk, name="reader", scopes=["sandboxes:read"])

    key = ApiKey.objects.get(name="reader")
    assert key.scopes == ["sandboxes:read"]
    raw_key = response.context["raw_key"]
    assert api.sandbox(raw_key).status_code == 200
    assert api.setup(raw_key).json() == {"status": "error", "error": "This key lacks the scope sandboxes:setup"}
    event = AuditEvent.objects.get(action=AuditEvent.Action.KEY_CREATED, detail__contains="reader")
    assert event.detail.endswith("scopes sandboxes:read")


def test_the_add_form_with_no_scope_ticked_makes_a_key_of_no_scope(client, people):
    operator(client)

    create_key(client, account=people.bob.account.pk, name="nothing", scopes=[])

    assert ApiKey.objects.get(name="nothing").scopes == []


def test_a_key_page_changes_the_scopes_with_the_change_in_the_audit_trail(admin_client, admin_user, people, api):
    staff, client = admin_user, admin_client
    key = people.bob.api_key

    response = client.post(admin_change_url(ApiKey, key.pk), {"name": key.name,
                                                               "scopes": ["sandboxes:read", "sandboxes:setup"]})

    assert response.status_code == 302, response.content.decode()[:2000]
    key.refresh_from_db()
    assert key.scopes == ["sandboxes:read", "sandboxes:setup"]
    [event] = AuditEvent.objects.filter(action=AuditEvent.Action.KEY_SCOPES_CHANGED)
    assert (event.actor_user, event.account_ref) == (staff, people.bob.account.pk)
    assert event.detail == (f"Key {key.prefix}… (bob's key): scopes: sandboxes:read sandboxes:setup sandboxes:exec "
                            "sandboxes:delete audit:read → sandboxes:read sandboxes:setup")
    refused = api.delete(people.bob.key)
    assert (refused.status_code, refused.json()["error"]) == (403, "This key lacks the scope sandboxes:delete")


def test_saving_a_key_page_without_changing_the_scopes_records_nothing(admin_client, people):
    key = people.bob.api_key

    admin_client.post(admin_change_url(ApiKey, key.pk), {"name": "renamed", "scopes": list(key.scopes)})

    key.refresh_from_db()
    assert key.name == "renamed"
    assert not AuditEvent.objects.filter(action=AuditEvent.Action.KEY_SCOPES_CHANGED).exists()


def test_the_key_list_and_the_account_page_show_the_scopes(admin_client, people):
    api_key_create(actor=Actor.command("tests"), account=people.bob.account, name="narrow",
                   scopes=["sandboxes:read"])

    keys = admin_client.get(KEYS).content.decode()
    page = admin_client.get(admin_change_url(Account, people.bob.account.pk)).content.decode()

    for shown in (keys, page):
        assert "sandboxes:read sandboxes:setup sandboxes:exec sandboxes:delete audit:read" in shown
        assert re.search(r">\s*sandboxes:read\s*<", shown)  # the narrow key's cell


def test_a_key_created_in_the_admin_is_shown_once_and_works(client, people, api, caplog):
    staff = operator(client)
    caplog.set_level(logging.DEBUG)

    response = create_key(client, account=people.bob.account.pk, name="from the admin")

    assert response.status_code == 200
    assert [t.name for t in response.templates][0] == "admin/accounts/apikey/created.html"
    raw_key = response.context["raw_key"]
    assert KEY_PATTERN.match(raw_key)
    assert raw_key in response.content.decode()
    assert "no-store" in response["Cache-Control"]
    key = ApiKey.objects.get(name="from the admin")
    assert (key.account, key.organization, key.prefix) == (people.bob.account, None, raw_key[:12])
    assert key.key_hash == hash_key(raw_key)
    # The key works.
    assert api.setup(raw_key).status_code == 200
    # And it is nowhere else: not stored, not in the history, the trail, the session or the logs.
    assert not ApiKey.objects.filter(key_hash=raw_key).exists()
    assert all(raw_key not in f"{entry.change_message} {entry.object_repr}" for entry in LogEntry.objects.all())
    assert LogEntry.objects.get(object_id=str(key.pk)).user == staff
    assert all(raw_key not in event.detail and raw_key not in event.actor for event in AuditEvent.objects.all())
    assert all(raw_key not in str(session.get_decoded()) for session in Session.objects.all())
    assert raw_key not in caplog.text
    assert raw_key not in client.get(admin_change_url(ApiKey, key.pk)).content.decode()
    assert raw_key not in client.get(KEYS).content.decode()


def test_creating_a_key_in_the_admin_is_audited_with_the_staff_user_and_request_id(client, people):
    staff = operator(client)

    response = create_key(client, account=people.bob.account.pk, name="audited")

    key = ApiKey.objects.get(name="audited")
    [event] = AuditEvent.objects.filter(action=AuditEvent.Action.KEY_CREATED, actor_user=staff)
    assert event.account_ref == people.bob.account.pk
    assert event.request_id == response["X-Request-ID"]
    assert event.client_ip == "127.0.0.1"
    assert key.prefix in event.detail


def test_an_organization_key_is_created_for_a_member_only(client, people):
    operator(client)

    refused = create_key(client, account=people.mallory.account.pk, organization=people.acme.pk, name="sneaky")
    made = create_key(client, account=people.bob.account.pk, organization=people.acme.pk, name="acme bob")

    assert refused.status_code == 200
    assert "mallory@example.com is not a member of acme." in refused.content.decode()
    assert not ApiKey.objects.filter(name="sneaky").exists()
    assert "raw_key" not in refused.context
    assert ApiKey.objects.get(name="acme bob").organization == people.acme
    assert made.context["raw_key"]


def test_a_new_key_with_an_expiry_in_the_past_is_refused(client, people):
    operator(client)
    yesterday = timezone.now() - timedelta(days=1)

    response = create_key(
        client, account=people.bob.account.pk, name="stale",
        expires_at_0=yesterday.strftime("%Y-%m-%d"), expires_at_1=yesterday.strftime("%H:%M:%S"),
    )

    assert "A new key must expire in the future." in response.content.decode()
    assert not ApiKey.objects.filter(name="stale").exists()


def test_a_viewer_cannot_create_keys(client, people):
    viewer(client)

    assert client.get(f"{KEYS}add/").status_code == 403
    assert create_key(client, account=people.bob.account.pk, name="nope").status_code == 403
    assert not ApiKey.objects.filter(name="nope").exists()


def test_a_key_page_changes_the_name_and_the_scopes_only(admin_client, people):
    key = people.bob.api_key

    response = admin_client.get(admin_change_url(ApiKey, key.pk))

    assert list(response.context["adminform"].form.fields) == ["name", "scopes"]
    assert key.prefix in response.content.decode()
    assert key.key_hash not in response.content.decode()


# --- revoking keys -----------------------------------------------------------------------------


def test_revoke_selected_keys_refuses_them_from_their_next_request(client, people, api):
    staff = operator(client)
    assert api.setup(people.bob.key).status_code == 200

    response = client.post(
        KEYS, {"action": "revoke_selected_keys", "_selected_action": [people.bob.api_key.pk]}, follow=True
    )

    assert messages_of(response) == ["Revoked 1 key(s); they are refused from their next request on."]
    people.bob.api_key.refresh_from_db()
    assert people.bob.api_key.revoked_at is not None
    refused = api.setup(people.bob.key)
    assert refused.status_code == 401
    assert refused.json()["error"] == "This API key has been revoked"
    assert api.setup(people.alice.key).status_code == 200  # the others go on
    [event] = AuditEvent.objects.filter(action=AuditEvent.Action.KEY_REVOKED)
    assert (event.actor_user, event.account_ref) == (staff, people.bob.account.pk)
    assert event.client_ip == "127.0.0.1"


def test_revoking_keys_that_are_revoked_already_says_so_and_keeps_the_first_time(client, people):
    operator(client)
    api_keys_revoke(keys=ApiKey.objects.filter(pk=people.bob.api_key.pk), actor=Actor.command("tests"))
    first = ApiKey.objects.get(pk=people.bob.api_key.pk).revoked_at

    response = client.post(
        KEYS,
        {"action": "revoke_selected_keys", "_selected_action": [people.bob.api_key.pk, people.carol.api_key.pk]},
        follow=True,
    )

    assert messages_of(response) == [
        "Revoked 1 key(s); they are refused from their next request on.",
        "1 selected key(s) were revoked already.",
    ]
    assert ApiKey.objects.get(pk=people.bob.api_key.pk).revoked_at == first
    assert AuditEvent.objects.filter(action=AuditEvent.Action.KEY_REVOKED).count() == 2


def test_keys_filter_by_active_revoked_and_expired(admin_client, people):
    api_keys_revoke(keys=ApiKey.objects.filter(pk=people.bob.api_key.pk), actor=Actor.command("tests"))
    ApiKey.objects.filter(pk=people.carol.api_key.pk).update(expires_at=timezone.now() - timedelta(minutes=1))
    ApiKey.objects.filter(pk=people.dave.api_key.pk).update(expires_at=timezone.now() + timedelta(days=1))

    def listed(status):
        return {key.pk for key in admin_client.get(KEYS, {"status": status}).context["cl"].result_list}

    everyone = set(ApiKey.objects.values_list("pk", flat=True))
    assert listed("revoked") == {people.bob.api_key.pk}
    assert listed("expired") == {people.carol.api_key.pk}
    assert listed("active") == everyone - {people.bob.api_key.pk, people.carol.api_key.pk}


def test_keys_filter_by_last_use(admin_client, people, api):
    api.setup(people.alice.key)

    response = admin_client.get(KEYS, {"last_used_at__isnull": "False"})
    never = admin_client.get(KEYS, {"last_used_at__isnull": "True"})

    assert [key.pk for key in response.context["cl"].result_list] == [people.alice.api_key.pk]
    assert people.alice.api_key.pk not in {key.pk for key in never.context["cl"].result_list}
    midnight = timezone.now().replace(hour=0, minute=0, second=0, microsecond=0)
    today = admin_client.get(KEYS, {"last_used_at__gte": midnight.isoformat()})
    assert [key.pk for key in today.context["cl"].result_list] == [people.alice.api_key.pk]


def test_keys_are_not_deleted_in_the_admin(admin_client, people):
    assert admin_client.get(f"{KEYS}{people.bob.api_key.pk}/delete/").status_code == 403
    assert offered_actions(admin_client.get(KEYS)) == ["revoke_selected_keys"]


def test_a_viewer_sees_keys_but_cannot_revoke_them(client, people):
    viewer(client)

    response = client.get(KEYS)
    client.post(KEYS, {"action": "revoke_selected_keys", "_selected_action": [people.bob.api_key.pk]})

    assert response.status_code == 200
    assert offered_actions(response) == []
    assert ApiKey.objects.get(pk=people.bob.api_key.pk).revoked_at is None
    assert offered_actions(client.get(ACCOUNTS)) == []


# --- the audit trail ---------------------------------------------------------------------------


def test_the_audit_trail_cannot_be_changed_or_deleted_even_by_a_superuser(admin_client, people, api):
    api.setup(people.alice.key)
    event = AuditEvent.objects.get(action=AuditEvent.Action.SETUP_REQUESTED)

    listing = admin_client.get(EVENTS)

    assert listing.status_code == 200
    assert offered_actions(listing) == []
    assert admin_client.get(f"{EVENTS}add/").status_code == 403
    assert admin_client.get(f"{EVENTS}{event.pk}/delete/").status_code == 403
    assert admin_client.post(f"{EVENTS}{event.pk}/delete/", {"post": "yes"}).status_code == 403
    assert admin_client.post(admin_change_url(AuditEvent, event.pk), {"action": "key.revoked"}).status_code == 403
    admin_client.post(EVENTS, {"action": "delete_selected", "_selected_action": [event.pk], "post": "yes"})
    assert AuditEvent.objects.get(pk=event.pk).action == AuditEvent.Action.SETUP_REQUESTED
    page = admin_client.get(admin_change_url(AuditEvent, event.pk))
    assert page.status_code == 200
    assert event.run_id in page.content.decode()


def test_the_audit_trail_filters_by_action_and_account_and_finds_actors_by_text(admin_client, people, api):
    api.setup(people.alice.key)
    api.setup(people.bob.key)
    api_keys_revoke(keys=ApiKey.objects.filter(pk=people.carol.api_key.pk), actor=Actor.command("tests"))

    def listed(**query):
        events = admin_client.get(EVENTS, query).context["cl"].result_list
        return {(event.action, event.account_ref) for event in events}

    setups = {("setup.requested", people.alice.account.pk), ("setup.requested", people.bob.account.pk)}
    assert listed(action__exact="setup.requested") == setups
    by_bobs_key = listed(q=people.bob.api_key.prefix)
    assert ("setup.requested", people.bob.account.pk) in by_bobs_key
    assert {account for _action, account in by_bobs_key} == {people.bob.account.pk}
    assert listed(q="carol@example") == {
        ("key.created", people.carol.account.pk), ("key.revoked", people.carol.account.pk),
        ("membership.added", people.carol.account.pk),
    }
    assert listed(account_ref=str(people.carol.account.pk)) == {
        ("membership.added", people.carol.account.pk),
        ("key.created", people.carol.account.pk), ("key.revoked", people.carol.account.pk),
    }
    # No side panel listing every actor or account: it would not scale past a few hundred.
    everything = admin_client.get(EVENTS)
    assert [spec.title for spec in everything.context["cl"].filter_specs if spec.has_output()] == ["action", "outcome"]
    chosen = admin_client.get(EVENTS, {"account_ref": str(people.carol.account.pk)})
    [account_filter] = [spec for spec in chosen.context["cl"].filter_specs if spec.title == "account"]
    assert account_filter.lookup_choices == [(str(people.carol.account.pk), str(people.carol.account))]


def test_a_viewer_reads_the_audit_trail(client, people, api):
    viewer(client)
    api.setup(people.alice.key)

    response = client.get(EVENTS)

    assert response.status_code == 200
    assert any(event.action == "setup.requested" for event in response.context["cl"].result_list)


def test_an_account_with_a_sandbox_or_keys_cannot_be_deleted_in_the_admin(
    admin_client, people, api, run_queued_setups
):
    set_up(api, people.alice, run_queued_setups)

    page = admin_client.get(f"{ACCOUNTS}{people.alice.account.pk}/delete/")
    refused = admin_client.post(f"{ACCOUNTS}{people.alice.account.pk}/delete/", {"post": "yes"})

    assert "Cannot delete account" in page.content.decode()
    assert refused.status_code == 403
    assert Snapshot.objects.filter(account=people.alice.account).exists()


def test_accounts_own_account_admin_passes_djangos_checks_without_the_higher_apps():
    assert AccountAdmin(Account, admin.AdminSite()).check() == []
    assert type(admin.site.get_model_admin(Account)) is AccountPageAdmin  # the page staff see
