"""Reads on sandboxes and setup runs."""

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import timedelta

from django.db.models import Count, Q

from accounts.models import Account, ApiKey
from orgs.access import reachable_accounts
from sandboxes.models import SetupRun, Snapshot
from sandboxes.providers import get_git_host
from sandboxes.providers.base import (
    ProviderError,
    Repository,
    repositories_grouped_by_account,
    repository_belongs_to,
)


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
