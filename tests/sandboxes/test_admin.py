"""The sandbox back office: snapshots and setup runs in the Django admin, through Django's test client.

What is pinned:
- the snapshot list shows account, snapshot id, the repository as a link,
  expiry and whether it has expired; it filters by expired, organization and
  git host, and finds a sandbox by account id, name, email or snapshot id;
- "Revoke selected sandboxes" first shows exactly what will be deleted
  (every repository, recorded or not, and the snapshot) and deletes nothing;
  once confirmed it deletes repositories, snapshot archive and row through the
  service of DELETE /api/sandboxes and reports each row; a row whose
  repository cannot be deleted (a symlink the local git host refuses) keeps
  its snapshot and record while the others go;
- "Run setup again" queues a run started by the staff user, or answers with
  the account's active run;
- setup runs are read-only; the change page shows the error first and the
  step timeline; "Cancel queued runs" cancels queued runs only, and the worker
  then leaves them alone;
- a staff user with view permissions only sees the same pages without any
  action, and a forged action post changes nothing; superusers have all;
- snapshot rows cannot be added, edited or deleted here (that would leave
  repositories behind).
"""

import shutil
from datetime import timedelta
from pathlib import Path

import pytest
from django.conf import settings
from django.utils import timezone

from accounts.models import AuditEvent
from config.admin_links import admin_change_url
from config.timefmt import format_moment
from sandboxes.models import SetupRun, Snapshot
from sandboxes.tasks import run_setup
from tests.sandboxes.local_git import make_undeletable
from tests.sandboxes.test_delete import (
    make_bare_repository,
    repository_name,
    repository_path,
    snapshot_files,
)
from tests.staff import VIEW_PERMISSIONS, make_staff, messages_of, offered_actions, operator, viewer

pytestmark = pytest.mark.django_db

SNAPSHOTS = "/admin/sandboxes/snapshot/"
RUNS = "/admin/sandboxes/setuprun/"
SNAPSHOT_ACTIONS = ["revoke_selected_sandboxes", "run_setup_again"]


def set_up(api, person, run_queued_setups) -> Snapshot:
    assert api.setup(person.key).status_code == 200
    [run] = run_queued_setups()
    assert run.status == SetupRun.Status.COMPLETED, run.error
    return Snapshot.objects.get(account=person.account)


def break_repository(account, tmp_path) -> Path:
    """Move the repository to another disk and link it back: the local git host refuses to delete it."""
    return make_undeletable(account, tmp_path)[1]


def ask_to_revoke(client, *accounts):
    return client.post(SNAPSHOTS, {"action": "revoke_selected_sandboxes", "_selected_action": [a.pk for a in accounts]})


def confirm_revoke(client, *accounts):
    return client.post(
        SNAPSHOTS,
        {"action": "revoke_selected_sandboxes", "_selected_action": [a.pk for a in accounts], "post": "yes"},
        follow=True,
    )


# --- the snapshot list ------------------------------------------------------------------------


def test_the_snapshot_list_shows_account_snapshot_repository_link_and_expiry(
    admin_client, people, api, run_queued_setups
):
    snapshot = set_up(api, people.alice, run_queued_setups)

    response = admin_client.get(SNAPSHOTS)

    assert response.status_code == 200
    page = response.content.decode()
    assert str(people.alice.account) in page.replace("&lt;", "<").replace("&gt;", ">")
    assert '<td class="field-state"><span class="state state-good">valid</span></td>' in page
    assert f'<td class="field-expires">{format_moment(snapshot.expires_at)}</td>' in page
    # A local repository is a path to clone (a browser opens no file:// link); the list shows
    # its name with the account id shortened, the whole path on hover and on the sandbox's page.
    path = snapshot.github_repo.removeprefix("file://")
    short = f"alice-{str(people.alice.account.pk)[:8]}….git"
    assert f'<code class="repository-path" title="{path}">{short}</code>' in page
    assert 'href="file:' not in page
    assert offered_actions(response) == SNAPSHOT_ACTIONS


def test_a_github_repository_is_a_link_that_opens_in_a_new_tab(admin_client, people, api, run_queued_setups):
    snapshot = set_up(api, people.alice, run_queued_setups)
    url = f"https://github.com/sandbox-org/{repository_name(people.alice.account)}"
    Snapshot.objects.filter(pk=snapshot.pk).update(github_repo=url)

    listed = admin_client.get(SNAPSHOTS).content.decode()
    page = admin_client.get(admin_change_url(Snapshot, snapshot.pk)).content.decode()

    short = f"alice-{str(people.alice.account.pk)[:8]}…"
    assert f'<a href="{url}" rel="noopener noreferrer" target="_blank" title="{url}">{short}</a>' in listed
    assert f'<a href="{url}" rel="noopener noreferrer" target="_blank" title="{url}">{url}</a>' in page


@pytest.mark.parametrize("term", ["account id", "name", "email", "snapshot id"])
def test_a_sandbox_is_found_by_account_id_name_email_or_snapshot_id(admin_client, people, api, run_queued_setups, term):
    alices = set_up(api, people.alice, run_queued_setups)
    set_up(api, people.bob, run_queued_setups)
    query = {
        "account id": str(people.alice.account.pk),
        "name": "Alice",
        "email": "alice@example.com",
        "snapshot id": alices.snapshot_id,
    }[term]

    response = admin_client.get(SNAPSHOTS, {"q": query})

    assert [row.pk for row in response.context["cl"].result_list] == [people.alice.account.pk]


def test_the_state_filter_separates_expired_valid_and_expiring_sandboxes(admin_client, people, api, run_queued_setups):
    set_up(api, people.alice, run_queued_setups)
    set_up(api, people.bob, run_queued_setups)
    set_up(api, people.carol, run_queued_setups)
    Snapshot.objects.filter(account=people.bob.account).update(expires_at=timezone.now() - timedelta(hours=1))
    Snapshot.objects.filter(account=people.carol.account).update(expires_at=timezone.now() + timedelta(hours=3))

    def listed(state):
        return {row.pk for row in admin_client.get(SNAPSHOTS, {"expired": state}).context["cl"].result_list}

    assert listed("yes") == {people.bob.account.pk}
    assert listed("no") == {people.alice.account.pk, people.carol.account.pk}
    assert listed("soon") == {people.carol.account.pk}
    page = admin_client.get(SNAPSHOTS).content.decode()
    assert page.count('<span class="state state-bad">expired</span>') == 1
    assert page.count('<span class="state state-good">valid</span>') == 2


def test_the_organization_filter_lists_the_sandboxes_of_its_members(admin_client, people, api, run_queued_setups):
    set_up(api, people.alice, run_queued_setups)
    set_up(api, people.mallory, run_queued_setups)

    response = admin_client.get(SNAPSHOTS, {"account__memberships__organization__id__exact": people.evil.pk})

    assert [row.pk for row in response.context["cl"].result_list] == [people.mallory.account.pk]


def test_the_git_host_filter_tells_local_repositories_from_github_ones(admin_client, people, api, run_queued_setups):
    set_up(api, people.alice, run_queued_setups)
    set_up(api, people.bob, run_queued_setups)
    Snapshot.objects.filter(account=people.bob.account).update(
        github_repo=f"https://github.com/sandbox-org/bob-{people.bob.account.pk}"
    )

    local = admin_client.get(SNAPSHOTS, {"git_host": "local"}).context["cl"].result_list
    github = admin_client.get(SNAPSHOTS, {"git_host": "github"}).context["cl"].result_list

    assert [row.pk for row in local] == [people.alice.account.pk]
    assert [row.pk for row in github] == [people.bob.account.pk]


def test_snapshot_rows_cannot_be_added_edited_or_deleted_in_the_admin(admin_client, people, api, run_queued_setups):
    snapshot = set_up(api, people.alice, run_queued_setups)

    assert admin_client.get(f"{SNAPSHOTS}add/").status_code == 403
    assert admin_client.get(f"{SNAPSHOTS}{snapshot.pk}/delete/").status_code == 403
    change = admin_client.get(admin_change_url(Snapshot, snapshot.pk))
    assert change.status_code == 200
    assert b'type="submit"' not in change.content.split(b'id="content-main"')[1].split(b"</form>")[0]
    assert "delete_selected" not in offered_actions(admin_client.get(SNAPSHOTS))
    assert Snapshot.objects.filter(pk=snapshot.pk).exists()


# --- revoking ----------------------------------------------------------------------------------


def test_revoking_first_lists_every_repository_and_the_snapshot_and_deletes_nothing(
    client, people, api, run_queued_setups
):
    operator(client)
    snapshot = set_up(api, people.alice, run_queued_setups)
    account = people.alice.account
    unrecorded = make_bare_repository(repository_path(account, f"alice-old-name-{account.pk}"))

    response = ask_to_revoke(client, account)

    assert response.status_code == 200
    assert [t.name for t in response.templates][0] == "admin/sandboxes/snapshot/revoke_selected_confirmation.html"
    [planned] = response.context["plan"].sandboxes
    assert planned.account == account
    assert planned.snapshot.snapshot_id == snapshot.snapshot_id
    assert planned.repositories == sorted([repository_name(account), f"alice-old-name-{account.pk}"])
    page = response.content.decode()
    assert snapshot.snapshot_id in page
    assert repository_name(account) in page and f"alice-old-name-{account.pk}" in page
    assert 'name="post" value="yes"' in page
    # Nothing happened yet.
    assert unrecorded.is_dir() and repository_path(account).is_dir()
    assert Snapshot.objects.filter(pk=account.pk).exists()
    assert not AuditEvent.objects.filter(action=AuditEvent.Action.SANDBOX_REVOKED).exists()


def test_a_confirmed_revoke_deletes_repositories_snapshot_and_row_and_says_so(client, people, api, run_queued_setups):
    staff = operator(client)
    snapshot = set_up(api, people.alice, run_queued_setups)
    account = people.alice.account
    unrecorded = make_bare_repository(repository_path(account, f"alice-old-name-{account.pk}"))

    response = confirm_revoke(client, account)

    assert response.status_code == 200
    assert messages_of(response) == [
        f"Revoked the sandbox of {account}: deleted snapshot {snapshot.snapshot_id} and repositories "
        f"{', '.join(sorted([f'alice-old-name-{account.pk}', repository_name(account)]))}."
    ]
    assert not repository_path(account).exists() and not unrecorded.exists()
    assert not any(path.exists() for path in snapshot_files(snapshot.snapshot_id))
    assert not Snapshot.objects.filter(pk=account.pk).exists()
    assert list(response.context["cl"].result_list) == []
    [event] = AuditEvent.objects.filter(action=AuditEvent.Action.SANDBOX_REVOKED)
    assert (event.outcome, event.actor_user, event.account_ref) == (AuditEvent.Outcome.SUCCESS, staff, account.pk)
    assert event.actor == "staff user operator"
    redirect = response.redirect_chain[0]
    assert redirect[1] == 302


def test_a_repository_that_cannot_be_deleted_fails_its_row_only(client, people, api, run_queued_setups, tmp_path):
    operator(client)
    alices = set_up(api, people.alice, run_queued_setups)
    bobs = set_up(api, people.bob, run_queued_setups)
    carols = set_up(api, people.carol, run_queued_setups)
    moved = break_repository(people.bob.account, tmp_path)

    response = confirm_revoke(client, people.alice.account, people.bob.account, people.carol.account)

    shown = messages_of(response)
    assert f"Revoked the sandbox of {people.alice.account}: deleted snapshot {alices.snapshot_id}" in shown[0]
    assert shown[1].startswith(
        f"Could not revoke the sandbox of {people.bob.account}: Failed to delete repository "
        f"{repository_name(people.bob.account)}: Could not delete"
    )
    assert "Its snapshot and record are kept" in shown[1]
    assert f"Revoked the sandbox of {people.carol.account}: deleted snapshot {carols.snapshot_id}" in shown[2]
    assert shown[3] == "Revoked 2 of 3 sandboxes."
    # Bob keeps everything: the row, the snapshot archive, the repository.
    assert Snapshot.objects.get(pk=people.bob.account.pk).snapshot_id == bobs.snapshot_id
    assert all(path.is_file() for path in snapshot_files(bobs.snapshot_id))
    assert moved.is_dir()
    # The others are gone.
    assert set(Snapshot.objects.values_list("pk", flat=True)) == {people.bob.account.pk}
    assert not repository_path(people.alice.account).exists() and not repository_path(people.carol.account).exists()
    outcomes = dict(
        AuditEvent.objects.filter(action=AuditEvent.Action.SANDBOX_REVOKED).values_list("account_ref", "outcome")
    )
    assert outcomes == {
        people.alice.account.pk: AuditEvent.Outcome.SUCCESS,
        people.bob.account.pk: AuditEvent.Outcome.FAILURE,
        people.carol.account.pk: AuditEvent.Outcome.SUCCESS,
    }

    # Once the cause is gone, revoking again finishes the job.
    repository_path(people.bob.account).unlink()
    shutil.move(moved, repository_path(people.bob.account))
    again = confirm_revoke(client, people.bob.account)
    assert messages_of(again)[0].startswith(f"Revoked the sandbox of {people.bob.account}")
    assert not Snapshot.objects.exists()


def test_revoking_a_sandbox_that_is_gone_already_says_so(client, people, api, run_queued_setups):
    operator(client)
    set_up(api, people.alice, run_queued_setups)
    set_up(api, people.bob, run_queued_setups)
    assert api.delete(people.bob.key).status_code == 200  # meanwhile, through the API

    response = confirm_revoke(client, people.alice.account, people.bob.account)

    shown = messages_of(response)
    assert shown[0].startswith(f"Revoked the sandbox of {people.alice.account}")
    assert "1 selected sandbox(es) were gone already." in shown


def test_revoking_cancels_the_accounts_queued_setup(client, people, api, run_queued_setups):
    operator(client)
    set_up(api, people.alice, run_queued_setups)
    queued = api.setup(people.alice.key).json()["runId"]

    confirm_revoke(client, people.alice.account)

    assert SetupRun.objects.get(pk=queued).status == SetupRun.Status.CANCELED
    run_setup(queued)
    assert not Snapshot.objects.filter(pk=people.alice.account.pk).exists()


# --- run setup again ------------------------------------------------------------------------


def test_run_setup_again_queues_a_run_started_by_the_staff_user(client, people, api, run_queued_setups):
    staff = operator(client)
    first = set_up(api, people.alice, run_queued_setups)

    response = client.post(
        SNAPSHOTS, {"action": "run_setup_again", "_selected_action": [people.alice.account.pk]}, follow=True
    )

    run = SetupRun.objects.get(account=people.alice.account, status=SetupRun.Status.QUEUED)
    assert run.api_key is None
    assert messages_of(response) == [f"Queued a setup run for 1 account(s): {people.alice.account} ({run.pk})"]
    event = AuditEvent.objects.get(action=AuditEvent.Action.SETUP_REQUESTED, run_id=run.pk)
    assert (event.actor_user, event.actor_key, event.actor) == (staff, None, "staff user operator")
    [done] = run_queued_setups()
    assert done.status == SetupRun.Status.COMPLETED, done.error
    assert Snapshot.objects.get(account=people.alice.account).snapshot_id != first.snapshot_id


def test_run_setup_again_answers_with_a_run_that_is_queued_already(client, people, api, run_queued_setups):
    operator(client)
    set_up(api, people.alice, run_queued_setups)
    queued = api.setup(people.alice.key).json()["runId"]

    response = client.post(
        SNAPSHOTS, {"action": "run_setup_again", "_selected_action": [people.alice.account.pk]}, follow=True
    )

    assert SetupRun.objects.filter(account=people.alice.account, status=SetupRun.Status.QUEUED).count() == 1
    assert messages_of(response) == [
        f"1 account(s) had a setup run queued or executing already, which goes on: "
        f"{people.alice.account} ({queued}, QUEUED)"
    ]


def test_run_setup_again_skips_an_inactive_account(client, people, api, run_queued_setups):
    operator(client)
    set_up(api, people.alice, run_queued_setups)
    people.alice.account.is_active = False
    people.alice.account.save(update_fields=["is_active"])

    response = client.post(
        SNAPSHOTS, {"action": "run_setup_again", "_selected_action": [people.alice.account.pk]}, follow=True
    )

    assert messages_of(response) == [f"No setup for {people.alice.account}: the account is inactive."]
    assert not SetupRun.objects.filter(status=SetupRun.Status.QUEUED).exists()


# --- setup runs ------------------------------------------------------------------------------


def test_setup_runs_are_read_only_and_filter_by_status(admin_client, people, api, run_queued_setups):
    set_up(api, people.alice, run_queued_setups)
    queued = api.setup(people.bob.key).json()["runId"]

    response = admin_client.get(RUNS, {"status__exact": "QUEUED"})

    assert [run.pk for run in response.context["cl"].result_list] == [queued]
    assert response.context["cl"].date_hierarchy == "created_at"
    assert offered_actions(response) == ["cancel_queued_runs"]
    assert admin_client.get(f"{RUNS}add/").status_code == 403
    assert admin_client.get(f"{RUNS}{queued}/delete/").status_code == 403
    assert admin_client.post(admin_change_url(SetupRun, queued), {"status": "COMPLETED"}).status_code == 403
    assert SetupRun.objects.get(pk=queued).status == SetupRun.Status.QUEUED


def test_the_run_page_shows_the_step_timeline_with_times_and_details(admin_client, people, api, run_queued_setups):
    set_up(api, people.alice, run_queued_setups)
    run = SetupRun.objects.get(account=people.alice.account)

    response = admin_client.get(admin_change_url(SetupRun, run.pk))

    assert response.status_code == 200
    page = response.content.decode()
    assert 'id="run-timeline"' in page
    assert 'id="run-error"' not in page
    timeline = response.context["timeline"]
    assert [step["name"] for step in timeline] == [step["name"] for step in run.steps]
    assert all(step["ok"] is True and step["started"] and step["finished"] for step in timeline)
    assert "Creating the sandbox" in page and "Shutting the sandbox down" in page
    for step in run.steps:
        if step["detail"]:
            assert step["detail"].split(" (")[0] in page


def test_a_run_whose_id_reads_like_an_admin_escape_opens_from_the_account_list(admin_client, people):
    # The admin escapes "&" in its URLs as "_26": an unquoted link would open "run&…".
    step = {"name": "create_sandbox", "started": "2026-11-23T10:00:00+00:00",
            "finished": "2026-11-23T10:00:01+00:00", "ok": True, "detail": "sandbox sbx-1"}
    run = SetupRun.objects.create(id="run_26" + "0" * 22, account=people.alice.account,
                                  status=SetupRun.Status.COMPLETED, steps=[step])
    link = admin_change_url(SetupRun, run.pk)

    accounts_page = admin_client.get("/admin/accounts/account/").content.decode()

    assert f'href="{link}"' in accounts_page
    page = admin_client.get(link)
    assert page.status_code == 200
    assert page.context["original"] == run
    assert [entry["name"] for entry in page.context["timeline"]] == ["create_sandbox"]


def test_the_run_page_shows_the_error_first(admin_client, people, api, run_queued_setups):
    Path(settings.GIT_ROOT).write_text("a file where the git root should be")
    run_id = api.setup(people.alice.key).json()["runId"]
    run_queued_setups()
    run = SetupRun.objects.get(pk=run_id)
    assert run.status == SetupRun.Status.FAILED

    page = admin_client.get(admin_change_url(SetupRun, run.pk)).content.decode()

    error_note = page.index('id="run-error"')
    assert error_note < page.index("<fieldset")
    assert "Creating the repository failed: Could not create the git root" in page[error_note:]
    assert "icon-no.svg" in page[page.index('id="run-timeline"'):]


def test_cancel_queued_runs_cancels_queued_runs_only_and_the_worker_leaves_them(client, people, api):
    staff = operator(client)
    queued = api.setup(people.alice.key).json()["runId"]
    executing = api.setup(people.bob.key).json()["runId"]
    SetupRun.objects.filter(pk=executing).update(status=SetupRun.Status.EXECUTING, started_at=timezone.now())

    response = client.post(RUNS, {"action": "cancel_queued_runs", "_selected_action": [queued, executing]}, follow=True)

    assert messages_of(response) == [
        f"Canceled 1 queued run(s): {queued}",
        "1 selected run(s) were not queued (executing or finished) and were left alone.",
    ]
    canceled = SetupRun.objects.get(pk=queued)
    assert canceled.status == SetupRun.Status.CANCELED and canceled.finished_at is not None
    assert SetupRun.objects.get(pk=executing).status == SetupRun.Status.EXECUTING
    [event] = AuditEvent.objects.filter(action=AuditEvent.Action.RUN_CANCELED)
    assert (event.run_id, event.account_ref, event.actor_user) == (queued, people.alice.account.pk, staff)
    run_setup(queued)  # the task was queued before: it is delivered anyway
    assert SetupRun.objects.get(pk=queued).status == SetupRun.Status.CANCELED
    assert not Snapshot.objects.filter(account=people.alice.account).exists()
    # A new setup can start at once.
    assert api.setup(people.alice.key).json()["runId"] != queued


# --- who may act --------------------------------------------------------------------------------


def test_a_viewer_sees_sandboxes_and_runs_but_is_offered_no_action(client, people, api, run_queued_setups):
    viewer(client)
    set_up(api, people.alice, run_queued_setups)
    run = SetupRun.objects.get(account=people.alice.account)

    snapshots = client.get(SNAPSHOTS)
    runs = client.get(RUNS)

    assert snapshots.status_code == runs.status_code == 200
    assert [row.pk for row in snapshots.context["cl"].result_list] == [people.alice.account.pk]
    assert offered_actions(snapshots) == offered_actions(runs) == []
    assert client.get(admin_change_url(SetupRun, run.pk)).status_code == 200


def test_an_operator_is_offered_the_actions(client):
    operator(client)

    assert offered_actions(client.get(SNAPSHOTS)) == SNAPSHOT_ACTIONS
    assert offered_actions(client.get(RUNS)) == ["cancel_queued_runs"]


def test_a_viewer_posting_the_revoke_action_anyway_changes_nothing(client, people, api, run_queued_setups):
    viewer(client)
    snapshot = set_up(api, people.alice, run_queued_setups)

    response = confirm_revoke(client, people.alice.account)

    assert response.status_code == 200  # the change list again
    assert messages_of(response) == []
    assert Snapshot.objects.get(pk=people.alice.account.pk).snapshot_id == snapshot.snapshot_id
    assert repository_path(people.alice.account).is_dir()
    assert not AuditEvent.objects.filter(action=AuditEvent.Action.SANDBOX_REVOKED).exists()


def test_a_viewer_posting_the_run_actions_anyway_changes_nothing(client, people, api, run_queued_setups):
    viewer(client)
    set_up(api, people.alice, run_queued_setups)
    queued = api.setup(people.bob.key).json()["runId"]

    client.post(SNAPSHOTS, {"action": "run_setup_again", "_selected_action": [people.alice.account.pk]})
    client.post(RUNS, {"action": "cancel_queued_runs", "_selected_action": [queued]})

    assert not SetupRun.objects.filter(account=people.alice.account, status=SetupRun.Status.QUEUED).exists()
    assert SetupRun.objects.get(pk=queued).status == SetupRun.Status.QUEUED


def test_staff_without_view_permission_cannot_see_sandboxes(client, people):
    client.force_login(make_staff("nobody", []))

    assert client.get(SNAPSHOTS).status_code == 403
    assert client.get(RUNS).status_code == 403


def test_each_action_needs_its_own_permission(client, people, api, run_queued_setups):
    client.force_login(make_staff("revoker", [*VIEW_PERMISSIONS, "sandboxes.revoke_snapshot"]))
    set_up(api, people.alice, run_queued_setups)

    assert offered_actions(client.get(SNAPSHOTS)) == ["revoke_selected_sandboxes"]
    assert offered_actions(client.get(RUNS)) == []
    response = client.post(
        SNAPSHOTS, {"action": "run_setup_again", "_selected_action": [people.alice.account.pk]}, follow=True
    )
    assert messages_of(response) == ["No action selected."]
    assert not SetupRun.objects.filter(status=SetupRun.Status.QUEUED).exists()
