"""The local git host: bare repositories in a folder, made with the real git binary.

`GIT_ROOT/<name>.git` is a repository; its URL is its file:// URL, and a
`git push` to its path is a real push. For one host only.
"""

import re
import secrets
import shutil
from pathlib import Path

from sandboxes.providers.base import (
    EnsuredRepository,
    GitHostError,
    PushTarget,
    Repository,
    os_reason,
)
from sandboxes.providers.process import run_command

_NAME = re.compile(r"^[A-Za-z0-9._-]+$")


class LocalGitHost:
    name = "local"

    def __init__(self, *, root: Path, command_timeout: float):
        self.root = Path(root)
        self.command_timeout = command_timeout

    def _path(self, name: str) -> Path:
        if not _NAME.match(name) or name.startswith("."):
            raise GitHostError(f"{name!r} is not a valid repository name")
        return self.root / f"{name}.git"

    def _repository(self, path: Path) -> Repository:
        url = path.resolve().as_uri()
        return Repository(name=path.name.removesuffix(".git"), html_url=url, clone_url=url)

    def ensure_repository(self, *, name: str, description: str) -> EnsuredRepository:
        path = self._path(name)
        if (path / "HEAD").is_file():
            return EnsuredRepository(repository=self._repository(path), created=False)
        try:
            self.root.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise GitHostError(f"Could not create the git root (GIT_ROOT): {os_reason(exc)}", detail=str(exc)) from None
        run_command(
            ["git", "init", "--bare", "--quiet", "--initial-branch=main", str(path)],
            cwd=self.root,
            timeout=self.command_timeout,
            error=GitHostError,
        )
        try:
            (path / "description").write_text(description + "\n")
        except OSError as exc:
            shutil.rmtree(path, ignore_errors=True)
            raise GitHostError(f"Could not write to repository {name}: {os_reason(exc)}", detail=str(exc)) from None
        return EnsuredRepository(repository=self._repository(path), created=True)

    def list_repositories(self, *, account_id) -> list[Repository]:
        if not self.root.is_dir():
            return []
        return [self._repository(path) for path in sorted(self.root.glob(f"*{account_id}*.git"))]

    def list_all_repositories(self) -> list[Repository]:
        if not self.root.is_dir():
            return []
        return [self._repository(path) for path in sorted(self.root.glob("*.git"))]

    def delete_repository(self, *, name: str) -> bool:
        """Delete the repository; False if it was not there (or another delete took it first).

        The repository is first renamed out of the way, which is atomic: of
        concurrent deletes exactly one wins and the others see it gone, instead
        of tripping over each other's half-deleted files.
        """
        path = self._path(name)
        doomed = self.root / f".{name}.deleting-{secrets.token_hex(6)}"
        try:
            path.rename(doomed)
        except FileNotFoundError:
            return False
        except OSError as exc:
            raise GitHostError(f"Could not delete repository {name}: {os_reason(exc)}", detail=str(exc)) from None
        try:
            shutil.rmtree(doomed)
        except OSError as exc:
            doomed.rename(path)  # back where it was, for a repeat to find
            raise GitHostError(f"Could not delete repository {name}: {os_reason(exc)}", detail=str(exc)) from None
        return True

    def push_target(self, *, repository: Repository) -> PushTarget:
        return PushTarget(url=str(self._path(repository.name).resolve()))
