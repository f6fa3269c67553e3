"""Looking at the local git host from the tests: its repositories are real bare repositories on disk."""

import shutil
import subprocess
from contextlib import contextmanager
from pathlib import Path

from django.conf import settings

from sandboxes.providers.base import repository_name_for


def git(*args) -> str:
    return subprocess.run(["git", *map(str, args)], check=True, capture_output=True, text=True).stdout.strip()


def repository_name(account) -> str:
    return repository_name_for(account_name=account.name, account_id=account.pk)


def repository_path(account, name: str | None = None) -> Path:
    """Where the local git host keeps the account's repository (or another one, by name)."""
    return Path(settings.GIT_ROOT) / f"{name or repository_name(account)}.git"


def make_bare_repository(path: Path, *, marked: bool = True) -> Path:
    """A repository that exists before any setup: made by this deployment earlier (marked), or by someone else."""
    path.parent.mkdir(parents=True, exist_ok=True)
    git("init", "--bare", "--quiet", "--initial-branch=main", path)
    if marked:
        git("config", "--file", path / "config", "sandbox.deployment", settings.SANDBOX_DEPLOYMENT_ID)
    return path


def make_undeletable(account, elsewhere: Path) -> tuple[Path, Path]:
    """Move the account's repository under `elsewhere` and link it back.

    The local git host refuses to delete through the link: a real failure at
    its boundary. Returns (the link, where the repository now is); moving it
    back (`restore_deletable`) lets a repeat finish the job.
    """
    repository = repository_path(account)
    moved = elsewhere / "other-disk" / repository.name
    moved.parent.mkdir(parents=True, exist_ok=True)
    shutil.move(repository, moved)
    repository.symlink_to(moved, target_is_directory=True)
    return repository, moved


@contextmanager
def git_root_blocked():
    """Setups fail at "Creating the repository" meanwhile: a file stands where the git root goes.

    Only before the first setup of a test, while the git root does not exist yet.
    """
    git_root = Path(settings.GIT_ROOT)
    assert not git_root.exists(), "the git root exists already: block it before the first setup"
    git_root.write_text("a file where the git root should be")
    try:
        yield
    finally:
        git_root.unlink()
