"""manage.py cleanup_sandboxes and the cleanup service, on the real local git host and sandbox backend.

What is tested:
- every selection rule, alone and combined, and the refusals (empty rule,
  unknown account or organization, --all without --yes or with other rules);
- the safety: --dry-run only lists; without --yes it shows the count and the
  first rows and asks on a terminal (a "no" deletes nothing), and refuses
  when there is no terminal to ask;
- a failure on one sandbox (caused at the real boundary) does not stop the
  rest, is listed with its reason, makes the exit status non-zero, and the
  same command run again finishes the job;
- the json report, the progress lines off a terminal, the audit trail;
- the database work per batch is a constant number of queries (Django's query
  capture), whatever the batch size.
"""

import io
import json
import re
import shutil
from datetime import timedelta

import pytest
from django.core.management import CommandError, call_command
from django.db import connection
from django.test.utils import CaptureQueriesContext

from accounts.audit import Actor
from accounts.models import AuditEvent
from config.timefmt import format_moment
from sandboxes.cleanup import CleanupRule, sandboxes_cleanup
from sandboxes.models import SetupRun, Snapshot
from tests.sandboxes.conftest import DEPLOYMENT
from tests.sandboxes.local_git import make_undeletable
from tests.sandboxes.seeded_sandboxes import (
    FRESH,
    archive_path,
    sandbox_is_gone,
    sandbox_is_intact,
    seed_accounts,
    seed_sandbox,
)

pytestmark = pytest.mark.django_db


class Terminal(io.StringIO):
    """A standard input that is a terminal, with the operator's answer typed in."""

    def isatty(self):
        return True


def cleanup(*args, stdin=None):
    """Run the command; (stdout, stderr). A CommandError propagates, as call_command does."""
    out, err = io.StringIO(), io.StringIO()
    call_command("cleanup_sandboxes", *args, stdout=out, stderr=err, stdin=stdin)
    return out.getvalue(), err.getvalue()


def failing_cleanup(*args, stdin=None) -> tuple[str, str, str]:
    out, err = io.StringIO(), io.StringIO()
    with pytest.raises(CommandError) as raised:
        call_command("cleanup_sandboxes", *args, stdout=out, stderr=err, stdin=stdin)
    return str(raised.value), out.getvalue(), err.getvalue()


# --- selection rules ---------------------------------------------------------------


def test_expired_deletes_the_expired_sandboxes_and_leaves_the_others(people):
    expired = seed_sandbox(people.alice.account)
    fresh = seed_sandbox(people.bob.account, expires_in=FRESH)

    out, _ = cleanup("--expired", "--yes")

    assert sandbox_is_gone(expired)
    assert sandbox_is_intact(fresh)
    assert "selected 1, deleted 1, failed 0, repositories removed 1" in out


def test_expired_leaves_a_sandbox_whose_setup_is_running_again(people):
    renewing = seed_sandbox(people.alice.account)
    run = SetupRun.objects.create(account=people.alice.account, status=SetupRun.Status.EXECUTING)

    cleanup("--expired", "--yes")

    assert sandbox_is_intact(renewing)
    run.refresh_from_db()
    assert run.status == SetupRun.Status.EXECUTING


def test_account_is_repeatable_and_deletes_only_those_accounts(people):
    alices = seed_sandbox(people.alice.account, expires_in=FRESH)
    bobs = seed_sandbox(people.bob.account, expires_in=FRESH)
    carols = seed_sandbox(people.carol.account, expires_in=FRESH)

    cleanup("--account", str(people.alice.account.pk), "--account", str(people.bob.account.pk), "--yes")

    assert sandbox_is_gone(alices) and sandbox_is_gone(bobs)
    assert sandbox_is_intact(carols)


@pytest.mark.parametrize("by", ["slug", "id"])
def test_org_deletes_the_sandboxes_of_its_members_only(people, by):
    members = [seed_sandbox(person.account, expires_in=FRESH) for person in (people.alice, people.bob, people.dave)]
    outsider = seed_sandbox(people.mallory.account, expires_in=FRESH)

    cleanup("--org", people.acme.slug if by == "slug" else str(people.acme.pk), "--yes")

    assert all(sandbox_is_gone(snapshot) for snapshot in members)
    assert sandbox_is_intact(outsider)


def test_older_than_deletes_sandboxes_created_before_the_duration(people):
    old = seed_sandbox(people.alice.account, expires_in=FRESH, created_ago=timedelta(days=40))
    recent = seed_sandbox(people.bob.account, expires_in=FRESH, created_ago=timedelta(days=2))

    cleanup("--older-than", "30d", "--yes")

    assert sandbox_is_gone(old)
    assert sandbox_is_intact(recent)


def test_inactive_accounts_deletes_the_sandboxes_of_inactive_accounts(people):
    people.bob.account.is_active = False
    people.bob.account.save(update_fields=["is_active"])
    inactive = seed_sandbox(people.bob.account, expires_in=FRESH)
    active = seed_sandbox(people.alice.account, expires_in=FRESH)

    cleanup("--inactive-accounts", "--yes")

    assert sandbox_is_gone(inactive)
    assert sandbox_is_intact(active)


def test_rules_combine_a_sandbox_must_match_every_part(people):
    acme_expired = seed_sandbox(people.alice.account)
    acme_fresh = seed_sandbox(people.bob.account, expires_in=FRESH)
    outsider_expired = seed_sandbox(people.mallory.account)

    cleanup("--org", "acme", "--expired", "--yes")

    assert sandbox_is_gone(acme_expired)
    assert sandbox_is_intact(acme_fresh)
    assert sandbox_is_intact(outsider_expired)


def test_all_with_yes_prints_the_count_first_and_deletes_every_sandbox(people):
    sandboxes = [seed_sandbox(p.account, expires_in=FRESH) for p in (people.alice, people.bob, people.mallory)]

    out, _ = cleanup("--all", "--yes")

    assert out.splitlines()[0] == "3 sandbox(es) selected: all sandboxes"
    assert all(sandbox_is_gone(snapshot) for snapshot in sandboxes)


def test_all_without_yes_prints_the_count_and_deletes_nothing_even_on_a_terminal(people):
    sandboxes = [seed_sandbox(p.account, expires_in=FRESH) for p in (people.alice, people.bob)]

    message, out, _ = failing_cleanup("--all", stdin=Terminal("yes\n"))

    assert "2 sandbox(es) selected: all sandboxes" in out
    assert message == "--all deletes every sandbox (2); add --yes to go ahead"
    assert all(sandbox_is_intact(snapshot) for snapshot in sandboxes)


def test_all_does_not_combine_with_other_rules(people):
    sandbox = seed_sandbox(people.alice.account)

    message, _, _ = failing_cleanup("--all", "--expired", "--yes")

    assert "does not combine" in message
    assert sandbox_is_intact(sandbox)


def test_an_empty_rule_is_refused(people):
    sandbox = seed_sandbox(people.alice.account)

    message, _, _ = failing_cleanup("--yes")

    assert message.startswith("Say which sandboxes to delete")
    assert sandbox_is_intact(sandbox)


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--account", "not-a-uuid"], "--account takes account ids (UUIDs): not-a-uuid"),
        (["--account", "00000000-0000-0000-0000-000000000000"],
         "No account with id 00000000-0000-0000-0000-000000000000"),
        (["--org", "no-such-org"], "No organization with id or slug 'no-such-org'"),
        (["--older-than", "soon"], "--older-than: 'soon' is not a duration such as 3600, 90m, 12h, 7d or 2w"),
    ],
)
def test_a_rule_naming_what_does_not_exist_is_refused(people, args, message):
    sandbox = seed_sandbox(people.alice.account)

    assert failing_cleanup(*args, "--yes")[0] == message
    assert sandbox_is_intact(sandbox)


def test_the_service_refuses_an_empty_rule():
    with pytest.raises(ValueError, match="selects nothing"):
        sandboxes_cleanup(rule=CleanupRule(), actor=Actor.command("tests"))


# --- dry run and confirmation ---------------------------------------------------------


def test_dry_run_lists_what_would_be_deleted_and_deletes_nothing(people):
    expired = [seed_sandbox(p.account) for p in (people.alice, people.bob)]

    out, _ = cleanup("--expired", "--dry-run")

    for snapshot in expired:
        assert sandbox_is_intact(snapshot)
        assert f"would delete  {snapshot.account_id}  {snapshot.account.email}  {snapshot.snapshot_id}" in out
    assert "Dry run: 2 sandbox(es) would be deleted" in out
    assert not AuditEvent.objects.filter(actor="cleanup_sandboxes").exists()


def test_dry_run_and_preview_write_the_expiry_to_the_second_with_the_time_zone(people):
    expired = seed_sandbox(people.alice.account)
    written = format_moment(expired.expires_at)

    out, _ = cleanup("--expired", "--dry-run")
    _, _, err = failing_cleanup("--expired", stdin=Terminal("no\n"))

    assert re.fullmatch(r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d UTC", written)
    assert f"{expired.snapshot_id}  expires {written}" in out
    assert f"{expired.snapshot_id}  expires {written}" in err


def test_without_yes_a_no_on_the_terminal_deletes_nothing(people):
    expired = seed_sandbox(people.alice.account)

    message, _, err = failing_cleanup("--expired", stdin=Terminal("no\n"))

    assert message == "Not confirmed; nothing was deleted"
    assert f"  {expired.account_id}  alice@example.com  {expired.snapshot_id}" in err
    assert "Delete these 1 sandbox(es)? Type yes to go ahead" in err
    assert sandbox_is_intact(expired)


def test_without_yes_the_preview_shows_the_first_rows_and_how_many_more(people):
    seed_accounts(12)

    _, _, err = failing_cleanup("--expired", stdin=Terminal("\n"))

    assert sum(1 for line in err.splitlines() if "@example.com" in line) == 10
    assert "  … and 2 more" in err
    assert Snapshot.objects.count() == 12


def test_without_yes_a_yes_on_the_terminal_deletes(people):
    expired = seed_sandbox(people.alice.account)

    out, _ = cleanup("--expired", stdin=Terminal("yes\n"))

    assert sandbox_is_gone(expired)
    assert "deleted 1" in out


def test_without_yes_and_without_a_terminal_it_refuses(people):
    expired = seed_sandbox(people.alice.account)

    message, _, _ = failing_cleanup("--expired", stdin=io.StringIO("yes\n"))

    assert message.startswith("Not on a terminal, so nobody can confirm: add --yes")
    assert sandbox_is_intact(expired)


def test_nothing_selected_needs_no_confirmation(people):
    seed_sandbox(people.alice.account, expires_in=FRESH)

    out, _ = cleanup("--expired", stdin=io.StringIO(""))

    assert out.splitlines()[0] == "0 sandbox(es) selected: sandboxes expired"
    assert "selected 0, deleted 0, failed 0" in out


# --- failures, rerun, report ------------------------------------------------------------


def move_repository_behind_a_symlink(account, tmp_path):
    """The repository was moved to another disk and linked back: the git host refuses to delete through the link."""
    return make_undeletable(account, tmp_path)


def test_a_failure_does_not_stop_the_rest_is_listed_and_a_rerun_finishes_the_job(people, tmp_path):
    alices, bobs, carols = (seed_sandbox(p.account) for p in (people.alice, people.bob, people.carol))
    repository, moved = move_repository_behind_a_symlink(people.bob.account, tmp_path)

    message, out, _ = failing_cleanup("--expired", "--yes", "--batch-size", "2", "--concurrency", "2")

    assert message == "1 sandbox(es) could not be deleted (listed above); run the same command again to retry them"
    assert sandbox_is_gone(alices) and sandbox_is_gone(carols)
    assert sandbox_is_intact(bobs)
    assert f"  {bobs.account_id}  {bobs.snapshot_id}: Failed to delete repository {repository.name[:-4]}" in out
    assert "symbolic link" in out
    assert "selected 3, deleted 2, failed 1, repositories removed 2" in out
    failure = AuditEvent.objects.get(account_ref=bobs.account_id, action=AuditEvent.Action.SANDBOX_DELETED)
    assert failure.outcome == AuditEvent.Outcome.FAILURE
    assert AuditEvent.objects.get(action=AuditEvent.Action.CLEANUP).outcome == AuditEvent.Outcome.FAILURE

    repository.unlink()
    shutil.move(moved, repository)
    out, _ = cleanup("--expired", "--yes")

    assert sandbox_is_gone(bobs)
    assert "selected 1, deleted 1, failed 0, repositories removed 1" in out


def test_json_report_carries_the_counts_and_the_failures_with_their_reasons(people, tmp_path):
    seed_sandbox(people.alice.account)
    bobs = seed_sandbox(people.bob.account)
    move_repository_behind_a_symlink(people.bob.account, tmp_path)

    _, out, err = failing_cleanup("--expired", "--yes", "--format", "json")

    report = json.loads(out)
    assert "1 sandbox(es) selected" not in out and "2 sandbox(es) selected" in err
    assert report["command"] == "cleanup_sandboxes"
    assert report["rule"]["expired"] is True and report["rule"]["all"] is False
    assert (report["ok"], report["dry_run"]) == (False, False)
    assert (report["selected"], report["deleted"], report["failed"], report["repositories_removed"]) == (2, 1, 1, 1)
    assert report["batches"] == 1 and report["seconds"] >= 0
    [failure] = report["failures"]
    assert failure["account_id"] == str(bobs.account_id)
    assert failure["snapshot_id"] == bobs.snapshot_id
    assert failure["error"].startswith("Failed to delete repository")


def test_json_report_of_a_dry_run_lists_the_sandboxes(people):
    expired = seed_sandbox(people.alice.account)

    out, _ = cleanup("--expired", "--dry-run", "--format", "json")

    report = json.loads(out)
    assert report["dry_run"] is True and report["deleted"] == 0
    assert report["sandboxes"] == [
        {
            "account_id": str(expired.account_id),
            "email": "alice@example.com",
            "snapshot_id": expired.snapshot_id,
            "expires_at": expired.expires_at.isoformat(),
            "created_at": expired.created_at.isoformat(),
            "github_repo": expired.github_repo,
        }
    ]


def test_off_a_terminal_progress_is_a_plain_line(people):
    seed_accounts(3)

    _, err = cleanup("--expired", "--yes", "--batch-size", "2")

    assert "cleanup_sandboxes: 3/3 (100%), deleted 3, failed 0" in err
    assert "\r" not in err


def test_on_a_terminal_progress_is_a_bar(people):
    seed_accounts(3)
    out, terminal = io.StringIO(), Terminal()

    call_command("cleanup_sandboxes", "--expired", "--yes", "--batch-size", "2", stdout=out, stderr=terminal)

    drawn = terminal.getvalue()
    assert "\r" in drawn and "cleanup_sandboxes: 100%" in drawn and "3/3" in drawn
    assert "deleted 3, failed 0" in drawn


def test_the_audit_trail_has_an_event_per_sandbox_and_a_summary(people):
    seed_accounts(3)

    cleanup("--expired", "--yes")

    per_sandbox = AuditEvent.objects.filter(action=AuditEvent.Action.SANDBOX_DELETED, actor="cleanup_sandboxes")
    assert per_sandbox.count() == 3
    assert all(event.detail.startswith("Deleted snapshot snap_") for event in per_sandbox)
    summary = AuditEvent.objects.get(action=AuditEvent.Action.CLEANUP)
    assert summary.outcome == AuditEvent.Outcome.SUCCESS
    assert summary.detail.startswith("Cleanup of sandboxes expired: selected 3, deleted 3, failed 0")


def test_a_git_host_that_cannot_be_listed_stops_the_run_before_deleting_anything(people, settings, github_host):
    github_host.fail("list", 500, times=None)
    expired = seed_sandbox(people.alice.account, with_repository=False)

    message, _, _ = failing_cleanup("--expired", "--yes")

    assert "could not be listed, so nothing was deleted" in message
    assert Snapshot.objects.filter(pk=expired.pk).exists() and archive_path(expired.snapshot_id).is_file()


def test_with_github_the_repositories_are_listed_once_per_run_not_per_batch(people, github_host):
    snapshots = seed_accounts(5, with_repository=False)
    for snapshot in snapshots:
        github_host.add_repository(f"user-{snapshot.account_id}", topics=[f"sandbox-deployment-{DEPLOYMENT}"])
    github_host.add_repository("not-a-sandbox")

    cleanup("--expired", "--yes", "--batch-size", "2")

    assert len(github_host.calls("list")) == 1
    assert len(github_host.calls("delete")) == 5
    assert github_host.repository_names() == ["not-a-sandbox"]
    assert Snapshot.objects.count() == 0


def test_with_github_a_cleanup_of_300_with_concurrency_4_sends_its_writes_one_at_a_time_spaced(
    people, github_host, settings
):
    interval = 0.02
    settings.GITHUB = {**settings.GITHUB, "seconds_between_writes": interval}
    snapshots = seed_accounts(300, with_repository=False)
    for snapshot in snapshots:
        github_host.add_repository(f"user-{snapshot.account_id}", topics=[f"sandbox-deployment-{DEPLOYMENT}"])
    unmarked = f"their-own-{snapshots[0].account_id}"
    github_host.add_repository(unmarked)

    out, _ = cleanup("--all", "--yes", "--concurrency", "4", "--format", "json")

    report = json.loads(out)
    assert (report["deleted"], report["failed"], report["repositories_removed"]) == (300, 0, 300)
    assert report["repositories_left_alone"] == [f"{unmarked}: carries no deployment's mark"]
    assert github_host.repository_names() == [unmarked]
    deletes = sorted(call.at for call in github_host.calls("delete"))
    assert len(deletes) == 300
    gaps = [later - earlier for earlier, later in zip(deletes, deletes[1:])]
    # As the emulator received them: never two at once, never closer than GITHUB_MS_BETWEEN_WRITES.
    assert min(gaps) >= interval, sorted(gaps)[:5]


# --- queries per batch -------------------------------------------------------------------


def queries_per_batch(batch_size: int, batches: int) -> list[list[str]]:
    """The SQL of each batch of a cleanup over `batch_size * batches` expired sandboxes."""
    seed_accounts(batch_size * batches, prefix=f"size{batch_size}", with_repository=False)
    marks = []
    with CaptureQueriesContext(connection) as captured:
        report = sandboxes_cleanup(
            rule=CleanupRule(expired=True), actor=Actor.command("tests"), batch_size=batch_size,
            on_batch=lambda report: marks.append(len(captured.captured_queries)),
        )
    assert report.deleted == batch_size * batches and report.batches == batches
    starts = [0, *marks[:-1]]
    return [[query["sql"] for query in captured.captured_queries[start:end]] for start, end in zip(starts, marks)]


def is_audit_insert(sql: str) -> bool:
    return sql.startswith('INSERT INTO "accounts_auditevent"')


def test_the_queries_per_batch_are_the_same_whatever_the_batch_size():
    small = queries_per_batch(batch_size=5, batches=3)
    large = queries_per_batch(batch_size=300, batches=2)

    assert len({len(batch) for batch in small + large}) == 1, [len(batch) for batch in small + large]
    # The batch's SELECT, the cancel UPDATE, in_bulk's SELECT, the DELETE, and savepoints.
    assert len([sql for sql in small[0] if not is_audit_insert(sql)]) <= 8
    # The audit events of a batch are one bulk INSERT, on SQLite too (config/sqlite/base.py).
    assert [sum(map(is_audit_insert, batch)) for batch in small + large] == [1] * 5
