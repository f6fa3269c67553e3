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
    repository_name_from_url,
)


@dataclass(frozen=True)
class SandboxState:
    """What GET /api/sandboxes shows of an account's sandbox."""

    snapshot: Snapshot | None
    last_run: SetupRun | None

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
    """The account's most recent run and its snapshot, in one indexed read (joined through the account).

    An account with no run at all (its snapshot, if any, made some other way) costs a second read.
    """
    last_run = (SetupRun.objects.filter(account=account).select_related("account__snapshot")
                .order_by("-created_at").first())
    if last_run is None:
        return SandboxState(snapshot=Snapshot.objects.filter(account=account).first(), last_run=None)
    try:
        snapshot = last_run.account.snapshot
    except Snapshot.DoesNotExist:
        snapshot = None
    return SandboxState(snapshot=snapshot, last_run=last_run)


def setup_run_visible_to(*, key: ApiKey, run_id: str) -> SetupRun | None:
    """The run, if the key may act on its account; None otherwise, as for a run that does not exist."""
    return SetupRun.objects.filter(pk=run_id, account__in=reachable_accounts(key=key)).first()


def setup_runs_recent(*, account: Account, limit: int) -> list[SetupRun]:
    return list(SetupRun.objects.filter(account=account).order_by("-created_at")[:limit])


def sandbox_repository_names(
    *, account_id, snapshot: Snapshot | None, listed: Mapping[str, list[Repository]]
) -> list[str]:
    """The repositories deleting an account's sandbox deletes: the recorded one and every one the
    git host holds under the account's id (never one whose name does not end with that id)."""
    names = {repository.name for repository in listed.get(str(account_id), [])}
    if snapshot is not None and snapshot.github_repo:
        names.add(repository_name_from_url(snapshot.github_repo))
    return sorted(name for name in names if repository_belongs_to(name, account_id))


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
