"""Reads on sandboxes and setup runs."""

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

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
