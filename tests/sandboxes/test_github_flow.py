"""Setup and delete over the API with GIT_HOST=github, against the GitHub emulator.

The pipeline runs for real: PyGithub over HTTP, `git push` through the
emulator's `git http-backend`, the local sandbox backend on disk.
"""

import base64
import logging
import subprocess
import tarfile
from datetime import timedelta
from pathlib import Path

import pytest
from django.db import connections
from django.utils import timezone

from accounts.models import AuditEvent
from sandboxes.models import SetupRun, Snapshot
from sandboxes.providers import get_git_host, get_sandbox_backend
from sandboxes.providers.base import repository_name_for
from sandboxes.services import setup_runs_fail_stale
from tests.sandboxes.conftest import DEPLOYMENT

pytestmark = pytest.mark.usefixtures("github_host")


def repository_of(person) -> str:
    return repository_name_for(account_name=person.account.name, account_id=person.account.pk)


def set_up(api, person, run_queued_setups) -> SetupRun:
    response = api.setup(person.key)
    assert response.status_code == 200, response.json()
    [run] = run_queued_setups()
    assert run.pk == response.json()["runId"]
    return run


def run_as_seen_by(api, person, run: SetupRun) -> dict:
    response = api.runs(person.key, runId=run.pk)
    assert response.status_code == 200, response.json()
    return response.json()["runs"][0]


def files_in(bare: Path) -> list[str]:
    listing = subprocess.run(
        ["git", "ls-tree", "-r", "--name-only", "main"], cwd=bare, capture_output=True, text=True, check=True
    )
    return sorted(listing.stdout.split())


def starter_files(settings) -> list[str]:
    root = Path(settings.SANDBOX_TEMPLATE_DIR)
    return sorted(str(path.relative_to(root)) for path in root.rglob("*") if path.is_file())


def basic_password(header: str) -> str:
    scheme, _, credential = header.partition(" ")
    assert scheme == "Basic"
    return base64.b64decode(credential).decode().partition(":")[2]


# --- the happy path ---------------------------------------------------------------------


def test_setup_pushes_the_starter_files_to_a_new_private_repository(github, people, api, run_queued_setups,
                                                                    settings):
    alice = people.alice
    run = set_up(api, alice, run_queued_setups)

    assert run.status == SetupRun.Status.COMPLETED, run.error
    name = repository_of(alice)
    repository = github.repository(name)
    assert repository["private"] is True
    assert str(alice.account.pk) in repository["description"]
    assert files_in(github.bare_path(name)) == starter_files(settings)
    snapshot = Snapshot.objects.get(account=alice.account)
    assert snapshot.github_repo == repository["html_url"] == f"{github.url}/sandbox-org/{name}"
    assert run.output["github_repo"] == repository["html_url"]
    assert run.output["snapshot_id"] == snapshot.snapshot_id
    assert run_as_seen_by(api, alice, run)["output"]["github_repo"] == repository["html_url"]
    # The push authenticated with the configured token, which git got from its environment.
    pushes = github.calls("push")
    assert pushes and all(basic_password(call.headers["Authorization"]) == github.token for call in pushes)


def test_setup_again_reuses_the_repository_and_its_content(github, people, api, run_queued_setups, settings):
    first = set_up(api, people.alice, run_queued_setups)
    pushes = len(github.calls("push"))

    second = set_up(api, people.alice, run_queued_setups)

    assert second.status == SetupRun.Status.COMPLETED, second.error
    assert second.created_repository == ""
    assert second.output["github_repo"] == first.output["github_repo"]
    assert len(github.calls("push")) == pushes  # checked out, not pushed again
    assert github.repository_names() == [repository_of(people.alice)]
    assert files_in(github.bare_path(repository_of(people.alice))) == starter_files(settings)
    assert get_sandbox_backend().snapshot_exists(second.output["snapshot_id"])
    assert not get_sandbox_backend().snapshot_exists(first.output["snapshot_id"])


def test_delete_removes_every_repository_of_the_account_and_the_row(github, people, api, run_queued_setups):
    alice, bob = people.alice, people.bob
    run = set_up(api, alice, run_queued_setups)
    set_up(api, bob, run_queued_setups)
    # Unrecorded, but carries alice's id and this deployment's mark.
    github.add_repository(f"old-sandbox-{alice.account.pk}", topics=[f"sandbox-deployment-{DEPLOYMENT}"])
    # Carries alice's id, but no mark: made by someone else, or before the mark existed.
    unmarked = f"their-copy-{alice.account.pk}"
    github.add_repository(unmarked)
    github.add_repository(f"staging-{alice.account.pk}", topics=["sandbox-deployment-staging"])
    github.add_repository("unrelated")

    response = api.delete(alice.key)

    assert response.status_code == 200, response.json()
    assert response.json()["deleted_snapshot"]["github_repo"] == run.output["github_repo"]
    assert github.repository_names() == sorted(
        [repository_of(bob), "unrelated", unmarked, f"staging-{alice.account.pk}"])
    assert [call.path for call in github.calls("delete")] == sorted(
        [f"/repos/sandbox-org/{repository_of(alice)}", f"/repos/sandbox-org/old-sandbox-{alice.account.pk}"])
    event = AuditEvent.objects.get(action=AuditEvent.Action.SANDBOX_DELETED, account=alice.account)
    assert "left alone, without this deployment's mark: " in event.detail
    assert f"{unmarked}: carries no deployment's mark" in event.detail
    assert f"staging-{alice.account.pk}: carries the mark of deployment 'staging', not this one's" in event.detail
    assert not Snapshot.objects.filter(account=alice.account).exists()
    assert not github.bare_path(repository_of(alice)).exists()
    assert not get_sandbox_backend().snapshot_exists(run.output["snapshot_id"])


def test_delete_finds_a_repository_renamed_away_from_the_account_id_by_its_recorded_id(
    github, people, api, run_queued_setups
):
    alice = people.alice
    set_up(api, alice, run_queued_setups)
    row = Snapshot.objects.get(account=alice.account)
    assert row.github_repo_id == github.repository(repository_of(alice))["id"]
    github.rename(repository_of(alice), "alices-project")  # its name no longer carries the account id

    response = api.delete(alice.key)

    assert response.status_code == 200, response.json()
    assert github.repository_names() == []
    [deleted] = github.calls("delete")
    assert deleted.path == "/repos/sandbox-org/alices-project"


@pytest.mark.django_db(transaction=True)  # the run completes in the emulator's thread, on its own connection
def test_delete_removes_the_repository_of_a_run_that_completed_while_the_listing_was_on_its_way(
    github, people, api, run_queued_setups
):
    # A delete lists the host before it cancels the account's runs. A run that completes in between made
    # a repository that the listing misses, and a snapshot that records it: the host is listed again.
    alice = people.alice
    queued = api.setup(alice.key).json()["runId"]

    def run_completes():
        [run] = run_queued_setups()
        connections.close_all()  # this thread's own connection
        assert run.status == SetupRun.Status.COMPLETED, run.error

    github.while_answering("list", run_completes)
    response = api.delete(alice.key)

    assert response.status_code == 200, response.json()
    assert response.json()["deleted_snapshot"]["github_repo"].endswith(repository_of(alice))
    assert SetupRun.objects.get(pk=queued).status == SetupRun.Status.COMPLETED
    assert github.repository_names() == []
    assert len(github.calls("list")) == 2
    assert not Snapshot.objects.filter(account=alice.account).exists()


def test_setup_uses_the_repositorys_default_branch_and_never_pushes_a_main_beside_it(
    github, people, api, run_queued_setups
):
    alice = people.alice
    name = repository_of(alice)
    github.add_repository(name, default_branch="master", files={"app.py": b"print('their work')\n"},
                          topics=[f"sandbox-deployment-{DEPLOYMENT}"])

    run = set_up(api, alice, run_queued_setups)

    assert run.status == SetupRun.Status.COMPLETED, run.error
    assert step(run, "provision")["detail"] == "Checked out the repository's existing content (branch master)"
    assert github.calls("push") == []
    branches = subprocess.run(["git", "branch", "--format=%(refname:short)"], cwd=github.bare_path(name),
                              capture_output=True, text=True, check=True).stdout.split()
    assert branches == ["master"]
    archive = Path(get_sandbox_backend().root) / "snapshots" / f"{run.output['snapshot_id']}.tar.gz"
    with tarfile.open(archive) as tar:
        assert "./app.py" in tar.getnames()


def step(run: SetupRun, name: str) -> dict:
    return next(entry for entry in run.steps if entry["name"] == name)


# --- git's transient failures ----------------------------------------------------------------


@pytest.mark.parametrize("route", ["fetch", "push"])  # ls-remote is a fetch; the push after it
def test_one_transient_502_from_the_git_endpoint_is_retried(github, people, api, run_queued_setups, route):
    github.fail(route, 502, body=b"Bad Gateway\n", headers={"Content-Type": "text/plain"})

    run = set_up(api, people.alice, run_queued_setups)

    assert run.status == SetupRun.Status.COMPLETED, run.error
    calls = github.calls(route)
    assert calls[0].path == calls[1].path  # the same request again, after the 502


@pytest.mark.parametrize("status", [401, 403])
def test_a_refused_git_request_is_never_retried(github, people, api, run_queued_setups, status):
    github.fail("push", status, times=None, body=b"Denied\n", headers={"Content-Type": "text/plain"})

    run = set_up(api, people.alice, run_queued_setups)

    assert run.status == SetupRun.Status.FAILED
    assert run.error.startswith("Provisioning the sandbox failed: `git push` failed"), run.error
    assert len(github.calls("push")) == 1


def test_a_repository_not_found_just_after_its_creation_is_retried(github, people, api, run_queued_setups):
    github.fail("fetch", 404, body=b"Repository not found.\n", headers={"Content-Type": "text/plain"})

    run = set_up(api, people.alice, run_queued_setups)

    assert run.status == SetupRun.Status.COMPLETED, run.error
    assert step(run, "ensure_repository")["detail"].startswith("Created")
    assert len(github.calls("fetch")) >= 2


def test_a_reused_repository_not_found_fails_at_once(github, people, api, run_queued_setups):
    github.add_repository(repository_of(people.alice))
    github.fail("fetch", 404, times=None, body=b"Repository not found.\n", headers={"Content-Type": "text/plain"})

    run = set_up(api, people.alice, run_queued_setups)

    assert run.status == SetupRun.Status.FAILED
    assert "not found" in run.error
    assert len(github.calls("fetch")) == 1


# --- a create whose answer was lost ---------------------------------------------------------------


def test_a_repository_whose_create_answer_was_lost_is_deleted_when_the_setup_fails(
    github, people, api, run_queued_setups
):
    alice = people.alice
    name = repository_of(alice)
    github.fail("create", 502, after=True)  # GitHub made it; the answer was lost; the retry meets 422
    github.fail("push", 403, times=None)

    run = set_up(api, alice, run_queued_setups)

    assert run.status == SetupRun.Status.FAILED
    assert step(run, "ensure_repository")["detail"].startswith("Created")  # not "Reused"
    assert run.created_repository == name
    assert run.created_repository_id is not None
    assert name not in github.repository_names()
    assert [call.route for call in github.requests if call.method == "POST" and call.route == "create"] == [
        "create", "create"]


def test_the_sweep_deletes_a_dead_runs_repository_by_its_recorded_id_after_a_rename(github, people):
    alice = people.alice
    run = SetupRun.objects.create(account=alice.account, status=SetupRun.Status.EXECUTING,
                                  started_at=timezone.now() - timedelta(hours=1))
    created = get_git_host().ensure_repository(name=repository_of(alice), description="x", run_id=run.pk)
    SetupRun.objects.filter(pk=run.pk).update(created_repository=created.repository.name,
                                              created_repository_id=created.repository.id)
    github.rename(created.repository.name, "renamed-by-someone")  # the worker died; someone renamed it
    github.add_repository(repository_of(alice), description="a new one under the old name, not ours")

    assert setup_runs_fail_stale() == 1

    assert github.repository_names() == [repository_of(alice)]  # the renamed one went, the other stayed
    assert [call.route for call in github.calls() if call.method == "DELETE"] == ["delete"]
    assert github.calls("get_by_id")


# --- faults during setup --------------------------------------------------------------------


def fail_create(github, name):
    github.fail("create", 500, times=None)


def drop_create(github, name):
    github.drop("create", times=None)


def fail_get_after_422(github, name):
    github.add_repository(name, description="made by hand before any setup")
    github.fail("get", 502, times=None)


def fail_push_500(github, name):
    github.fail("push", 500, times=None)


def fail_push_403(github, name):
    github.fail("push", 403, times=None)


SETUP_FAULTS = [
    pytest.param(fail_create, "Creating the repository failed: GitHub answered 500 when trying to create repository",
                 False, id="create-500"),
    pytest.param(drop_create, "Creating the repository failed: GitHub did not create repository", False,
                 id="create-dropped"),
    pytest.param(fail_get_after_422, "Creating the repository failed: GitHub answered 502 when trying to read "
                 "repository", True, id="get-502"),
    pytest.param(fail_push_500, "Provisioning the sandbox failed: `git push` failed", False, id="push-500"),
    pytest.param(fail_push_403, "Provisioning the sandbox failed: `git push` failed", False, id="push-403"),
]


@pytest.mark.parametrize(("fault", "message", "existed_before"), SETUP_FAULTS)
def test_a_github_fault_fails_the_setup_cleanly_and_a_retry_succeeds(
    github, people, api, run_queued_setups, settings, fault, message, existed_before
):
    alice = people.alice
    name = repository_of(alice)
    fault(github, name)

    run = set_up(api, alice, run_queued_setups)

    assert run.status == SetupRun.Status.FAILED
    assert run.error.startswith(message), run.error
    assert f"/sandbox-org/{name}" in run.error or "git push" in run.error
    assert run_as_seen_by(api, alice, run)["error"] == run.error
    assert run.output is None
    assert not Snapshot.objects.filter(account=alice.account).exists()
    assert get_sandbox_backend().list_snapshots() == []
    assert (name in github.repository_names()) is existed_before  # never delete one the run did not make

    github.clear_faults()
    retry = set_up(api, alice, run_queued_setups)

    assert retry.status == SetupRun.Status.COMPLETED, retry.error
    assert Snapshot.objects.get(account=alice.account).github_repo == github.repository(name)["html_url"]
    if not existed_before:
        assert files_in(github.bare_path(name)) == starter_files(settings)


def test_a_failed_setup_keeps_the_previous_snapshot_and_the_reused_repository(github, people, api,
                                                                             run_queued_setups):
    alice = people.alice
    first = set_up(api, alice, run_queued_setups)
    github.fail("fetch", 500, times=None)

    second = set_up(api, alice, run_queued_setups)

    assert second.status == SetupRun.Status.FAILED
    assert second.error.startswith("Provisioning the sandbox failed:"), second.error
    assert repository_of(alice) in github.repository_names()
    row = Snapshot.objects.get(account=alice.account)
    assert row.snapshot_id == first.output["snapshot_id"]
    assert get_sandbox_backend().snapshot_exists(row.snapshot_id)
    assert get_sandbox_backend().list_snapshots() == [row.snapshot_id]


def test_setup_says_so_when_the_repository_it_created_cannot_be_deleted(github, people, api, run_queued_setups):
    alice = people.alice
    name = repository_of(alice)
    github.fail("push", 500, times=None)
    github.fail("delete", 403, times=None, message="Must have admin rights to Repository.")

    run = set_up(api, alice, run_queued_setups)

    assert run.status == SetupRun.Status.FAILED
    assert run.error.startswith("Provisioning the sandbox failed:"), run.error
    assert f"also, the repository {name} it created could not be deleted" in run.error
    assert f"GitHub answered 403 when trying to delete repository {github.url}/sandbox-org/{name}" in run.error
    assert "Must have admin rights to Repository." in run.error
    assert "delete it by hand" in run.error
    assert not Snapshot.objects.filter(account=alice.account).exists()


def test_setup_as_a_github_app_pushes_with_the_installation_token(github_app, people, api, run_queued_setups,
                                                                  caplog):
    caplog.set_level(logging.DEBUG)

    run = set_up(api, people.alice, run_queued_setups)

    assert run.status == SetupRun.Status.COMPLETED, run.error
    [installation_token] = github_app.issued_tokens()
    pushes = github_app.calls("push")
    assert pushes and all(basic_password(call.headers["Authorization"]) == installation_token for call in pushes)
    stored = repr([run.steps, run.error, run.output, Snapshot.objects.get(account=people.alice.account).github_repo])
    assert installation_token not in stored
    assert installation_token not in caplog.text


def test_setup_as_a_github_app_fails_cleanly_when_the_token_exchange_fails(github_app, people, api,
                                                                           run_queued_setups):
    github_app.fail("token", 500, times=None)

    run = set_up(api, people.alice, run_queued_setups)

    assert run.status == SetupRun.Status.FAILED
    assert run.error.startswith("Creating the repository failed: GitHub answered 500"), run.error
    assert github_app.repository_names() == []
    assert not Snapshot.objects.filter(account=people.alice.account).exists()

    github_app.clear_faults()
    assert set_up(api, people.alice, run_queued_setups).status == SetupRun.Status.COMPLETED


# --- faults during delete ---------------------------------------------------------------------


@pytest.mark.parametrize(
    ("route", "status", "message"),
    [
        ("list", 500, "Failed to list the repositories of the account: GitHub answered 500 when trying to list "
                      "the repositories of sandbox-org: Server Error"),
        ("delete", 403, "Failed to delete repository {name}: GitHub answered 403 when trying to delete repository "
                        "{url}/sandbox-org/{name}: Must have admin rights to Repository."),
    ],
)
def test_a_github_fault_during_delete_keeps_the_row_and_a_repeat_finishes(
    github, people, api, run_queued_setups, route, status, message
):
    alice = people.alice
    run = set_up(api, alice, run_queued_setups)
    github.fail(route, status, times=None)

    response = api.delete(alice.key)

    assert response.status_code == 400
    name = repository_of(alice)
    assert response.json() == {"status": "error", "error": message.format(name=name, url=github.url)}
    assert Snapshot.objects.filter(account=alice.account).exists()
    assert name in github.repository_names()
    assert get_sandbox_backend().snapshot_exists(run.output["snapshot_id"])

    github.clear_faults()
    repeat = api.delete(alice.key)

    assert repeat.status_code == 200, repeat.json()
    assert repeat.json()["deleted_snapshot"]["snapshot_id"] == run.output["snapshot_id"]
    assert github.repository_names() == []
    assert not Snapshot.objects.filter(account=alice.account).exists()


# --- the token stays secret ----------------------------------------------------------------------


def test_the_token_appears_in_no_run_log_error_or_stored_url(github, people, api, run_queued_setups, settings,
                                                             caplog):
    caplog.set_level(logging.DEBUG)
    logging.getLogger("github").setLevel(logging.DEBUG)  # PyGithub pins its own logger at INFO
    alice, bob = people.alice, people.bob
    try:
        completed = set_up(api, alice, run_queued_setups)
        github.fail("push", 403, times=None)
        github.fail("delete", 500, times=None)
        failed = set_up(api, bob, run_queued_setups)
        delete_failure = api.delete(alice.key)
    finally:
        logging.getLogger("github").setLevel(logging.INFO)

    assert completed.status == SetupRun.Status.COMPLETED and failed.status == SetupRun.Status.FAILED
    assert delete_failure.status_code == 400
    secrets = [github.token, base64.b64encode(f"x-access-token:{github.token}".encode()).decode()]
    seen = [
        repr(list(SetupRun.objects.values_list("steps", "error", "output", "current_step"))),
        repr(list(Snapshot.objects.values_list("github_repo", flat=True))),
        api.runs(alice.key, runId=completed.pk).content.decode(),
        api.runs(bob.key, runId=failed.pk).content.decode(),
        delete_failure.content.decode(),
        caplog.text,
        "\n".join(repr(record.args) for record in caplog.records),
    ]
    assert any("GitHub answered 500" in text for text in seen)  # the failures were seen
    for secret in secrets:
        for text in seen:
            assert secret not in text
    # Nor in the snapshot, whose workspace holds the sandbox's git configuration.
    archive = Path(settings.SANDBOX_ROOT) / "snapshots" / f"{completed.output['snapshot_id']}.tar.gz"
    with tarfile.open(archive) as tar:
        for member in tar.getmembers():
            if member.isfile():
                content = tar.extractfile(member).read()
                assert not any(secret.encode() in content for secret in secrets), member.name
