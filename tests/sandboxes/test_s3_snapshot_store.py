"""The S3 snapshot store, run for real against moto's S3 server on 127.0.0.1 (tests/s3_server.py).

What a snapshot becomes (one object under `<prefix><deployment>/`, with the
deployment and the SHA-256 in its metadata and S3's own SHA-256 checksum),
read back from another host's backend (another SANDBOX_ROOT), multipart above
the threshold, a failed upload that leaves no object and no open multipart
upload, a damaged object refused, a store that does not answer, and a
listing of thousands of objects across continuation tokens with each
object's mark.
"""

import base64
import hashlib
import os
import socket
from concurrent.futures import ThreadPoolExecutor

import pytest

from sandboxes.models import SetupRun, Snapshot
from sandboxes.providers import get_sandbox_backend, get_snapshot_store
from sandboxes.providers.base import SandboxBackendError
from sandboxes.providers.local_sandbox import LocalSandboxBackend
from sandboxes.providers.snapshot_store import (
    S3Settings,
    S3SnapshotStore,
    SnapshotDamaged,
    SnapshotStoreError,
)
from tests.s3_server import FaultyS3Proxy

MiB = 1024 * 1024


@pytest.fixture
def store(s3_store) -> S3SnapshotStore:
    return get_snapshot_store()


def store_in_parts_of(mib: int, s3_store, *, max_attempts: int = 5) -> S3SnapshotStore:
    """The store on the test's bucket, uploading in parts of `mib` MiB above `mib` MiB."""
    return S3SnapshotStore(
        settings=S3Settings(bucket=s3_store.SNAPSHOT_S3["bucket"], max_attempts=max_attempts,
                            multipart_threshold=mib * MiB, multipart_chunksize=mib * MiB),
        deployment_id="test-deployment",
    )


def other_host(settings, tmp_path) -> LocalSandboxBackend:
    """A backend as another machine has it: the same store, a SANDBOX_ROOT of its own."""
    settings.SANDBOX_ROOT = tmp_path / "other-host"
    return get_sandbox_backend()


def test_the_factory_chooses_the_s3_store_from_the_settings(s3_store):
    store = get_snapshot_store()

    assert isinstance(store, S3SnapshotStore)
    assert store.bucket == s3_store.SNAPSHOT_S3["bucket"]
    assert get_sandbox_backend().store.name == "s3"


def test_a_snapshot_is_one_object_named_and_marked_by_the_deployment_with_its_checksum(s3_store, s3_server, store):
    backend = get_sandbox_backend()
    sandbox_id = backend.create()
    backend.write_files(sandbox_id, {"notes.txt": b"remember\n"})

    info = backend.snapshot(sandbox_id)

    client = s3_server.client()
    key = f"sandboxes/test-deployment/{info.snapshot_id}.tar.gz"
    listed = client.list_objects_v2(Bucket=store.bucket)
    assert [item["Key"] for item in listed["Contents"]] == [key]
    head = client.head_object(Bucket=store.bucket, Key=key, ChecksumMode="ENABLED")
    assert head["Metadata"] == {"deployment": "test-deployment", "sha256": info.checksum}
    body = client.get_object(Bucket=store.bucket, Key=key)["Body"].read()
    assert hashlib.sha256(body).hexdigest() == info.checksum
    assert info.size_bytes == len(body)
    # S3's own checksum of the upload (one part: the SHA-256 of the object), sent for the store to verify.
    assert head["ChecksumSHA256"] == base64.b64encode(hashlib.sha256(body).digest()).decode()
    # Nothing of the snapshot stays on the worker's disk.
    assert not list((s3_store.SANDBOX_ROOT / "sandboxes" / sandbox_id).glob("*.tar.gz"))
    assert not (s3_store.SANDBOX_ROOT / "snapshots").exists()


def test_another_host_restores_lists_and_deletes_the_snapshot(s3_store, store, tmp_path):
    backend = get_sandbox_backend()
    sandbox_id = backend.create()
    backend.write_files(sandbox_id, {"notes.txt": b"remember\n", "deep/er/file.bin": b"\x00\x01"})
    info = backend.snapshot(sandbox_id)
    backend.stop(sandbox_id)

    elsewhere = other_host(s3_store, tmp_path)
    restored = elsewhere.restore(info.snapshot_id)

    workspace = tmp_path / "other-host" / "sandboxes" / restored / "workspace"
    assert (workspace / "notes.txt").read_bytes() == b"remember\n"
    assert (workspace / "deep" / "er" / "file.bin").read_bytes() == b"\x00\x01"
    assert elsewhere.list_snapshots() == [info.snapshot_id]
    assert elsewhere.snapshot_exists(info.snapshot_id)
    elsewhere.stop(restored)
    assert list((tmp_path / "other-host" / "sandboxes").iterdir()) == []

    assert elsewhere.delete_snapshot(info.snapshot_id) is True
    assert elsewhere.delete_snapshot(info.snapshot_id) is False
    assert not backend.snapshot_exists(info.snapshot_id)
    assert backend.list_snapshots() == []


def test_a_large_snapshot_is_uploaded_in_parts_and_read_back_whole(s3_store, s3_server, tmp_path):
    store = store_in_parts_of(5, s3_store)
    source = tmp_path / "archive.tar.gz"
    source.write_bytes(os.urandom(12 * MiB))
    checksum = hashlib.sha256(source.read_bytes()).hexdigest()

    assert store.put("snap_large", source, checksum=checksum) == 12 * MiB

    head = s3_server.client().head_object(Bucket=store.bucket, Key=store.key("snap_large"))
    assert head["ETag"].strip('"').endswith("-3")  # three parts: 5 + 5 + 2 MiB
    copy = tmp_path / "copy.tar.gz"
    store.get("snap_large", copy)
    assert copy.read_bytes() == source.read_bytes()


@pytest.fixture
def part_two_refused(s3_store, s3_server, monkeypatch):
    """The store reached through a proxy that answers 500 to every upload of a multipart upload's part 2."""
    proxy = FaultyS3Proxy(s3_server.endpoint, fails=lambda method, path: method == "PUT" and "partNumber=2" in path)
    monkeypatch.setenv("AWS_ENDPOINT_URL", proxy.endpoint)
    yield proxy
    proxy.close()


def test_a_failed_multipart_upload_is_retried_then_aborted_and_leaves_no_object(
    s3_store, s3_server, part_two_refused, tmp_path
):
    store = store_in_parts_of(5, s3_store, max_attempts=3)
    source = tmp_path / "archive.tar.gz"
    source.write_bytes(os.urandom(12 * MiB))

    with pytest.raises(SnapshotStoreError, match="Could not write snapshot snap_refused") as raised:
        store.put("snap_refused", source, checksum=hashlib.sha256(source.read_bytes()).hexdigest())

    assert "answered 500 InternalError" in str(raised.value)
    # botocore's standard retry mode: three attempts in all, then the upload is given up.
    assert len(part_two_refused.refused) == 3
    client = s3_server.client()
    assert client.list_objects_v2(Bucket=store.bucket).get("Contents", []) == []
    assert client.list_multipart_uploads(Bucket=store.bucket).get("Uploads", []) == []
    assert not store.exists("snap_refused")


def test_a_transient_500_is_retried_and_the_upload_completes(s3_store, s3_server, tmp_path, monkeypatch):
    refused_once = []

    def first_part_two_only(method, path):
        if method == "PUT" and "partNumber=2" in path and not refused_once:
            refused_once.append(f"{method} {path}")
            return True
        return False

    proxy = FaultyS3Proxy(s3_server.endpoint, fails=first_part_two_only)
    monkeypatch.setenv("AWS_ENDPOINT_URL", proxy.endpoint)
    try:
        store = store_in_parts_of(5, s3_store)
        source = tmp_path / "archive.tar.gz"
        source.write_bytes(os.urandom(11 * MiB))

        store.put("snap_retried", source, checksum=hashlib.sha256(source.read_bytes()).hexdigest())
    finally:
        proxy.close()

    assert proxy.refused == refused_once
    copy = tmp_path / "copy.tar.gz"
    store.get("snap_retried", copy)
    assert copy.read_bytes() == source.read_bytes()


def test_a_damaged_object_is_refused_on_restore_and_leaves_no_sandbox(s3_store, s3_server, store):
    backend = get_sandbox_backend()
    sandbox_id = backend.create()
    backend.write_files(sandbox_id, {"notes.txt": b"remember\n"})
    info = backend.snapshot(sandbox_id)
    backend.stop(sandbox_id)
    key = store.key(info.snapshot_id)
    client = s3_server.client()
    original = client.get_object(Bucket=store.bucket, Key=key)
    damaged = bytearray(original["Body"].read())
    damaged[len(damaged) // 2] ^= 0xFF
    client.put_object(Bucket=store.bucket, Key=key, Body=bytes(damaged), Metadata=original["Metadata"])

    with pytest.raises(SnapshotDamaged, match="is damaged"):
        backend.restore(info.snapshot_id)

    assert list((s3_store.SANDBOX_ROOT / "sandboxes").iterdir()) == []


def test_restoring_a_snapshot_the_store_does_not_hold_says_so(s3_store):
    with pytest.raises(SandboxBackendError, match="does not exist"):
        get_sandbox_backend().restore("snap_0123456789abcdef01234567")
    assert list((s3_store.SANDBOX_ROOT / "sandboxes").iterdir()) == []


def test_a_bucket_that_does_not_exist_is_named_in_the_error(s3_store):
    s3_store.SNAPSHOT_S3 = {**s3_store.SNAPSHOT_S3, "bucket": "no-such-bucket-here"}
    backend = get_sandbox_backend()
    sandbox_id = backend.create()

    with pytest.raises(SnapshotStoreError, match="the bucket no-such-bucket-here does not exist"):
        backend.snapshot(sandbox_id)


@pytest.fixture
def unanswering_store(s3_store, monkeypatch):
    """The store's endpoint is a port nothing listens on; two attempts, short timeouts."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    monkeypatch.setenv("AWS_ENDPOINT_URL", f"http://127.0.0.1:{port}")
    s3_store.SNAPSHOT_S3 = {**s3_store.SNAPSHOT_S3, "max_attempts": 2, "connect_timeout": 1, "read_timeout": 1}
    return s3_store


def test_a_store_that_does_not_answer_fails_the_snapshot_with_a_readable_reason(unanswering_store):
    backend = get_sandbox_backend()
    sandbox_id = backend.create()

    with pytest.raises(SnapshotStoreError) as raised:
        backend.snapshot(sandbox_id)

    message = str(raised.value)
    assert message.startswith("Could not write snapshot snap_")
    assert message.endswith("the snapshot store (bucket %s) did not answer" % unanswering_store.SNAPSHOT_S3["bucket"])
    assert "127.0.0.1" not in message  # the endpoint is in the detail, for the log
    assert not list((unanswering_store.SANDBOX_ROOT / "sandboxes" / sandbox_id).glob("*.tar.gz"))


def test_a_setup_whose_store_does_not_answer_fails_and_saves_no_row(unanswering_store, people, api, run_queued_setups):
    api.setup(people.alice.key)

    [run] = run_queued_setups()

    assert run.status == SetupRun.Status.FAILED
    assert "did not answer" in run.error
    assert not Snapshot.objects.filter(account=people.alice.account).exists()
    # The sandbox's scratch folder is gone with the run.
    assert list((unanswering_store.SANDBOX_ROOT / "sandboxes").iterdir()) == []


def test_the_listing_follows_continuation_tokens_and_names_each_objects_mark(s3_store, s3_server, store):
    client = s3_server.client()
    ours = [f"snap_{index:024x}" for index in range(1100)]
    theirs = [f"snap_{index:024x}" for index in range(1100, 1200)]
    keys = ([store.key(snapshot_id) for snapshot_id in ours]
            + [f"sandboxes/staging/{snapshot_id}.tar.gz" for snapshot_id in theirs]
            + ["sandboxes/README.txt", "sandboxes/test-deployment/notes.txt"])
    with ThreadPoolExecutor(8) as pool:
        list(pool.map(lambda key: client.put_object(Bucket=store.bucket, Key=key, Body=b"x"), keys))
    client.put_object(Bucket=store.bucket, Key="outside-the-prefix/snap_1.tar.gz", Body=b"x")

    listed = store.list()

    assert len(listed) == len(keys) == 1202
    assert sorted(s.snapshot_id for s in listed if s.owned) == ours
    assert sorted(s.snapshot_id for s in listed if s.deployment == "staging" and not s.owned) == theirs
    unmarked = sorted(s.snapshot_id for s in listed if not s.deployment)
    assert unmarked == ["README.txt", "test-deployment/notes.txt"]
    assert get_sandbox_backend().list_snapshots() == ours
