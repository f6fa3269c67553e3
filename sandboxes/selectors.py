"""Reads on sandboxes and setup runs: the sandbox's state, a file of its snapshot, runs, what a delete deletes."""

import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import timedelta
from functools import cache, lru_cache

from django.conf import settings
from django.db import connections, router
from django.db.models import Count, Q

from accounts.models import Account, ApiKey
from orgs.access import reachable_accounts
from sandboxes.models import LiveSandbox, SetupRun, Snapshot
from sandboxes.providers import get_git_host, get_sandbox_backend
from sandboxes.providers.base import (
    ProviderError,
    Repository,
    SnapshotFileNotFound,
    SnapshotFileTooLarge,
    repositories_grouped_by_account,
    repository_belongs_to,
)

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class SandboxState:
    """What GET /api/sandboxes shows of an account's sandbox."""

    snapshot: Snapshot | None
    last_run: SetupRun | None
    live_sandbox: LiveSandbox | None = None  # pending, running or stopping

    @property
    def state(self) -> str:
        """none, provisioning, ready, expired or failed (README: "See your sandbox")."""
        if self.last_run is not None and self.last_run.is_active:
            return "provisioning"
        if self.snapshot is not None:
            return "expired" if self.snapshot.is_expired else "ready"
        if self.last_run is not None and self.last_run.status == SetupRun.Status.FAILED:
            return "failed"
        return "none"


def sandbox_state(*, account: Account) -> SandboxState:
    """The account's most recent run, its snapshot and its live sandbox, in one indexed read.

    GET /api/sandboxes is read far more often than anything else changes, and
    Django compiling a query that joins three models costs it more CPU than
    the database spends answering; this statement is written once per
    database from the models' columns, and its rows are converted as
    Django's own compiler converts them.
    """
    connection = connections[router.db_for_read(SetupRun)]
    account_id = SetupRun._meta.get_field("account").get_db_prep_value(account.pk, connection)
    with connection.cursor() as cursor:
        cursor.execute(_sandbox_state_sql(connection.alias), [account_id, account_id, account_id])
        row = cursor.fetchone()
    runs, snapshots = len(SetupRun._meta.concrete_fields), len(Snapshot._meta.concrete_fields)
    run_values, snapshot_values = row[:runs], row[runs:runs + snapshots]
    live_values = row[runs + snapshots:]
    return SandboxState(
        last_run=model_from_row(SetupRun, run_values, connection) if run_values[0] is not None else None,
        snapshot=model_from_row(Snapshot, snapshot_values, connection) if snapshot_values[0] is not None else None,
        live_sandbox=model_from_row(LiveSandbox, live_values, connection) if live_values[0] is not None else None,
    )


@cache
def _sandbox_state_sql(alias: str) -> str:
    quote = connections[alias].ops.quote_name
    run_table, snapshot_table = quote(SetupRun._meta.db_table), quote(Snapshot._meta.db_table)
    live_table = quote(LiveSandbox._meta.db_table)
    columns = ", ".join(
        [f"r.{quote(field.column)}" for field in SetupRun._meta.concrete_fields]
        + [f"s.{quote(field.column)}" for field in Snapshot._meta.concrete_fields]
        + [f"l.{quote(field.column)}" for field in LiveSandbox._meta.concrete_fields]
    )
    live_statuses = ", ".join(f"'{status}'" for status in LiveSandbox.LIVE_STATUSES)
    account, created_at, run_id = quote("account_id"), quote("created_at"), quote("id")
    # A row whatever exists: the newest run (the index on account and created_at) and the snapshot, or NULLs.
    return (
        f"SELECT {columns} FROM (SELECT 1) AS one "
        f"LEFT JOIN {run_table} r ON r.{run_id} = (SELECT {run_id} FROM {run_table} WHERE {account} = %s "
        f"ORDER BY {created_at} DESC LIMIT 1) "
        f"LEFT JOIN {snapshot_table} s ON s.{account} = %s "
        # At most one is live (the conditional unique constraint).
        f"LEFT JOIN {live_table} l ON l.{account} = %s AND l.{quote('status')} IN ({live_statuses})"
    )


def model_from_row(model, values, connection):
    """An instance from its concrete fields' raw values, converted as a QuerySet converts them."""
    attnames, columns = _row_reader(model, connection)
    converted = []
    for (column, converters), value in zip(columns, values, strict=True):
        for converter in converters:
            value = converter(value, column, connection)
        converted.append(value)
    return model.from_db(connection.alias, attnames, converted)


@lru_cache(maxsize=64)
def _row_reader(model, connection) -> tuple[list[str], list[tuple]]:
    """The model's concrete fields' names, and each one's column with its converters, worked out once per
    connection (a thread's; its converters are its own methods): building them on every row was a tenth of
    the CPU of reading a sandbox."""
    fields = model._meta.concrete_fields
    columns = []
    for field in fields:
        column = field.get_col(model._meta.db_table)
        columns.append((column, [*connection.ops.get_db_converters(column), *column.get_db_converters(connection)]))
    return [field.attname for field in fields], columns


class SandboxFileError(Exception):
    """A file of the snapshot that cannot be read; the message is fit to show to a user."""


class NoSnapshot(SandboxFileError):
    pass


class SnapshotExpired(SandboxFileError):
    pass


class NoSuchFile(SandboxFileError):
    pass


class FileTooLarge(SandboxFileError):
    pass


class SnapshotUnreadable(SandboxFileError):
    """The backend failed to read the snapshot."""


@dataclass(frozen=True)
class SandboxFile:
    path: str
    content: bytes


def sandbox_file_read(*, account: Account, path: str) -> SandboxFile:
    """One file of the account's snapshot, read through the backend (GET /api/sandboxes/file).

    `path` is relative and normalized (the view checks). The recorded listing
    answers for a file that is not there or too large without opening the
    archive; a snapshot taken before listings were recorded asks the backend.
    """
    snapshot = Snapshot.objects.filter(account=account).first()
    if snapshot is None:
        raise NoSnapshot("The account has no snapshot; set the sandbox up first (POST /api/sandboxes/setup)")
    if snapshot.is_expired:
        raise SnapshotExpired(
            f"The snapshot expired at {snapshot.expires_at.isoformat()}; renew it with PATCH /api/sandboxes "
            "(or set the sandbox up again with POST /api/sandboxes/setup) to read it"
        )
    limit = settings.SANDBOX_FILE_MAX_BYTES
    too_large = "{path} is {size} bytes; files of at most {limit} bytes (SANDBOX_FILE_MAX_BYTES) can be read"
    if snapshot.filetree is not None:
        entry = next((entry for entry in snapshot.filetree if entry["path"] == path), None)
        if entry is None or entry["type"] != "blob":
            raise NoSuchFile(f"No file {path} in the snapshot")
        if entry["size"] > limit:
            raise FileTooLarge(too_large.format(path=path, size=entry["size"], limit=limit))
    try:
        content = get_sandbox_backend().read_file(snapshot.snapshot_id, path, max_bytes=limit)
    except SnapshotFileNotFound:
        raise NoSuchFile(f"No file {path} in the snapshot") from None
    except SnapshotFileTooLarge as exc:
        raise FileTooLarge(too_large.format(path=path, size=exc.size, limit=limit)) from None
    except ProviderError as exc:
        logger.warning("Could not read %s from snapshot %s: %s", path, snapshot.snapshot_id, exc)
        raise SnapshotUnreadable(f"Could not read the snapshot: {exc}") from None
    return SandboxFile(path=path, content=content)


def setup_run_visible_to(*, key: ApiKey, run_id: str) -> SetupRun | None:
    """The run, if the key may act on its account; None otherwise, as for a run that does not exist."""
    return SetupRun.objects.filter(pk=run_id, account__in=reachable_accounts(key=key)).first()


def setup_runs_recent(*, account: Account, limit: int) -> list[SetupRun]:
    return list(SetupRun.objects.filter(account=account).order_by("-created_at")[:limit])


def sandbox_repositories(
    *, account_id, snapshot: Snapshot | None, listed: Mapping[str, list[Repository]]
) -> tuple[list[Repository], list[Repository]]:
    """The account's repositories in the git host's listing: (those deleting its sandbox deletes, those it leaves).

    The account's are every one whose name ends with its id, and the recorded
    one, found by its id even when renamed. Deleted are those that carry this
    deployment's mark; the others are left alone, and reported.
    """
    found = {
        repository.name: repository
        for repository in listed.get(str(account_id), [])
        if repository_belongs_to(repository.name, account_id)
    }
    if snapshot is not None and snapshot.github_repo:
        recorded = getattr(listed, "by_id", {}).get(snapshot.github_repo_id)
        if recorded is not None and recorded.owned:
            found[recorded.name] = recorded  # renamed away from the account id: still its repository
    ordered = sorted(found.values(), key=lambda repository: repository.name)
    return [r for r in ordered if r.owned], [r for r in ordered if not r.owned]


def sandbox_repository_names(
    *, account_id, snapshot: Snapshot | None, listed: Mapping[str, list[Repository]]
) -> list[str]:
    """The names of the repositories deleting an account's sandbox deletes (see sandbox_repositories)."""
    owned, _left_alone = sandbox_repositories(account_id=account_id, snapshot=snapshot, listed=listed)
    return [repository.name for repository in owned]


@dataclass
class PlannedSandboxDeletion:
    account: Account
    snapshot: Snapshot | None
    repositories: list[str]


@dataclass
class SandboxDeletionPlan:
    """What deleting these sandboxes would delete now, for a person to confirm first."""

    sandboxes: list[PlannedSandboxDeletion]
    # Set when the git host could not be listed: only the recorded
    # repositories are known, and deleting would fail the same way.
    listing_error: str = ""


def sandboxes_deletion_plan(*, accounts: Sequence[Account]) -> SandboxDeletionPlan:
    """The repositories and snapshots `services.sandboxes_delete` would delete for these accounts."""
    account_ids = [account.pk for account in accounts]
    snapshots = Snapshot.objects.in_bulk(account_ids)
    listing_error = ""
    try:
        listed = repositories_grouped_by_account(get_git_host().list_all_repositories())
    except ProviderError as exc:
        listed, listing_error = {}, str(exc)
    planned = [
        PlannedSandboxDeletion(
            account=account,
            snapshot=snapshots.get(account.pk),
            repositories=sandbox_repository_names(
                account_id=account.pk, snapshot=snapshots.get(account.pk), listed=listed
            ),
        )
        for account in accounts
    ]
    return SandboxDeletionPlan(sandboxes=planned, listing_error=listing_error)


# "Expiring soon" on the back office's front page and in the sandbox list's state filter.
EXPIRING_WITHIN = timedelta(hours=24)


@dataclass
class BackOfficeOverview:
    """What the back office's front page shows: what needs attention now, and how many of each state."""

    failed_runs: list[SetupRun]  # failed in the last 24 hours, newest first
    failed_runs_count: int
    waiting_runs: list[SetupRun]  # queued or executing, longest waiting first
    waiting_runs_count: int
    expiring: list[Snapshot]  # valid and expiring within 24 hours, soonest first
    expiring_count: int
    sandboxes_by_state: dict[str, int]  # "valid", "expired"
    runs_by_status: dict[str, int]  # every SetupRun.Status, zero included


def back_office_overview(*, now, within: timedelta, limit: int) -> BackOfficeOverview:
    """The front page's lists (`limit` rows each) and counts; a constant number of queries."""
    runs = SetupRun.objects.select_related("account")
    failed = runs.filter(status=SetupRun.Status.FAILED, created_at__gte=now - within)
    waiting = runs.filter(status__in=SetupRun.ACTIVE_STATUSES)
    expiring = Snapshot.objects.select_related("account").filter(expires_at__gt=now, expires_at__lte=now + within)
    sandboxes = Snapshot.objects.aggregate(
        valid=Count("pk", filter=Q(expires_at__gt=now)), expired=Count("pk", filter=Q(expires_at__lte=now))
    )
    by_status = dict.fromkeys(SetupRun.Status.values, 0)
    by_status.update(SetupRun.objects.order_by().values_list("status").annotate(n=Count("pk")).values_list("status", "n"))
    return BackOfficeOverview(
        failed_runs=list(failed.order_by("-created_at")[:limit]),
        failed_runs_count=failed.count(),
        waiting_runs=list(waiting.order_by("created_at")[:limit]),
        waiting_runs_count=waiting.count(),
        expiring=list(expiring.order_by("expires_at")[:limit]),
        expiring_count=expiring.count(),
        sandboxes_by_state=sandboxes,
        runs_by_status=by_status,
    )
