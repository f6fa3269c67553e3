"""A checkout of an account's repository on the service's own host, where git runs with the host's credentials.

Git never runs inside a sandbox, and never in a folder whose .git came out of
one (its hooks and config would run on this host): a checkout is a fresh
`git init` in a folder of SANDBOX_ROOT, fetched from the repository, filled
with files, committed and pushed. The setup pipeline pushes the starter
layout this way, a live sandbox's uploads and stops their files and
workspace.

Remote commands (`ls-remote`, `fetch`, `push`) are retried as the git host's
API calls are: only a transient failure (a 5xx, a dropped connection, a
timeout; "not found" too, for a repository created a moment ago), a bounded
number of times, waiting longer each time; never a 401, 403 or 404.
"""

import logging
import shutil
import tarfile
import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path

from django.conf import settings

from sandboxes.providers.base import (
    RETRY_BACKOFF_SECONDS,
    UNLISTED_FOLDERS,
    CommandResult,
    GitHost,
    GitHostError,
    Repository,
    git_failure_is_transient,
    git_failure_summary,
)
from sandboxes.providers.process import run_command
from sandboxes.providers.workspace_archive import extractable

logger = logging.getLogger(__name__)

COMMIT_IDENTITY = ["-c", "user.name=Sandbox service", "-c", "user.email=sandbox-service@localhost"]


class Checkout:
    """The repository's default branch in `folder`: fetched, changed, committed, pushed."""

    def __init__(self, *, git_host: GitHost, repository: Repository, folder: Path, just_created: bool = False):
        self.git_host = git_host
        self.repository = repository
        self.folder = folder
        self.just_created = just_created  # its "not found" may pass: the host may not serve it yet
        self.branch = repository.default_branch
        self.target = git_host.push_target(repository=repository)

    def git(self, *arguments: str) -> CommandResult:
        return run_command(["git", *arguments], cwd=self.folder, timeout=settings.SANDBOX_COMMAND_TIMEOUT,
                           error=GitHostError)

    def remote_git(self, *arguments: str) -> CommandResult:
        retries = self.git_host.remote_retries
        for attempt in range(retries + 1):
            try:
                return run_command(["git", *arguments], cwd=self.folder, env=self.target.env,
                                   timeout=settings.SANDBOX_COMMAND_TIMEOUT, error=GitHostError)
            except GitHostError as exc:
                output = f"{exc}\n{exc.detail}"  # git's stderr is in the detail, never in what a client reads
                if attempt == retries or not git_failure_is_transient(output, just_created=self.just_created):
                    summary = git_failure_summary(output)
                    if summary:
                        raise GitHostError(f"{exc}: {summary}", detail=exc.detail) from None
                    raise
                logger.warning("`git %s` failed (%s); trying again", arguments[0], exc)
                time.sleep(RETRY_BACKOFF_SECONDS * 2**attempt)
        raise AssertionError("unreachable")

    def fetch(self) -> bool:
        """`git init`, then the branch's content if it has any; False for an empty repository."""
        self.git("init", "--quiet", f"--initial-branch={self.branch}")
        if not self.remote_git("ls-remote", self.target.url, f"refs/heads/{self.branch}").stdout.strip():
            return False
        self.remote_git("fetch", "--quiet", self.target.url, self.branch)
        self.git("checkout", "--quiet", "-B", self.branch, "FETCH_HEAD")
        return True

    def write_files(self, files: Mapping[str, bytes]) -> None:
        for relative, content in files.items():
            target = self.folder / relative
            target.parent.mkdir(parents=True, exist_ok=True)
            if target.is_symlink() or target.is_dir():
                _remove(target)
            target.write_bytes(content)

    def replace_with_archive(self, archive: Path) -> None:
        """The working tree becomes a snapshot's content (its .git left out: never one from a sandbox)."""
        for entry in self.folder.iterdir():
            if entry.name != ".git":
                _remove(entry)

        def kept(member: tarfile.TarInfo, path: str) -> tarfile.TarInfo | None:
            if set(Path(member.name).parts) & UNLISTED_FOLDERS:
                return None
            return extractable(member, path)  # no absolute paths, no links out of the folder

        try:
            with tarfile.open(archive, "r:gz") as tar:
                tar.extractall(self.folder, filter=kept)
        except (OSError, tarfile.TarError) as exc:
            raise GitHostError("The snapshot could not be laid out for the repository", detail=str(exc)) from None

    def commit_and_push(self, message: str) -> str:
        """Commit everything (nothing changed: no commit) and push; the commit now at the branch's head."""
        self.git("add", "--all")
        first = not self._has_commits()
        if first or self.git("status", "--porcelain").stdout.strip():
            self.git(*COMMIT_IDENTITY, "commit", "--quiet", "--allow-empty", "-m", message)
        self.remote_git("push", "--quiet", self.target.url, f"HEAD:refs/heads/{self.branch}")
        return self.git("rev-parse", "HEAD").stdout.strip()

    def _has_commits(self) -> bool:
        try:
            self.git("rev-parse", "--verify", "--quiet", "HEAD")
        except GitHostError:
            return False
        return True

    def blob_sha(self, relative: str) -> str:
        """The git blob id of a committed file (what GitHub's contents API calls its sha)."""
        return self.git("rev-parse", f"HEAD:{relative}").stdout.strip()


def _remove(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path)
    else:
        path.unlink()


@contextmanager
def checkout_folder(name: str) -> Iterator[Path]:
    """An empty folder under SANDBOX_ROOT/checkouts for one piece of git work; removed afterwards."""
    folder = Path(settings.SANDBOX_ROOT) / "checkouts" / name
    shutil.rmtree(folder, ignore_errors=True)  # left by a process that died (a second delivery of a task)
    try:
        folder.mkdir(parents=True)
    except OSError as exc:
        raise GitHostError("Could not make a checkout folder under SANDBOX_ROOT", detail=str(exc)) from None
    try:
        yield folder
    finally:
        shutil.rmtree(folder, ignore_errors=True)
