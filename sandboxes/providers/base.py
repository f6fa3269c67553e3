"""The two outside systems of the service, as small interfaces.

A sandbox backend runs sandboxes and keeps their snapshots; a git host keeps
the account's repository. Each implementation returns these dataclasses and
raises these errors, never the types of the library it wraps.
"""

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Protocol

from django.utils.text import slugify

REPOSITORY_SLUG_LENGTH = 50


class ProviderError(Exception):
    """An outside system failed.

    The message is fit to show to a client: it says what failed in the
    service's words, never a path of this host or a program's raw output.
    What the operator needs beside it (the folder, git's stderr) is `detail`,
    which goes to the log only.
    """

    def __init__(self, message: str, *, detail: str = ""):
        super().__init__(message)
        self.detail = detail


def os_reason(exc: OSError) -> str:
    """The reason of an OSError without its file names ("Permission denied", not "[Errno 13] …: '/var/…'")."""
    if exc.strerror:
        return exc.strerror
    text = str(exc)  # an OSError raised with a message of its own ("Cannot call rmtree on a symbolic link")
    return text if text and "/" not in text else type(exc).__name__


class SandboxBackendError(ProviderError):
    pass


class GitHostError(ProviderError):
    pass


@dataclass(frozen=True)
class Repository:
    name: str
    html_url: str
    clone_url: str = ""


@dataclass(frozen=True)
class EnsuredRepository:
    repository: Repository
    created: bool


@dataclass(frozen=True)
class PushTarget:
    """Where `git push` goes. Credentials travel only in `env`, never in `url`."""

    url: str
    env: Mapping[str, str] = field(default_factory=dict, repr=False)


@dataclass(frozen=True)
class CommandResult:
    exit_code: int
    stdout: str
    stderr: str


@dataclass(frozen=True)
class SnapshotInfo:
    snapshot_id: str
    checksum: str
    size_bytes: int


def repository_name_for(*, account_name: str, account_id) -> str:
    """`<slug of the account name>-<account id>`: the id makes it the account's alone."""
    slug = slugify(account_name)[:REPOSITORY_SLUG_LENGTH].strip("-") or "sandbox"
    return f"{slug}-{account_id}"


def repository_belongs_to(name: str, account_id) -> bool:
    """Only repositories whose name ends with the account id are ever touched."""
    return name.endswith(str(account_id))


_UUID = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}")


def repositories_grouped_by_account(repositories: list[Repository]) -> dict[str, list[Repository]]:
    """Group repositories by every account id their name carries: one pass over a whole listing."""
    grouped: dict[str, list[Repository]] = {}
    for repository in repositories:
        for found in set(_UUID.findall(repository.name.lower())):
            grouped.setdefault(found, []).append(repository)
    return grouped


def account_id_of_repository(name: str) -> str | None:
    """The account id a sandbox repository's name ends with; None for a repository that is not ours."""
    tail = name[-36:].lower()
    return tail if _UUID.fullmatch(tail) else None


def repository_name_from_url(url: str) -> str:
    name = url.rstrip("/").rsplit("/", 1)[-1]
    return name.removesuffix(".git")


class SandboxBackend(Protocol):
    name: str

    def create(self) -> str:
        """Start a sandbox and return its id."""

    def write_files(self, sandbox_id: str, files: Mapping[str, bytes]) -> None:
        """Write files (relative path → content) into the sandbox's workspace."""

    def run(self, sandbox_id: str, argv: list[str], *, env: Mapping[str, str] | None = None) -> CommandResult:
        """Run a command in the workspace; raises SandboxBackendError if it fails or times out."""

    def snapshot(self, sandbox_id: str) -> SnapshotInfo:
        """Save the workspace as a new snapshot."""

    def restore(self, snapshot_id: str) -> str:
        """Start a sandbox from a snapshot and return its id."""

    def snapshot_exists(self, snapshot_id: str) -> bool: ...

    def list_snapshots(self) -> list[str]:
        """The ids of every snapshot the backend holds (reconcile compares them with the rows)."""

    def delete_snapshot(self, snapshot_id: str) -> bool:
        """Delete a snapshot; False when it was already gone."""

    def stop(self, sandbox_id: str) -> None:
        """Shut the sandbox down and free what it held; a stopped sandbox is a no-op."""


class GitHost(Protocol):
    name: str

    def ensure_repository(self, *, name: str, description: str) -> EnsuredRepository:
        """Create the repository, or return it if it exists already."""

    def list_repositories(self, *, account_id) -> list[Repository]:
        """Every repository whose name carries the account id."""

    def list_all_repositories(self) -> list[Repository]:
        """Every repository of the host (one listing serves a whole batch of accounts)."""

    def delete_repository(self, *, name: str) -> bool:
        """Delete a repository; False when it was already gone."""

    def push_target(self, *, repository: Repository) -> PushTarget: ...
