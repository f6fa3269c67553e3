"""Many requests at once for one account, against the real server: gunicorn, PostgreSQL, a worker.

- 50 simultaneous setup requests (two gunicorn workers with 16 threads each,
  so they really meet in the database) all answer 200 with one run id; one
  run exists, and once a worker has completed it, one repository. (The
  worker starts after the burst: a run completed during it would rightly
  let a later request start a second one.)
- 50 simultaneous deletes of that sandbox all answer 200: exactly one with
  the deleted snapshot, 49 with `deleted_snapshot: null`; no 500, and
  nothing of the sandbox is left.

The rate limit is raised for the test: 50 requests of one key in a second
are what it exists to refuse (its own tests are tests/accounts/test_throttling.py).
"""

import threading
from concurrent.futures import ThreadPoolExecutor

import pytest

from sandboxes.models import SetupRun, Snapshot
from tests.conftest import requires_postgres
from tests.processes import qcluster_command

pytestmark = [requires_postgres, pytest.mark.postgres, pytest.mark.reliability]

REQUESTS = 50
RUN_TIMEOUT = 60


def all_at_once(service, method: str, path: str, key: str) -> list[tuple[int, dict]]:
    start = threading.Barrier(REQUESTS)

    def one():
        start.wait(timeout=30)
        return service.call(method, path, key=key, body={}, timeout=60)

    with ThreadPoolExecutor(max_workers=REQUESTS) as pool:
        futures = [pool.submit(one) for _ in range(REQUESTS)]
        return [future.result(timeout=120) for future in futures]


def repositories_of(service, account) -> list[str]:
    return sorted(path.name for path in service.git_root.glob(f"*{account.pk}.git"))


def test_fifty_simultaneous_setups_give_one_run_and_one_repository_and_fifty_deletes_one_deletion(
    start_service, people
):
    service = start_service(workers=2, threads=16, qcluster=False, THROTTLE_SETUP_RATE="1000/min",
                            THROTTLE_DELETE_RATE="1000/min")
    alice = people.alice

    answers = all_at_once(service, "POST", "/api/sandboxes/setup", alice.key)

    statuses = sorted(status for status, _ in answers)
    assert statuses == [200] * REQUESTS, service.report(f"setup answers: {statuses} {answers[:3]}")
    run_ids = {body["runId"] for _, body in answers}
    assert len(run_ids) == 1, run_ids
    [run_id] = run_ids
    assert list(SetupRun.objects.filter(account=alice.account).values_list("pk", flat=True)) == [run_id]

    service.start("qcluster", qcluster_command())
    run = service.wait_for_run(alice.key, run_id, timeout=RUN_TIMEOUT)
    assert run["status"] == "COMPLETED", service.report(f"the run ended {run['status']}: {run['error']}")
    assert len(repositories_of(service, alice.account)) == 1
    snapshot_id = Snapshot.objects.get(account=alice.account).snapshot_id

    answers = all_at_once(service, "DELETE", "/api/sandboxes", alice.key)

    statuses = sorted(status for status, _ in answers)
    assert statuses == [200] * REQUESTS, service.report(f"delete answers: {statuses} {answers}")
    deleted = [body["deleted_snapshot"] for _, body in answers if body["deleted_snapshot"] is not None]
    assert len(deleted) == 1, deleted
    assert deleted[0]["snapshot_id"] == snapshot_id
    assert sum(body == {"status": "success", "deleted_snapshot": None} for _, body in answers) == REQUESTS - 1
    assert not Snapshot.objects.filter(account=alice.account).exists()
    assert repositories_of(service, alice.account) == []
    assert not (service.sandbox_root / "snapshots" / f"{snapshot_id}.tar.gz").exists()
