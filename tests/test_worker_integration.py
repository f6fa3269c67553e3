"""The whole service as it runs in production, end to end over real HTTP.

A gunicorn web server and a django-q2 cluster (`manage.py qcluster`) run as
separate processes on the test's PostgreSQL database and the local Redis
broker, with a queue name of their own. The test sets a sandbox up through
the API, follows the run until the worker completes it, finds the bare
repository under GIT_ROOT and the snapshot archive under SANDBOX_ROOT, then
deletes the sandbox through the API and finds both gone.

Needs PostgreSQL (DATABASE_URL=postgres://…) and Redis on 127.0.0.1:6379.
"""

import json
import subprocess
import time
from datetime import datetime
from pathlib import Path

import pytest

from sandboxes.models import SetupRun, Snapshot
from sandboxes.providers.base import repository_name_for
from tests.conftest import requires_postgres
from tests.processes import (
    Service,
    database_url_of_the_test_database,
    forget_queue,
    free_port,
    gunicorn_command,
    new_queue_name,
    qcluster_command,
    service_environment,
    start,
    wait_until_healthy,
)

pytestmark = [requires_postgres, pytest.mark.postgres]

RUN_TIMEOUT = 60


@pytest.fixture
def service(transactional_db, people, settings, tmp_path):
    """gunicorn and qcluster on the test database and Redis (tests/processes.py); always stopped afterwards.

    Rows are committed (transactional_db) so the other processes see them.
    """
    queue_name = new_queue_name()
    port = free_port()
    logs = tmp_path / "logs"
    env = service_environment(database_url=database_url_of_the_test_database(), queue_name=queue_name,
                              sandbox_root=settings.SANDBOX_ROOT, git_root=settings.GIT_ROOT,
                              var_dir=tmp_path / "var")
    service = Service(base_url=f"http://127.0.0.1:{port}", git_root=Path(settings.GIT_ROOT),
                      sandbox_root=Path(settings.SANDBOX_ROOT), queue_name=queue_name)
    try:
        web = start("gunicorn", gunicorn_command(port), env=env, logs=logs)
        service.processes.append(web)
        service.processes.append(start("qcluster", qcluster_command(), env=env, logs=logs))
        wait_until_healthy(service, web)
        yield service
    finally:
        service.stop()
        forget_queue(queue_name)


def test_a_sandbox_set_up_over_http_is_built_by_the_worker_and_deleted_over_http(service, people):
    alice = people.alice
    name = repository_name_for(account_name=alice.account.name, account_id=alice.account.pk)
    repository = service.git_root / f"{name}.git"

    status, body = service.call("POST", "/api/sandboxes/setup", key=alice.key, body={})
    assert status == 200, service.report(f"setup answered {status} {body}")
    assert body["status"] == "success"
    run_id = body["runId"]

    run = service.wait_for_run(alice.key, run_id, timeout=RUN_TIMEOUT)
    assert run["status"] == "COMPLETED", service.report(f"the run ended {run['status']}: {run['error']}\n{run}")
    assert run["account_id"] == str(alice.account.pk)
    assert [step["name"] for step in run["metadata"]["steps"]] == [
        "create_sandbox", "ensure_repository", "provision", "snapshot", "save_snapshot", "shutdown"]
    assert all(step["ok"] for step in run["metadata"]["steps"]), run["metadata"]["steps"]
    # The worker recorded the id of the django-q2 task that ran it.
    assert len(SetupRun.objects.get(pk=run_id).task_id) == 32

    # The bare repository exists and holds the pushed starter commit.
    assert (repository / "HEAD").is_file(), service.report(f"no bare repository at {repository}")
    head = subprocess.run(["git", "--git-dir", str(repository), "rev-parse", "--verify", "refs/heads/main"],
                          capture_output=True, text=True)
    assert head.returncode == 0, service.report(f"the repository has no main branch: {head.stderr}")
    assert run["output"]["github_repo"] == repository.resolve().as_uri()

    # The snapshot archive exists, the Snapshot row points at it, the sandbox was shut down.
    snapshot_id = run["output"]["snapshot_id"]
    archive = service.sandbox_root / "snapshots" / f"{snapshot_id}.tar.gz"
    assert archive.is_file(), service.report(f"no snapshot archive at {archive}")
    assert Snapshot.objects.get(account=alice.account).snapshot_id == snapshot_id
    assert not list((service.sandbox_root / "sandboxes").glob("*")), "a sandbox was left running"

    status, body = service.call("DELETE", "/api/sandboxes", key=alice.key, body={})
    assert status == 200, service.report(f"delete answered {status} {body}")
    assert body["status"] == "success"
    assert body["deleted_snapshot"]["snapshot_id"] == snapshot_id
    assert body["deleted_snapshot"]["github_repo"] == repository.resolve().as_uri()
    assert not repository.exists(), "the repository is still there after the delete"
    assert not archive.exists(), "the snapshot archive is still there after the delete"
    assert not Snapshot.objects.filter(account=alice.account).exists()

    status, body = service.call("DELETE", "/api/sandboxes", key=alice.key)
    assert (status, body) == (200, {"status": "success", "deleted_snapshot": None}), "deleting again is a no-op"


def test_the_readme_walk_through_sees_reads_renews_and_retries_over_http(service, people, settings):
    alice = people.alice
    retry = {"Idempotency-Key": "setup-2026-12-01-a"}

    status, headers, payload = service.request("POST", "/api/sandboxes/setup", key=alice.key, headers=retry)
    assert status == 200, service.report(f"setup answered {status} {payload!r}")
    run_id = json.loads(payload)["runId"]
    assert "Idempotent-Replayed" not in headers

    deadline, state = time.monotonic() + RUN_TIMEOUT, None
    while time.monotonic() < deadline:
        service.check_running()
        status, state = service.call("GET", "/api/sandboxes", key=alice.key)
        assert status == 200, service.report(f"GET /api/sandboxes answered {status} {state}")
        if state["state"] != "provisioning":
            break
        time.sleep(0.3)
    assert state["state"] == "ready", service.report(f"the sandbox ended {state}")
    assert state["last_run"]["id"] == run_id
    assert {"path": "workspace/README.md", "type": "blob", "size": 20} in state["filetree"]

    status, found = service.call("GET", "/api/sandboxes/file?path=workspace/README.md", key=alice.key)
    assert status == 200, service.report(f"the file read answered {status} {found}")
    assert (found["encoding"], found["size"]) == ("utf-8", 20)
    assert found["content"] == (settings.SANDBOX_TEMPLATE_DIR / "workspace" / "README.md").read_text()

    status, renewed = service.call("PATCH", "/api/sandboxes", key=alice.key, body={})
    assert status == 200, service.report(f"the renewal answered {status} {renewed}")
    assert datetime.fromisoformat(renewed["snapshot"]["expires_at"]) > datetime.fromisoformat(state["expires_at"])

    status, headers, payload = service.request("POST", "/api/sandboxes/setup", key=alice.key, headers=retry)
    assert (status, json.loads(payload)["runId"]) == (200, run_id)
    assert headers["Idempotent-Replayed"] == "true"
    assert SetupRun.objects.filter(account=alice.account).count() == 1
