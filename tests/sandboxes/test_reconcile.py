"""manage.py reconcile_sandboxes, on the real local git host and sandbox backend (and the GitHub emulator).

What is tested:
- each kind of finding is listed, and nothing is changed without --fix:
  repositories of accounts without a snapshot or without an account, snapshots
  no row points at, rows whose snapshot or repository is gone, stale runs;
- what must never be touched is not: another account's sandbox, repositories
  whose name is not ours, the repository and snapshot of a setup that is running;
- --fix deletes the orphans, deletes or clears the dangling rows, fails the
  stale runs, records it all in the audit trail, and a second run finds nothing;
- a fix that fails (caused at the real boundary) is reported, does not stop
  the rest, and makes the exit status non-zero;
- the json report; with GitHub, one paginated listing for the whole run.
"""

import io
import json
import shutil
import uuid
from datetime import timedelta
from pathlib import Path

import pytest
from django.conf import settings
from django.core.management import CommandError, call_command
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.utils import timezone

from accounts.audit import Actor
from accounts.models import AuditEvent
from config.timefmt import format_moment
from sandboxes.models import SetupRun, Snapshot
from sandboxes.providers import get_git_host
from sandboxes.reconcile import FindingKind, sandboxes_reconcile
from tests.sandboxes.conftest import DEPLOYMENT
from tests.sandboxes.local_git import git, make_bare_repository, make_undeletable
from tests.sandboxes.seeded_sandboxes import (
    archive_path,
    make_repository,
    repository_path,
    sandbox_is_intact,
    seed_accounts,
    seed_sandbox,
    take_snapshot,
)

pytestmark = pytest.mark.django_db


def reconcile(*args):
    out, err = io.StringIO(), io.StringIO()
    call_command("reconcile_sandboxes", *args, stdout=out, stderr=err)
    return out.getvalue(), err.getvalue()


def reconcile_json(*args) -> dict:
    return json.loads(reconcile(*args, "--format", "json")[0])


def findings(report: dict, kind: str) -> list[dict]:
    return [finding for finding in report["findings"] if finding["kind"] == kind]


def orphan_repository_of_unknown_account():
    """A repository carrying the id of an account that does not exist (any more)."""
    missing = uuid.uuid4()
    get_git_host().ensure_repository(name=f"gone-user-{missing}", description="")
    return f"gone-user-{missing}", missing


@pytest.fixture
def healthy(people):
    """A complete sandbox that reconcile must leave alone."""
    return seed_sandbox(people.carol.account)


# --- listing ---------------------------------------------------------------------------


def test_lists_repositories_of_accounts_without_a_snapshot_or_without_an_account(people, healthy):
    make_repository(people.alice.account)
    gone_name, gone_id = orphan_repository_of_unknown_account()

    report = reconcile_json()

    orphans = {finding["subject"]: finding for finding in findings(report, FindingKind.ORPHAN_REPOSITORY)}
    assert set(orphans) == {repository_path(people.alice.account).name[:-4], gone_name}
    alices = orphans[repository_path(people.alice.account).name[:-4]]
    assert alices["reason"] == f"account {people.alice.account.pk} has no snapshot"
    assert orphans[gone_name]["reason"] == f"no account {gone_id}"
    assert not any(finding["fixed"] for finding in report["findings"])
    assert repository_path(people.alice.account).is_dir()
    assert sandbox_is_intact(healthy)


def test_never_lists_repositories_whose_name_is_not_ours_or_of_a_running_setup(people, healthy):
    make_repository(people.alice.account, name="team-wiki")
    make_repository(people.bob.account)
    SetupRun.objects.create(account=people.bob.account, status=SetupRun.Status.EXECUTING,
                            started_at=timezone.now())

    report = reconcile_json()

    assert findings(report, FindingKind.ORPHAN_REPOSITORY) == []


def test_lists_snapshots_no_row_points_at_but_not_one_a_running_setup_just_took(people, healthy):
    orphan = take_snapshot()
    being_saved = take_snapshot()
    SetupRun.objects.create(
        account=people.bob.account, status=SetupRun.Status.EXECUTING, started_at=timezone.now(),
        current_step="snapshot",
        steps=[{"name": "snapshot", "ok": True, "detail": f"Snapshot {being_saved} (10 bytes, sha256 abc…)"}],
    )

    report = reconcile_json()

    assert [finding["subject"] for finding in findings(report, FindingKind.ORPHAN_SNAPSHOT)] == [orphan]
    assert archive_path(orphan).is_file()


def test_lists_rows_whose_snapshot_or_repository_is_gone(people, healthy):
    without_archive = seed_sandbox(people.alice.account)
    archive_path(without_archive.snapshot_id).unlink()
    without_repository = seed_sandbox(people.bob.account)
    shutil.rmtree(repository_path(people.bob.account))

    report = reconcile_json()

    [missing_snapshot] = findings(report, FindingKind.MISSING_SNAPSHOT)
    assert missing_snapshot["subject"] == without_archive.snapshot_id
    assert missing_snapshot["account_id"] == str(people.alice.account.pk)
    [missing_repository] = findings(report, FindingKind.MISSING_REPOSITORY)
    assert missing_repository["account_id"] == str(people.bob.account.pk)
    assert missing_repository["reason"] == (
        f"the git host does not hold repository {repository_path(people.bob.account).name[:-4]}"
    )
    assert Snapshot.objects.filter(pk=without_archive.pk).exists()
    assert Snapshot.objects.get(pk=without_repository.pk).github_repo == without_repository.github_repo


def test_lists_runs_left_executing_past_the_timeout(people, settings):
    stale = SetupRun.objects.create(
        account=people.alice.account, status=SetupRun.Status.EXECUTING,
        started_at=timezone.now() - timedelta(seconds=settings.SETUP_RUN_STALE_AFTER + 5),
    )
    SetupRun.objects.create(account=people.bob.account, status=SetupRun.Status.EXECUTING, started_at=timezone.now())

    report = reconcile_json()

    assert [finding["subject"] for finding in findings(report, FindingKind.STALE_RUN)] == [stale.pk]
    assert findings(report, FindingKind.STALE_RUN)[0]["reason"] == (
        f"executing since {format_moment(stale.started_at)}, past the timeout"
    )
    assert f"{stale.pk}: executing since {format_moment(stale.started_at)}" in reconcile()[0]
    stale.refresh_from_db()
    assert stale.status == SetupRun.Status.EXECUTING


def test_a_consistent_installation_has_nothing_to_report(people):
    seed_accounts(3)

    out, _ = reconcile()

    [summary] = out.splitlines()
    assert summary.startswith(
        "Reconcile: checked 9; found 0 stale runs, 0 orphan repositories, "
        "0 repositories not marked as ours (left alone), 0 orphan snapshots, "
        "0 snapshots not marked as ours (left alone), 0 rows whose snapshot is gone, 0 rows whose repository is gone, "
        "0 leftover sandbox containers and volumes, 0 sandbox containers and volumes not marked as ours (left alone); nothing changed (use --fix to fix)"
    )


# --- fixing -------------------------------------------------------------------------------


def test_fix_repairs_every_kind_records_it_and_a_second_run_finds_nothing(people, settings, healthy):
    make_repository(people.alice.account)
    gone_name, _ = orphan_repository_of_unknown_account()
    orphan_snapshot = take_snapshot()
    without_archive = seed_sandbox(people.bob.account)
    archive_path(without_archive.snapshot_id).unlink()
    without_repository = seed_sandbox(people.dave.account)
    shutil.rmtree(repository_path(people.dave.account))
    stale = SetupRun.objects.create(
        account=people.mallory.account, status=SetupRun.Status.EXECUTING,
        started_at=timezone.now() - timedelta(seconds=settings.SETUP_RUN_STALE_AFTER + 5),
    )

    out, _ = reconcile("--fix")

    assert not repository_path(people.alice.account).exists()
    assert not (settings.GIT_ROOT / f"{gone_name}.git").exists()
    assert not archive_path(orphan_snapshot).exists()
    assert not Snapshot.objects.filter(pk=without_archive.pk).exists()
    assert Snapshot.objects.get(pk=without_repository.pk).github_repo is None
    assert archive_path(without_repository.snapshot_id).is_file()
    stale.refresh_from_db()
    assert stale.status == SetupRun.Status.FAILED
    assert sandbox_is_intact(healthy)
    assert "fixed 6, failed 0" in out

    fixes = AuditEvent.objects.filter(action=AuditEvent.Action.RECONCILE_FIXED, actor="reconcile_sandboxes")
    assert fixes.filter(account_ref=people.alice.account.pk, detail__startswith="Deleted: orphan repository").exists()
    assert fixes.filter(detail__startswith=f"Deleted: orphan snapshot {orphan_snapshot}").exists()
    assert fixes.filter(account_ref=people.bob.account.pk, detail__startswith="Row deleted").exists()
    assert fixes.filter(account_ref=people.dave.account.pk, detail__startswith="Repository cleared").exists()
    assert set(fixes.values_list("outcome", flat=True)) == {AuditEvent.Outcome.SUCCESS}
    summary = AuditEvent.objects.get(action=AuditEvent.Action.RECONCILE, actor="reconcile_sandboxes")
    assert summary.detail.startswith("Reconcile:")
    assert summary.outcome == AuditEvent.Outcome.SUCCESS
    assert AuditEvent.objects.filter(action=AuditEvent.Action.RUN_FAILED, run_id=stale.pk).exists()

    # The repository of the row whose snapshot was gone is an orphan now:
    # listed by the next run, never deleted in the run that listed the row.
    second = reconcile_json("--fix")
    assert [finding["subject"] for finding in second["findings"]] == [repository_path(people.bob.account).name[:-4]]
    assert reconcile_json()["findings"] == []


def test_a_fix_that_fails_is_reported_the_rest_goes_on_and_the_exit_status_is_non_zero(people, tmp_path):
    make_repository(people.alice.account)
    make_repository(people.bob.account)
    stuck, moved = make_undeletable(people.bob.account, tmp_path)

    out, err = io.StringIO(), io.StringIO()
    with pytest.raises(CommandError, match="1 finding\\(s\\) could not be fixed"):
        call_command("reconcile_sandboxes", "--fix", "--concurrency", "2", stdout=out, stderr=err)

    assert not repository_path(people.alice.account).exists()
    assert moved.is_dir()
    assert f"  {stuck.name[:-4]}: account {people.bob.account.pk} has no snapshot  FAILED: Could not delete" in (
        out.getvalue()
    )
    # The failed fix has its own action, apart from the run's summary and the fix that worked.
    failure = AuditEvent.objects.get(action=AuditEvent.Action.RECONCILE_FIX_FAILED)
    assert (failure.account_ref, failure.outcome) == (people.bob.account.pk, AuditEvent.Outcome.FAILURE)
    assert failure.detail.startswith(f"Could not fix orphan repository {stuck.name[:-4]}")
    fixed = AuditEvent.objects.get(action=AuditEvent.Action.RECONCILE_FIXED)
    assert (fixed.account_ref, fixed.outcome) == (people.alice.account.pk, AuditEvent.Outcome.SUCCESS)
    summary = AuditEvent.objects.get(action=AuditEvent.Action.RECONCILE)
    assert (summary.account_ref, summary.outcome) == (None, AuditEvent.Outcome.FAILURE)


def test_a_git_host_that_cannot_be_listed_stops_the_run_and_changes_nothing(people, github_host):
    github_host.fail("list", 500, times=None)
    orphan = take_snapshot()

    with pytest.raises(CommandError, match="the git host or the sandbox backend could not be listed"):
        reconcile("--fix")

    assert archive_path(orphan).is_file()
    summary = AuditEvent.objects.get(action=AuditEvent.Action.RECONCILE)
    assert summary.outcome == AuditEvent.Outcome.FAILURE


def test_json_report_counts_each_kind(people, healthy):
    make_repository(people.alice.account)
    take_snapshot()

    report = reconcile_json()

    assert report["command"] == "reconcile_sandboxes"
    assert (report["fix"], report["ok"]) == (False, True)
    assert report["found"] == {
        "stale_run": 0, "orphan_repository": 1, "not_ours_repository": 0, "orphan_snapshot": 1,
        "not_ours_snapshot": 0, "missing_snapshot": 0, "missing_repository": 0,
        "leftover_sandbox": 0, "not_ours_sandbox": 0,
    }
    # 2 repositories and 2 snapshots listed, 1 row compared.
    assert report["checked"] == 5
    assert set(report["findings"][0]) == {"kind", "subject", "account_id", "reason", "fixed", "error"}


def queries_of_one_batch_fixing(count: int, prefix: str) -> int:
    """Queries of a reconcile --fix whose every step is one batch of `count` items of each kind."""
    snapshots = seed_accounts(count, prefix=prefix)
    for snapshot in snapshots[: count // 2]:
        archive_path(snapshot.snapshot_id).unlink()  # rows whose snapshot is gone
    for snapshot in snapshots[count // 2:]:
        shutil.rmtree(repository_path(snapshot.account))  # rows whose repository is gone
    for _ in range(count):
        take_snapshot()  # orphan snapshots
        orphan_repository_of_unknown_account()
    with CaptureQueriesContext(connection) as captured:
        report = sandboxes_reconcile(fix=True, actor=Actor.command("tests"), batch_size=100)
    assert report.ok and report.fixed == 3 * count
    # Start the next measurement from nothing.
    Snapshot.objects.all().delete()
    shutil.rmtree(settings.GIT_ROOT)
    shutil.rmtree(settings.SANDBOX_ROOT)
    return len(captured.captured_queries)


def test_the_queries_of_a_batch_do_not_grow_with_the_number_of_items(people):
    assert queries_of_one_batch_fixing(4, "few") == queries_of_one_batch_fixing(30, "many")


def test_fix_never_deletes_a_local_repository_without_this_deployments_mark(people, healthy):
    # The same names as orphans, made by someone else on this host: no `sandbox.deployment`, or another one.
    unmarked = make_bare_repository(Path(settings.GIT_ROOT) / f"old-{uuid.uuid4()}.git", marked=False)
    other = make_bare_repository(Path(settings.GIT_ROOT) / f"other-{uuid.uuid4()}.git", marked=False)
    git("config", "--file", other / "config", "sandbox.deployment", "laptop-ann")
    orphan, _ = orphan_repository_of_unknown_account()

    report = reconcile_json("--fix")

    assert unmarked.is_dir() and other.is_dir()
    assert not (Path(settings.GIT_ROOT) / f"{orphan}.git").exists()
    assert {finding["subject"] for finding in findings(report, FindingKind.NOT_OURS_REPOSITORY)} == {
        unmarked.name.removesuffix(".git"), other.name.removesuffix(".git")}
    assert [finding["subject"] for finding in findings(report, FindingKind.ORPHAN_REPOSITORY)] == [orphan]
    assert report["ok"] is True


# --- GitHub ---------------------------------------------------------------------------------

MARK = f"sandbox-deployment-{DEPLOYMENT}"


def test_with_github_the_orphans_come_from_one_paginated_listing(people, github_host):
    seed_sandbox(people.alice.account, with_repository=False)
    github_host.add_repository(f"alice-{people.alice.account.pk}", topics=[MARK])
    for number in range(120):  # more than one page of 100
        github_host.add_repository(f"left-over-{number}-{uuid.uuid4()}", topics=[MARK])
    github_host.add_repository("team-wiki")

    report = reconcile_json("--fix")

    assert len(findings(report, FindingKind.ORPHAN_REPOSITORY)) == 120
    assert len(github_host.calls("list")) == 2  # the pages of one listing
    assert github_host.repository_names() == sorted([f"alice-{people.alice.account.pk}", "team-wiki"])
    assert report["fixed"] == 120


def test_with_github_reconcile_deletes_only_repositories_marked_as_this_deployments(people, github_host):
    # What another deployment sharing the organization (a staging instance, a
    # laptop, a restored backup) made, and what was made before the mark: the
    # names end with account ids this database has no row for.
    ours = f"gone-{uuid.uuid4()}"
    staging = f"staging-user-{uuid.uuid4()}"
    unmarked = f"old-user-{uuid.uuid4()}"
    github_host.add_repository(ours, description=f"Sandbox of Gone [{MARK} run_ab12]")
    github_host.add_repository(staging, description="Sandbox [sandbox-deployment-staging run_ab12]",
                               topics=["sandbox-deployment-staging"])
    github_host.add_repository(unmarked, description="Sandbox of Old")

    report = reconcile_json("--fix")

    assert github_host.repository_names() == sorted([staging, unmarked])
    assert [call.path for call in github_host.calls("delete")] == [f"/repos/sandbox-org/{ours}"]
    assert [finding["subject"] for finding in findings(report, FindingKind.ORPHAN_REPOSITORY)] == [ours]
    left_alone = {finding["subject"]: finding for finding in findings(report, FindingKind.NOT_OURS_REPOSITORY)}
    assert set(left_alone) == {staging, unmarked}
    assert left_alone[staging]["reason"].endswith(
        "it carries the mark of deployment 'staging', not this one's, so it is never deleted")
    assert left_alone[unmarked]["reason"].endswith("it carries no deployment's mark, so it is never deleted")
    assert not any(finding["fixed"] or finding["error"] for finding in left_alone.values())
    assert (report["ok"], report["fixed"], report["failed"]) == (True, 1, 0)


def test_with_github_a_row_whose_repository_was_renamed_is_not_dangling(people, github_host):
    snapshot = seed_sandbox(people.alice.account, with_repository=False)
    repository = github_host.add_repository(f"alice-{people.alice.account.pk}", topics=[MARK])
    Snapshot.objects.filter(pk=snapshot.pk).update(github_repo=repository["html_url"],
                                                   github_repo_id=repository["id"])
    Snapshot.objects.filter(pk=snapshot.pk).update(updated_at=timezone.now() - timedelta(minutes=1))
    github_host.rename(f"alice-{people.alice.account.pk}", "alices-project")

    report = reconcile_json("--fix")

    assert findings(report, FindingKind.MISSING_REPOSITORY) == []
    assert Snapshot.objects.get(pk=snapshot.pk).github_repo == repository["html_url"]
    assert github_host.repository_names() == ["alices-project"]
