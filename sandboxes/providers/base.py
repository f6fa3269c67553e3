"""The two outside systems of the service, as small interfaces.

A sandbox backend runs sandboxes and keeps their snapshots; a git host keeps
the account's repository. Each implementation returns these dataclasses and
raises these errors, never the types of the library it wraps.
"""

import re
import secrets
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Protocol

from django.utils.text import slugify

REPOSITORY_SLUG_LENGTH = 50
# Retries of calls to a remote git host, API and git alike: the n-th retry
# waits RETRY_BACKOFF_SECONDS * 2**(n-1).
RETRY_BACKOFF_SECONDS = 0.5


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


class NotOurRepository(GitHostError):
    """The repository does not carry this deployment's mark: it is reported, never deleted."""


class SnapshotFileNotFound(SandboxBackendError):
    """The snapshot holds no file at that path."""


class SnapshotFileTooLarge(SandboxBackendError):
    """The file is larger than the caller will read."""

    def __init__(self, message: str, *, size: int):
        super().__init__(message)
        self.size = size


def describe_mark(*, owned: bool, deployment: str) -> str:
    """Whose a repository or snapshot is, in words, for reports: "carries this deployment's mark", …"""
    if owned:
        return "carries this deployment's mark"
    if deployment:
        return f"carries the mark of deployment {deployment!r}, not this one's"
    return "carries no deployment's mark"


@dataclass(frozen=True)
class StoredSnapshot:
    """One archive the store holds, as its listing shows it."""

    snapshot_id: str  # for an object that is not a snapshot of any deployment: its key under the prefix
    deployment: str = ""  # the deployment its mark names; "" when it carries none
    owned: bool = False  # it carries this deployment's mark: the only kind ever deleted

    @property
    def mark_description(self) -> str:
        return describe_mark(owned=self.owned, deployment=self.deployment)


@dataclass(frozen=True)
class Repository:
    name: str
    html_url: str
    clone_url: str = ""
    id: int | None = None  # the host's own id (GitHub's repository id, kept across renames); None locally
    default_branch: str = "main"
    deployment: str = ""  # the SANDBOX_DEPLOYMENT_ID its mark names; "" when it carries none
    created_by_run: str = ""  # the setup run its mark names, the one that created it
    owned: bool = False  # it carries this deployment's mark: the only kind ever deleted

    @property
    def mark_description(self) -> str:
        """Whose the repository is, in words, for reports."""
        return describe_mark(owned=self.owned, deployment=self.deployment)


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


def new_sandbox_id() -> str:
    return "sbx_" + secrets.token_hex(10)


@dataclass(frozen=True)
class CommandOutput:
    """What a client's command in a live sandbox did; exit_code is None for one killed at its time limit."""

    exit_code: int | None
    stdout: str
    stderr: str
    stdout_truncated: bool = False
    stderr_truncated: bool = False
    timed_out: bool = False
    duration_ms: int = 0


@dataclass(frozen=True)
class CommandSpec:
    """A client's command: an argument list (no shell), run in a folder of the workspace."""

    command_id: str  # cmd_…: names its files in the sandbox's commands folder
    argv: tuple[str, ...]
    cwd: str = ""  # relative to the workspace, normalized; "" is the workspace
    env: Mapping[str, str] = field(default_factory=dict, repr=False)
    timeout_seconds: float = 60.0


@dataclass(frozen=True)
class SandboxOwner:
    """Whose a sandbox is and when it must be gone: what a container runtime labels it with."""

    account_id: str = ""
    holder: str = ""  # the setup run (run_…) or live sandbox (sbx_…) that holds it
    expires_at: datetime | None = None  # past it, reconcile removes what is left of it


@dataclass(frozen=True)
class RuntimeResource:
    """A container or volume of the runtime, as its labels describe it (reconcile compares them with the rows)."""

    kind: str  # "container" or "volume"
    name: str
    sandbox_id: str = ""
    account_id: str = ""
    holder: str = ""
    expires_at: datetime | None = None
    deployment: str = ""  # the deployment its mark names; "" when it carries none
    owned: bool = False  # it carries this deployment's mark: the only kind ever removed

    @property
    def mark_description(self) -> str:
        return describe_mark(owned=self.owned, deployment=self.deployment)


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


# The mark: a repository topic (lowercase letters, digits and hyphens, at most
# 50 characters), so SANDBOX_DEPLOYMENT_ID is at most 31 characters (config/environment.py).
# https://docs.github.com/en/repositories/managing-your-repositorys-settings-and-features/customizing-your-repository/classifying-your-repository-with-topics
MARK_PREFIX = "sandbox-deployment-"
_MARK_IN_DESCRIPTION = re.compile(r"\[" + MARK_PREFIX + r"([a-z0-9-]+)(?: (run_[0-9a-f]+))?\]\s*$")


def deployment_mark(deployment_id: str) -> str:
    """The topic that marks a repository as this deployment's: `sandbox-deployment-<id>`."""
    return MARK_PREFIX + deployment_id


def described_with_mark(description: str, *, deployment_id: str, run_id: str = "") -> str:
    """The description a repository is created with: the mark (and the run) travel in the create call itself."""
    mark = " ".join(filter(None, [deployment_mark(deployment_id), run_id]))
    return f"{description} [{mark}]".strip()


def mark_fields(*, topics: list[str], description: str, deployment_id: str) -> dict:
    """Repository fields (deployment, created_by_run, owned) from what its topics and description name.

    A topic is the mark an operator sees and can add by hand; the description
    carries the mark from the create call on, before the topic is written.
    """
    found = _MARK_IN_DESCRIPTION.search(description or "")
    named = [topic.removeprefix(MARK_PREFIX) for topic in topics if topic.startswith(MARK_PREFIX)]
    if found:
        named.insert(0, found.group(1))
    owned = deployment_id in named
    ours_described = bool(found) and found.group(1) == deployment_id
    return {
        "deployment": deployment_id if owned else (named[0] if named else ""),
        "created_by_run": (found.group(2) or "") if ours_described else "",
        "owned": owned,
    }


# How git (through libcurl) says a remote failed in a way that may pass: a 5xx
# answer, a dropped or refused connection, a timeout. Never a 401, 403 or 404.
_TRANSIENT_GIT_FAILURE = re.compile(
    r"returned error: 5\d\d|HTTP 5\d\d|Connection reset|Empty reply from server|Recv failure|Send failure"
    r"|Failed to connect|Couldn't connect|Connection refused|timed out|did not finish within",
    re.IGNORECASE,
)
_GIT_NOT_FOUND = re.compile(r"repository '[^']*' not found|returned error: 404|Repository not found", re.IGNORECASE)
_GIT_REFUSED = re.compile(r"returned error: 40[13]|HTTP 40[13]|Authentication failed|could not read Username",
                          re.IGNORECASE)


def git_failure_is_transient(message: str, *, just_created: bool = False) -> bool:
    """Whether a failed `git ls-remote`, `fetch` or `push` is worth trying again.

    A repository created a moment ago may not be served yet: its "not found" is
    transient too.
    """
    if _GIT_REFUSED.search(message):
        return False
    if _GIT_NOT_FOUND.search(message):
        return just_created
    return bool(_TRANSIENT_GIT_FAILURE.search(message))


def git_failure_summary(output: str) -> str:
    """What a failed remote git command met, in the service's words; git's own text stays in the log."""
    if _GIT_REFUSED.search(output):
        return "the git host refused the credentials"
    if _GIT_NOT_FOUND.search(output):
        return "the repository was not found on the git host"
    if _TRANSIENT_GIT_FAILURE.search(output):
        return "the git host did not answer or failed"
    return ""


def repository_name_for(*, account_name: str, account_id) -> str:
    """`<slug of the account name>-<account id>`: the id makes it the account's alone."""
    slug = slugify(account_name)[:REPOSITORY_SLUG_LENGTH].strip("-") or "sandbox"
    return f"{slug}-{account_id}"


def repository_belongs_to(name: str, account_id) -> bool:
    """Only repositories whose name ends with the account id are ever touched."""
    return name.endswith(str(account_id))


_UUID = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}")


class RepositoryListing(dict):
    """A git host's listing by every account id a repository's name carries; `by_id` by the host's id."""

    by_id: dict[int, Repository]


def repositories_grouped_by_account(repositories: list[Repository]) -> RepositoryListing:
    """Group repositories by every account id their name carries (and by id): one pass over a whole listing."""
    grouped = RepositoryListing()
    grouped.by_id = {repository.id: repository for repository in repositories if repository.id is not None}
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

    def create(self, *, owner: SandboxOwner | None = None, sandbox_id: str | None = None) -> str:
        """Start a sandbox (with `sandbox_id`, a new_sandbox_id() the caller recorded first) and return its id."""

    def write_files(self, sandbox_id: str, files: Mapping[str, bytes]) -> None:
        """Write files (relative path → content) into the sandbox's workspace."""

    def write_tree(self, sandbox_id: str, folder: Path) -> None:
        """Copy a folder of the worker (a checkout, its .git included) into the sandbox's workspace."""

    def run(self, sandbox_id: str, argv: list[str], *, env: Mapping[str, str] | None = None) -> CommandResult:
        """Run a command in the workspace; raises SandboxBackendError if it fails or times out."""

    def snapshot(self, sandbox_id: str) -> SnapshotInfo:
        """Save the workspace as a new snapshot."""

    def restore(self, snapshot_id: str, *, owner: SandboxOwner | None = None) -> str:
        """Start a sandbox from a snapshot and return its id."""

    def read_file(self, snapshot_id: str, path: str, *, max_bytes: int) -> bytes:
        """The content of one file of a snapshot (a relative, normalized path).

        Raises SnapshotFileNotFound where there is no such file, and
        SnapshotFileTooLarge over `max_bytes`, before reading it.
        """

    def snapshot_exists(self, snapshot_id: str) -> bool: ...

    def list_snapshots(self) -> list[str]:
        """The ids of every snapshot of this deployment the backend holds."""

    def stored_snapshots(self) -> list[StoredSnapshot]:
        """Everything its snapshot store holds, with whose mark each carries (reconcile compares them with the rows)."""

    def delete_snapshot(self, snapshot_id: str) -> bool:
        """Delete a snapshot; False when it was already gone."""

    def stop(self, sandbox_id: str) -> None:
        """Shut the sandbox down and free what it held; a stopped sandbox is a no-op."""

    # --- live sandboxes: a client's commands ---------------------------------------
    engine: str  # which engine holds the sandboxes this backend makes (recorded on a live sandbox's row)

    def execute(self, sandbox_id: str, spec: CommandSpec, *, output_cap: int) -> CommandOutput:
        """Run a client's command to its end or its time limit, killing it there inside and outside."""

    def start_in_background(self, sandbox_id: str, spec: CommandSpec) -> None:
        """Start a client's command; `background_output` reads it, `kill_command` stops it."""

    def background_output(self, sandbox_id: str, command_id: str, *, output_cap: int) -> CommandOutput | None:
        """A background command's output once it has ended (exit_code None when it was killed); None while it runs."""

    def kill_command(self, sandbox_id: str, command_id: str) -> None:
        """Kill a command's whole process group; a command that has ended is left as it is."""

    def is_folder(self, sandbox_id: str, relative: str) -> bool:
        """Whether a folder of the workspace exists (a command's `cwd`)."""

    def runtime_resources(self) -> list[RuntimeResource]:
        """The containers and volumes that carry a deployment's mark (none for a backend without a runtime)."""

    def remove_runtime_resource(self, resource: RuntimeResource) -> bool:
        """Remove a container or volume of this deployment's; False when it was already gone."""


class GitHost(Protocol):
    name: str
    deployment_id: str
    remote_retries: int  # how often a failed git ls-remote, fetch or push is tried again

    def ensure_repository(self, *, name: str, description: str, run_id: str = "") -> EnsuredRepository:
        """Create the repository marked as this deployment's (and `run_id`'s), or return it if it exists.

        `created` is True also for one this run created whose answer was lost.
        """

    def find_repository(self, *, name: str, repository_id: int | None = None) -> Repository | None:
        """The repository by its id (which survives a rename) or else its name; None when it is gone."""

    def list_repositories(self, *, account_id) -> list[Repository]:
        """Every repository whose name carries the account id."""

    def list_all_repositories(self) -> list[Repository]:
        """Every repository of the host (one listing serves a whole batch of accounts)."""

    def delete_repository(self, *, repository: Repository) -> bool:
        """Delete a repository this deployment owns; False when it was already gone.

        Raises NotOurRepository for one without this deployment's mark.
        """

    def push_target(self, *, repository: Repository) -> PushTarget: ...
