"""Bulk cleanup of sandboxes by rule: the rule, the batched walk, and the cleanup service.

A cleanup runs in these steps:

1. the rule (CleanupRule) becomes one query on Snapshot rows, evaluated
   against one moment `now`, so every batch sees the same rule;
2. the git host is listed once for the whole run (one paginated listing on
   GitHub) and grouped by account id;
3. the rows are walked in batches by keyset pagination on account_id (the
   primary key): each batch is one SELECT of rows with their accounts, made
   just before the batch is deleted, so the rule is checked again then;
4. each batch goes to `sandboxes_delete`, the service behind
   DELETE /api/sandboxes: repositories, snapshot, row and an audit event per
   sandbox, a constant number of queries per batch, the calls to the git
   host and the backend `concurrency` at a time;
5. failures are kept with their reasons, and one CLEANUP audit event with the
   summary ends the run.

A sandbox that failed keeps its row, so running the same rule again finishes
the job. Nothing here knows about terminals: the commands and the scheduled
task render the report.
"""

import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from django.db.models import QuerySet
from django.utils import timezone

from accounts.audit import Actor, audit_record
from accounts.models import AuditEvent
from orgs.models import Membership
from sandboxes.models import SetupRun, Snapshot
from sandboxes.providers import get_git_host
from sandboxes.providers.base import ProviderError, repositories_grouped_by_account
from sandboxes.services import sandboxes_delete

DEFAULT_BATCH_SIZE = 500
DEFAULT_CONCURRENCY = 4
# SQLite refuses a statement with more than 32,766 parameters; the batch's
# DELETE carries two per row.
MAX_BATCH_SIZE = 5000


class EmptyCleanupRule(ValueError):
    """A rule that names nothing: refused, never read as "everything"."""


@dataclass(frozen=True)
class CleanupRule:
    """Which sandboxes to delete. The parts combine: a sandbox must match every part given."""

    expired: bool = False
    account_ids: tuple[uuid.UUID, ...] = ()
    organization_ids: tuple[uuid.UUID, ...] = ()
    older_than: timedelta | None = None
    inactive_accounts: bool = False
    everything: bool = False

    @property
    def is_empty(self) -> bool:
        return not (
            self.expired
            or self.account_ids
            or self.organization_ids
            or self.older_than
            or self.inactive_accounts
            or self.everything
        )

    def describe(self) -> str:
        if self.everything:
            return "all sandboxes"
        parts = []
        if self.expired:
            parts.append("expired")
        if self.older_than:
            parts.append(f"created more than {_duration_text(self.older_than)} ago")
        if self.inactive_accounts:
            parts.append("of inactive accounts")
        if self.account_ids:
            parts.append("of accounts " + ", ".join(map(str, self.account_ids)))
        if self.organization_ids:
            parts.append("of members of organizations " + ", ".join(map(str, self.organization_ids)))
        return "sandboxes " + " and ".join(parts)

    def as_dict(self) -> dict:
        return {
            "all": self.everything,
            "expired": self.expired,
            "account_ids": [str(account_id) for account_id in self.account_ids],
            "organization_ids": [str(organization_id) for organization_id in self.organization_ids],
            "older_than_seconds": int(self.older_than.total_seconds()) if self.older_than else None,
            "inactive_accounts": self.inactive_accounts,
        }

    def selection(self, *, now: datetime) -> QuerySet[Snapshot]:
        """The Snapshot rows the rule matches at `now`."""
        if self.is_empty:
            raise EmptyCleanupRule("the rule selects nothing; name what to delete")
        rows = Snapshot.objects.all()
        if self.expired:
            # A sandbox whose setup is running again is being renewed: the run
            # replaces the expired snapshot, and deleting now would destroy it.
            renewing = SetupRun.objects.filter(status__in=SetupRun.ACTIVE_STATUSES).values("account_id")
            rows = rows.filter(expires_at__lt=now).exclude(account_id__in=renewing)
        if self.older_than:
            rows = rows.filter(created_at__lt=now - self.older_than)
        if self.inactive_accounts:
            rows = rows.filter(account__is_active=False)
        if self.account_ids:
            rows = rows.filter(account_id__in=self.account_ids)
        if self.organization_ids:
            members = Membership.objects.filter(organization_id__in=self.organization_ids).values("account_id")
            rows = rows.filter(account_id__in=members)
        return rows


def _duration_text(duration: timedelta) -> str:
    seconds = int(duration.total_seconds())
    for unit, size in (("w", 604800), ("d", 86400), ("h", 3600), ("m", 60)):
        if seconds % size == 0:
            return f"{seconds // size}{unit}"
    return f"{seconds}s"


# --- reads ------------------------------------------------------------------------


def cleanup_selection_count(*, rule: CleanupRule, now: datetime) -> int:
    return rule.selection(now=now).count()


def cleanup_selection_preview(*, rule: CleanupRule, now: datetime, limit: int) -> list[Snapshot]:
    """The first rows the rule matches, in the order the cleanup walks them."""
    return list(rule.selection(now=now).select_related("account").order_by("account_id")[:limit])


def snapshot_batches(rows: QuerySet[Snapshot], *, batch_size: int) -> Iterator[list[Snapshot]]:
    """The rows in batches of `batch_size`, with their accounts, one SELECT per batch.

    Keyset pagination on account_id: each batch starts after the last id of
    the one before, so a row deleted meanwhile shifts nothing, and a row that
    failed is not seen again in the same run.
    """
    ordered = rows.select_related("account").order_by("account_id")
    last_account_id = None
    while True:
        page = ordered if last_account_id is None else ordered.filter(account_id__gt=last_account_id)
        batch = list(page[:batch_size])
        if not batch:
            return
        yield batch
        if len(batch) < batch_size:
            return
        last_account_id = batch[-1].account_id


# --- the service ------------------------------------------------------------------


@dataclass(frozen=True)
class CleanupFailure:
    account_id: str
    snapshot_id: str
    error: str


@dataclass
class CleanupReport:
    """What a cleanup did (or, on a dry run, would do)."""

    rule: CleanupRule
    dry_run: bool
    selected: int = 0  # rows the rule matched as the walk reached them
    deleted: int = 0
    already_gone: int = 0  # removed by someone else between the batch's SELECT and its delete
    failed: int = 0
    repositories_removed: int = 0
    # Repositories of the deleted sandboxes' accounts that lack this deployment's mark: never deleted.
    left_alone: list[str] = field(default_factory=list)
    batches: int = 0
    seconds: float = 0.0
    stopped_early: bool = False  # the time budget ran out; the rest waits for the next run
    error: str = ""  # the run could not start
    failures: list[CleanupFailure] = field(default_factory=list)
    listed: list[dict] = field(default_factory=list)  # dry run: the sandboxes that would be deleted

    @property
    def ok(self) -> bool:
        return not self.error and not self.failed

    @property
    def summary(self) -> str:
        if self.error:
            return f"Cleanup of {self.rule.describe()} did not run: {self.error}"
        if self.dry_run:
            return f"Dry run: {self.selected} sandbox(es) would be deleted ({self.rule.describe()}); nothing was deleted"
        text = (
            f"Cleanup of {self.rule.describe()}: selected {self.selected}, deleted {self.deleted}, "
            f"failed {self.failed}, repositories removed {self.repositories_removed}, "
            f"{self.seconds:.1f} s"
        )
        if self.already_gone:
            text += f"; {self.already_gone} were deleted by someone else meanwhile"
        if self.left_alone:
            text += f"; {len(self.left_alone)} repositories without this deployment's mark left alone"
        if self.stopped_early:
            text += "; stopped at the time budget, the next run goes on"
        return text

    def as_dict(self) -> dict:
        report = {
            "command": "cleanup_sandboxes",
            "rule": self.rule.as_dict(),
            "dry_run": self.dry_run,
            "ok": self.ok,
            "selected": self.selected,
            "deleted": self.deleted,
            "already_gone": self.already_gone,
            "failed": self.failed,
            "repositories_removed": self.repositories_removed,
            "repositories_left_alone": self.left_alone,
            "batches": self.batches,
            "seconds": round(self.seconds, 3),
            "stopped_early": self.stopped_early,
            "error": self.error,
            "failures": [failure.__dict__ for failure in self.failures],
        }
        if self.dry_run:
            report["sandboxes"] = self.listed
        return report


def sandbox_listing_entry(row: Snapshot) -> dict:
    return {
        "account_id": str(row.account_id),
        "email": row.account.email,
        "snapshot_id": row.snapshot_id,
        "expires_at": row.expires_at.isoformat(),
        "created_at": row.created_at.isoformat(),
        "github_repo": row.github_repo,
    }


def sandboxes_cleanup(
    *,
    rule: CleanupRule,
    actor: Actor,
    dry_run: bool = False,
    batch_size: int = DEFAULT_BATCH_SIZE,
    concurrency: int = DEFAULT_CONCURRENCY,
    now: datetime | None = None,
    time_budget: float | None = None,
    on_batch: Callable[[CleanupReport], None] | None = None,
) -> CleanupReport:
    """Delete every sandbox the rule matches, batch by batch; a failure on one does not stop the rest.

    `time_budget` (seconds) stops the run before a new batch once it is
    spent (a scheduled run must end within its task's timeout; the next run
    goes on where this one stopped). `on_batch` sees the report after each
    batch, for a progress display.
    """
    if not 1 <= batch_size <= MAX_BATCH_SIZE:
        raise ValueError(f"the batch size must be between 1 and {MAX_BATCH_SIZE}")
    started = time.monotonic()
    now = now or timezone.now()
    rows = rule.selection(now=now)
    report = CleanupReport(rule=rule, dry_run=dry_run)

    repositories = None
    if not dry_run:
        try:
            # Once for the whole run, never per batch or per row.
            repositories = repositories_grouped_by_account(get_git_host().list_all_repositories())
        except ProviderError as exc:
            report.error = f"the repositories of the git host could not be listed, so nothing was deleted ({exc})"

    if not report.error:
        for batch in snapshot_batches(rows, batch_size=batch_size):
            if time_budget is not None and time.monotonic() - started > time_budget:
                report.stopped_early = True
                break
            report.selected += len(batch)
            if dry_run:
                report.listed.extend(sandbox_listing_entry(row) for row in batch)
            else:
                _delete_batch(batch, report=report, actor=actor, concurrency=concurrency, repositories=repositories)
            report.batches += 1
            if on_batch is not None:
                on_batch(report)

    report.seconds = time.monotonic() - started
    if not dry_run:
        audit_record(
            action=AuditEvent.Action.CLEANUP,
            outcome=AuditEvent.Outcome.SUCCESS if report.ok else AuditEvent.Outcome.FAILURE,
            actor=actor,
            detail=report.summary,
        )
    return report


def _delete_batch(batch: list[Snapshot], *, report: CleanupReport, actor: Actor, concurrency: int, repositories):
    snapshot_ids = {row.account_id: row.snapshot_id for row in batch}
    deletions = sandboxes_delete(
        accounts=[row.account for row in batch], actor=actor, concurrency=concurrency, repositories=repositories,
        expired=report.rule.expired,
    )
    for deletion in deletions:
        report.repositories_removed += len(deletion.repositories)
        report.left_alone += deletion.left_alone
        if deletion.error:
            report.failed += 1
            report.failures.append(
                CleanupFailure(
                    account_id=str(deletion.account_id),
                    snapshot_id=snapshot_ids[deletion.account_id],
                    error=deletion.error,
                )
            )
        elif deletion.snapshot is not None:
            report.deleted += 1
        else:
            report.already_gone += 1
