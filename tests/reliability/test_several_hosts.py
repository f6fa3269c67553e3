"""Two web servers and two workers that share no folder: only PostgreSQL, Redis, S3 and GitHub.

Four processes, each as if on a host of its own (its own SANDBOX_ROOT and
VAR_DIR): web A, web B (gunicorn) and worker A, worker B (`manage.py
qcluster`) on one queue. The services they share are the test's PostgreSQL
database, the local Redis broker, moto's S3 server (SNAPSHOT_STORE=s3) and
the GitHub REST emulator (GIT_HOST=github).

- 20 setups sent to web A complete, on either worker; each account has its
  repository and its snapshot object, and no worker's disk keeps anything.
- Through host B: 10 deletes over HTTP to web B, then `cleanup_sandboxes
  --all --yes` and `reconcile_sandboxes --fix` with host B's settings (an
  orphan object a lost worker left is there for reconcile to find).
- Afterwards: no Snapshot row, no repository on GitHub, nothing in the
  bucket under the prefix (an object of another prefix is untouched), and no
  process's disk holds a snapshot.
"""

import re
import subprocess
import sys
from pathlib import Path

import pytest

from sandboxes.models import SetupRun, Snapshot
from tests.conftest import make_person, requires_postgres
from tests.processes import (
    REPO,
    Service,
    database_url_of_the_test_database,
    forget_queue,
    free_port,
    gunicorn_command,
    new_queue_name,
    qcluster_command,
    service_environment,
    wait_until_healthy,
)

pytestmark = [requires_postgres, pytest.mark.postgres, pytest.mark.reliability]

SETUPS = 20
DEPLOYMENT = "hosts-test"
PREFIX = "sandboxes/"


@pytest.fixture
def hosts(transactional_db, github, s3_server, tmp_path):
    """web_a, web_b, worker_a, worker_b: Services, each with its own SANDBOX_ROOT; always stopped afterwards."""
    bucket = s3_server.new_bucket()
    queue_name = new_queue_name()
    shared = {
        **s3_server.environment,
        "SNAPSHOT_STORE": "s3", "SNAPSHOT_S3_BUCKET": bucket, "SNAPSHOT_S3_PREFIX": PREFIX,
        "SANDBOX_DEPLOYMENT_ID": DEPLOYMENT,
        "GIT_HOST": "github", "GITHUB_ORG": github.organization, "GITHUB_TOKEN": github.token,
        "GITHUB_API_URL": github.url, "GITHUB_MS_BETWEEN_WRITES": "0",
        "THROTTLE_SETUP_RATE": "1000/min", "THROTTLE_DELETE_RATE": "1000/min",
    }
    started = {}
    try:
        for name in ("web_a", "web_b", "worker_a", "worker_b"):
            host = tmp_path / name
            port = free_port()
            service = Service(
                base_url=f"http://127.0.0.1:{port}", git_root=host / "git", sandbox_root=host / "sandboxes",
                queue_name=queue_name, logs=tmp_path / "logs",
                env=service_environment(database_url=database_url_of_the_test_database(), queue_name=queue_name,
                                        sandbox_root=host / "sandboxes", git_root=host / "git",
                                        var_dir=host / "var", **shared),
            )
            service.bucket = bucket
            started[name] = service
            if name.startswith("web"):
                wait_until_healthy(service, service.start(name, gunicorn_command(port)))
            else:
                service.start(name, qcluster_command())
        yield started
    finally:
        for service in started.values():
            service.stop()
        forget_queue(queue_name)


def snapshots_on_disk(service: Service) -> list[Path]:
    """Archives and sandbox folders anywhere under the process's SANDBOX_ROOT."""
    root = service.sandbox_root
    return [*root.rglob("*.tar.gz"), *root.rglob("*.sha256"), *(root / "sandboxes").glob("sbx_*")]


def keys_under(s3_server, bucket: str, prefix: str) -> list[str]:
    pages = s3_server.client().get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix)
    return [item["Key"] for page in pages for item in page.get("Contents", [])]


def manage_on(service: Service, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "manage.py", *args], cwd=REPO, env=service.env, check=False,
                          capture_output=True, text=True, timeout=300)


def test_setups_on_web_a_and_deletes_cleanup_and_reconcile_on_host_b_leave_nothing_anywhere(
    hosts, github, s3_server
):
    web_a, web_b, worker_a, worker_b = hosts["web_a"], hosts["web_b"], hosts["worker_a"], hosts["worker_b"]
    bucket = web_a.bucket
    people = [make_person(f"user{number}") for number in range(SETUPS)]

    run_ids = {}
    for person in people:
        status, body = web_a.call("POST", "/api/sandboxes/setup", key=person.key, body={})
        assert status == 200, web_a.report(f"setup answered {status} {body}")
        run_ids[person.account.pk] = body["runId"]
    for person in people:
        run = web_a.wait_for_run(person.key, run_ids[person.account.pk], timeout=120)
        assert run["status"] == SetupRun.Status.COMPLETED, worker_a.report(f"{run}") + worker_b.report("")

    # Each worker logs the runs it completed.
    processed = {name: len(re.findall(r"Setup run run_\w+ for account \S+ completed", hosts[name].processes[0].output()))
                 for name in ("worker_a", "worker_b")}
    assert sum(processed.values()) == SETUPS and all(processed.values()), processed
    rows = list(Snapshot.objects.all())
    assert len(rows) == SETUPS
    expected = {f"{PREFIX}{DEPLOYMENT}/{row.snapshot_id}.tar.gz" for row in rows}
    assert set(keys_under(s3_server, bucket, PREFIX)) == expected
    assert len(github.repository_names()) == SETUPS
    for service in hosts.values():
        assert snapshots_on_disk(service) == [], f"{service.processes[0].name} kept {snapshots_on_disk(service)}"

    # A worker that lost its run after the upload left an object no row names;
    # another prefix of the bucket belongs to someone else.
    client = s3_server.client()
    orphan = f"{PREFIX}{DEPLOYMENT}/snap_0123456789abcdef01234567.tar.gz"
    client.put_object(Bucket=bucket, Key=orphan, Body=b"left by a lost worker", Metadata={"deployment": DEPLOYMENT})
    client.put_object(Bucket=bucket, Key="someone-else/notes.txt", Body=b"not ours")

    for person in people[: SETUPS // 2]:
        status, body = web_b.call("DELETE", "/api/sandboxes", key=person.key, body={})
        assert status == 200 and body["deleted_snapshot"], web_b.report(f"delete answered {status} {body}")
    assert Snapshot.objects.count() == SETUPS - SETUPS // 2

    cleanup = manage_on(web_b, "cleanup_sandboxes", "--all", "--yes")
    assert cleanup.returncode == 0, cleanup.stdout + cleanup.stderr
    reconcile = manage_on(web_b, "reconcile_sandboxes", "--fix")
    assert reconcile.returncode == 0, reconcile.stdout + reconcile.stderr
    assert "1 orphan snapshots" in reconcile.stdout, reconcile.stdout

    assert not Snapshot.objects.exists()
    assert github.repository_names() == []
    assert keys_under(s3_server, bucket, PREFIX) == []
    assert keys_under(s3_server, bucket, "") == ["someone-else/notes.txt"]
    for service in hosts.values():
        assert snapshots_on_disk(service) == [], f"{service.processes[0].name} kept {snapshots_on_disk(service)}"
