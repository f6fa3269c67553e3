"""The git host goes down in the middle of a cleanup: what was not deleted stays, and a rerun finishes.

Twelve expired sandboxes, each with its Snapshot row, a repository on
"GitHub" (the GitHub REST emulator of tests/github_emulator.py, which
PyGithub really talks to) and a snapshot archive in the local backend.
`manage.py cleanup_sandboxes --expired --yes --format json` runs as an
operator runs it, in its own process on the test's PostgreSQL database. After
its fourth repository deletion the git host stops answering (every later
DELETE has its connection closed without an answer).

- The command exits non-zero, and its report counts the deleted and the
  failed sandboxes.
- Every sandbox whose repository is still on the host still has its row and
  its snapshot archive; every row that is gone had its repository and its
  archive deleted. The rows left are exactly the failures the report names.
- With the host back, the same command deletes the rest and exits 0: no row,
  repository or archive is left.
"""

import json
import subprocess
import sys
import threading
import time
from datetime import timedelta

import pytest
from django.utils import timezone

from accounts.services import account_create
from sandboxes.models import Snapshot
from sandboxes.providers import get_sandbox_backend
from sandboxes.providers.base import repository_name_for
from tests.conftest import requires_postgres
from tests.github_emulator import GitHubEmulator
from tests.processes import (
    REPO,
    database_url_of_the_test_database,
    new_queue_name,
    service_environment,
)

pytestmark = [requires_postgres, pytest.mark.postgres, pytest.mark.reliability]

SANDBOXES = 12
DELETES_BEFORE_THE_OUTAGE = 4


@pytest.fixture
def expired_sandboxes(transactional_db, github) -> dict:
    """account id -> (repository name, snapshot id), all expired an hour ago."""
    backend = get_sandbox_backend()
    sandboxes = {}
    for number in range(SANDBOXES):
        account = account_create(name=f"Expired {number}", email=f"expired{number}@example.com")
        name = repository_name_for(account_name=account.name, account_id=account.pk)
        repository = github.add_repository(name, topics=["sandbox-deployment-outage-test"])
        sandbox_id = backend.create()
        backend.write_files(sandbox_id, {"README.md": f"sandbox {number}\n".encode()})
        snapshot_id = backend.snapshot(sandbox_id).snapshot_id
        backend.stop(sandbox_id)
        Snapshot.objects.create(account=account, snapshot_id=snapshot_id, github_repo=repository["html_url"],
                                expires_at=timezone.now() - timedelta(hours=1))
        sandboxes[account.pk] = (name, snapshot_id)
    return sandboxes


def cleanup(env: dict, *, expect_success: bool) -> dict:
    """The command as an operator runs it; its JSON report."""
    completed = subprocess.run(
        [sys.executable, "manage.py", "cleanup_sandboxes", "--expired", "--yes", "--format", "json",
         "--concurrency", "2", "--batch-size", "5"],
        cwd=REPO, env=env, check=False, capture_output=True, text=True, timeout=120,
    )
    assert (completed.returncode == 0) is expect_success, (completed.returncode, completed.stdout, completed.stderr)
    return json.loads(completed.stdout)


def after_deletes(github: GitHubEmulator, count: int, action):
    """Run `action` once the host has been asked to delete `count` repositories (a watcher thread)."""
    done = threading.Event()

    def watch():
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            if len(github.calls("delete", method="DELETE")) >= count:
                action()
                break
            time.sleep(0.005)
        done.set()

    threading.Thread(target=watch, daemon=True).start()
    return done


def test_a_git_host_outage_during_a_cleanup_leaves_what_was_not_deleted_and_a_rerun_finishes(
    expired_sandboxes, github, settings, tmp_path
):
    env = service_environment(
        database_url=database_url_of_the_test_database(), queue_name=new_queue_name(),
        sandbox_root=settings.SANDBOX_ROOT, git_root=settings.GIT_ROOT, var_dir=tmp_path / "var",
        GIT_HOST="github", SANDBOX_DEPLOYMENT_ID="outage-test", GITHUB_ORG=github.organization, GITHUB_TOKEN=github.token, GITHUB_API_URL=github.url,
        GITHUB_RETRIES="0", GITHUB_TIMEOUT="2", GITHUB_MS_BETWEEN_WRITES="0",
    )
    backend = get_sandbox_backend()
    # Slow deletes, so the outage falls in the middle of the run; then the host stops answering.
    github.delay("delete", 0.2)
    watcher = after_deletes(github, DELETES_BEFORE_THE_OUTAGE, lambda: github.drop("delete", times=None))

    report = cleanup(env, expect_success=False)

    assert watcher.wait(5)
    assert report["selected"] == SANDBOXES
    assert report["deleted"] >= DELETES_BEFORE_THE_OUTAGE - 2  # those already under way may fail too
    assert report["failed"] >= 1
    assert report["deleted"] + report["failed"] == SANDBOXES
    left = {str(account_id) for account_id in Snapshot.objects.values_list("account_id", flat=True)}
    assert left == {failure["account_id"] for failure in report["failures"]}
    on_host = set(github.repository_names())
    for account_id, (repository, snapshot_id) in expired_sandboxes.items():
        if repository in on_host:
            assert str(account_id) in left, f"{repository} is still on the host but its row was removed"
        if str(account_id) in left:
            assert backend.snapshot_exists(snapshot_id), "a sandbox that failed lost its snapshot"
        else:
            assert repository not in on_host and not backend.snapshot_exists(snapshot_id)

    github.clear_faults()  # the host is back
    report = cleanup(env, expect_success=True)

    assert report["deleted"] == len(left) and report["failed"] == 0
    assert not Snapshot.objects.exists()
    assert github.repository_names() == []
    assert backend.list_snapshots() == []
