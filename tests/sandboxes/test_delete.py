"""DELETE /api/sandboxes, end to end through the real local git host and sandbox backend.

What is tested:
- the answer carries the Snapshot row as it was ({account_id, snapshot_id,
  expires_at, github_repo, created_at}), or null where there was none;
- every repository whose name carries the account id goes, recorded or
  not; another account's repositories are never touched;
- the repository, the snapshot archive and the row are all removed;
- when the git host or the sandbox backend fails (caused at the real
  boundary), the answer is a 400 naming what failed, the row stays, and the
  same request finishes the job once the cause is gone;
- an active setup run of the account is canceled.
"""

import shutil
from datetime import datetime
from pathlib import Path

import pytest
from django.conf import settings

from accounts.models import AuditEvent
from sandboxes.models import SetupRun, Snapshot
from tests.sandboxes.local_git import (
    git,
    make_bare_repository,
    make_undeletable,
    repository_name,
    repository_path,
)

pytestmark = pytest.mark.django_db

SNAPSHOT_FIELDS = {"account_id", "snapshot_id", "expires_at", "github_repo", "created_at"}


def snapshot_files(snapshot_id: str) -> list[Path]:
    folder = Path(settings.SANDBOX_ROOT) / "snapshots"
    return [folder / f"{snapshot_id}.tar.gz", folder / f"{snapshot_id}.sha256"]


def set_up(api, person, run_queued_setups) -> Snapshot:
    assert api.setup(person.key).status_code == 200
    [run] = run_queued_setups()
    assert run.status == SetupRun.Status.COMPLETED, run.error
    return Snapshot.objects.get(account=person.account)


def test_delete_answers_with_the_snapshot_row_as_it_was(people, api, run_queued_setups):
    snapshot = set_up(api, people.alice, run_queued_setups)

    response = api.delete(people.alice.key)

    assert response.status_code == 200, response.json()
    body = response.json()
    assert body["status"] == "success"
    deleted = body["deleted_snapshot"]
    assert set(deleted) == SNAPSHOT_FIELDS
    assert deleted["account_id"] == str(people.alice.account.pk)
    assert deleted["snapshot_id"] == snapshot.snapshot_id
    assert (
        deleted["github_repo"]
        == snapshot.github_repo
        == repository_path(people.alice.account).resolve().as_uri()
    )
    assert datetime.fromisoformat(deleted["expires_at"]) == snapshot.expires_at
    assert datetime.fromisoformat(deleted["created_at"]) == snapshot.created_at


def test_delete_removes_the_repository_the_snapshot_archive_and_the_row(
    people, api, run_queued_setups
):
    snapshot = set_up(api, people.alice, run_queued_setups)
    assert repository_path(people.alice.account).is_dir()
    assert all(path.is_file() for path in snapshot_files(snapshot.snapshot_id))

    assert api.delete(people.alice.key).status_code == 200

    assert not repository_path(people.alice.account).exists()
    assert not any(path.exists() for path in snapshot_files(snapshot.snapshot_id))
    assert not Snapshot.objects.filter(account=people.alice.account).exists()


def test_delete_without_a_snapshot_answers_null(people, api):
    response = api.delete(people.alice.key)

    assert response.status_code == 200, response.json()
    assert response.json() == {"status": "success", "deleted_snapshot": None}


def test_deleting_twice_answers_null_the_second_time(people, api, run_queued_setups):
    set_up(api, people.alice, run_queued_setups)
    assert api.delete(people.alice.key).json()["deleted_snapshot"] is not None

    response = api.delete(people.alice.key)

    assert response.status_code == 200
    assert response.json() == {"status": "success", "deleted_snapshot": None}


def test_delete_removes_every_repository_carrying_the_account_id_also_unrecorded_ones(
    people, api, run_queued_setups
):
    account = people.alice.account
    set_up(api, people.alice, run_queued_setups)
    # A repository from the time the account had another name: not on the row.
    old = make_bare_repository(repository_path(account, f"alice-old-name-{account.pk}"))

    assert api.delete(people.alice.key).status_code == 200

    assert not old.exists()
    assert not repository_path(account).exists()
    assert list(Path(settings.GIT_ROOT).iterdir()) == []


def test_delete_leaves_a_repository_without_this_deployments_mark_and_reports_it(
    people, api, run_queued_setups
):
    account = people.alice.account
    set_up(api, people.alice, run_queued_setups)
    # Carries the account's id, but this deployment did not make it (another
    # deployment, a restored backup's, or one made before the mark existed).
    foreign = make_bare_repository(repository_path(account, f"alice-elsewhere-{account.pk}"), marked=False)

    response = api.delete(people.alice.key)

    assert response.status_code == 200, response.json()
    assert foreign.is_dir()
    assert not repository_path(account).exists()
    event = AuditEvent.objects.get(action=AuditEvent.Action.SANDBOX_DELETED, account=account)
    assert event.detail.endswith(
        f"; left alone, without this deployment's mark: alice-elsewhere-{account.pk}: carries no deployment's mark")


def test_delete_removes_the_repositories_of_an_account_without_a_snapshot(people, api):
    account = people.alice.account
    leftover = make_bare_repository(repository_path(account))

    response = api.delete(people.alice.key)

    assert response.status_code == 200, response.json()
    assert response.json()["deleted_snapshot"] is None
    assert not leftover.exists()


def test_delete_never_touches_another_accounts_repository_or_snapshot(
    people, api, run_queued_setups
):
    bobs = set_up(api, people.bob, run_queued_setups)
    set_up(api, people.alice, run_queued_setups)
    bobs_extra = make_bare_repository(
        repository_path(people.bob.account, f"bob-extra-{people.bob.account.pk}")
    )

    assert api.delete(people.alice.key).status_code == 200

    assert repository_path(people.bob.account).is_dir()
    assert git("--git-dir", repository_path(people.bob.account), "rev-parse", "--verify", "main")
    assert bobs_extra.is_dir()
    assert all(path.is_file() for path in snapshot_files(bobs.snapshot_id))
    assert Snapshot.objects.get(account=people.bob.account).snapshot_id == bobs.snapshot_id


def test_a_git_host_failure_answers_400_keeps_the_row_and_a_repeat_finishes_the_job(
    people, api, run_queued_setups, tmp_path
):
    account = people.alice.account
    snapshot = set_up(api, people.alice, run_queued_setups)
    repository, moved = make_undeletable(account, tmp_path)

    response = api.delete(people.alice.key)

    assert response.status_code == 400
    body = response.json()
    assert set(body) == {"status", "error"}
    assert body["status"] == "error"
    assert body["error"].startswith(
        f"Failed to delete repository {repository_name(account)}: Could not delete"
    )
    assert "symbolic link" in body["error"]
    assert str(tmp_path) not in body["error"]  # the repository by its name, never a folder of this host
    assert Snapshot.objects.get(account=account).snapshot_id == snapshot.snapshot_id
    assert all(path.is_file() for path in snapshot_files(snapshot.snapshot_id))
    assert moved.is_dir()

    repository.unlink()
    shutil.move(moved, repository)
    response = api.delete(people.alice.key)

    assert response.status_code == 200, response.json()
    assert response.json()["deleted_snapshot"]["snapshot_id"] == snapshot.snapshot_id
    assert not repository.exists()
    assert not any(path.exists() for path in snapshot_files(snapshot.snapshot_id))
    assert not Snapshot.objects.filter(account=account).exists()


def test_a_sandbox_backend_failure_answers_400_keeps_the_row_and_a_repeat_finishes_the_job(
    people, api, run_queued_setups, tmp_path
):
    account = people.alice.account
    snapshot = set_up(api, people.alice, run_queued_setups)
    snapshots = Path(settings.SANDBOX_ROOT) / "snapshots"
    aside = tmp_path / "snapshots-aside"
    snapshots.rename(aside)
    snapshots.write_text("a file where the snapshots folder should be")

    response = api.delete(people.alice.key)

    assert response.status_code == 400
    body = response.json()
    assert set(body) == {"status", "error"}
    assert body["status"] == "error"
    snapshot_id = snapshot.snapshot_id
    assert body["error"].startswith(
        f"Failed to delete snapshot {snapshot_id}: Could not delete snapshot {snapshot_id}"
    )
    row = Snapshot.objects.get(account=account)
    assert (row.snapshot_id, row.github_repo, row.expires_at) == (
        snapshot.snapshot_id,
        snapshot.github_repo,
        snapshot.expires_at,
    )

    snapshots.unlink()
    aside.rename(snapshots)
    response = api.delete(people.alice.key)

    assert response.status_code == 200, response.json()
    assert response.json()["deleted_snapshot"]["snapshot_id"] == snapshot.snapshot_id
    assert response.json()["deleted_snapshot"]["github_repo"] == snapshot.github_repo
    assert not any(path.exists() for path in snapshot_files(snapshot.snapshot_id))
    assert not repository_path(account).exists()
    assert not Snapshot.objects.filter(account=account).exists()


def test_delete_cancels_a_queued_setup_run(people, api, run_queued_setups):
    run_id = api.setup(people.alice.key).json()["runId"]

    assert api.delete(people.alice.key).status_code == 200

    run = SetupRun.objects.get(pk=run_id)
    assert run.status == SetupRun.Status.CANCELED
    assert run.error == "Canceled: the sandbox was deleted"
    assert run.finished_at is not None
    assert run_queued_setups() == []
    assert not Snapshot.objects.filter(account=people.alice.account).exists()
    assert not Path(settings.GIT_ROOT).exists()


def test_delete_leaves_finished_runs_and_other_accounts_runs_as_they_are(
    people, api, run_queued_setups
):
    set_up(api, people.alice, run_queued_setups)
    completed = SetupRun.objects.get(account=people.alice.account)
    bobs_run_id = api.setup(people.bob.key).json()["runId"]

    assert api.delete(people.alice.key).status_code == 200

    completed.refresh_from_db()
    assert completed.status == SetupRun.Status.COMPLETED
    assert SetupRun.objects.get(pk=bobs_run_id).status == SetupRun.Status.QUEUED
