"""Delete, cleanup, reconcile and file reads with the S3 snapshot store, from a host that did not take the snapshots.

Each test takes its snapshots with one SANDBOX_ROOT (the worker's disk), then
moves SANDBOX_ROOT elsewhere (another host: nothing of the first disk is
seen) and acts from there. moto's S3 server on 127.0.0.1 is the store. The
recorded listing answers without the store; a read the store cannot serve
says why. Last, the snapshots a deployment took with the local store are
copied to the bucket (`manage.py copy_snapshots_to_store`).
"""

import io
import json
from concurrent.futures import ThreadPoolExecutor
from datetime import timedelta

import pytest
from django.core.management import CommandError, call_command

from sandboxes.models import Snapshot
from sandboxes.providers import get_sandbox_backend, get_snapshot_store
from sandboxes.providers.base import SnapshotFileNotFound, SnapshotFileTooLarge
from tests.processes import free_port
from tests.sandboxes.seeded_sandboxes import seed_accounts, seed_sandbox, take_snapshot

pytestmark = pytest.mark.django_db


def keys_in(s3_server, bucket: str) -> set[str]:
    client = s3_server.client()
    keys = set()
    for page in client.get_paginator("list_objects_v2").paginate(Bucket=bucket):
        keys |= {item["Key"] for item in page.get("Contents", [])}
    return keys


def move_to_another_host(settings, tmp_path):
    settings.SANDBOX_ROOT = tmp_path / "another-host"


def command(name: str, *args) -> dict:
    out = io.StringIO()
    call_command(name, *args, "--format", "json", stdout=out, stderr=io.StringIO())
    return json.loads(out.getvalue())


def test_delete_through_the_api_removes_the_object_another_host_wrote(
    s3_store, s3_server, people, api, run_queued_setups, tmp_path
):
    api.setup(people.alice.key)
    [run] = run_queued_setups()
    key = get_snapshot_store().key(run.output["snapshot_id"])
    assert keys_in(s3_server, s3_store.SNAPSHOT_S3["bucket"]) == {key}
    # The worker's scratch space went with the run: the snapshot is only in the store.
    assert list((s3_store.SANDBOX_ROOT / "sandboxes").iterdir()) == []
    move_to_another_host(s3_store, tmp_path)

    answer = api.delete(people.alice.key)

    assert answer.status_code == 200, answer.content
    assert answer.json()["deleted_snapshot"]["snapshot_id"] == run.output["snapshot_id"]
    assert keys_in(s3_server, s3_store.SNAPSHOT_S3["bucket"]) == set()
    assert not Snapshot.objects.exists()


def test_cleanup_from_another_host_removes_the_expired_sandboxes_objects(s3_store, s3_server, people, tmp_path):
    expired = seed_accounts(3, prefix="expired")
    fresh = seed_sandbox(people.alice.account, expires_in=timedelta(days=3))
    move_to_another_host(s3_store, tmp_path)

    report = command("cleanup_sandboxes", "--expired", "--yes")

    assert report["deleted"] == 3, report
    store = get_snapshot_store()
    assert keys_in(s3_server, s3_store.SNAPSHOT_S3["bucket"]) == {store.key(fresh.snapshot_id)}
    assert not Snapshot.objects.filter(pk__in=[snapshot.pk for snapshot in expired]).exists()


def test_reconcile_lists_thousands_of_objects_and_fixes_only_this_deployments(s3_store, s3_server, people, tmp_path):
    healthy = seed_sandbox(people.carol.account)
    dangling = seed_sandbox(people.bob.account)
    store = get_snapshot_store()
    bucket = s3_store.SNAPSHOT_S3["bucket"]
    client = s3_server.client()
    client.delete_object(Bucket=bucket, Key=store.key(dangling.snapshot_id))
    orphans = [store.key(f"snap_{index:024x}") for index in range(1050)]
    others = [f"sandboxes/staging/snap_{index:024x}.tar.gz" for index in range(20)]
    unmarked = ["sandboxes/snap_0123456789abcdef01234567.tar.gz", "sandboxes/notes.txt"]
    outside = ["elsewhere/test-deployment/snap_0123456789abcdef01234567.tar.gz"]
    with ThreadPoolExecutor(8) as pool:
        list(pool.map(lambda key: client.put_object(Bucket=bucket, Key=key, Body=b"x"),
                      orphans + others + unmarked + outside))
    move_to_another_host(s3_store, tmp_path)

    report = command("reconcile_sandboxes", "--fix")

    found = report["found"]
    assert (found["orphan_snapshot"], found["not_ours_snapshot"], found["missing_snapshot"]) == (1050, 22, 1), found
    assert report["failed"] == 0, [f for f in report["findings"] if f["error"]]
    assert report["fixed"] == 1051
    left_alone = {f["subject"]: f["reason"] for f in report["findings"] if f["kind"] == "not_ours_snapshot"}
    assert left_alone["notes.txt"] == "no row points at it; it carries no deployment's mark, so it is never deleted"
    assert left_alone["snap_00000000000000000000000a"].endswith(
        "it carries the mark of deployment 'staging', not this one's, so it is never deleted"
    )
    assert keys_in(s3_server, bucket) == {store.key(healthy.snapshot_id), *others, *unmarked, *outside}
    assert not Snapshot.objects.filter(pk=dangling.pk).exists()

    again = command("reconcile_sandboxes", "--fix")

    assert (again["found"]["orphan_snapshot"], again["found"]["not_ours_snapshot"]) == (0, 22)
    assert keys_in(s3_server, bucket) == {store.key(healthy.snapshot_id), *others, *unmarked, *outside}


@pytest.fixture
def store_unreachable(s3_store, monkeypatch):
    """From now on the store's endpoint is a port nothing listens on (one attempt, short timeouts)."""

    def cut():
        monkeypatch.setenv("AWS_ENDPOINT_URL", f"http://127.0.0.1:{free_port()}")
        s3_store.SNAPSHOT_S3 = {**s3_store.SNAPSHOT_S3, "max_attempts": 1, "connect_timeout": 1}

    return cut


def test_another_host_reads_a_file_from_the_snapshot_object(s3_store, people, api, sandbox_set_up, tmp_path):
    sandbox_set_up(people.bob)
    move_to_another_host(s3_store, tmp_path)

    response = api.read_file(people.bob.key, path="README.md")

    assert response.status_code == 200, response.content
    readme = (s3_store.SANDBOX_TEMPLATE_DIR / "README.md").read_text()
    assert response.json()["content"] == readme
    assert not (tmp_path / "another-host").exists()  # read as a stream: nothing written to this host's disk


def test_the_listing_and_its_answers_need_no_store_a_read_that_does_says_why_it_failed(
    s3_store, people, api, sandbox_set_up, store_unreachable
):
    sandbox_set_up(people.bob)
    store_unreachable()

    state = api.sandbox(people.bob.key)
    missing = api.read_file(people.bob.key, path="nothing.txt")
    present = api.read_file(people.bob.key, path="README.md")

    assert state.status_code == 200
    assert "README.md" in [entry["path"] for entry in state.json()["filetree"]]
    assert missing.status_code == 404  # the recorded listing answers
    assert present.status_code == 502
    assert present.json()["error"].endswith(
        f"the snapshot store (bucket {s3_store.SNAPSHOT_S3['bucket']}) did not answer"
    )


def test_the_store_reads_one_member_and_refuses_a_missing_or_too_large_one_before_reading_it(s3_store):
    backend = get_sandbox_backend()
    sandbox_id = backend.create()
    backend.write_files(sandbox_id, {"a.txt": b"alpha", "big.bin": b"x" * 5000, "dir/b.txt": b"beta"})
    snapshot_id = backend.snapshot(sandbox_id).snapshot_id
    backend.stop(sandbox_id)

    assert backend.read_file(snapshot_id, "dir/b.txt", max_bytes=100) == b"beta"
    with pytest.raises(SnapshotFileNotFound):
        backend.read_file(snapshot_id, "dir", max_bytes=100)  # a folder
    with pytest.raises(SnapshotFileNotFound):
        backend.read_file(snapshot_id, "nothing.txt", max_bytes=100)
    with pytest.raises(SnapshotFileTooLarge) as raised:
        backend.read_file(snapshot_id, "big.bin", max_bytes=100)
    assert raised.value.size == 5000


def test_snapshots_taken_with_the_local_store_are_copied_to_the_bucket_once(s3_store, s3_server, people):
    s3_store.SNAPSHOT_STORE = "local"
    rows = seed_accounts(3, prefix="before")
    damaged = take_snapshot()
    archive = s3_store.SANDBOX_ROOT / "snapshots" / f"{damaged}.tar.gz"
    archive.write_bytes(archive.read_bytes()[:-10])
    s3_store.SNAPSHOT_STORE = "s3"

    out, err = io.StringIO(), io.StringIO()
    with pytest.raises(CommandError, match="1 snapshot\\(s\\) could not be copied"):
        call_command("copy_snapshots_to_store", stdout=out, stderr=err)

    assert out.getvalue().strip() == "Copied 3 snapshot(s) to the store, 0 already there, 1 failed"
    assert err.getvalue().strip() == f"{damaged}: Snapshot {damaged} is damaged (checksum mismatch)"
    store = get_snapshot_store()
    assert keys_in(s3_server, s3_store.SNAPSHOT_S3["bucket"]) == {store.key(row.snapshot_id) for row in rows}
    restored = get_sandbox_backend().restore(rows[0].snapshot_id)
    assert (s3_store.SANDBOX_ROOT / "sandboxes" / restored / "workspace" / "README.md").read_text() == "seeded\n"

    (s3_store.SANDBOX_ROOT / "snapshots" / f"{damaged}.tar.gz").unlink()
    again = io.StringIO()
    call_command("copy_snapshots_to_store", stdout=again, stderr=io.StringIO())
    assert again.getvalue().strip() == "Copied 0 snapshot(s) to the store, 3 already there, 0 failed"


def test_copying_to_the_local_store_is_refused(people):
    with pytest.raises(CommandError, match="SNAPSHOT_STORE is local: set SNAPSHOT_STORE=s3"):
        call_command("copy_snapshots_to_store", stdout=io.StringIO())
