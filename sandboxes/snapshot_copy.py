"""Moving a deployment's snapshots from this host's disk to the configured snapshot store.

A deployment that ran with SNAPSHOT_STORE=local and moves to s3 keeps its
Snapshot rows; their archives are still under SANDBOX_ROOT/snapshots on the
host that took them. `snapshots_copy_to_store`, run on that host with the new
settings (`manage.py copy_snapshots_to_store`), uploads each archive whose
checksum still matches, under this deployment's key and mark, and skips the
ones the store already holds, so it can be run again after a failure. The
files on disk are left for the operator to remove once the copy is checked.
"""

from dataclasses import dataclass, field
from pathlib import Path

from django.conf import settings

from sandboxes.providers import get_snapshot_store
from sandboxes.providers.base import ProviderError
from sandboxes.providers.snapshot_store import LocalSnapshotStore


class NothingToCopyTo(Exception):
    """The configured store is the local one: there is nowhere else to copy to."""


@dataclass
class CopyReport:
    copied: list[str] = field(default_factory=list)
    already_there: list[str] = field(default_factory=list)
    failed: dict[str, str] = field(default_factory=dict)  # snapshot id -> reason

    @property
    def summary(self) -> str:
        return (f"Copied {len(self.copied)} snapshot(s) to the store, {len(self.already_there)} already there, "
                f"{len(self.failed)} failed")


def snapshots_copy_to_store(*, folder: Path | None = None) -> CopyReport:
    """Upload every archive under `folder` (SANDBOX_ROOT/snapshots) to the configured store."""
    target = get_snapshot_store()
    if target.name == "local":
        raise NothingToCopyTo("SNAPSHOT_STORE is local: set SNAPSHOT_STORE=s3 and its settings first")
    source = LocalSnapshotStore(folder=folder or Path(settings.SANDBOX_ROOT) / "snapshots",
                                deployment_id=settings.SANDBOX_DEPLOYMENT_ID)
    report = CopyReport()
    for stored in source.list():
        snapshot_id = stored.snapshot_id
        try:
            if target.exists(snapshot_id):
                report.already_there.append(snapshot_id)
                continue
            archive, checksum = source.checked_archive(snapshot_id)
            target.put(snapshot_id, archive, checksum=checksum)
        except (ProviderError, OSError) as exc:
            report.failed[snapshot_id] = str(exc)
            continue
        report.copied.append(snapshot_id)
    return report
