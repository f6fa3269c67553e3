from django.core.management.base import BaseCommand, CommandError

from sandboxes.snapshot_copy import NothingToCopyTo, snapshots_copy_to_store


class Command(BaseCommand):
    help = (
        "Upload the snapshots kept on this host (SANDBOX_ROOT/snapshots, from SNAPSHOT_STORE=local) to the "
        "configured store (SNAPSHOT_STORE=s3). Archives the store already holds are skipped; the files on disk "
        "are left in place. Exits non-zero if any archive could not be copied."
    )

    def handle(self, *args, **options):
        try:
            report = snapshots_copy_to_store()
        except NothingToCopyTo as exc:
            raise CommandError(str(exc)) from None
        for snapshot_id, reason in report.failed.items():
            self.stderr.write(f"{snapshot_id}: {reason}")
        self.stdout.write(report.summary)
        if report.failed:
            raise CommandError(f"{len(report.failed)} snapshot(s) could not be copied; fix the cause and run again")
