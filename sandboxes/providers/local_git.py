"""The local git host: bare repositories in a folder, made with the real git binary.

`GIT_ROOT/<name>.git` is a repository; its URL is its file:// URL, and a
`git push` to its path is a real push. For one host only.

The mark of a repository this deployment made is in the repository's own git
config, written by `git config` when it is created:

    [sandbox]
        deployment = <SANDBOX_DEPLOYMENT_ID>
        run = <the setup run that created it>

Only repositories whose `sandbox.deployment` is this deployment's are ever
deleted; an operator adopts one with
`git -C GIT_ROOT/<name>.git config sandbox.deployment <SANDBOX_DEPLOYMENT_ID>`.
"""

import re
import secrets
import shutil
from pathlib import Path

from sandboxes.providers.base import (
    EnsuredRepository,
    GitHostError,
    NotOurRepository,
    PushTarget,
    Repository,
    os_reason,
)
from sandboxes.providers.process import run_command

_NAME = re.compile(r"^[A-Za-z0-9._-]+$")
# The [sandbox] section of a git config file, and its `key = value` lines.
_SECTION = re.compile(r"^\s*\[sandbox\]\s*$(.*?)(?=^\s*\[|\Z)", re.MULTILINE | re.DOTALL | re.IGNORECASE)
_ENTRY = re.compile(r"^\s*([A-Za-z][A-Za-z0-9-]*)\s*=\s*(.*?)\s*$", re.MULTILINE)


class LocalGitHost:
    name = "local"
    remote_retries = 0  # a folder on this host: nothing transient to wait out

    def __init__(self, *, root: Path, command_timeout: float, deployment_id: str = "local"):
        self.root = Path(root)
        self.command_timeout = command_timeout
        self.deployment_id = deployment_id

    def _path(self, name: str) -> Path:
        if not _NAME.match(name) or name.startswith("."):
            raise GitHostError(f"{name!r} is not a valid repository name")
        return self.root / f"{name}.git"

    @staticmethod
    def _mark(path: Path) -> dict[str, str]:
        """The [sandbox] entries of the repository's config, read as text: listing thousands stays fast."""
        try:
            config = (path / "config").read_text(errors="replace")
        except OSError:
            return {}
        section = _SECTION.search(config)
        return {key.lower(): value for key, value in _ENTRY.findall(section.group(1))} if section else {}

    @staticmethod
    def _default_branch(path: Path) -> str:
        """The branch HEAD names (`ref: refs/heads/<branch>`), as GitHub's default_branch."""
        try:
            head = (path / "HEAD").read_text().strip()
        except OSError:
            return "main"
        return head.removeprefix("ref: refs/heads/") if head.startswith("ref: refs/heads/") else "main"

    def _repository(self, path: Path) -> Repository:
        url = path.resolve().as_uri()
        mark = self._mark(path)
        owned = mark.get("deployment") == self.deployment_id
        return Repository(
            name=path.name.removesuffix(".git"), html_url=url, clone_url=url,
            default_branch=self._default_branch(path),
            deployment=mark.get("deployment", ""), created_by_run=mark.get("run", "") if owned else "", owned=owned,
        )

    def ensure_repository(self, *, name: str, description: str, run_id: str = "") -> EnsuredRepository:
        path = self._path(name)
        if (path / "HEAD").is_file():
            existing = self._repository(path)
            if existing.deployment and not existing.owned:
                raise NotOurRepository(f"Repository {name} {existing.mark_description}; it is not used or changed")
            created = bool(run_id) and existing.created_by_run == run_id
            return EnsuredRepository(repository=existing, created=created)
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
            for key, value in (("sandbox.deployment", self.deployment_id), ("sandbox.run", run_id)):
                if value:
                    run_command(["git", "config", "--file", str(path / "config"), key, value], cwd=self.root,
                                timeout=self.command_timeout, error=GitHostError)
            (path / "description").write_text(description + "\n")
        except (OSError, GitHostError) as exc:
            shutil.rmtree(path, ignore_errors=True)
            raise GitHostError(f"Could not write to repository {name}: {os_reason(exc)}", detail=str(exc)) from None
        return EnsuredRepository(repository=self._repository(path), created=True)

    def find_repository(self, *, name: str, repository_id: int | None = None) -> Repository | None:
        path = self._path(name)
        return self._repository(path) if (path / "HEAD").is_file() else None

    def list_repositories(self, *, account_id) -> list[Repository]:
        if not self.root.is_dir():
            return []
        return [self._repository(path) for path in sorted(self.root.glob(f"*{account_id}*.git"))]

    def list_all_repositories(self) -> list[Repository]:
        if not self.root.is_dir():
            return []
        return [self._repository(path) for path in sorted(self.root.glob("*.git"))]

    def delete_repository(self, *, repository: Repository) -> bool:
        """Delete the repository; False if it was not there (or another delete took it first).

        The mark is read again first: only this deployment's repositories go.
        The repository is then renamed out of the way, which is atomic: of
        concurrent deletes exactly one wins and the others see it gone, instead
        of tripping over each other's half-deleted files.
        """
        path = self._path(repository.name)
        current = self._repository(path)
        if not current.owned:
            if not path.exists():
                return False  # gone (perhaps a concurrent delete took it while the mark was read)
            raise NotOurRepository(f"Repository {repository.name} {current.mark_description}; it was left alone")
        doomed = self.root / f".{repository.name}.deleting-{secrets.token_hex(6)}"
        try:
            path.rename(doomed)
        except FileNotFoundError:
            return False
        except OSError as exc:
            raise GitHostError(f"Could not delete repository {repository.name}: {os_reason(exc)}", detail=str(exc)) from None
        try:
            shutil.rmtree(doomed)
        except OSError as exc:
            doomed.rename(path)  # back where it was, for a repeat to find
            raise GitHostError(f"Could not delete repository {repository.name}: {os_reason(exc)}", detail=str(exc)) from None
        return True

    def push_target(self, *, repository: Repository) -> PushTarget:
        return PushTarget(url=str(self._path(repository.name).resolve()))
