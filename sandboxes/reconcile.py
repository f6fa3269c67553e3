"""Reconcile: find (and, asked to, fix) what is out of step between the database, the git host and the backend.

Steps, in this order (each one's fix can only help the ones after it):

1. stale runs       runs left EXECUTING past the timeout (their worker died);
                    fixed by the same sweep that runs every minute
                    (setup_runs_fail_stale), which also takes away what they made
2. listings         the git host's repositories and the backend's snapshots,
                    each listed once for the whole run
3. orphan           repositories whose name ends with an account id that has no
   repositories     Snapshot row (or no account at all), and no setup running;
                    fixed by deleting them, if they carry this deployment's
                    mark; those without it (another deployment's, or made
                    before the mark existed) are listed as not ours and are
                    never deleted
4. orphan           snapshots in the backend that no row points at and no
   snapshots        running setup has taken; fixed by deleting them, if they
                    carry this deployment's mark (the key's folder of the S3
                    store); other objects under the store's prefix (another
                    deployment's, or no deployment's) are listed as not ours
                    and are never deleted
5. dangling rows    rows that point at a snapshot the backend does not hold
                    (fixed by deleting the row: a row must name a snapshot that
                    exists) or at a repository the host does not hold (fixed by
                    clearing the row's repository)
6. leftover         containers and volumes of a container runtime (the docker
   sandboxes        backend) that carry a deployment's mark, listed by that
                    label: those of this deployment that no running setup or live
                    sandbox holds,
                    or that are past the moment their label says they must be
                    gone, are removed; another deployment's are listed as not
                    ours and are never removed

Every step walks its items in batches with a constant number of queries per
batch, checks each item again just before fixing it, and goes on past a
failure. The repository of a row deleted in step 5 is an orphan for the next
run, never deleted in the same run: what a run lists is what it fixes.
"""

import re
import threading
import time
import uuid
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import timedelta
from typing import ClassVar

from django.conf import settings
from django.db import transaction
from django.utils import timezone

from accounts.audit import Actor, audit_event, audit_record, audit_record_many
from accounts.models import Account, AuditEvent
from config.timefmt import format_moment
from sandboxes.models import LiveSandbox, SetupRun, Snapshot
from sandboxes.providers import get_git_host, get_sandbox_backend
from sandboxes.providers.base import (
    ProviderError,
    Repository,
    RuntimeResource,
    account_id_of_repository,
    repository_name_from_url,
)
from sandboxes.providers.snapshot_store import StoredSnapshot
from sandboxes.services import setup_runs_fail_stale

DEFAULT_BATCH_SIZE = 500
DEFAULT_CONCURRENCY = 4
# How the setup pipeline names a snapshot in the steps it records on its run.
_SNAPSHOT_ID = re.compile(r"\bsnap_[A-Za-z0-9]+")


class FindingKind:
    STALE_RUN = "stale_run"
    ORPHAN_REPOSITORY = "orphan_repository"
    NOT_OURS_REPOSITORY = "not_ours_repository"  # reported only: never fixed
    ORPHAN_SNAPSHOT = "orphan_snapshot"
    NOT_OURS_SNAPSHOT = "not_ours_snapshot"  # reported only: never fixed
    MISSING_SNAPSHOT = "missing_snapshot"
    MISSING_REPOSITORY = "missing_repository"
    LEFTOVER_SANDBOX = "leftover_sandbox"
    NOT_OURS_SANDBOX = "not_ours_sandbox"  # reported only: never fixed

    LABELS: ClassVar[dict[str, str]] = {
        STALE_RUN: "stale runs",
        ORPHAN_REPOSITORY: "orphan repositories",
        NOT_OURS_REPOSITORY: "repositories not marked as ours (left alone)",
        ORPHAN_SNAPSHOT: "orphan snapshots",
        NOT_OURS_SNAPSHOT: "snapshots not marked as ours (left alone)",
        MISSING_SNAPSHOT: "rows whose snapshot is gone",
        MISSING_REPOSITORY: "rows whose repository is gone",
        LEFTOVER_SANDBOX: "leftover sandbox containers and volumes",
        NOT_OURS_SANDBOX: "sandbox containers and volumes not marked as ours (left alone)",
    }
    SUBJECTS: ClassVar[dict[str, str]] = {
        STALE_RUN: "stale run",
        ORPHAN_REPOSITORY: "orphan repository",
        NOT_OURS_REPOSITORY: "repository without this deployment's mark",
        ORPHAN_SNAPSHOT: "orphan snapshot",
        NOT_OURS_SNAPSHOT: "snapshot without this deployment's mark",
        MISSING_SNAPSHOT: "row of snapshot",
        MISSING_REPOSITORY: "row of snapshot",
        LEFTOVER_SANDBOX: "leftover sandbox",
        NOT_OURS_SANDBOX: "sandbox without this deployment's mark",
    }
    FIXES: ClassVar[dict[str, str]] = {
        STALE_RUN: "marked failed",
        ORPHAN_REPOSITORY: "deleted",
        NOT_OURS_REPOSITORY: "left alone",
        ORPHAN_SNAPSHOT: "deleted",
        NOT_OURS_SNAPSHOT: "left alone",
        MISSING_SNAPSHOT: "row deleted",
        MISSING_REPOSITORY: "repository cleared from the row",
        LEFTOVER_SANDBOX: "removed",
        NOT_OURS_SANDBOX: "left alone",
    }


@dataclass
class Finding:
    kind: str
    subject: str  # the run id, repository name or snapshot id
    account_id: str | None
    reason: str
    fixed: bool = False
    error: str = ""

    def as_dict(self) -> dict:
        return dict(self.__dict__)


@dataclass
class ReconcileReport:
    fix: bool
    findings: list[Finding] = field(default_factory=list)
    checked: int = 0  # items compared so far (runs, repositories, snapshots, rows)
    to_check: int = 0
    seconds: float = 0.0
    stopped_early: bool = False
    error: str = ""

    def count(self, kind: str) -> int:
        return sum(1 for finding in self.findings if finding.kind == kind)

    @property
    def fixed(self) -> int:
        return sum(1 for finding in self.findings if finding.fixed)

    @property
    def failed(self) -> int:
        return sum(1 for finding in self.findings if finding.error)

    @property
    def ok(self) -> bool:
        return not self.error and not self.failed

    @property
    def summary(self) -> str:
        if self.error:
            return f"Reconcile did not run: {self.error}"
        found = ", ".join(f"{self.count(kind)} {label}" for kind, label in FindingKind.LABELS.items())
        text = f"Reconcile: checked {self.checked}; found {found}"
        if self.fix:
            text += f"; fixed {self.fixed}, failed {self.failed}"
        else:
            text += "; nothing changed (use --fix to fix)"
        text += f"; {self.seconds:.1f} s"
        if self.stopped_early:
            text += "; stopped at the time budget, the next run goes on"
        return text

    def as_dict(self) -> dict:
        return {
            "command": "reconcile_sandboxes",
            "fix": self.fix,
            "ok": self.ok,
            "checked": self.checked,
            "found": {kind: self.count(kind) for kind in FindingKind.LABELS},
            "fixed": self.fixed,
            "failed": self.failed,
            "seconds": round(self.seconds, 3),
            "stopped_early": self.stopped_early,
            "error": self.error,
            "findings": [finding.as_dict() for finding in self.findings],
        }


class _ProvidersPerThread:
    """The git host and the backend, one of each per worker thread (a GitHub client is not shared)."""

    def __init__(self):
        self._local = threading.local()

    def git_host(self):
        if not hasattr(self._local, "git_host"):
            self._local.git_host = get_git_host()
        return self._local.git_host

    def backend(self):
        if not hasattr(self._local, "backend"):
            self._local.backend = get_sandbox_backend()
        return self._local.backend


def _in_parallel(action: Callable, items: list, concurrency: int) -> list:
    """`action` of each item, `concurrency` at a time: the calls to outside systems."""
    if concurrency > 1 and len(items) > 1:
        with ThreadPoolExecutor(max_workers=concurrency) as pool:
            return list(pool.map(action, items))
    return [action(item) for item in items]


def _account_id_or_none(value: str) -> str | None:
    try:
        return str(uuid.UUID(value))
    except ValueError:
        return None


def _chunks(items: list, size: int) -> Iterable[list]:
    for start in range(0, len(items), size):
        yield items[start:start + size]


class _Reconciler:
    def __init__(self, *, fix: bool, actor: Actor, batch_size: int, concurrency: int, time_budget: float | None,
                 on_progress: Callable[[ReconcileReport], None] | None):
        self.report = ReconcileReport(fix=fix)
        self.actor = actor
        self.batch_size = batch_size
        self.concurrency = concurrency
        self.time_budget = time_budget
        self.on_progress = on_progress
        self.providers = _ProvidersPerThread()
        self.started = time.monotonic()

    # --- bookkeeping ---------------------------------------------------------
    def out_of_time(self) -> bool:
        if self.time_budget is not None and time.monotonic() - self.started > self.time_budget:
            self.report.stopped_early = True
        return self.report.stopped_early

    def checked(self, count: int) -> None:
        self.report.checked += count
        if self.on_progress is not None:
            self.on_progress(self.report)

    def record_fixes(self, findings: list[Finding], existing_accounts: set[str] | None = None) -> None:
        """One audit event per fix made or failed, in one query."""
        events = []
        for finding in findings:
            if not (finding.fixed or finding.error):
                continue
            what = f"{FindingKind.SUBJECTS[finding.kind]} {finding.subject} ({finding.reason})"
            detail = f"{FindingKind.FIXES[finding.kind].capitalize()}: {what}"
            if finding.error:
                detail = f"Could not fix {what}: {finding.error}"
            # Each fix has its own action, apart from the run's summary (RECONCILE).
            event = audit_event(
                action=AuditEvent.Action.RECONCILE_FIX_FAILED if finding.error else AuditEvent.Action.RECONCILE_FIXED,
                actor=self.actor,
                account=uuid.UUID(finding.account_id) if finding.account_id else None,
                outcome=AuditEvent.Outcome.FAILURE if finding.error else AuditEvent.Outcome.SUCCESS,
                detail=detail,
            )
            if existing_accounts is not None and finding.account_id not in existing_accounts:
                event.account_id = None  # no such account: keep only the reference
            events.append(event)
        audit_record_many(events)

    # --- 1. stale runs ---------------------------------------------------------
    def stale_runs(self) -> None:
        cutoff = timezone.now() - timedelta(seconds=settings.SETUP_RUN_STALE_AFTER)
        stale = list(
            SetupRun.objects.filter(status=SetupRun.Status.EXECUTING, started_at__lt=cutoff)
            .values_list("pk", "account_id", "started_at")
        )
        findings = [
            Finding(
                kind=FindingKind.STALE_RUN,
                subject=run_id,
                account_id=str(account_id),
                reason=f"executing since {format_moment(started_at)}, past the timeout",
            )
            for run_id, account_id, started_at in stale
        ]
        self.report.findings += findings
        if findings and self.report.fix:
            setup_runs_fail_stale()  # records its own RUN_FAILED events
            still_executing = set(
                SetupRun.objects.filter(pk__in=[f.subject for f in findings], status=SetupRun.Status.EXECUTING)
                .values_list("pk", flat=True)
            )
            for finding in findings:
                finding.fixed = finding.subject not in still_executing
                if not finding.fixed:
                    finding.error = "the sweep could not mark it failed; see the worker's log"
        self.checked(len(findings))

    # --- 3. orphan repositories ----------------------------------------------------
    def orphan_repositories(self, ours: list[tuple[Repository, str]]) -> None:
        """`ours`: (repository, account id) of the repositories whose name ends with an account id."""
        for chunk in _chunks(ours, self.batch_size):
            if self.out_of_time():
                return
            ids = {uuid.UUID(account_id) for _repository, account_id in chunk}
            with_rows = {str(i) for i in Snapshot.objects.filter(account_id__in=ids).values_list("account_id", flat=True)}
            setting_up = {
                str(i)
                for i in SetupRun.objects.filter(account_id__in=ids, status__in=SetupRun.ACTIVE_STATUSES)
                .values_list("account_id", flat=True)
            }
            existing = {str(i) for i in Account.objects.filter(pk__in=ids).values_list("pk", flat=True)}
            orphans = [
                (repository, Finding(
                    kind=FindingKind.ORPHAN_REPOSITORY if repository.owned else FindingKind.NOT_OURS_REPOSITORY,
                    subject=repository.name,
                    account_id=account_id,
                    reason=(f"account {account_id} has no snapshot" if account_id in existing
                            else f"no account {account_id}")
                    + ("" if repository.owned else f"; it {repository.mark_description}, so it is never deleted"),
                ))
                for repository, account_id in chunk
                if account_id not in with_rows and account_id not in setting_up
            ]
            self.report.findings += [finding for _repository, finding in orphans]
            # Only repositories that carry this deployment's mark are ever deleted.
            fixable = [(repository, finding) for repository, finding in orphans if repository.owned]
            if fixable and self.report.fix:
                _in_parallel(self._delete_repository, fixable, self.concurrency)
                self.record_fixes([finding for _repository, finding in fixable], existing_accounts=existing)
            self.checked(len(chunk))

    def _delete_repository(self, item: tuple[Repository, Finding]) -> None:
        repository, finding = item
        try:
            self.providers.git_host().delete_repository(repository=repository)
            finding.fixed = True
        except ProviderError as exc:
            finding.error = str(exc)

    # --- 4. orphan snapshots --------------------------------------------------------
    def orphan_snapshots(self, stored: list[StoredSnapshot]) -> None:
        for chunk in _chunks(stored, self.batch_size):
            if self.out_of_time():
                return
            pointed_at = set(
                Snapshot.objects.filter(snapshot_id__in=[s.snapshot_id for s in chunk if s.owned])
                .values_list("snapshot_id", flat=True)
            )
            # A running setup takes its snapshot a moment before it saves the
            # row; the step it records on the run names the snapshot.
            steps_of_running = SetupRun.objects.filter(status__in=SetupRun.ACTIVE_STATUSES).values_list(
                "steps", flat=True
            )
            being_saved = {found for steps in steps_of_running for found in _SNAPSHOT_ID.findall(str(steps))}
            findings = [
                Finding(
                    kind=FindingKind.ORPHAN_SNAPSHOT if snapshot.owned else FindingKind.NOT_OURS_SNAPSHOT,
                    subject=snapshot.snapshot_id,
                    account_id=None,
                    reason="no row points at it"
                    + ("" if snapshot.owned else f"; it {snapshot.mark_description}, so it is never deleted"),
                )
                for snapshot in chunk
                if not snapshot.owned
                or (snapshot.snapshot_id not in pointed_at and snapshot.snapshot_id not in being_saved)
            ]
            self.report.findings += findings
            # Only snapshots that carry this deployment's mark are ever deleted.
            fixable = [finding for finding in findings if finding.kind == FindingKind.ORPHAN_SNAPSHOT]
            if fixable and self.report.fix:
                _in_parallel(self._delete_snapshot, fixable, self.concurrency)
                self.record_fixes(fixable)
            self.checked(len(chunk))

    def _delete_snapshot(self, finding: Finding) -> None:
        try:
            self.providers.backend().delete_snapshot(finding.subject)
            finding.fixed = True
        except ProviderError as exc:
            finding.error = str(exc)

    # --- 5. dangling rows ----------------------------------------------------------
    def dangling_rows(self, *, snapshot_ids: set[str], repository_names: set[str], repository_ids: set[int],
                      listed_at) -> None:
        # Only rows last written before the listings began: a row saved since
        # may point at a snapshot or repository the listings could not see.
        rows = Snapshot.objects.filter(updated_at__lt=listed_at).order_by("account_id")
        last_account_id = None
        while not self.out_of_time():
            page = rows if last_account_id is None else rows.filter(account_id__gt=last_account_id)
            batch = list(page.values_list("account_id", "snapshot_id", "github_repo", "github_repo_id")
                         [: self.batch_size])
            if not batch:
                return
            last_account_id = batch[-1][0]
            missing_snapshot, missing_repository = [], []
            for account_id, snapshot_id, github_repo, github_repo_id in batch:
                repository = repository_name_from_url(github_repo) if github_repo else ""
                # A repository renamed since is still there under its id.
                repository_gone = (bool(repository) and repository not in repository_names
                                   and github_repo_id not in repository_ids)
                if snapshot_id not in snapshot_ids:
                    reason = f"the backend does not hold snapshot {snapshot_id}"
                    if repository_gone:
                        reason += f", nor the git host repository {repository}"
                    missing_snapshot.append(
                        Finding(kind=FindingKind.MISSING_SNAPSHOT, subject=snapshot_id, account_id=str(account_id),
                                reason=reason)
                    )
                elif repository_gone:
                    missing_repository.append(
                        Finding(kind=FindingKind.MISSING_REPOSITORY, subject=snapshot_id, account_id=str(account_id),
                                reason=f"the git host does not hold repository {repository}")
                    )
            # Check again, one call each, that the snapshots are really gone.
            exist = _in_parallel(self._snapshot_exists, [f.subject for f in missing_snapshot], self.concurrency)
            missing_snapshot = [finding for finding, exists in zip(missing_snapshot, exist) if not exists]
            self.report.findings += missing_snapshot + missing_repository
            if self.report.fix and (missing_snapshot or missing_repository):
                self._fix_rows(missing_snapshot, missing_repository, listed_at)
            self.checked(len(batch))
            if len(batch) < self.batch_size:
                return

    def _snapshot_exists(self, snapshot_id: str) -> bool:
        try:
            return self.providers.backend().snapshot_exists(snapshot_id)
        except ProviderError:
            return False  # cannot tell: it stays a finding, and fixing it re-reads the row

    def _fix_rows(self, missing_snapshot: list[Finding], missing_repository: list[Finding], listed_at) -> None:
        gone = [finding.subject for finding in missing_snapshot]
        unlinked = [finding.subject for finding in missing_repository]
        with transaction.atomic():
            # Only rows still as they were read: a setup that saved the row
            # again meanwhile changed updated_at (an update() here does not).
            Snapshot.objects.filter(snapshot_id__in=gone, updated_at__lt=listed_at).delete()
            Snapshot.objects.filter(snapshot_id__in=unlinked, updated_at__lt=listed_at).update(github_repo=None)
            remaining = {
                snapshot_id: github_repo
                for snapshot_id, github_repo in Snapshot.objects.filter(snapshot_id__in=gone + unlinked)
                .values_list("snapshot_id", "github_repo")
            }
            for finding in missing_snapshot:
                if finding.subject in remaining:
                    finding.reason += "; the row was saved again meanwhile and is left as it is"
                else:
                    finding.fixed = True
            for finding in missing_repository:
                if finding.subject not in remaining:
                    finding.reason += "; the row was deleted meanwhile"
                elif remaining[finding.subject] is None:
                    finding.fixed = True
                else:
                    finding.reason += "; the row was saved again meanwhile and is left as it is"
            self.record_fixes(missing_snapshot + missing_repository)

    # --- 6. leftover sandboxes -------------------------------------------------------
    def leftover_sandboxes(self, resources: list[RuntimeResource]) -> None:
        """Containers and volumes: ours are held by a running setup until the moment their label names."""
        # Containers before volumes: a volume in use cannot be removed.
        resources = sorted(resources, key=lambda resource: resource.kind != "container")
        for chunk in _chunks(resources, self.batch_size):
            if self.out_of_time():
                return
            holders = {resource.holder for resource in chunk}
            running = set(SetupRun.objects.filter(pk__in=holders, status__in=SetupRun.ACTIVE_STATUSES)
                          .values_list("pk", flat=True))
            running |= set(LiveSandbox.objects.filter(pk__in=holders, status__in=LiveSandbox.LIVE_STATUSES)
                           .values_list("pk", flat=True))
            found = [(resource, self._leftover(resource, running, timezone.now())) for resource in chunk]
            found = [(resource, finding) for resource, finding in found if finding is not None]
            self.report.findings += [finding for _resource, finding in found]
            fixable = [(resource, finding) for resource, finding in found if resource.owned]
            if fixable and self.report.fix:
                for item in fixable:
                    self._remove_runtime_resource(item)
                existing = {str(i) for i in Account.objects.filter(
                    pk__in=[finding.account_id for _resource, finding in fixable if finding.account_id]
                ).values_list("pk", flat=True)}
                self.record_fixes([finding for _resource, finding in fixable], existing_accounts=existing)
            self.checked(len(chunk))

    @staticmethod
    def _leftover(resource: RuntimeResource, running: set[str], now) -> Finding | None:
        """The finding about a container or volume; None for one of ours that a running setup holds."""
        subject, account_id = f"{resource.kind} {resource.name}", _account_id_or_none(resource.account_id)
        if not resource.owned:
            return Finding(kind=FindingKind.NOT_OURS_SANDBOX, subject=subject, account_id=None,
                           reason=f"it {resource.mark_description}, so it is never removed")
        if resource.expires_at is not None and resource.expires_at <= now:
            reason = f"past its time ({format_moment(resource.expires_at)})"
        elif resource.holder in running:
            return None
        else:
            reason = (f"{'live sandbox' if resource.holder.startswith('sbx_') else 'setup run'} {resource.holder}, "
                      "which held it, is over" if resource.holder else "no setup run or live sandbox holds it")
        return Finding(kind=FindingKind.LEFTOVER_SANDBOX, subject=subject, account_id=account_id, reason=reason)

    def _remove_runtime_resource(self, item: tuple[RuntimeResource, Finding]) -> None:
        resource, finding = item
        try:
            self.providers.backend().remove_runtime_resource(resource)
            finding.fixed = True
        except ProviderError as exc:
            finding.error = str(exc)

    # --- the run ---------------------------------------------------------------------
    def run(self) -> ReconcileReport:
        self.stale_runs()
        listed_at = timezone.now()
        try:
            repositories = get_git_host().list_all_repositories()
            stored = get_sandbox_backend().stored_snapshots()
            resources = get_sandbox_backend().runtime_resources()
        except ProviderError as exc:
            self.report.error = f"the git host or the sandbox backend could not be listed ({exc})"
            return self.report
        repository_names = [repository.name for repository in repositories]
        # Only repositories whose name ends with an account id are looked at.
        ours = [(repository, account_id_of_repository(repository.name)) for repository in repositories]
        ours = [(repository, account_id) for repository, account_id in ours if account_id]
        snapshot_ids = {snapshot.snapshot_id for snapshot in stored if snapshot.owned}
        self.report.to_check = (
            self.report.checked + len(ours) + len(stored) + len(resources)
            + Snapshot.objects.filter(updated_at__lt=listed_at).count()
        )
        self.orphan_repositories(ours)
        self.orphan_snapshots(stored)
        self.dangling_rows(snapshot_ids=snapshot_ids, repository_names=set(repository_names),
                           repository_ids={repository.id for repository in repositories if repository.id},
                           listed_at=listed_at)
        self.leftover_sandboxes(resources)
        return self.report


def sandboxes_reconcile(
    *,
    fix: bool,
    actor: Actor,
    batch_size: int = DEFAULT_BATCH_SIZE,
    concurrency: int = DEFAULT_CONCURRENCY,
    time_budget: float | None = None,
    on_progress: Callable[[ReconcileReport], None] | None = None,
) -> ReconcileReport:
    """Find what is out of step; with `fix`, fix it, record an event per fix made or failed and one summary."""
    reconciler = _Reconciler(fix=fix, actor=actor, batch_size=batch_size, concurrency=concurrency,
                             time_budget=time_budget, on_progress=on_progress)
    report = reconciler.run()
    report.seconds = time.monotonic() - reconciler.started
    if fix:
        audit_record(
            action=AuditEvent.Action.RECONCILE,
            outcome=AuditEvent.Outcome.SUCCESS if report.ok else AuditEvent.Outcome.FAILURE,
            actor=actor,
            detail=report.summary,
        )
    return report
