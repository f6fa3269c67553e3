"""The setup pipeline, end to end: a setup request over the API, then the worker's task.

What is tested:
- a run COMPLETES with every step recorded ok: create_sandbox,
  ensure_repository, provision, snapshot, save_snapshot, shutdown; the bare
  repository really holds the starter files, the snapshot archive exists,
  the Snapshot row matches the run's output, no sandbox is left running;
- a failure at each step (caused at the real boundary: a file where a folder
  should be, a pre-receive hook that rejects the push) fails the run with a
  sentence naming the step and leaves nothing half-made; fixing the cause and
  asking again completes;
- a second setup replaces the snapshot and keeps the repository's history;
- a run canceled while queued is left alone by the worker;
- the stale sweep fails runs whose worker died and takes away what they made;
- a task delivered twice runs the pipeline once.

The local sandbox backend and the local git host run for real (real folders,
the real git binary) under the test's own SANDBOX_ROOT and GIT_ROOT.
"""

import tarfile
from datetime import datetime, timedelta
from pathlib import Path

import pytest
from django.conf import settings
from django.utils import timezone

from accounts.models import AuditEvent
from sandboxes.models import SetupRun, Snapshot
from sandboxes.providers import get_git_host, get_sandbox_backend
from sandboxes.tasks import fail_stale_runs, run_setup
from tests.sandboxes.local_git import git, make_bare_repository, repository_name, repository_path

ALL_STEPS = [
    "create_sandbox",
    "ensure_repository",
    "provision",
    "snapshot",
    "save_snapshot",
    "shutdown",
]

pytestmark = pytest.mark.django_db


# --- looking at the outside systems ------------------------------------------------


def reject_pushes(repository: Path) -> Path:
    hook = repository / "hooks" / "pre-receive"
    hook.write_text("#!/bin/sh\necho 'pushes are closed for maintenance' >&2\nexit 1\n")
    hook.chmod(0o755)
    return hook


def sandbox_folders() -> list[Path]:
    folder = Path(settings.SANDBOX_ROOT) / "sandboxes"
    return list(folder.iterdir()) if folder.is_dir() else []


def snapshot_archive(snapshot_id: str) -> Path:
    return Path(settings.SANDBOX_ROOT) / "snapshots" / f"{snapshot_id}.tar.gz"


def starter_files() -> list[str]:
    root = Path(settings.SANDBOX_TEMPLATE_DIR)
    return sorted(str(path.relative_to(root)) for path in root.rglob("*") if path.is_file())


def step(run: SetupRun, name: str) -> dict:
    [entry] = [entry for entry in run.steps if entry["name"] == name]
    return entry


# --- driving the service --------------------------------------------------------------


def request_setup(api, person) -> str:
    response = api.setup(person.key)
    assert response.status_code == 200, response.json()
    assert response.json()["status"] == "success"
    return response.json()["runId"]


def set_up(api, person, run_queued_setups) -> SetupRun:
    run_id = request_setup(api, person)
    run_queued_setups()
    return SetupRun.objects.get(pk=run_id)


def assert_failed_at(run: SetupRun, name: str, sentence: str):
    assert run.status == SetupRun.Status.FAILED
    assert run.error.startswith(sentence), run.error
    assert step(run, name)["ok"] is False
    assert step(run, name)["detail"]
    assert run.output is None
    assert run.finished_at is not None
    done = [entry["name"] for entry in run.steps if entry["ok"]]
    # The sandbox starts beside the repository's creation: that one has run when the start fails.
    before = ["ensure_repository"] if name == "create_sandbox" else ALL_STEPS[: ALL_STEPS.index(name)]
    assert done == before + (["shutdown"] if run.sandbox_id else [])
    assert run.current_step == name  # the step that failed, not the shutdown after it
    assert_no_host_paths(run)


def assert_no_host_paths(run: SetupRun):
    """Nothing a client reads of the run names a folder of this host (the clone address aside)."""
    readable = [run.error, *(entry["detail"] for entry in run.steps)]
    roots = [str(Path(settings.SANDBOX_ROOT).parent), str(settings.SANDBOX_TEMPLATE_DIR)]
    clone_address = repository_path(run.account).resolve().as_uri()  # the one address a client may read
    for text in readable:
        assert not any(root in text.replace(clone_address, "") for root in roots), text


def assert_nothing_half_made(account):
    """No sandbox running, and no Snapshot row pointing at a snapshot that does not exist."""
    assert sandbox_folders() == []
    snapshot = Snapshot.objects.filter(account=account).first()
    assert snapshot is None or snapshot_archive(snapshot.snapshot_id).is_file()


def assert_a_new_setup_completes(api, person, run_queued_setups) -> SetupRun:
    run = set_up(api, person, run_queued_setups)
    assert run.status == SetupRun.Status.COMPLETED, run.error
    assert snapshot_archive(run.output["snapshot_id"]).is_file()
    assert Snapshot.objects.get(account=person.account).snapshot_id == run.output["snapshot_id"]
    assert sandbox_folders() == []
    return run


# --- the whole way through -----------------------------------------------------------


def test_a_setup_completes_every_step(people, api, run_queued_setups):
    run = set_up(api, people.alice, run_queued_setups)

    assert run.status == SetupRun.Status.COMPLETED, run.error
    assert [entry["name"] for entry in run.steps] == ALL_STEPS
    assert all(entry["ok"] is True and entry["finished"] for entry in run.steps), run.steps
    assert run.error == ""
    assert run.started_at <= run.finished_at
    assert run.created_repository == repository_name(people.alice.account)


def test_the_repository_receives_the_starter_files(people, api, run_queued_setups):
    set_up(api, people.alice, run_queued_setups)

    repository = repository_path(people.alice.account)
    assert git("--git-dir", repository, "rev-parse", "--is-bare-repository") == "true"
    pushed = git("--git-dir", repository, "ls-tree", "-r", "--name-only", "main").splitlines()
    assert sorted(pushed) == starter_files()
    assert {"README.md", ".gitignore", "workspace/README.md"} <= set(pushed)
    readme = (Path(settings.SANDBOX_TEMPLATE_DIR) / "README.md").read_text()
    assert git("--git-dir", repository, "show", "main:README.md") == readme.strip()
    assert (
        git("--git-dir", repository, "log", "--format=%an|%s", "main")
        == "Sandbox service|Set up sandbox"
    )


def test_the_snapshot_row_matches_the_runs_output_and_its_archive_exists(
    people, api, run_queued_setups
):
    before = timezone.now()
    run = set_up(api, people.alice, run_queued_setups)

    snapshot = Snapshot.objects.get(account=people.alice.account)
    assert run.output["snapshot_id"] == snapshot.snapshot_id
    assert (
        run.output["github_repo"]
        == snapshot.github_repo
        == repository_path(people.alice.account).resolve().as_uri()
    )
    assert datetime.fromisoformat(run.output["expires_at"]) == snapshot.expires_at
    assert (
        before + settings.SNAPSHOT_TTL
        <= snapshot.expires_at
        <= timezone.now() + settings.SNAPSHOT_TTL
    )
    archive = snapshot_archive(snapshot.snapshot_id)
    assert archive.is_file()
    with tarfile.open(archive) as tar:
        assert {"./README.md", "./.gitignore", "./workspace/README.md"} <= set(tar.getnames())
        assert any(name.startswith("./.git/") for name in tar.getnames())


def test_the_snapshot_row_records_the_snapshots_listing(people, api, run_queued_setups):
    set_up(api, people.alice, run_queued_setups)

    snapshot = Snapshot.objects.get(account=people.alice.account)
    with tarfile.open(snapshot_archive(snapshot.snapshot_id)) as tar:
        in_archive = {
            member.name.removeprefix("./"): member for member in tar.getmembers()
            if member.name != "." and not member.name.startswith("./.git/") and member.name != "./.git"
        }
    assert snapshot.filetree == [
        {"path": path, "type": "tree" if member.isdir() else "blob", "size": None if member.isdir() else member.size}
        for path, member in sorted(in_archive.items())
    ]
    assert {"README.md", ".gitignore", "workspace", "workspace/README.md"} <= {e["path"] for e in snapshot.filetree}


def test_no_sandbox_is_left_running_after_a_setup(people, api, run_queued_setups):
    run = set_up(api, people.alice, run_queued_setups)

    assert run.sandbox_id
    assert step(run, "shutdown")["detail"] == f"Sandbox {run.sandbox_id} stopped"
    assert sandbox_folders() == []


def test_the_client_sees_the_completed_run_when_it_polls(people, api, run_queued_setups):
    run_id = request_setup(api, people.alice)
    assert api.runs(people.alice.key, runId=run_id).json()["runs"][0]["status"] == "QUEUED"

    run_queued_setups()

    [polled] = api.runs(people.alice.key, runId=run_id).json()["runs"]
    assert polled["status"] == "COMPLETED"
    assert polled["error"] is None
    assert (
        polled["output"]["snapshot_id"]
        == Snapshot.objects.get(account=people.alice.account).snapshot_id
    )
    assert [entry["name"] for entry in polled["metadata"]["steps"]] == ALL_STEPS


# --- a failure at each step leaves nothing half-made -----------------------------------


def test_a_sandbox_that_cannot_be_created_fails_the_run_and_a_retry_completes(
    people, api, run_queued_setups
):
    sandbox_root = Path(settings.SANDBOX_ROOT)
    sandbox_root.write_text("a file where the sandbox root should be")

    run = set_up(api, people.alice, run_queued_setups)

    assert_failed_at(
        run, "create_sandbox", "Creating the sandbox failed: Could not create a sandbox under"
    )
    assert run.sandbox_id == ""
    # The repository made beside the sandbox's start is taken away again.
    assert [(entry["name"], entry["ok"]) for entry in run.steps] == [
        ("create_sandbox", False), ("ensure_repository", True), ("provision", False)]
    assert not Snapshot.objects.filter(account=people.alice.account).exists()
    assert not repository_path(people.alice.account).exists()
    assert sandbox_root.is_file()

    sandbox_root.unlink()
    assert_a_new_setup_completes(api, people.alice, run_queued_setups)


def test_a_repository_that_cannot_be_created_fails_the_run_and_a_retry_completes(
    people, api, run_queued_setups
):
    git_root = Path(settings.GIT_ROOT)
    git_root.write_text("a file where the git root should be")

    run = set_up(api, people.alice, run_queued_setups)

    assert_failed_at(
        run, "ensure_repository", "Creating the repository failed: Could not create the git root"
    )
    assert run.created_repository == ""
    assert step(run, "shutdown")["ok"] is True
    assert_nothing_half_made(people.alice.account)
    assert not Snapshot.objects.filter(account=people.alice.account).exists()

    git_root.unlink()
    assert_a_new_setup_completes(api, people.alice, run_queued_setups)


def test_a_rejected_push_fails_the_run_and_never_deletes_a_repository_that_existed_before(
    people, api, run_queued_setups, caplog
):
    repository = make_bare_repository(repository_path(people.alice.account))
    hook = reject_pushes(repository)

    run = set_up(api, people.alice, run_queued_setups)

    assert_failed_at(run, "provision", "Provisioning the sandbox failed: `git push` failed with exit status 1")
    # git's own words name this host's folders: the log has them, the run does not.
    assert "pushes are closed for maintenance" in caplog.text
    assert_no_host_paths(run)
    assert step(run, "ensure_repository")["detail"].startswith("Reused")
    assert run.created_repository == ""
    assert git("--git-dir", repository, "rev-parse", "--is-bare-repository") == "true"
    assert git("--git-dir", repository, "for-each-ref") == ""
    assert_nothing_half_made(people.alice.account)
    assert not Snapshot.objects.filter(account=people.alice.account).exists()

    hook.unlink()
    retried = assert_a_new_setup_completes(api, people.alice, run_queued_setups)
    assert (
        sorted(git("--git-dir", repository, "ls-tree", "-r", "--name-only", "main").splitlines())
        == starter_files()
    )
    assert retried.created_repository == ""


def test_a_snapshot_that_cannot_be_written_fails_the_run_and_deletes_the_repository_it_created(
    people, api, run_queued_setups
):
    snapshots = Path(settings.SANDBOX_ROOT) / "snapshots"
    snapshots.parent.mkdir(parents=True)
    snapshots.write_text("a file where the snapshots folder should be")

    run = set_up(api, people.alice, run_queued_setups)

    assert_failed_at(run, "snapshot", "Taking the snapshot failed: Could not write snapshot snap_")
    assert run.created_repository == repository_name(people.alice.account)
    assert not repository_path(people.alice.account).exists()
    assert_nothing_half_made(people.alice.account)
    assert not Snapshot.objects.filter(account=people.alice.account).exists()
    assert snapshots.is_file()

    snapshots.unlink()
    assert_a_new_setup_completes(api, people.alice, run_queued_setups)
    assert repository_path(people.alice.account).is_dir()


def test_the_client_reads_the_failure_as_a_sentence(people, api, run_queued_setups):
    Path(settings.GIT_ROOT).write_text("a file where the git root should be")
    run_id = request_setup(api, people.alice)
    run_queued_setups()

    [polled] = api.runs(people.alice.key, runId=run_id).json()["runs"]

    assert polled["status"] == "FAILED"
    assert polled["output"] is None
    assert polled["error"].startswith(
        "Creating the repository failed: Could not create the git root"
    )
    assert polled["metadata"]["currentStep"] == "ensure_repository"  # the step that failed
    assert [(entry["name"], entry["ok"]) for entry in polled["metadata"]["steps"]] == [
        ("create_sandbox", True),
        ("ensure_repository", False),
        ("shutdown", True),
    ]


def test_a_failed_setup_leaves_the_previous_snapshot_and_repository_in_place(
    people, api, run_queued_setups
):
    first = set_up(api, people.alice, run_queued_setups)
    sandboxes = Path(settings.SANDBOX_ROOT) / "sandboxes"
    sandboxes.rmdir()
    sandboxes.write_text("a file where the sandboxes folder should be")

    second = set_up(api, people.alice, run_queued_setups)

    assert_failed_at(second, "create_sandbox", "Creating the sandbox failed")
    snapshot = Snapshot.objects.get(account=people.alice.account)
    assert snapshot.snapshot_id == first.output["snapshot_id"]
    assert snapshot_archive(snapshot.snapshot_id).is_file()
    assert repository_path(people.alice.account).is_dir()


# --- a second setup ----------------------------------------------------------------


def test_a_second_setup_replaces_the_snapshot_and_deletes_the_old_archive(
    people, api, run_queued_setups
):
    first = set_up(api, people.alice, run_queued_setups)
    old_id = first.output["snapshot_id"]

    second = set_up(api, people.alice, run_queued_setups)

    assert second.status == SetupRun.Status.COMPLETED, second.error
    new_id = second.output["snapshot_id"]
    assert new_id != old_id
    assert Snapshot.objects.get(account=people.alice.account).snapshot_id == new_id
    assert snapshot_archive(new_id).is_file()
    assert not snapshot_archive(old_id).exists()
    assert not snapshot_archive(old_id).with_suffix("").with_suffix(".sha256").exists()
    assert sorted(path.name for path in snapshot_archive(new_id).parent.iterdir()) == [
        f"{new_id}.sha256",
        f"{new_id}.tar.gz",
    ]


def test_a_second_setup_checks_out_the_repository_instead_of_overwriting_it(
    people, api, run_queued_setups, tmp_path
):
    set_up(api, people.alice, run_queued_setups)
    repository = repository_path(people.alice.account)
    # The account's own work lands in the repository between the two setups.
    clone = tmp_path / "alices-clone"
    git("clone", "--quiet", repository, clone)
    (clone / "notes.txt").write_text("my own work\n")
    git("-C", clone, "add", "notes.txt")
    git(
        "-C",
        clone,
        "-c",
        "user.name=Alice",
        "-c",
        "user.email=alice@example.com",
        "commit",
        "-qm",
        "My work",
    )
    git("-C", clone, "push", "--quiet", "origin", "main")
    head = git("--git-dir", repository, "rev-parse", "main")

    second = set_up(api, people.alice, run_queued_setups)

    assert second.status == SetupRun.Status.COMPLETED, second.error
    assert step(second, "ensure_repository")["detail"].startswith("Reused")
    assert step(second, "provision")["detail"] == "Checked out the repository's existing content (branch main)"
    assert second.created_repository == ""
    assert git("--git-dir", repository, "rev-parse", "main") == head
    assert git("--git-dir", repository, "log", "--format=%s", "main").splitlines() == [
        "My work",
        "Set up sandbox",
    ]
    with tarfile.open(snapshot_archive(second.output["snapshot_id"])) as tar:
        assert tar.extractfile("./notes.txt").read() == b"my own work\n"


# --- cancel, stale runs, duplicate deliveries ---------------------------------------------


def test_a_run_canceled_while_queued_is_left_alone_by_the_worker(people, api):
    run_id = request_setup(api, people.alice)
    assert api.delete(people.alice.key).status_code == 200

    run_setup(run_id)

    run = SetupRun.objects.get(pk=run_id)
    assert run.status == SetupRun.Status.CANCELED
    assert run.steps == []
    assert run.started_at is None
    assert run.sandbox_id == ""
    assert sandbox_folders() == []
    assert not Path(settings.GIT_ROOT).exists()
    assert not (Path(settings.SANDBOX_ROOT) / "snapshots").exists()
    assert not Snapshot.objects.filter(account=people.alice.account).exists()


def make_dead_run(account, *, started_at) -> SetupRun:
    """A run whose worker died while provisioning: it made a sandbox and a repository."""
    sandbox_id = get_sandbox_backend().create()
    name = repository_name(account)
    assert get_git_host().ensure_repository(name=name, description="").created
    return SetupRun.objects.create(
        account=account,
        status=SetupRun.Status.EXECUTING,
        started_at=started_at,
        sandbox_id=sandbox_id,
        created_repository=name,
        current_step="provision",
        steps=[
            {
                "name": "provision",
                "started": started_at.isoformat(),
                "finished": None,
                "ok": None,
                "detail": "",
            }
        ],
    )


def stale_start():
    return timezone.now() - timedelta(seconds=settings.SETUP_RUN_STALE_AFTER + 5)


def test_the_sweep_fails_a_stale_run_and_takes_away_what_it_made(people):
    run = make_dead_run(people.alice.account, started_at=stale_start())
    assert (Path(settings.SANDBOX_ROOT) / "sandboxes" / run.sandbox_id).is_dir()

    assert fail_stale_runs() == 1

    run.refresh_from_db()
    assert run.status == SetupRun.Status.FAILED
    assert run.error.startswith("The worker running this setup stopped before it finished")
    assert "start the setup again" in run.error
    assert run.finished_at is not None
    assert sandbox_folders() == []
    assert not repository_path(people.alice.account).exists()


def test_the_sweep_leaves_a_run_that_is_still_within_its_time_alone(people):
    fresh = make_dead_run(people.bob.account, started_at=timezone.now() - timedelta(seconds=5))
    stale = make_dead_run(people.alice.account, started_at=stale_start())

    assert fail_stale_runs() == 1

    fresh.refresh_from_db()
    assert fresh.status == SetupRun.Status.EXECUTING
    assert fresh.finished_at is None
    assert fresh.error == ""
    assert (Path(settings.SANDBOX_ROOT) / "sandboxes" / fresh.sandbox_id).is_dir()
    assert repository_path(people.bob.account).is_dir()
    stale.refresh_from_db()
    assert stale.status == SetupRun.Status.FAILED


def test_the_sweep_keeps_the_repository_of_a_snapshot_the_run_already_saved(people):
    # The worker died while shutting the sandbox down: the snapshot and the
    # repository are in use, and the Snapshot row points at both.
    account = people.alice.account
    run = make_dead_run(account, started_at=stale_start())
    backend = get_sandbox_backend()
    info = backend.snapshot(run.sandbox_id)
    Snapshot.objects.create(
        account=account,
        snapshot_id=info.snapshot_id,
        expires_at=timezone.now() + settings.SNAPSHOT_TTL,
        github_repo=repository_path(account).resolve().as_uri(),
    )

    assert fail_stale_runs() == 1

    assert sandbox_folders() == []
    assert repository_path(account).is_dir()
    assert snapshot_archive(info.snapshot_id).is_file()
    assert Snapshot.objects.get(account=account).snapshot_id == info.snapshot_id


def test_a_setup_request_behind_a_stale_run_starts_a_new_run(people, api, run_queued_setups):
    stale = make_dead_run(people.alice.account, started_at=stale_start())

    run_id = request_setup(api, people.alice)

    assert run_id != stale.pk
    stale.refresh_from_db()
    assert stale.status == SetupRun.Status.FAILED
    assert sandbox_folders() == []
    assert not repository_path(people.alice.account).exists()
    assert SetupRun.objects.get(pk=run_id).status == SetupRun.Status.QUEUED
    run_queued_setups()
    assert SetupRun.objects.get(pk=run_id).status == SetupRun.Status.COMPLETED


def test_a_request_behind_a_stale_run_is_recorded_with_the_new_run_only(people, api):
    stale = make_dead_run(people.alice.account, started_at=stale_start())

    run_id = request_setup(api, people.alice)

    requested = AuditEvent.objects.filter(action=AuditEvent.Action.SETUP_REQUESTED)
    assert [(event.run_id, event.detail) for event in requested] == [(run_id, "Run queued")]
    assert AuditEvent.objects.filter(action=AuditEvent.Action.RUN_FAILED, run_id=stale.pk).exists()


def test_a_setup_request_behind_a_fresh_executing_run_answers_that_run(people, api):
    fresh = make_dead_run(people.alice.account, started_at=timezone.now())

    assert request_setup(api, people.alice) == fresh.pk

    assert SetupRun.objects.filter(account=people.alice.account).count() == 1
    requested = AuditEvent.objects.get(action=AuditEvent.Action.SETUP_REQUESTED)
    assert (requested.run_id, requested.detail) == (fresh.pk, "A run was already executing; answered with it")


def test_delivering_the_same_task_twice_runs_the_pipeline_once(people, api):
    run_id = request_setup(api, people.alice)
    run_setup(run_id)
    first = SetupRun.objects.get(pk=run_id)
    assert first.status == SetupRun.Status.COMPLETED, first.error

    run_setup(run_id)

    again = SetupRun.objects.get(pk=run_id)
    assert again.steps == first.steps
    assert again.finished_at == first.finished_at
    assert again.output == first.output
    assert (
        Snapshot.objects.get(account=people.alice.account).snapshot_id
        == first.output["snapshot_id"]
    )
    assert [path.name for path in (Path(settings.SANDBOX_ROOT) / "snapshots").glob("*.tar.gz")] == [
        f"{first.output['snapshot_id']}.tar.gz"
    ]
    assert (
        git("--git-dir", repository_path(people.alice.account), "rev-list", "--count", "main")
        == "1"
    )


def test_a_task_delivered_while_its_run_executes_does_nothing(people):
    run = make_dead_run(people.alice.account, started_at=timezone.now())

    run_setup(run.pk)

    again = SetupRun.objects.get(pk=run.pk)
    assert again.status == SetupRun.Status.EXECUTING
    assert again.steps == run.steps
    assert (Path(settings.SANDBOX_ROOT) / "sandboxes" / run.sandbox_id).is_dir()


def test_a_task_for_a_run_that_is_gone_does_nothing():
    run_setup("run_000000000000000000000000")

    assert sandbox_folders() == []


def test_a_missing_starter_layout_fails_the_run_naming_the_setting_not_the_folder(
    people, api, run_queued_setups, settings, tmp_path, caplog
):
    settings.SANDBOX_TEMPLATE_DIR = tmp_path / "starter-that-is-gone"

    run = set_up(api, people.alice, run_queued_setups)

    assert_failed_at(run, "provision", "Provisioning the sandbox failed: The starter layout folder "
                                       "(SANDBOX_TEMPLATE_DIR) does not exist")
    assert str(tmp_path) not in run.error
    assert str(settings.SANDBOX_TEMPLATE_DIR) in caplog.text  # the operator finds the folder in the log


def test_a_local_repository_whose_head_is_master_is_checked_out_on_master(people, api, run_queued_setups, tmp_path):
    repository = make_bare_repository(repository_path(people.alice.account))
    git("--git-dir", repository, "symbolic-ref", "HEAD", "refs/heads/master")
    work = tmp_path / "their-work"
    git("init", "--quiet", "--initial-branch=master", work)
    (work / "notes.txt").write_text("mine\n")
    git("-C", work, "add", "notes.txt")
    git("-C", work, "-c", "user.name=A", "-c", "user.email=a@example.com", "commit", "--quiet", "-m", "mine")
    git("-C", work, "push", "--quiet", repository, "HEAD:refs/heads/master")

    run = set_up(api, people.alice, run_queued_setups)

    assert run.status == SetupRun.Status.COMPLETED, run.error
    assert step(run, "provision")["detail"] == "Checked out the repository's existing content (branch master)"
    assert git("--git-dir", repository, "for-each-ref", "--format=%(refname)") == "refs/heads/master"
