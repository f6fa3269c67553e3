"""The local outside systems, run for real: LocalSandboxBackend and LocalGitHost.

LocalSandboxBackend: create, run (minimal environment, timeouts), write_files
(never outside the workspace), snapshot (archive, checksum and file listing),
restore (content back, damaged archives refused), read_file (one file of the
archive, with its size limit), delete_snapshot and stop.

LocalGitHost: ensure_repository (a real bare repository, reused the second
time), list_repositories by account id, delete_repository, name checks, and a
git root that cannot be made.

Each test gets its own SANDBOX_ROOT and GIT_ROOT (the autouse `storage`
fixture); failures are caused at the real boundary (files where folders
should be, commands that run too long), never by patching.
"""

import hashlib
import os
import subprocess
import tarfile
import uuid

import pytest

from sandboxes.providers.base import (
    FileEntry,
    GitHostError,
    NotOurRepository,
    Repository,
    SandboxBackendError,
    SnapshotFileNotFound,
    SnapshotFileTooLarge,
)
from sandboxes.providers.local_git import LocalGitHost
from sandboxes.providers.local_sandbox import LocalSandboxBackend


@pytest.fixture
def backend(storage):
    return LocalSandboxBackend(root=storage.SANDBOX_ROOT, command_timeout=10)


@pytest.fixture
def git_host(storage):
    return LocalGitHost(root=storage.GIT_ROOT, command_timeout=10)


def _git(*args, cwd=None) -> str:
    return subprocess.run(
        ["git", *args], cwd=cwd, check=True, capture_output=True, text=True
    ).stdout.strip()


# --- LocalSandboxBackend ------------------------------------------------------------


def test_create_makes_a_workspace_folder_per_sandbox(backend, storage):
    first, second = backend.create(), backend.create()

    assert first != second
    for sandbox_id in (first, second):
        assert sandbox_id.startswith("sbx_")
        assert (storage.SANDBOX_ROOT / "sandboxes" / sandbox_id / "workspace").is_dir()


def test_create_fails_with_a_backend_error_when_the_sandbox_root_is_a_file(backend, storage):
    storage.SANDBOX_ROOT.write_text("not a folder")

    with pytest.raises(SandboxBackendError, match="Could not create a sandbox under"):
        backend.create()


def test_run_executes_in_the_workspace_and_returns_its_output(backend, storage):
    sandbox_id = backend.create()

    result = backend.run(sandbox_id, ["pwd"])

    assert result.exit_code == 0
    assert result.stdout.strip() == str(
        storage.SANDBOX_ROOT / "sandboxes" / sandbox_id / "workspace"
    )


def test_commands_do_not_see_the_services_environment(backend, storage, monkeypatch):
    # The service's secrets live in its own environment (settings_test puts
    # SECRET_KEY there, as a deployment would).
    assert os.environ.get("SECRET_KEY")
    monkeypatch.setenv("DATABASE_PASSWORD_FOR_THIS_TEST", "must-not-leak")
    sandbox_id = backend.create()

    result = backend.run(sandbox_id, ["env"], env={"EXTRA": "given"})

    seen = dict(line.split("=", 1) for line in result.stdout.splitlines() if "=" in line)
    assert "SECRET_KEY" not in seen
    assert "API_KEY_PEPPER" not in seen
    assert "DATABASE_URL" not in seen
    assert "DATABASE_PASSWORD_FOR_THIS_TEST" not in seen
    assert os.environ["SECRET_KEY"] not in result.stdout
    assert "must-not-leak" not in result.stdout
    assert seen["EXTRA"] == "given"
    assert seen["HOME"] == str(storage.SANDBOX_ROOT / "sandboxes" / sandbox_id / "home")
    assert seen["PATH"] == "/usr/local/bin:/usr/bin:/bin"


def test_a_command_that_runs_too_long_raises_a_backend_error(storage):
    backend = LocalSandboxBackend(root=storage.SANDBOX_ROOT, command_timeout=0.5)
    sandbox_id = backend.create()

    with pytest.raises(SandboxBackendError, match=r"`sleep 5` did not finish within 0.5 s"):
        backend.run(sandbox_id, ["sleep", "5"])


def test_a_failing_command_raises_a_backend_error_with_its_output_as_the_detail(backend):
    sandbox_id = backend.create()

    with pytest.raises(SandboxBackendError) as raised:
        backend.run(sandbox_id, ["sh", "-c", "echo broken in $PWD >&2; exit 3"])
    # The message is for clients and names no folder of this host; the output is for the log.
    assert str(raised.value) == "`sh -c` failed with exit status 3"
    assert raised.value.detail.startswith("broken in /")


def test_a_missing_program_raises_a_backend_error(backend):
    sandbox_id = backend.create()

    with pytest.raises(SandboxBackendError, match="could not be started"):
        backend.run(sandbox_id, ["no-such-program-anywhere"])


def test_write_files_writes_nested_files_into_the_workspace(backend, storage):
    sandbox_id = backend.create()

    backend.write_files(sandbox_id, {"README.md": b"hello\n", "src/app/main.py": b"print(1)\n"})

    workspace = storage.SANDBOX_ROOT / "sandboxes" / sandbox_id / "workspace"
    assert (workspace / "README.md").read_bytes() == b"hello\n"
    assert (workspace / "src" / "app" / "main.py").read_bytes() == b"print(1)\n"


@pytest.mark.parametrize(
    "path", ["../escaped.txt", "../../../escaped.txt", "sub/../../escaped.txt"]
)
def test_write_files_refuses_relative_paths_that_leave_the_workspace(backend, storage, path):
    sandbox_id = backend.create()

    with pytest.raises(SandboxBackendError, match="is outside the sandbox"):
        backend.write_files(sandbox_id, {path: b"x"})

    assert not list(storage.SANDBOX_ROOT.rglob("escaped.txt"))
    assert not (storage.SANDBOX_ROOT.parent / "escaped.txt").exists()


def test_write_files_refuses_absolute_paths(backend, tmp_path):
    sandbox_id = backend.create()
    target = tmp_path / "absolute.txt"

    with pytest.raises(SandboxBackendError, match="is outside the sandbox"):
        backend.write_files(sandbox_id, {str(target): b"x"})

    assert not target.exists()


def test_write_files_refuses_to_follow_a_symlink_out_of_the_workspace(backend, storage, tmp_path):
    sandbox_id = backend.create()
    outside = tmp_path / "outside"
    outside.mkdir()
    (storage.SANDBOX_ROOT / "sandboxes" / sandbox_id / "workspace" / "link").symlink_to(outside)

    with pytest.raises(SandboxBackendError, match="is outside the sandbox"):
        backend.write_files(sandbox_id, {"link/planted.txt": b"x"})

    assert not (outside / "planted.txt").exists()


def test_snapshot_writes_an_archive_and_its_checksum(backend, storage):
    sandbox_id = backend.create()
    backend.write_files(sandbox_id, {"notes.txt": b"remember\n"})

    info = backend.snapshot(sandbox_id)

    archive = storage.SANDBOX_ROOT / "snapshots" / f"{info.snapshot_id}.tar.gz"
    checksum = storage.SANDBOX_ROOT / "snapshots" / f"{info.snapshot_id}.sha256"
    assert info.snapshot_id.startswith("snap_")
    assert archive.is_file()
    assert checksum.is_file()
    assert info.checksum == hashlib.sha256(archive.read_bytes()).hexdigest()
    assert checksum.read_text().strip() == info.checksum
    assert info.size_bytes == archive.stat().st_size
    with tarfile.open(archive) as tar:
        assert "./notes.txt" in tar.getnames()
    assert backend.snapshot_exists(info.snapshot_id)
    assert backend.list_snapshots() == [info.snapshot_id]
    assert not list((storage.SANDBOX_ROOT / "snapshots").glob("*.partial"))


def test_snapshot_fails_with_a_backend_error_when_the_snapshots_folder_is_a_file(backend, storage):
    sandbox_id = backend.create()
    (storage.SANDBOX_ROOT / "snapshots").write_text("not a folder")

    with pytest.raises(SandboxBackendError, match="Could not write snapshot"):
        backend.snapshot(sandbox_id)


def test_snapshot_of_a_stopped_sandbox_raises_a_backend_error(backend):
    sandbox_id = backend.create()
    backend.stop(sandbox_id)

    with pytest.raises(SandboxBackendError, match="is not running"):
        backend.snapshot(sandbox_id)


def test_snapshot_lists_its_folders_and_files_with_sizes_but_not_git_internals(backend, storage):
    sandbox_id = backend.create()
    backend.write_files(sandbox_id, {"notes.txt": b"remember\n", "deep/er/file.bin": b"\x00\x01"})
    backend.run(sandbox_id, ["git", "init", "--quiet"])
    workspace = storage.SANDBOX_ROOT / "sandboxes" / sandbox_id / "workspace"
    os.symlink("notes.txt", workspace / "link")

    info = backend.snapshot(sandbox_id)

    assert info.files == (
        FileEntry(path="deep", type="tree"),
        FileEntry(path="deep/er", type="tree"),
        FileEntry(path="deep/er/file.bin", type="blob", size=2),
        FileEntry(path="notes.txt", type="blob", size=9),
    )
    with tarfile.open(storage.SANDBOX_ROOT / "snapshots" / f"{info.snapshot_id}.tar.gz") as tar:
        assert "./.git/HEAD" in tar.getnames()  # in the archive, not in the listing


@pytest.fixture
def snapshot_with_files(backend):
    sandbox_id = backend.create()
    backend.write_files(sandbox_id, {"notes.txt": b"remember\n", "deep/file.bin": b"\xff\x00" * 50})
    backend.run(sandbox_id, ["git", "init", "--quiet"])
    info = backend.snapshot(sandbox_id)
    backend.stop(sandbox_id)
    return info.snapshot_id


def test_read_file_reads_one_file_of_the_archive_without_a_sandbox(backend, storage, snapshot_with_files):
    assert backend.read_file(snapshot_with_files, "notes.txt", max_bytes=100) == b"remember\n"
    assert backend.read_file(snapshot_with_files, "deep/file.bin", max_bytes=100) == b"\xff\x00" * 50
    assert not list((storage.SANDBOX_ROOT / "sandboxes").iterdir())


@pytest.mark.parametrize("path", ["missing.txt", "deep", ".git/HEAD", "deep/file.bin/x"])
def test_read_file_of_no_such_file_raises_file_not_found(backend, snapshot_with_files, path):
    with pytest.raises(SnapshotFileNotFound, match="No file"):
        backend.read_file(snapshot_with_files, path, max_bytes=100)


def test_read_file_over_the_limit_raises_too_large_with_the_size(backend, snapshot_with_files):
    with pytest.raises(SnapshotFileTooLarge) as raised:
        backend.read_file(snapshot_with_files, "deep/file.bin", max_bytes=99)

    assert raised.value.size == 100


def test_read_file_refuses_a_damaged_archive(backend, storage, snapshot_with_files):
    archive = storage.SANDBOX_ROOT / "snapshots" / f"{snapshot_with_files}.tar.gz"
    archive.write_bytes(archive.read_bytes()[:-10])

    with pytest.raises(SandboxBackendError, match="damaged"):
        backend.read_file(snapshot_with_files, "notes.txt", max_bytes=100)


def test_read_file_of_a_snapshot_that_does_not_exist_raises_a_backend_error(backend):
    with pytest.raises(SandboxBackendError, match="does not exist"):
        backend.read_file("snap_" + "0" * 24, "notes.txt", max_bytes=100)


def test_restore_brings_the_content_back_in_a_new_sandbox(backend, storage):
    sandbox_id = backend.create()
    backend.write_files(sandbox_id, {"notes.txt": b"remember\n", "deep/er/file.bin": b"\x00\x01"})
    info = backend.snapshot(sandbox_id)
    backend.stop(sandbox_id)

    restored = backend.restore(info.snapshot_id)

    assert restored != sandbox_id
    workspace = storage.SANDBOX_ROOT / "sandboxes" / restored / "workspace"
    assert (workspace / "notes.txt").read_bytes() == b"remember\n"
    assert (workspace / "deep" / "er" / "file.bin").read_bytes() == b"\x00\x01"
    assert backend.run(restored, ["cat", "notes.txt"]).stdout == "remember\n"


def test_restore_refuses_a_damaged_archive(backend, storage):
    sandbox_id = backend.create()
    backend.write_files(sandbox_id, {"notes.txt": b"remember\n"})
    info = backend.snapshot(sandbox_id)
    backend.stop(sandbox_id)
    archive = storage.SANDBOX_ROOT / "snapshots" / f"{info.snapshot_id}.tar.gz"
    damaged = bytearray(archive.read_bytes())
    damaged[len(damaged) // 2] ^= 0xFF
    archive.write_bytes(bytes(damaged))

    with pytest.raises(SandboxBackendError, match="is damaged"):
        backend.restore(info.snapshot_id)

    assert list((storage.SANDBOX_ROOT / "sandboxes").iterdir()) == []


def test_restore_refuses_an_archive_that_is_not_a_tarball_and_leaves_no_sandbox(backend, storage):
    sandbox_id = backend.create()
    info = backend.snapshot(sandbox_id)
    backend.stop(sandbox_id)
    # Rewritten with a matching checksum: only opening the archive can tell.
    archive = storage.SANDBOX_ROOT / "snapshots" / f"{info.snapshot_id}.tar.gz"
    archive.write_bytes(b"this is not gzip")
    (storage.SANDBOX_ROOT / "snapshots" / f"{info.snapshot_id}.sha256").write_text(
        hashlib.sha256(b"this is not gzip").hexdigest() + "\n"
    )

    with pytest.raises(SandboxBackendError, match="Could not restore snapshot"):
        backend.restore(info.snapshot_id)

    assert list((storage.SANDBOX_ROOT / "sandboxes").iterdir()) == []


def test_restore_of_a_snapshot_that_does_not_exist_raises_a_backend_error(backend):
    with pytest.raises(SandboxBackendError, match="does not exist"):
        backend.restore("snap_0123456789abcdef01234567")


def test_restore_refuses_an_archive_whose_checksum_file_is_missing(backend, storage):
    sandbox_id = backend.create()
    info = backend.snapshot(sandbox_id)
    (storage.SANDBOX_ROOT / "snapshots" / f"{info.snapshot_id}.sha256").unlink()

    with pytest.raises(SandboxBackendError, match=info.snapshot_id):
        backend.restore(info.snapshot_id)


def test_delete_snapshot_answers_true_then_false(backend, storage):
    sandbox_id = backend.create()
    info = backend.snapshot(sandbox_id)

    assert backend.delete_snapshot(info.snapshot_id) is True
    assert backend.delete_snapshot(info.snapshot_id) is False

    assert not backend.snapshot_exists(info.snapshot_id)
    assert list((storage.SANDBOX_ROOT / "snapshots").iterdir()) == []


def test_delete_snapshot_fails_with_a_backend_error_when_the_snapshots_folder_is_a_file(
    backend, storage
):
    storage.SANDBOX_ROOT.mkdir(parents=True)
    (storage.SANDBOX_ROOT / "snapshots").write_text("not a folder")

    with pytest.raises(SandboxBackendError, match="Could not delete snapshot"):
        backend.delete_snapshot("snap_0123456789abcdef01234567")


def test_stop_removes_the_sandbox_folder_and_stopping_twice_is_fine(backend, storage):
    sandbox_id = backend.create()
    backend.write_files(sandbox_id, {"a/b/c.txt": b"x"})

    backend.stop(sandbox_id)
    backend.stop(sandbox_id)

    assert list((storage.SANDBOX_ROOT / "sandboxes").iterdir()) == []
    with pytest.raises(SandboxBackendError, match="is not running"):
        backend.run(sandbox_id, ["true"])


@pytest.mark.parametrize("bad_id", ["../etc", "sbx_../../x", "sbx_", "snap_abc", "sbx_a/b"])
def test_ids_that_could_leave_the_root_are_refused(backend, bad_id):
    with pytest.raises(SandboxBackendError, match="is not a valid id"):
        backend.stop(bad_id)


@pytest.mark.parametrize("bad_id", ["../x", "snap_../../x", "sbx_abc", "snap_a.b"])
def test_snapshot_ids_that_could_leave_the_root_are_refused(backend, bad_id):
    with pytest.raises(SandboxBackendError, match="is not a valid id"):
        backend.delete_snapshot(bad_id)


@pytest.mark.parametrize("bad_id", ["../x", "snap_../../x", "snap_a.b"])
def test_restoring_a_snapshot_id_that_is_not_one_is_refused_before_a_sandbox_is_made(backend, storage, bad_id):
    with pytest.raises(SandboxBackendError, match="is not a valid id"):
        backend.restore(bad_id)
    assert not (storage.SANDBOX_ROOT / "sandboxes").exists()


# --- LocalGitHost -----------------------------------------------------------------


def test_ensure_repository_creates_a_real_bare_repository(git_host, storage):
    ensured = git_host.ensure_repository(name="alice-123", description="Sandbox of Alice")

    path = storage.GIT_ROOT / "alice-123.git"
    assert ensured.created is True
    assert ensured.repository.name == "alice-123"
    assert ensured.repository.html_url == path.resolve().as_uri()
    assert _git("-C", str(path), "rev-parse", "--is-bare-repository") == "true"
    assert (path / "description").read_text() == "Sandbox of Alice\n"
    assert git_host.push_target(repository=ensured.repository).url == str(path.resolve())


def test_ensure_repository_marks_it_in_its_git_config_with_the_deployment_and_the_run(git_host, storage):
    ensured = git_host.ensure_repository(name="alice-123", description="Sandbox of Alice", run_id="run_ab12")

    path = storage.GIT_ROOT / "alice-123.git"
    assert _git("config", "--file", str(path / "config"), "sandbox.deployment") == "local"
    assert _git("config", "--file", str(path / "config"), "sandbox.run") == "run_ab12"
    assert (ensured.repository.owned, ensured.repository.deployment, ensured.repository.created_by_run) == (
        True, "local", "run_ab12")
    # The same run asking again (its answer was lost) made it; another run reuses it.
    assert git_host.ensure_repository(name="alice-123", description="", run_id="run_ab12").created is True
    assert git_host.ensure_repository(name="alice-123", description="", run_id="run_cd34").created is False


def test_ensure_refuses_a_repository_marked_by_another_deployment(git_host, storage):
    path = storage.GIT_ROOT / "alice-123.git"
    _git("init", "--bare", "--quiet", str(path))
    _git("config", "--file", str(path / "config"), "sandbox.deployment", "staging")

    with pytest.raises(NotOurRepository, match="carries the mark of deployment 'staging'"):
        git_host.ensure_repository(name="alice-123", description="", run_id="run_ab12")


def test_only_repositories_with_this_deployments_mark_are_deleted(git_host, storage):
    for name in ("unmarked", "staging", "adopted"):
        _git("init", "--bare", "--quiet", str(storage.GIT_ROOT / f"{name}.git"))
    _git("config", "--file", str(storage.GIT_ROOT / "staging.git" / "config"), "sandbox.deployment", "staging")
    # An operator adopts a repository by marking it by hand.
    _git("-C", str(storage.GIT_ROOT / "adopted.git"), "config", "sandbox.deployment", "local")

    listed = {repository.name: repository for repository in git_host.list_all_repositories()}

    assert {name: repository.owned for name, repository in listed.items()} == {
        "adopted": True, "staging": False, "unmarked": False}
    for name in ("unmarked", "staging"):
        with pytest.raises(NotOurRepository, match="it was left alone"):
            git_host.delete_repository(repository=listed[name])
        assert (storage.GIT_ROOT / f"{name}.git").is_dir()
    # Even a caller that claims it owns one: the host reads the mark again.
    forged = Repository(name="unmarked", html_url="", owned=True)
    with pytest.raises(NotOurRepository):
        git_host.delete_repository(repository=forged)
    assert git_host.delete_repository(repository=listed["adopted"]) is True


def test_a_second_ensure_reuses_the_repository(git_host, storage):
    first = git_host.ensure_repository(name="alice-123", description="first")

    second = git_host.ensure_repository(name="alice-123", description="second")

    assert second.created is False
    assert second.repository == first.repository
    assert (storage.GIT_ROOT / "alice-123.git" / "description").read_text() == "first\n"


def test_list_repositories_finds_only_the_accounts_repositories(git_host):
    alice_id, bob_id = uuid.uuid4(), uuid.uuid4()
    git_host.ensure_repository(name=f"alice-{alice_id}", description="")
    git_host.ensure_repository(name=f"renamed-{alice_id}", description="")
    git_host.ensure_repository(name=f"bob-{bob_id}", description="")
    git_host.ensure_repository(name="unrelated", description="")

    names = {repository.name for repository in git_host.list_repositories(account_id=alice_id)}

    assert names == {f"alice-{alice_id}", f"renamed-{alice_id}"}


def test_list_repositories_of_a_git_root_that_does_not_exist_yet_is_empty(git_host, storage):
    assert not storage.GIT_ROOT.exists()

    assert git_host.list_repositories(account_id=uuid.uuid4()) == []


def test_delete_repository_answers_true_then_false(git_host, storage):
    repository = git_host.ensure_repository(name="alice-123", description="").repository

    assert git_host.delete_repository(repository=repository) is True
    assert git_host.delete_repository(repository=repository) is False

    assert not (storage.GIT_ROOT / "alice-123.git").exists()


def test_concurrent_deletes_of_one_repository_delete_it_once_and_none_fails(git_host, storage):
    from concurrent.futures import ThreadPoolExecutor

    repository = git_host.ensure_repository(name="alice-123", description="").repository
    for number in range(200):  # enough files that the deletes would meet inside the folder
        (storage.GIT_ROOT / "alice-123.git" / "objects" / f"file-{number}").write_text("x")

    with ThreadPoolExecutor(max_workers=8) as pool:
        answers = list(pool.map(lambda _: git_host.delete_repository(repository=repository), range(8)))

    assert sorted(answers) == [False] * 7 + [True]
    assert list(storage.GIT_ROOT.iterdir()) == []


@pytest.mark.parametrize(
    "name", ["", "../escape", "a/b", ".hidden", "with space", "semi;colon", "..", "é"]
)
def test_invalid_repository_names_are_refused(git_host, storage, tmp_path, name):
    with pytest.raises(GitHostError, match="is not a valid repository name"):
        git_host.ensure_repository(name=name, description="")
    with pytest.raises(GitHostError, match="is not a valid repository name"):
        git_host.delete_repository(repository=Repository(name=name, html_url="", owned=True))

    assert not storage.GIT_ROOT.exists()
    assert not (tmp_path / "escape.git").exists()


def test_a_git_root_that_is_a_file_raises_a_git_host_error(git_host, storage):
    storage.GIT_ROOT.write_text("not a folder")

    with pytest.raises(GitHostError, match="Could not create the git root"):
        git_host.ensure_repository(name="alice-123", description="")
