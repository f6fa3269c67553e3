"""The account's page, the one place for a person: its sandbox, runs, keys, and the buttons to act.

What is pinned:
- the page shows the sandbox's state in words, its expiry to the second with
  the time zone, the snapshot id, the repository as a path (local) or a link
  (GitHub), and the last runs with status, failed step and error;
- an operator gets the buttons Revoke sandbox, Run setup again, Revoke keys
  and Deactivate; each posts the list's action for this account (the same
  confirmation page and permission) and comes back to the page;
- a viewer gets no button, and posting the actions anyway changes nothing;
- Deactivate shows what goes first, then revokes the sandbox and the keys and
  marks the account inactive, with audit events; an account whose sandbox
  cannot be deleted is still deactivated, and says so;
- deleting an account with a sandbox, keys or runs explains what to do
  instead, with a Deactivate button.
"""

import re
from pathlib import Path

import pytest

from accounts.models import Account, ApiKey, AuditEvent
from config.admin_links import admin_change_url
from config.timefmt import format_moment
from sandboxes.models import SetupRun, Snapshot
from tests.sandboxes.local_git import git_root_blocked, make_undeletable
from tests.sandboxes.test_admin import set_up
from tests.sandboxes.test_delete import repository_path, snapshot_files
from tests.staff import VIEW_PERMISSIONS, make_staff, messages_of, operator, viewer

pytestmark = pytest.mark.django_db

ACCOUNTS = "/admin/accounts/account/"
SNAPSHOTS = "/admin/sandboxes/snapshot/"


def fail_a_setup(api, person, run_queued_setups) -> SetupRun:
    with git_root_blocked():
        api.setup(person.key)
        [run] = run_queued_setups()
    assert run.status == SetupRun.Status.FAILED
    return run


def page_of(client, account):
    return client.get(admin_change_url(Account, account.pk))


def buttons(response) -> list[str]:
    return re.findall(r'id="page-action-([a-z_]+)"', response.content.decode())


def press(client, response, action: str, **extra):
    """Post the button's form as the browser would (its hidden fields, from the page)."""
    page = response.content.decode()
    tag, body = re.search(rf'(<form[^>]*id="page-action-{action}"[^>]*>)(.*?)</form>', page, re.S).groups()
    url = re.search(r' action="([^"]+)"', tag).group(1)
    fields = dict(re.findall(r'name="([^"]+)" value="([^"]*)"', body))
    fields.pop("csrfmiddlewaretoken", None)
    return client.post(url, {**fields, **extra}, follow=True)


# --- what the page shows -------------------------------------------------------------------------


def test_the_page_shows_the_sandbox_state_expiry_repository_and_last_runs(admin_client, people, api,
                                                                          run_queued_setups):
    failed = fail_a_setup(api, people.alice, run_queued_setups)
    snapshot = set_up(api, people.alice, run_queued_setups)

    response = page_of(admin_client, people.alice.account)

    page = response.content.decode()
    assert '<span class="state state-good">valid</span>' in page
    assert format_moment(snapshot.expires_at) in page and format_moment(snapshot.expires_at).endswith(" UTC")
    assert snapshot.snapshot_id in page
    assert snapshot.github_repo.removeprefix("file://") in page and 'href="file:' not in page
    runs = page[page.index('id="account-runs"'):]
    assert runs.index(f">{snapshot.account.setup_runs.latest('created_at').pk}<") < runs.index(f">{failed.pk}<")
    assert '<span class="state state-bad">failed</span>' in runs
    assert "<td>ensure_repository</td>" in runs
    assert "Creating the repository failed" in runs


def test_an_account_without_a_sandbox_says_so(admin_client, people):
    page = page_of(admin_client, people.bob.account).content.decode()

    assert '<span class="state state-neutral">no sandbox</span>' in page
    assert "No setup run yet." in page


# --- the buttons ---------------------------------------------------------------------------------


def test_an_operator_gets_the_four_buttons(client, people, api, run_queued_setups):
    operator(client)
    set_up(api, people.alice, run_queued_setups)

    assert buttons(page_of(client, people.alice.account)) == [
        "revoke_selected_sandboxes", "run_setup_again", "revoke_keys", "deactivate_accounts"
    ]
    # No sandbox, no Revoke sandbox button.
    assert buttons(page_of(client, people.bob.account)) == ["run_setup_again", "revoke_keys", "deactivate_accounts"]


def test_a_viewer_gets_no_button_and_posting_the_actions_anyway_changes_nothing(client, people, api,
                                                                                 run_queued_setups):
    snapshot = set_up(api, people.alice, run_queued_setups)
    admin = make_staff("boss", VIEW_PERMISSIONS + ["sandboxes.revoke_snapshot", "accounts.revoke_apikey",
                                                   "sandboxes.start_setuprun", "accounts.deactivate_account"])
    client.force_login(admin)
    operator_page = page_of(client, people.alice.account)
    viewer(client)

    assert buttons(page_of(client, people.alice.account)) == []
    for action in ("revoke_selected_sandboxes", "run_setup_again", "revoke_keys", "deactivate_accounts"):
        refused = press(client, operator_page, action, post="yes")
        assert refused.status_code == 200
        assert not [m for m in messages_of(refused) if m.startswith(("Revoked", "Queued", "Deactivated"))]
    assert Snapshot.objects.filter(pk=snapshot.pk).exists()
    assert repository_path(people.alice.account).is_dir()
    assert ApiKey.objects.get(pk=people.alice.api_key.pk).revoked_at is None
    assert Account.objects.get(pk=people.alice.account.pk).is_active
    assert SetupRun.objects.filter(account=people.alice.account).count() == 1


def test_revoke_sandbox_goes_through_the_confirmation_page_and_back_to_the_account(client, people, api,
                                                                                   run_queued_setups):
    operator(client)
    snapshot = set_up(api, people.alice, run_queued_setups)
    account = people.alice.account
    page = page_of(client, account)

    confirmation = press(client, page, "revoke_selected_sandboxes")

    assert confirmation.templates[0].name == "admin/sandboxes/snapshot/revoke_selected_confirmation.html"
    assert Snapshot.objects.filter(pk=snapshot.pk).exists()  # nothing happened yet
    done = client.post(SNAPSHOTS, {"action": "revoke_selected_sandboxes", "_selected_action": [account.pk],
                                   "post": "yes", "next": confirmation.context["next"]}, follow=True)
    assert done.redirect_chain[-1][0] == admin_change_url(Account, account.pk)
    assert messages_of(done)[0].startswith(f"Revoked the sandbox of {account}: deleted snapshot {snapshot.snapshot_id}")
    assert not Snapshot.objects.filter(pk=snapshot.pk).exists()
    assert not repository_path(account).exists()
    assert '<span class="state state-neutral">no sandbox</span>' in done.content.decode()


def test_a_next_that_leaves_the_site_is_not_followed(client, people, api, run_queued_setups):
    operator(client)
    set_up(api, people.alice, run_queued_setups)

    done = client.post(SNAPSHOTS, {"action": "revoke_selected_sandboxes", "post": "yes", "next": "https://evil.example/",
                                   "_selected_action": [people.alice.account.pk]})

    assert done.status_code == 302 and done["Location"] == SNAPSHOTS


def test_run_setup_again_from_the_page_comes_back_to_it(client, people):
    operator(client)

    done = press(client, page_of(client, people.bob.account), "run_setup_again")

    run = SetupRun.objects.get(account=people.bob.account)
    assert done.redirect_chain[-1][0] == admin_change_url(Account, people.bob.account.pk)
    assert messages_of(done) == [f"Queued a setup run for 1 account(s): {people.bob.account} ({run.pk})"]


def test_revoke_keys_revokes_the_accounts_keys_only(client, people, api):
    operator(client)

    before = page_of(client, people.alice.account)
    done = press(client, before, "revoke_keys")

    assert '<span class="state state-good">active</span>' in before.content.decode()  # the key, in words
    assert done.redirect_chain[-1][0] == admin_change_url(Account, people.alice.account.pk)
    assert '<span class="state state-bad">revoked</span>' in done.content.decode()
    assert messages_of(done)[0].startswith(f"Revoked 1 key(s) of {people.alice.account}")
    assert api.setup(people.alice.key).status_code == 401
    assert api.setup(people.bob.key).status_code == 200
    assert AuditEvent.objects.filter(action=AuditEvent.Action.KEY_REVOKED, account=people.alice.account).count() == 1


# --- deactivate ----------------------------------------------------------------------------------


def test_deactivate_first_lists_the_sandbox_and_the_keys_and_changes_nothing(client, people, api, run_queued_setups):
    operator(client)
    snapshot = set_up(api, people.alice, run_queued_setups)

    confirmation = press(client, page_of(client, people.alice.account), "deactivate_accounts")

    page = confirmation.content.decode()
    assert confirmation.context["title"] == "Deactivate accounts"
    assert f'<strong class="revoke-snapshot">{snapshot.snapshot_id}</strong>' in page
    assert f'<strong class="deactivate-key">{people.alice.api_key.prefix}…</strong>' in page
    assert Account.objects.get(pk=people.alice.account.pk).is_active
    assert Snapshot.objects.filter(pk=snapshot.pk).exists()


def test_deactivate_revokes_sandbox_and_keys_marks_inactive_and_records_it(client, people, api, run_queued_setups):
    staff = operator(client)
    snapshot = set_up(api, people.alice, run_queued_setups)
    account = people.alice.account

    done = client.post(ACCOUNTS, {"action": "deactivate_accounts", "_selected_action": [account.pk], "post": "yes",
                                  "next": admin_change_url(Account, account.pk)}, follow=True)

    assert done.redirect_chain[-1][0] == admin_change_url(Account, account.pk)
    assert messages_of(done) == [
        f"Deactivated {account}: 1 key(s) revoked, deleted snapshot {snapshot.snapshot_id} and repository "
        f"{Path(snapshot.github_repo).name.removesuffix('.git')}."
    ]
    assert not Account.objects.get(pk=account.pk).is_active
    assert not Snapshot.objects.filter(account=account).exists()
    assert not repository_path(account).exists()
    assert not any(path.exists() for path in snapshot_files(snapshot.snapshot_id))
    assert api.setup(people.alice.key).status_code == 401
    events = AuditEvent.objects.filter(account_ref=account.pk, actor=f"staff user {staff.username}")
    assert set(events.values_list("action", flat=True)) == {"sandbox.revoked", "key.revoked", "account.deactivated"}
    assert events.get(action="account.deactivated").detail == (
        "Deactivated: marked inactive; 1 key(s) revoked; sandbox revoked"
    )
    # Inactive, without a sandbox or a key: nothing left to press.
    assert buttons(done) == []


def test_an_account_whose_sandbox_cannot_be_deleted_is_deactivated_and_says_so(client, people, api,
                                                                                run_queued_setups, tmp_path):
    operator(client)
    snapshot = set_up(api, people.alice, run_queued_setups)
    make_undeletable(people.alice.account, tmp_path)

    done = client.post(ACCOUNTS, {"action": "deactivate_accounts", "_selected_action": [people.alice.account.pk],
                                  "post": "yes"}, follow=True)

    [message] = messages_of(done)
    assert message.startswith(f"Deactivated {people.alice.account} (1 key(s) revoked), but could not revoke its sandbox")
    assert not Account.objects.get(pk=people.alice.account.pk).is_active
    assert Snapshot.objects.filter(pk=snapshot.pk).exists()
    event = AuditEvent.objects.get(action="account.deactivated")
    assert event.outcome == AuditEvent.Outcome.FAILURE and "could not be revoked" in event.detail


# --- delete --------------------------------------------------------------------------------------


def test_deleting_an_account_with_a_sandbox_explains_to_deactivate_instead(admin_client, people, api,
                                                                          run_queued_setups):
    set_up(api, people.alice, run_queued_setups)

    page = admin_client.get(f"{ACCOUNTS}{people.alice.account.pk}/delete/").content.decode()

    assert 'id="delete-refused"' in page
    assert "deactivate" in page.lower() and 'id="deactivate-instead"' in page
    assert "you don’t have permission" not in page.lower() and "doesn't have permission" not in page
    assert "delete_selected" not in admin_client.get(ACCOUNTS).content.decode()


def test_the_account_list_shows_and_filters_inactive_accounts_in_words(admin_client, people):
    Account.objects.filter(pk=people.bob.account.pk).update(is_active=False)

    everyone = admin_client.get(ACCOUNTS)
    inactive = admin_client.get(ACCOUNTS, {"is_active__exact": "0"})

    assert '<th class="field-person"><a href="' in everyone.content.decode()
    assert everyone.content.decode().count('<span class="state state-neutral">inactive</span>') == 1
    assert [account.pk for account in inactive.context["cl"].result_list] == [people.bob.account.pk]
    assert "icon-no.svg" not in everyone.content.decode()
