import json

from django.core.management.base import BaseCommand, CommandError

from accounts.audit import Actor
from sandboxes.management.bulk_commands import ProgressDisplay, number_between_1_and
from sandboxes.reconcile import (
    DEFAULT_BATCH_SIZE,
    DEFAULT_CONCURRENCY,
    FindingKind,
    sandboxes_reconcile,
)


class Command(BaseCommand):
    help = (
        "List what is out of step between the database, the git host and the sandbox backend: repositories "
        "of accounts without a snapshot (or without an account), snapshots no row points at, rows that point "
        "at a repository or snapshot that is gone, and runs left executing past the timeout. With --fix, "
        "delete the orphans, clear the dangling rows and fail the stale runs."
    )

    def add_arguments(self, parser):
        parser.add_argument("--fix", action="store_true", help="fix what is found (default: only list it)")
        parser.add_argument("--batch-size", type=number_between_1_and(5000), default=DEFAULT_BATCH_SIZE,
                            help=f"items compared per batch (default {DEFAULT_BATCH_SIZE})")
        parser.add_argument("--concurrency", type=number_between_1_and(64), default=DEFAULT_CONCURRENCY,
                            help=f"parallel calls to the git host and the backend (default {DEFAULT_CONCURRENCY})")
        parser.add_argument("--format", choices=["text", "json"], default="text",
                            help="json: write a machine-readable report on stdout")

    def handle(self, *args, fix, batch_size, concurrency, format, **options):
        progress = None

        def show(report):
            nonlocal progress
            if progress is None:
                progress = ProgressDisplay(total=report.to_check, label="reconcile_sandboxes", stream=self.stderr)
            progress.update(report.checked, f"found {len(report.findings)}")

        report = sandboxes_reconcile(
            fix=fix, actor=Actor.command("reconcile_sandboxes"), batch_size=batch_size, concurrency=concurrency,
            on_progress=show,
        )
        if progress is not None:
            progress.close()

        if format == "json":
            self.stdout.write(json.dumps(report.as_dict(), indent=2))
        else:
            for kind, label in FindingKind.LABELS.items():
                findings = [finding for finding in report.findings if finding.kind == kind]
                if findings:
                    self.stdout.write(f"{label.capitalize()} ({len(findings)}):")
                for finding in findings:
                    state = ""
                    if finding.error:
                        state = f"  FAILED: {finding.error}"
                    elif finding.fixed:
                        state = f"  [{FindingKind.FIXES[kind]}]"
                    self.stdout.write(f"  {finding.subject}: {finding.reason}{state}")
            self.stdout.write(report.summary)
        if report.error:
            raise CommandError(report.summary)
        if report.failed:
            raise CommandError(f"{report.failed} finding(s) could not be fixed (listed above); run again to retry")
