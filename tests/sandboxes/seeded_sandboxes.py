"""Sandboxes made directly on the local backends, for the bulk tests (cleanup, reconcile).

Real snapshot archives (the local backend's own `snapshot`), real bare
repositories (the local git host's own `ensure_repository`, so real git) and
a Snapshot row pointing at both: what a completed setup leaves, without
running one setup per account.
"""

from datetime import timedelta
from pathlib import Path

from django.conf import settings
from django.utils import timezone

from accounts.models import Account
from accounts.services import account_create
from sandboxes.models import Snapshot
from sandboxes.providers import get_git_host, get_sandbox_backend
from sandboxes.providers.base import repository_name_for

EXPIRED = timedelta(days=-1)
FRESH = timedelta(days=7)


def take_snapshot() -> str:
    backend = get_sandbox_backend()
    sandbox_id = backend.create()
    backend.write_files(sandbox_id, {"README.md": b"seeded\n"})
    snapshot_id = backend.snapshot(sandbox_id).snapshot_id
    backend.stop(sandbox_id)
    return snapshot_id


def make_repository(account: Account, name: str | None = None) -> str:
    """A real bare repository for the account; returns its URL."""
    name = name or repository_name_for(account_name=account.name, account_id=account.pk)
    return get_git_host().ensure_repository(name=name, description="seeded").repository.html_url


def seed_sandbox(account: Account, *, expires_in: timedelta = EXPIRED, created_ago: timedelta | None = None,
                 with_repository: bool = True) -> Snapshot:
    snapshot = Snapshot.objects.create(
        account=account,
        snapshot_id=take_snapshot(),
        expires_at=timezone.now() + expires_in,
        github_repo=make_repository(account) if with_repository else None,
    )
    if created_ago is not None:
        Snapshot.objects.filter(pk=account.pk).update(created_at=timezone.now() - created_ago)
        snapshot.refresh_from_db()
    return snapshot


def seed_accounts(count: int, *, prefix: str = "user", **sandbox) -> list[Snapshot]:
    return [
        seed_sandbox(account_create(name=f"{prefix} {number}", email=f"{prefix}{number}@example.com"), **sandbox)
        for number in range(count)
    ]


def repository_path(account: Account) -> Path:
    return Path(settings.GIT_ROOT) / f"{repository_name_for(account_name=account.name, account_id=account.pk)}.git"


def archive_path(snapshot_id: str) -> Path:
    return Path(settings.SANDBOX_ROOT) / "snapshots" / f"{snapshot_id}.tar.gz"


def sandbox_is_gone(snapshot: Snapshot) -> bool:
    return (
        not Snapshot.objects.filter(pk=snapshot.pk).exists()
        and not archive_path(snapshot.snapshot_id).exists()
        and not repository_path(snapshot.account).exists()
    )


def sandbox_is_intact(snapshot: Snapshot) -> bool:
    return (
        Snapshot.objects.filter(pk=snapshot.pk, snapshot_id=snapshot.snapshot_id).exists()
        and archive_path(snapshot.snapshot_id).is_file()
        and (snapshot.github_repo is None or repository_path(snapshot.account).is_dir())
    )
