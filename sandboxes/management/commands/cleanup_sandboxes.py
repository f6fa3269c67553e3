import json
import sys
import uuid
from datetime import datetime

from django.core.management.base import BaseCommand, CommandError
from django.utils import timezone

from accounts.audit import Actor
from accounts.models import Account
from config.environment import parse_duration
from config.timefmt import format_moment
from orgs.selectors import organization_by_id_or_slug
from sandboxes.cleanup import (
    DEFAULT_BATCH_SIZE,
    DEFAULT_CONCURRENCY,
    MAX_BATCH_SIZE,
    CleanupRule,
    cleanup_selection_count,
    cleanup_selection_preview,
    sandboxes_cleanup,
)
from sandboxes.management.bulk_commands import ProgressDisplay, number_between_1_and

PREVIEW_ROWS = 10


class Command(BaseCommand):
    help = (
        "Delete sandboxes (repositories, snapshot, row, audit event: the same service as DELETE /api/sandboxes) "
        "chosen by a rule. The rule's parts combine: a sandbox must match each one given. Without --yes it "
        "shows what it would delete and asks on a terminal. A failure on one sandbox does not stop the rest; "
        "running the same command again finishes what failed. Repositories of accounts without a snapshot "
        "are reconcile_sandboxes' business."
    )
    # Tests hand the confirmation prompt a terminal of their own.
    stealth_options = ("stdin",)

    def add_arguments(self, parser):
        rule = parser.add_argument_group("which sandboxes (combined: each part given must match)")
        rule.add_argument("--expired", action="store_true",
                          help="snapshot expired (not those whose setup is running again: it renews them)")
        rule.add_argument("--account", action="append", default=[], metavar="ID", help="this account (repeatable)")
        rule.add_argument("--org", action="append", default=[], metavar="ID-or-slug",
                          help="the members of this organization (repeatable)")
        rule.add_argument("--older-than", metavar="DURATION",
                          help="created longer ago than this: 3600, 90m, 12h, 7d or 2w")
        rule.add_argument("--inactive-accounts", action="store_true", help="of accounts that are not active")
        rule.add_argument("--all", action="store_true", dest="everything",
                          help="every sandbox (needs --yes; alone, not combined)")
        parser.add_argument("--dry-run", action="store_true", help="only list what would be deleted")
        parser.add_argument("--yes", action="store_true", help="delete without asking")
        parser.add_argument("--batch-size", type=number_between_1_and(MAX_BATCH_SIZE), default=DEFAULT_BATCH_SIZE,
                            help=f"sandboxes per batch (default {DEFAULT_BATCH_SIZE})")
        parser.add_argument("--concurrency", type=number_between_1_and(64), default=DEFAULT_CONCURRENCY,
                            help=f"parallel calls to the git host and the backend (default {DEFAULT_CONCURRENCY})")
        parser.add_argument("--format", choices=["text", "json"], default="text",
                            help="json: write a machine-readable report on stdout")

    def handle(self, *args, **options):
        self.stdin = options.get("stdin") or sys.stdin
        self.as_json = options["format"] == "json"
        # Messages for people go to stderr when stdout carries the JSON report.
        self.say = self.stderr.write if self.as_json else self.stdout.write

        rule = self.rule_from(options)
        now = timezone.now()
        total = cleanup_selection_count(rule=rule, now=now)
        self.say(f"{total} sandbox(es) selected: {rule.describe()}")

        if not options["dry_run"] and total:
            if rule.everything and not options["yes"]:
                raise CommandError(f"--all deletes every sandbox ({total}); add --yes to go ahead")
            if not options["yes"]:
                self.confirm(rule=rule, now=now, total=total)

        progress = ProgressDisplay(total=total, label="cleanup_sandboxes", stream=self.stderr)
        report = sandboxes_cleanup(
            rule=rule,
            actor=Actor.command("cleanup_sandboxes"),
            dry_run=options["dry_run"],
            batch_size=options["batch_size"],
            concurrency=options["concurrency"],
            now=now,
            on_batch=lambda report: progress.update(
                report.selected, f"deleted {report.deleted}, failed {report.failed}"
            ),
        )
        progress.close()
        self.write_report(report)
        if report.error:
            raise CommandError(report.summary)
        if report.failed:
            raise CommandError(
                f"{report.failed} sandbox(es) could not be deleted (listed above); run the same command again "
                "to retry them"
            )

    def rule_from(self, options) -> CleanupRule:
        account_ids = tuple(self.account_ids(options["account"]))
        organization_ids = []
        for value in options["org"]:
            organization = organization_by_id_or_slug(value)
            if organization is None:
                raise CommandError(f"No organization with id or slug {value!r}")
            organization_ids.append(organization.pk)
        older_than = None
        if options["older_than"] is not None:
            try:
                older_than = parse_duration(options["older_than"])
            except ValueError as exc:
                raise CommandError(f"--older-than: {exc}")
        rule = CleanupRule(
            expired=options["expired"],
            account_ids=account_ids,
            organization_ids=tuple(organization_ids),
            older_than=older_than,
            inactive_accounts=options["inactive_accounts"],
            everything=options["everything"],
        )
        if rule.is_empty:
            raise CommandError(
                "Say which sandboxes to delete: --expired, --account, --org, --older-than, --inactive-accounts "
                "or --all"
            )
        if rule.everything and rule != CleanupRule(everything=True):
            raise CommandError("--all means every sandbox; it does not combine with the other rules")
        return rule

    def account_ids(self, values: list[str]) -> list[uuid.UUID]:
        try:
            ids = [uuid.UUID(value) for value in values]
        except ValueError:
            raise CommandError(f"--account takes account ids (UUIDs): {', '.join(values)}")
        known = set(Account.objects.filter(pk__in=ids).values_list("pk", flat=True))
        unknown = [str(account_id) for account_id in ids if account_id not in known]
        if unknown:
            raise CommandError(f"No account with id {', '.join(unknown)}")
        return ids

    def confirm(self, *, rule: CleanupRule, now, total: int) -> None:
        preview = cleanup_selection_preview(rule=rule, now=now, limit=PREVIEW_ROWS)
        self.stderr.write(f"These would be deleted for good (repositories, snapshot, row){':' if total else ''}")
        for row in preview:
            self.stderr.write(
                f"  {row.account_id}  {row.account.email}  {row.snapshot_id}  expires {format_moment(row.expires_at)}"
            )
        if total > len(preview):
            self.stderr.write(f"  … and {total - len(preview)} more")
        if self.stdin is None or not self.stdin.isatty():
            raise CommandError("Not on a terminal, so nobody can confirm: add --yes to delete, or --dry-run to list")
        self.stderr.write(f"Delete these {total} sandbox(es)? Type yes to go ahead: ", ending="")
        self.stderr.flush()
        if self.stdin.readline().strip().lower() != "yes":
            raise CommandError("Not confirmed; nothing was deleted")

    def write_report(self, report) -> None:
        if self.as_json:
            self.stdout.write(json.dumps(report.as_dict(), indent=2))
            return
        if report.dry_run:
            for entry in report.listed:
                self.stdout.write(
                    f"would delete  {entry['account_id']}  {entry['email']}  {entry['snapshot_id']}  "
                    f"expires {format_moment(datetime.fromisoformat(entry['expires_at']))}"
                )
        if report.failures:
            self.stdout.write("Failed:")
            for failure in report.failures:
                self.stdout.write(f"  {failure.account_id}  {failure.snapshot_id}: {failure.error}")
        self.stdout.write(report.summary)
