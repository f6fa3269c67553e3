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
    """An outside system failed; the message is fit to show to a user."""


class SandboxBackendError(ProviderError):
    pass


class GitHostError(ProviderError):
    pass


class SnapshotFileNotFound(SandboxBackendError):
    """The snapshot holds no file at that path."""


class SnapshotFileTooLarge(SandboxBackendError):
    """The file is larger than the caller will read."""

    def __init__(self, message: str, *, size: int):
        super().__init__(message)
        self.size = size


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


# What a snapshot's listing leaves out: git's own folder is the repository's
# history, not a file of the sandbox.
UNLISTED_FOLDERS = frozenset({".git"})


@dataclass(frozen=True)
class FileEntry:
    """One entry of a snapshot's listing, as GET /api/sandboxes shows it."""

    path: str  # relative, with "/" between folders
    type: str  # "blob" (a file) or "tree" (a folder)
    size: int | None = None  # bytes, for blobs

    def as_json(self) -> dict:
        return {"path": self.path, "type": self.type, "size": self.size}


@dataclass(frozen=True)
class SnapshotInfo:
    snapshot_id: str
    checksum: str
    size_bytes: int
    files: tuple[FileEntry, ...] = ()  # the listing, sorted by path; UNLISTED_FOLDERS left out


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

    def read_file(self, snapshot_id: str, path: str, *, max_bytes: int) -> bytes:
        """The content of one file of a snapshot (a relative, normalized path).

        Raises SnapshotFileNotFound where there is no such file, and
        SnapshotFileTooLarge over `max_bytes`, before reading it.
        """

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
