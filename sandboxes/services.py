"""Writes on sandboxes: start a setup run, delete sandboxes, renew a snapshot, sweep runs whose worker died.

Every change is recorded in the audit trail in its own transaction
(accounts/audit.py).
"""

import logging
import threading
from collections.abc import Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import nullcontext
from dataclasses import dataclass, field
from datetime import timedelta
from functools import cache, cached_property, partial

from django.conf import settings
from django.db import connections, router, transaction
from django.utils import timezone
from django_q.tasks import async_task

from accounts.audit import (
    ASYNC_COMMIT_SQL,
    WORKER,
    Actor,
    audit_event,
    audit_insert_fields,
    audit_insert_values,
    audit_record,
    audit_record_many,
)
from accounts.models import Account, AuditEvent
from config.queue import broker_options
from sandboxes import events, live
from sandboxes.models import ACTIVE_RUN, ACTIVE_RUN_SQL, LiveSandbox, SetupRun, Snapshot
from sandboxes.pipeline import undo_run_resources
from sandboxes.providers import get_git_host, get_sandbox_backend
from sandboxes.providers.base import (
    GitHost,
    NotOurRepository,
    ProviderError,
    Repository,
    SandboxBackend,
    repositories_grouped_by_account,
    repository_name_from_url,
)
from sandboxes.selectors import model_from_row, sandbox_repositories

logger = logging.getLogger(__name__)

STALE_RUN_ERROR = (
    "The worker running this setup stopped before it finished (no result after {seconds} s); "
    "start the setup again"
)
QUEUE_FAILED_ERROR = "Could not queue the setup: the queue broker did not answer; start the setup again"
DELETE_CANCELED_ERROR = "Canceled: the sandbox was deleted"
NOTHING_TO_DELETE_DETAIL = "No snapshot and no repository to delete"
Action = AuditEvent.Action
Outcome = AuditEvent.Outcome


class SandboxDeleteError(Exception):
    """Deleting failed part way; nothing was removed from the database, and repeating finishes the job."""


class AccountInactive(Exception):
    """The account is inactive: its keys are refused, so nobody could use its sandbox; it gets no setup.

    The one rule for every way in: POST /api/sandboxes/setup, PATCH and DELETE
    /api/sandboxes with an account_id (403), and the admin's "Run setup again"
    (the account is skipped and named).
    """

    reason = "the account is inactive"


def refuse_inactive(account: Account) -> None:
    if not account.is_active:
        raise AccountInactive(account)


# --- setup ------------------------------------------------------------------------


def _enqueue(run_id: str) -> None:
    broker = broker_options()
    try:
        task_id = async_task("sandboxes.tasks.run_setup", run_id, task_name=f"setup-sandbox {run_id}", **broker)
    except Exception:  # the broker is down: the run must not wait for ever (the log has the broker's error)
        logger.exception("Could not queue setup run %s", run_id)
        SetupRun.objects.filter(pk=run_id, status=SetupRun.Status.QUEUED).update(
            status=SetupRun.Status.FAILED, finished_at=timezone.now(), error=QUEUE_FAILED_ERROR
        )
        return
    logger.info("Queued setup run %s as django-q2 task %s", run_id, task_id)


def setup_run_start(*, account: Account, actor: Actor) -> SetupRun:
    """A new run queued after commit, or the account's run that is queued or executing already.

    The database allows one active run per account (a conditional unique
    constraint), so concurrent requests agree on one run. The request is
    recorded in the audit trail either way: with a new run, in its transaction.
    Raises AccountInactive for an inactive account.
    """
    refuse_inactive(account)
    for _attempt in range(3):
        stale_before = _stale_cutoff()
        run, created = SetupRun.objects.create_unless_active(
            account=account,
            api_key=actor.api_key,
            request_event=audit_event(action=Action.SETUP_REQUESTED, actor=actor, account=account),
            stale_before=stale_before,
        )
        if created:
            transaction.on_commit(partial(_enqueue, run.pk))
            return run
        if run is None:
            continue  # it finished just now, or is not visible yet: try again
        if run.executing_since_before(stale_before):  # its worker died: fail it, then start anew
            _fail_stale_run(SetupRun.objects.get(pk=run.pk), backend=get_sandbox_backend(), git_host=get_git_host())
            continue
        return run
    raise RuntimeError(f"Could not start or find a setup run for account {account.pk}")


def _stale_cutoff():
    return timezone.now() - timedelta(seconds=settings.SETUP_RUN_STALE_AFTER)


def _fail_stale_run(run: SetupRun, *, backend, git_host) -> bool:
    error = STALE_RUN_ERROR.format(seconds=settings.SETUP_RUN_STALE_AFTER)
    problems = []
    if run.sandbox_id:
        try:
            backend.stop(run.sandbox_id)
        except ProviderError as exc:
            problems.append(f"sandbox {run.sandbox_id} could not be shut down ({exc})")
    problems += undo_run_resources(run=run, backend=backend, git_host=git_host)
    if problems:
        error += "; also, the " + "; the ".join(problems)
    with transaction.atomic():
        failed = SetupRun.objects.filter(pk=run.pk, status=SetupRun.Status.EXECUTING).update(
            status=SetupRun.Status.FAILED, error=error, finished_at=timezone.now()
        )
        if failed:
            audit_record(
                action=Action.RUN_FAILED,
                outcome=Outcome.FAILURE,
                actor=WORKER,
                account=run.account_id,
                run_id=run.pk,
                detail=error,
            )
            events.runs_ended(runs=[SetupRun.objects.get(pk=run.pk)])
    return bool(failed)


def setup_runs_fail_stale() -> int:
    """The sweep: fail every run left EXECUTING past the timeout; returns how many."""
    stale = SetupRun.objects.filter(status=SetupRun.Status.EXECUTING, started_at__lt=_stale_cutoff())
    backend, git_host = get_sandbox_backend(), get_git_host()
    failed = sum(_fail_stale_run(run, backend=backend, git_host=git_host) for run in stale)
    if failed:
        logger.warning("Marked %d setup run(s) FAILED whose worker had stopped", failed)
    return failed


@dataclass
class SetupStart:
    """What asking for a setup of one account did (the admin's "Run setup again")."""

    account: Account
    run: SetupRun | None = None
    started: bool = False  # False with a run: the account's queued or executing run answered
    skipped: str = ""  # why no run was asked for


def setup_runs_start(*, accounts: Sequence[Account], actor: Actor) -> list[SetupStart]:
    """Ask for a setup of each account, as POST /api/sandboxes/setup does for one.

    An inactive account is skipped: its keys are refused, so nobody could use
    the sandbox. An account with a run queued or executing keeps that run.
    """
    active_before = set(
        SetupRun.objects.filter(account__in=accounts, status__in=SetupRun.ACTIVE_STATUSES).values_list("pk", flat=True)
    )
    starts = []
    for account in accounts:
        try:
            run = setup_run_start(account=account, actor=actor)
        except AccountInactive:
            starts.append(SetupStart(account=account, skipped=AccountInactive.reason))
            continue
        starts.append(SetupStart(account=account, run=run, started=run.pk not in active_before))
    return starts


CANCELED_BY_STAFF_ERROR = "Canceled by staff before it started"


def setup_runs_cancel_queued(*, runs, actor: Actor) -> list[SetupRun]:
    """Cancel those of `runs` (a SetupRun queryset) that are still queued; returns them.

    A run a worker has claimed already (executing) or that has finished is
    left alone. The rows are locked first, so a worker claiming a run at the
    same moment either claims it before (and it is left alone) or finds it
    canceled and does nothing (pipeline._claim only takes QUEUED runs).
    """
    with transaction.atomic():
        # A fresh queryset: the admin's may carry joins and DISTINCT, which FOR UPDATE refuses.
        queued = list(
            SetupRun.objects.filter(pk__in=list(runs.values_list("pk", flat=True)), status=SetupRun.Status.QUEUED)
            .select_for_update()
        )
        now = timezone.now()
        SetupRun.objects.filter(pk__in=[run.pk for run in queued], status=SetupRun.Status.QUEUED).update(
            status=SetupRun.Status.CANCELED, finished_at=now, error=CANCELED_BY_STAFF_ERROR
        )
        audit_record_many(
            audit_event(
                action=Action.RUN_CANCELED, actor=actor, account=run.account_id, run_id=run.pk,
                detail="Canceled while queued",
            )
            for run in queued
        )
        for run in queued:
            run.status, run.finished_at, run.error = SetupRun.Status.CANCELED, now, CANCELED_BY_STAFF_ERROR
        events.runs_ended(runs=queued)
    return queued


# --- delete -----------------------------------------------------------------------


@dataclass
class SandboxDeletion:
    """What deleting one account's sandbox did."""

    account_id: object
    snapshot: Snapshot | None = None  # the row as it was, when this call removed it
    repositories: list[str] = field(default_factory=list)  # deleted from the git host
    # The account's repositories without this deployment's mark: never deleted, reported ("name: why").
    left_alone: list[str] = field(default_factory=list)
    error: str = ""

    @property
    def ok(self) -> bool:
        return not self.error

    @property
    def deleted_anything(self) -> bool:
        """False where the account had no Snapshot row (or a concurrent delete took it) and no repository."""
        return self.snapshot is not None or bool(self.repositories)


class _ProvidersPerThread(threading.local):
    """One git host and one backend per thread of a deletion, not one per account.

    Each thread keeps its own client (PyGithub's session is not shared across
    threads), and a GitHub App token is fetched once per thread, not per sandbox.
    """

    @cached_property
    def git_host(self) -> GitHost:
        return get_git_host()

    @cached_property
    def backend(self) -> SandboxBackend:
        return get_sandbox_backend()


def _delete_outside(
    deletion: SandboxDeletion, repositories: list[Repository], snapshot: Snapshot | None, *,
    providers: _ProvidersPerThread,
) -> None:
    """Delete this deployment's repositories, then the snapshot; stop at the first failure and say what failed."""
    for repository in repositories:
        try:
            if providers.git_host.delete_repository(repository=repository):
                deletion.repositories.append(repository.name)
        except NotOurRepository as exc:  # its mark changed since the listing
            deletion.left_alone.append(f"{repository.name}: {exc}")
        except ProviderError as exc:
            deletion.error = f"Failed to delete repository {repository.name}: {exc}"
            return
    if snapshot is not None:
        try:
            providers.backend.delete_snapshot(snapshot.snapshot_id)
        except ProviderError as exc:
            deletion.error = f"Failed to delete snapshot {snapshot.snapshot_id}: {exc}"


def sandboxes_delete(
    *,
    accounts: Sequence[Account],
    actor: Actor,
    concurrency: int = 1,
    repositories: Mapping[str, list[Repository]] | None = None,
    expired: bool = False,
) -> list[SandboxDeletion]:
    """Delete the sandboxes of many accounts: repositories, snapshot, then the Snapshot row.

    The database work is a constant number of queries whatever the number of
    accounts; the calls to the git host and the backend run `concurrency` at
    a time. An account whose repository or snapshot could not be deleted
    keeps its row (repeating finishes the job); the others go on. `expired`:
    the cleanup of expired sandboxes (webhooks: snapshot.expired).

    `repositories` is the git host's listing grouped by account id
    (repositories_grouped_by_account), from a caller that deletes many
    batches and lists once; without it, the host is listed here.

    The listing comes first, so that deleting one account that has nothing
    left is one statement (`_cancel_runs_and_read` records its event when it
    finds nothing either). Nothing is deleted before the runs are canceled: a
    queued run must not set the sandbox up again behind us, and an executing
    one stops before it saves a snapshot and removes the repository it made
    (pipeline.undo_run_resources). A repository made after the listing by a
    run that completed before the cancel is the found snapshot's own, missing
    from the listing: then the host is listed again.
    """
    account_ids = [account.pk for account in accounts]
    deletions = [SandboxDeletion(account_id=account_id) for account_id in account_ids]
    providers = _ProvidersPerThread()
    listed, listing_error = repositories, ""
    if listed is None:
        listed, listing_error = _list_repositories(providers)
    canceled_at = timezone.now()
    nothing_left_event = None
    if len(account_ids) == 1 and listed is not None and not listed.get(str(account_ids[0])):
        nothing_left_event = audit_event(action=Action.NOTHING_TO_DELETE, actor=actor, account=account_ids[0],
                                         detail=NOTHING_TO_DELETE_DETAIL)
    found = _cancel_runs_and_read(account_ids, canceled_at=canceled_at, nothing_left_event=nothing_left_event)
    if found.recorded_nothing_left:
        return deletions
    snapshots = found.snapshots
    if repositories is None and listed is not None and not all(
        _listing_has_repository_of(snapshot, listed) for snapshot in snapshots.values()
    ):
        listed, listing_error = _list_repositories(providers)
    # A running sandbox goes first, without a snapshot: it would write one back.
    not_removed = live.live_sandboxes_remove(account_ids=found.maybe_live, actor=actor) if found.maybe_live else {}
    for deletion in deletions:
        deletion.error = not_removed.get(deletion.account_id, "") or listing_error

    if listed is not None:
        work = []
        for deletion in deletions:
            if deletion.error:
                continue
            snapshot = snapshots.get(deletion.account_id)
            # The same rule as the admin's confirmation page, which lists what will go.
            owned, left_alone = sandbox_repositories(account_id=deletion.account_id, snapshot=snapshot,
                                                     listed=listed)
            deletion.left_alone += [f"{repository.name}: {repository.mark_description}" for repository in left_alone]
            work.append((deletion, owned, snapshot))
        if concurrency > 1 and len(work) > 1:
            with ThreadPoolExecutor(max_workers=concurrency) as pool:
                list(pool.map(lambda item: _delete_outside(*item, providers=providers), work))
        else:
            for item in work:
                _delete_outside(*item, providers=providers)

    _record_deletions(deletions, snapshots, actor, canceled_at=canceled_at, runs_canceled=found.runs_canceled,
                      expired=expired)
    return deletions


def _list_repositories(providers: _ProvidersPerThread) -> tuple[Mapping[str, list[Repository]] | None, str]:
    """The git host's listing grouped by account id, or None and why it failed."""
    try:
        return repositories_grouped_by_account(providers.git_host.list_all_repositories()), ""
    except ProviderError as exc:
        return None, f"Failed to list the repositories of the account: {exc}"


def _listing_has_repository_of(snapshot: Snapshot, listed: Mapping[str, list[Repository]]) -> bool:
    """Whether the repository a snapshot records is in the listing (by its id, or by its name)."""
    if not snapshot.github_repo:
        return True
    if snapshot.github_repo_id is not None and snapshot.github_repo_id in getattr(listed, "by_id", {}):
        return True
    name = repository_name_from_url(snapshot.github_repo)
    return any(repository.name == name for repository in listed.get(str(snapshot.account_id), []))


@dataclass(frozen=True)
class _Found:
    """What a delete's first statement found: the accounts' Snapshot rows by account id, the accounts whose
    queued or executing run it canceled, and those that may have a live sandbox (elsewhere than on
    PostgreSQL, every account: every one if any run was canceled), and whether it recorded the event of a
    delete that found nothing."""

    snapshots: dict
    runs_canceled: list
    maybe_live: list
    recorded_nothing_left: bool = False  # the one account had nothing: its event is recorded


def _cancel_runs_and_read(account_ids: list, *, canceled_at, nothing_left_event: AuditEvent | None = None) -> _Found:
    """Cancel the accounts' queued and executing runs, and read their snapshots.

    On PostgreSQL one statement does it all (the UPDATE in a WITH, which runs
    whether or not the SELECT reads it) and says exactly which accounts had a
    run canceled and which have a live sandbox, so that a delete of an account
    with neither asks nothing more about them (no run.canceled to record, no
    live sandbox to remove). It is written once per database from the models'
    columns: every delete starts with it, and Django compiling its parts cost
    more CPU than the database running them (bench/README.md, "DELETE
    /api/sandboxes"). Elsewhere, two statements.

    `nothing_left_event`, for one account the git host has nothing of: the
    event of a delete that found nothing, which the same statement records
    where it finds no snapshot, no run to cancel and no live sandbox either.
    It is then the statement's only write, committed without waiting for the
    disk (accounts/audit.py, audit_record_many).

    One account's ids travel as single values, many accounts' as arrays.
    PostgreSQL plans a prepared statement anew each time it runs while its
    one plan for any parameters (the generic plan) looks costlier than one
    made for the values at hand: for an array of unknown length it always
    does, and planning cost a delete more of the database's CPU than running
    the statement. With single values the generic plan is the same plan, and
    PostgreSQL keeps it. https://www.postgresql.org/docs/current/sql-prepare.html#SQL-PREPARE-NOTES
    https://www.postgresql.org/docs/current/queries-with.html#QUERIES-WITH-MODIFYING
    """
    canceled = {"status": SetupRun.Status.CANCELED, "finished_at": canceled_at, "error": DELETE_CANCELED_ERROR}
    connection = connections[router.db_for_write(Snapshot)]
    if connection.vendor != "postgresql":
        runs = SetupRun.objects.filter(ACTIVE_RUN, account_id__in=account_ids).update(**canceled)
        return _Found(snapshots=Snapshot.objects.in_bulk(account_ids), runs_canceled=account_ids if runs else [],
                      maybe_live=account_ids)
    run_fields = {name: SetupRun._meta.get_field(name) for name in canceled}
    ids = [Snapshot._meta.pk.get_db_prep_value(account_id, connection) for account_id in account_ids]
    one = len(ids) == 1
    if one:
        [ids] = ids
    record = nothing_left_event is not None and one
    with connection.cursor() as cursor:
        cursor.execute(_cancel_runs_and_read_sql(connection.alias, one=one, record_nothing_left=record), [
            *(run_fields[name].get_db_prep_save(value, connection) for name, value in canceled.items()), ids, ids,
            *(audit_insert_values(nothing_left_event, connection) if record else ()),
        ])
        rows = cursor.fetchall()
    recorded = record and rows[0][-1]
    if record:
        rows = [row[:-1] for row in rows]
    snapshots = [model_from_row(Snapshot, row[3:], connection) for row in rows if row[3] is not None]
    return _Found(snapshots={snapshot.pk: snapshot for snapshot in snapshots},
                  runs_canceled=[account_id for account_id, _live, run_canceled, *_ in rows if run_canceled],
                  maybe_live=[account_id for account_id, live, *_ in rows if live],
                  recorded_nothing_left=recorded)


@cache
def _cancel_runs_and_read_sql(alias: str, *, one: bool, record_nothing_left: bool = False) -> str:
    connection = connections[alias]
    quote = connection.ops.quote_name
    runs, snapshots = quote(SetupRun._meta.db_table), quote(Snapshot._meta.db_table)
    run_column = {name: quote(SetupRun._meta.get_field(name).column)
                  for name in ("status", "finished_at", "error", "account")}
    snapshot_columns = ", ".join(f"s.{quote(field.column)}" for field in Snapshot._meta.concrete_fields)
    live_sandboxes = quote(LiveSandbox._meta.db_table)
    live_statuses = ", ".join(f"'{status}'" for status in LiveSandbox.LIVE_STATUSES)
    account = quote("account_id")
    # Many accounts' ids as one array, one statement whatever their number; one account's id as a single
    # value (see above). A row for each account: whether it has a live sandbox (at most one: a conditional
    # unique constraint), whether a run of it was canceled (at most one was active: another), its snapshot.
    if one:
        is_listed, listed = "= %s", f"(SELECT CAST(%s AS {Snapshot._meta.pk.db_type(connection)}) AS id) AS a"
    else:
        is_listed, listed = "= ANY(%s)", "unnest(%s) AS a(id)"
    found = (
        f"SELECT a.id, EXISTS (SELECT 1 FROM {live_sandboxes} l WHERE l.{account} = a.id "
        f"AND l.{quote('status')} IN ({live_statuses})) AS live, "
        f"EXISTS (SELECT 1 FROM canceled c WHERE c.{account} = a.id) AS run_canceled, {snapshot_columns} "
        f"FROM {listed} LEFT JOIN {snapshots} s ON s.{account} = a.id"
    )
    canceling = (
        f"WITH canceled AS (UPDATE {runs} "
        f"SET {run_column['status']} = %s, {run_column['finished_at']} = %s, {run_column['error']} = %s "
        f"WHERE {ACTIVE_RUN_SQL} AND {run_column['account']} {is_listed} RETURNING {run_column['account']})"
    )
    if not record_nothing_left:
        return f"{canceling} {found}"
    # The event's INSERT writes a row only where nothing was found, and so nothing canceled: the statement's
    # only write, whose commit its RETURNING makes asynchronous (accounts/audit.py, ASYNC_COMMIT_SQL).
    columns = ", ".join(quote(field.column) for field in audit_insert_fields())
    placeholders = ", ".join(["%s"] * len(audit_insert_fields()))
    return (
        f"{canceling}, found AS ({found}), "
        f"recorded AS (INSERT INTO {quote(AuditEvent._meta.db_table)} ({columns}) SELECT {placeholders} FROM found "
        f"WHERE NOT found.live AND NOT found.run_canceled AND found.{quote(Snapshot._meta.pk.column)} IS NULL "
        f"RETURNING 1, {ASYNC_COMMIT_SQL}) "
        f"SELECT found.*, EXISTS (SELECT 1 FROM recorded) FROM found"
    )


def _record_deletions(deletions: list[SandboxDeletion], snapshots: dict, actor: Actor, *, canceled_at,
                      runs_canceled: list, expired: bool) -> None:
    done = [d for d in deletions if d.ok and d.account_id in snapshots]
    action = Action.SANDBOX_REVOKED if actor.is_staff_user else Action.SANDBOX_DELETED
    # With no row to remove, the audit INSERT is the only write: no transaction needed. Where the delete
    # found nothing at all, its event does not wait for the disk either (audit_record_many).
    found_nothing = not done and not runs_canceled and all(d.ok and not d.deleted_anything for d in deletions)
    with transaction.atomic() if done else nullcontext():
        if done:
            # snapshot_id is unique, so the pair of lists names exactly these
            # rows; a row a concurrent setup replaced meanwhile stays.
            removed = _snapshots_remove(account_ids=[d.account_id for d in done],
                                        snapshot_ids=[snapshots[d.account_id].snapshot_id for d in done])
            if removed == len(done):
                for deletion in done:
                    deletion.snapshot = snapshots[deletion.account_id]
            elif len(done) == 1:
                pass  # a concurrent delete removed it first: answer as if there was none
            else:
                still_there = set(Snapshot.objects.filter(account_id__in=[d.account_id for d in done])
                                  .values_list("account_id", flat=True))
                for deletion in done:
                    if deletion.account_id not in still_there:
                        deletion.snapshot = snapshots[deletion.account_id]
        audit_record_many([
            audit_event(
                action=action if deletion.error or deletion.deleted_anything else Action.NOTHING_TO_DELETE,
                actor=actor,
                account=deletion.account_id,
                outcome=Outcome.SUCCESS if deletion.ok else Outcome.FAILURE,
                detail=_deletion_detail(deletion),
            )
            for deletion in deletions
        ], durable=not found_nothing)
        events.sandboxes_deleted(
            snapshots=[d.snapshot for d in done if d.snapshot is not None], actor=actor, expired=expired,
            runs_canceled_at=canceled_at, account_ids=runs_canceled,
        )


def _snapshots_remove(*, account_ids: list, snapshot_ids: list) -> int:
    """Delete the Snapshot rows of these accounts that name these snapshots; how many went.

    On PostgreSQL with a plain DELETE (the ids as arrays): Django's delete
    collected the rows' relations and compiled its query afresh each time,
    more CPU than the database spent on it (bench/README.md, "DELETE
    /api/sandboxes"). Nothing refers to a Snapshot row: there is nothing else
    to delete with it.
    """
    connection = connections[router.db_for_write(Snapshot)]
    if connection.vendor != "postgresql":
        return Snapshot.objects.filter(account_id__in=account_ids, snapshot_id__in=snapshot_ids).delete()[0]
    quote = connection.ops.quote_name
    ids = [Snapshot._meta.pk.get_db_prep_value(account_id, connection) for account_id in account_ids]
    with connection.cursor() as cursor:
        cursor.execute(
            f"DELETE FROM {quote(Snapshot._meta.db_table)} "
            f"WHERE {quote(Snapshot._meta.pk.column)} = ANY(%s) AND {quote('snapshot_id')} = ANY(%s)",
            [ids, list(snapshot_ids)],
        )
        return cursor.rowcount


def _deletion_detail(deletion: SandboxDeletion) -> str:
    if deletion.error:
        return deletion.error
    if not deletion.deleted_anything:
        return NOTHING_TO_DELETE_DETAIL
    parts = [f"snapshot {deletion.snapshot.snapshot_id}" if deletion.snapshot else "no snapshot"]
    if deletion.repositories:
        parts.append("repositories " + ", ".join(deletion.repositories))
    detail = "Deleted " + " and ".join(parts)
    if deletion.left_alone:
        detail += "; left alone, without this deployment's mark: " + "; ".join(deletion.left_alone)
    return detail


def sandbox_delete(*, account: Account, actor: Actor) -> Snapshot | None:
    """Delete one account's sandbox (DELETE /api/sandboxes, the admin's revoke).

    Returns the Snapshot row as it was, or None where the account had none
    (or a concurrent delete removed it first). Raises SandboxDeleteError, with
    the row left in place, if the git host or the backend fails, and
    AccountInactive for an inactive account (bulk deletes and the admin's
    revoke, which clean up after inactive accounts, use sandboxes_delete).
    """
    refuse_inactive(account)
    [deletion] = sandboxes_delete(accounts=[account], actor=actor)
    if deletion.error:
        raise SandboxDeleteError(deletion.error)
    return deletion.snapshot


# --- renew -----------------------------------------------------------------


def snapshot_renew(*, account: Account, actor: Actor) -> Snapshot | None:
    """Move the account's snapshot's expiry to now + SNAPSHOT_TTL (PATCH /api/sandboxes).

    An expired snapshot whose row still exists is renewed (its archive is
    there until the row is deleted). Returns the renewed row, or None where
    the account has no snapshot. Recorded in the audit trail in the same
    transaction (one statement on PostgreSQL). Raises AccountInactive for an
    inactive account: its sandbox is left to expire.
    """
    refuse_inactive(account)
    expires_at = timezone.now() + settings.SNAPSHOT_TTL
    return Snapshot.objects.renew(
        account_id=account.pk,
        expires_at=expires_at,
        event=audit_event(
            action=Action.SANDBOX_RENEWED, actor=actor, account=account, detail=f"Expires {expires_at.isoformat()}"
        ),
    )
