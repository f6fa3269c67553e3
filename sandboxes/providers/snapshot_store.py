"""Where snapshots live: one archive (a .tar.gz of the workspace) per snapshot id.

Two stores behind one interface, chosen by SNAPSHOT_STORE:

- `local` (the embedded default): `SANDBOX_ROOT/snapshots/<id>.tar.gz` beside
  `<id>.sha256`, on the disk of the host. For one host only: another machine
  cannot see the folder.
- `s3`: one object per snapshot in S3-compatible object storage (AWS S3, MinIO,
  Cloudflare R2, Ceph), through boto3, so that every web and worker process on
  any host reaches every snapshot. The key is
  `<SNAPSHOT_S3_PREFIX><SANDBOX_DEPLOYMENT_ID>/<snapshot id>.tar.gz`: the key
  names the deployment (its mark), and so does the object's metadata
  (`deployment`), with the archive's SHA-256 (`sha256`) that every read checks.

An upload is one object or nothing: boto3's transfer manager sends a large
archive in parts and aborts the multipart upload when a part fails, and an
object becomes visible only when the upload completes. Each part carries its
SHA-256 (`ChecksumAlgorithm=SHA256`), which the store verifies on arrival:
https://docs.aws.amazon.com/AmazonS3/latest/userguide/checking-object-integrity.html
Transient failures (throttling, 5xx, dropped connections) are retried by
botocore's standard retry mode, with exponential backoff, a bounded number of
times: https://boto3.amazonaws.com/v1/documentation/api/latest/guide/retries.html
"""

import contextlib
import functools
import hashlib
import os
import re
import shutil
import tarfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Protocol

from sandboxes.providers.base import (
    SandboxBackendError,
    SnapshotFileNotFound,
    SnapshotFileTooLarge,
    StoredSnapshot,
    os_reason,
)

CHUNK = 1024 * 1024
ARCHIVE_SUFFIX = ".tar.gz"
SNAPSHOT_ID = re.compile(r"^snap_[A-Za-z0-9]+$")


class SnapshotStoreError(SandboxBackendError):
    """The snapshot store failed or did not answer; the message says which and why, in words."""


class SnapshotNotFound(SnapshotStoreError):
    pass


class SnapshotDamaged(SnapshotStoreError):
    """The archive read back does not match the checksum it was written with."""


def checked_snapshot_id(snapshot_id: str) -> str:
    """Ids become file names and object keys: refuse anything that could name something else."""
    if not SNAPSHOT_ID.match(snapshot_id or ""):
        raise SnapshotStoreError(f"{snapshot_id!r} is not a valid id (snapshot ids are snap_ and letters or digits)")
    return snapshot_id


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as stream:
        while chunk := stream.read(CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def read_member(archive: IO[bytes], *, path: str, max_bytes: int, snapshot_id: str) -> bytes:
    """One file of a .tar.gz read front to back from a stream (nothing is extracted, nothing seeks).

    Raises SnapshotFileNotFound / SnapshotFileTooLarge before reading the file's content.
    """
    wanted = f"./{path}"
    try:
        with tarfile.open(fileobj=archive, mode="r|gz") as tar:
            for member in tar:
                if member.name != wanted:
                    continue
                if not member.isfile():
                    break
                if member.size > max_bytes:
                    raise SnapshotFileTooLarge(f"{path} is {member.size} bytes, more than {max_bytes}",
                                               size=member.size)
                return tar.extractfile(member).read()
    except tarfile.TarError as exc:
        raise SnapshotDamaged(f"Snapshot {snapshot_id} cannot be read: the archive is damaged",
                              detail=str(exc)) from None
    raise SnapshotFileNotFound(f"No file {path} in snapshot {snapshot_id}")


class SnapshotStore(Protocol):
    name: str
    deployment_id: str

    def put(self, snapshot_id: str, source: Path, *, checksum: str) -> int:
        """Store the archive at `source` (its SHA-256 hex is `checksum`) under the id; its size in bytes.

        All or nothing: a failed put leaves nothing under the id.
        """

    def get(self, snapshot_id: str, destination: Path) -> None:
        """Write the archive to `destination`, checked against its checksum.

        Raises SnapshotNotFound, or SnapshotDamaged (and leaves no file) on a mismatch.
        """

    def read_file(self, snapshot_id: str, path: str, *, max_bytes: int) -> bytes:
        """One file of the archive, read as a stream (base.SnapshotFileNotFound / SnapshotFileTooLarge)."""

    def exists(self, snapshot_id: str) -> bool: ...

    def delete(self, snapshot_id: str) -> bool:
        """Delete this deployment's archive of that id; False when it was already gone."""

    def list(self) -> list[StoredSnapshot]:
        """Everything the store holds (under its prefix), this deployment's and not."""


# --- local -------------------------------------------------------------------------


def _link_or_copy(source: Path, target: Path) -> None:
    """A hard link when both are on one file system (nothing is written), else a copy."""
    try:
        os.link(source, target)
    except OSError:
        shutil.copyfile(source, target)


class LocalSnapshotStore:
    """Archives in a folder of this host: `<folder>/<id>.tar.gz` and `<id>.sha256`.

    The folder is this deployment's alone, so everything in it carries its mark.
    """

    name = "local"

    def __init__(self, *, folder: Path, deployment_id: str):
        self.folder = Path(folder)
        self.deployment_id = deployment_id

    def _archive(self, snapshot_id: str) -> Path:
        return self.folder / f"{checked_snapshot_id(snapshot_id)}{ARCHIVE_SUFFIX}"

    def _checksum_file(self, snapshot_id: str) -> Path:
        return self.folder / f"{checked_snapshot_id(snapshot_id)}.sha256"

    def put(self, snapshot_id: str, source: Path, *, checksum: str) -> int:
        archive = self._archive(snapshot_id)
        partial = archive.with_name(archive.name + ".partial")
        try:
            self.folder.mkdir(parents=True, exist_ok=True)
            _link_or_copy(source, partial)
            self._checksum_file(snapshot_id).write_text(checksum + "\n")
            # The archive appears under its final name only when it is whole.
            partial.rename(archive)
        except OSError as exc:
            # Clean up what was written; the cleanup may fail for the same
            # reason (the folder is not there), and must not hide the error.
            for leftover in (partial, self._checksum_file(snapshot_id)):
                with contextlib.suppress(OSError):
                    leftover.unlink(missing_ok=True)
            raise SnapshotStoreError(f"Could not write snapshot {snapshot_id}: {os_reason(exc)}",
                                     detail=str(exc)) from None
        return archive.stat().st_size

    def checked_archive(self, snapshot_id: str) -> tuple[Path, str]:
        """The archive on disk and its SHA-256, once they match (copying it to another store reads it in place)."""
        archive = self._checked_archive(snapshot_id)
        return archive, self._checksum_file(snapshot_id).read_text().strip()

    def _checked_archive(self, snapshot_id: str) -> Path:
        archive = self._archive(snapshot_id)
        if not archive.is_file():
            raise SnapshotNotFound(f"Snapshot {snapshot_id} does not exist")
        try:
            expected = self._checksum_file(snapshot_id).read_text().strip()
        except OSError as exc:
            raise SnapshotStoreError(
                f"Snapshot {snapshot_id} cannot be checked (its checksum: {os_reason(exc)})", detail=str(exc)
            ) from None
        if sha256_of(archive) != expected:
            raise SnapshotDamaged(f"Snapshot {snapshot_id} is damaged (checksum mismatch)")
        return archive

    def get(self, snapshot_id: str, destination: Path) -> None:
        archive = self._checked_archive(snapshot_id)
        try:
            _link_or_copy(archive, destination)
        except OSError as exc:
            with contextlib.suppress(OSError):
                destination.unlink(missing_ok=True)
            raise SnapshotStoreError(f"Could not read snapshot {snapshot_id}: {os_reason(exc)}",
                                     detail=str(exc)) from None

    def read_file(self, snapshot_id: str, path: str, *, max_bytes: int) -> bytes:
        archive = self._checked_archive(snapshot_id)
        try:
            with archive.open("rb") as stream:
                return read_member(stream, path=path, max_bytes=max_bytes, snapshot_id=snapshot_id)
        except OSError as exc:
            raise SnapshotStoreError(f"Could not read snapshot {snapshot_id}: {os_reason(exc)}",
                                     detail=str(exc)) from None

    def exists(self, snapshot_id: str) -> bool:
        return self._archive(snapshot_id).is_file()

    def delete(self, snapshot_id: str) -> bool:
        archive = self._archive(snapshot_id)
        existed = archive.is_file()
        try:
            archive.unlink(missing_ok=True)
            self._checksum_file(snapshot_id).unlink(missing_ok=True)
        except OSError as exc:
            raise SnapshotStoreError(f"Could not delete snapshot {snapshot_id}: {os_reason(exc)}",
                                     detail=str(exc)) from None
        return existed

    def list(self) -> list[StoredSnapshot]:
        found = sorted(path.name.removesuffix(ARCHIVE_SUFFIX) for path in self.folder.glob(f"snap_*{ARCHIVE_SUFFIX}"))
        return [StoredSnapshot(snapshot_id=snapshot_id, deployment=self.deployment_id, owned=True)
                for snapshot_id in found]


# --- S3 ----------------------------------------------------------------------------


@dataclass(frozen=True)
class S3Settings:
    bucket: str
    prefix: str = ""  # ends with "/" when set
    max_attempts: int = 5  # botocore's standard retry mode: attempts in all, first one included
    connect_timeout: float = 5
    read_timeout: float = 60
    multipart_threshold: int = 16 * 1024 * 1024
    multipart_chunksize: int = 16 * 1024 * 1024
    max_concurrency: int = 8


def _aws_environment() -> tuple[tuple[str, str], ...]:
    """The AWS_* variables boto3 reads: a client made under other ones is another client."""
    return tuple(sorted((name, value) for name, value in os.environ.items() if name.startswith("AWS_")))


@functools.lru_cache(maxsize=8)
def _s3_client(settings: S3Settings, environment: tuple[tuple[str, str], ...]):
    """One boto3 client per process and configuration (clients are thread-safe; making one takes ~0.1 s).

    `environment` is part of the cache key only: boto3 reads the variables itself.
    """
    import boto3
    from botocore.config import Config

    return boto3.session.Session().client("s3", config=Config(
        retries={"mode": "standard", "total_max_attempts": settings.max_attempts},
        connect_timeout=settings.connect_timeout,
        read_timeout=settings.read_timeout,
        max_pool_connections=max(10, 2 * settings.max_concurrency),
        # Checksums only where an operation needs one or we ask (SHA-256 on
        # upload): not every S3-compatible store accepts CRC32 trailers.
        request_checksum_calculation="when_required",
        response_checksum_validation="when_required",
    ))


class S3SnapshotStore:
    """Snapshots as objects of one bucket, through boto3.

    The endpoint, region and credentials come from boto3's own configuration
    (AWS_ENDPOINT_URL, AWS_DEFAULT_REGION, AWS_ACCESS_KEY_ID /
    AWS_SECRET_ACCESS_KEY, a profile or an instance role), so the same settings
    reach AWS S3, MinIO, Cloudflare R2 or Ceph.
    """

    name = "s3"

    def __init__(self, *, settings: S3Settings, deployment_id: str):
        from boto3.s3.transfer import TransferConfig

        self.settings = settings
        self.bucket = settings.bucket
        self.prefix = settings.prefix
        self.deployment_id = deployment_id
        self.client = _s3_client(settings, _aws_environment())
        self.transfer = TransferConfig(
            multipart_threshold=settings.multipart_threshold,
            multipart_chunksize=settings.multipart_chunksize,
            max_concurrency=settings.max_concurrency,
        )

    # --- keys ------------------------------------------------------------------------
    def key(self, snapshot_id: str) -> str:
        return f"{self.prefix}{self.deployment_id}/{checked_snapshot_id(snapshot_id)}{ARCHIVE_SUFFIX}"

    _KEY = re.compile(r"^([a-z0-9][a-z0-9-]*)/(snap_[A-Za-z0-9]+)" + re.escape(ARCHIVE_SUFFIX) + "$")

    def _stored(self, key: str) -> StoredSnapshot:
        """What a key under the prefix is: a deployment's snapshot (its mark is the key's folder), or not."""
        rest = key[len(self.prefix):]
        found = self._KEY.match(rest)
        if not found:
            return StoredSnapshot(snapshot_id=rest)
        return StoredSnapshot(snapshot_id=found.group(2), deployment=found.group(1),
                              owned=found.group(1) == self.deployment_id)

    # --- errors ----------------------------------------------------------------------
    def _error(self, action: str, exc: Exception) -> SnapshotStoreError:
        """A readable SnapshotStoreError from what boto3 raised."""
        from boto3.exceptions import S3TransferFailedError, S3UploadFailedError
        from botocore.exceptions import (
            ClientError,
            ConnectionError,
            ConnectTimeoutError,
            NoCredentialsError,
            ReadTimeoutError,
        )

        where = f"the snapshot store (bucket {self.bucket})"
        if isinstance(exc, ClientError):
            error = exc.response.get("Error", {})
            code = error.get("Code", "")
            status = exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode")
            if code in ("NoSuchKey", "404", "NotFound"):
                return SnapshotNotFound(f"Could not {action}: it does not exist", detail=str(exc))
            if code == "NoSuchBucket":
                return SnapshotStoreError(f"Could not {action}: the bucket {self.bucket} does not exist",
                                          detail=str(exc))
            if code in ("AccessDenied", "403", "InvalidAccessKeyId", "SignatureDoesNotMatch"):
                return SnapshotStoreError(f"Could not {action}: {where} refused access ({code})", detail=str(exc))
            return SnapshotStoreError(f"Could not {action}: {where} answered {status or ''} {code}".rstrip(),
                                      detail=str(exc))
        if isinstance(exc, NoCredentialsError):
            return SnapshotStoreError(f"Could not {action}: no credentials for {where} (AWS_ACCESS_KEY_ID or a role)",
                                      detail=str(exc))
        if isinstance(exc, (ConnectTimeoutError, ReadTimeoutError)):
            return SnapshotStoreError(f"Could not {action}: {where} did not answer in time", detail=str(exc))
        if isinstance(exc, ConnectionError):
            return SnapshotStoreError(f"Could not {action}: {where} did not answer", detail=str(exc))
        if isinstance(exc, (S3UploadFailedError, S3TransferFailedError)):
            cause = exc.__context__ or exc.__cause__
            if isinstance(cause, Exception) and not isinstance(cause, (S3UploadFailedError, S3TransferFailedError)):
                return self._error(action, cause)
            return SnapshotStoreError(f"Could not {action}: the transfer to {where} failed", detail=str(exc))
        if isinstance(exc, OSError):
            return SnapshotStoreError(f"Could not {action}: {os_reason(exc)}", detail=str(exc))
        return SnapshotStoreError(f"Could not {action}: {where} failed ({type(exc).__name__})", detail=str(exc))

    @contextlib.contextmanager
    def _translated(self, action: str) -> Iterator[None]:
        from boto3.exceptions import Boto3Error
        from botocore.exceptions import BotoCoreError, ClientError

        try:
            yield
        except SnapshotStoreError:
            raise
        except (BotoCoreError, ClientError, Boto3Error, OSError) as exc:
            raise self._error(action, exc) from None

    # --- interface -------------------------------------------------------------------
    def put(self, snapshot_id: str, source: Path, *, checksum: str) -> int:
        key = self.key(snapshot_id)
        extra = {
            "ChecksumAlgorithm": "SHA256",
            "ContentType": "application/gzip",
            "Metadata": {"deployment": self.deployment_id, "sha256": checksum},
        }
        with self._translated(f"write snapshot {snapshot_id}"):
            self.client.upload_file(str(source), self.bucket, key, ExtraArgs=extra, Config=self.transfer)
        return source.stat().st_size

    def _head(self, snapshot_id: str) -> dict:
        with self._translated(f"read snapshot {snapshot_id}"):
            return self.client.head_object(Bucket=self.bucket, Key=self.key(snapshot_id))

    def get(self, snapshot_id: str, destination: Path) -> None:
        head = self._head(snapshot_id)
        expected = head.get("Metadata", {}).get("sha256", "")
        try:
            with self._translated(f"read snapshot {snapshot_id}"):
                self.client.download_file(self.bucket, self.key(snapshot_id), str(destination), Config=self.transfer)
            if sha256_of(destination) != expected:
                raise SnapshotDamaged(f"Snapshot {snapshot_id} is damaged (checksum mismatch)")
        except BaseException:
            with contextlib.suppress(OSError):
                destination.unlink(missing_ok=True)
            raise

    def read_file(self, snapshot_id: str, path: str, *, max_bytes: int) -> bytes:
        # The archive is read as a stream up to the member: nothing lands on
        # disk, and a small file near the start costs little of a large
        # archive. The whole archive's SHA-256 is not checked here (that takes
        # reading all of it); the store checked each part's when it was written.
        with self._translated(f"read snapshot {snapshot_id}"):
            body = self.client.get_object(Bucket=self.bucket, Key=self.key(snapshot_id))["Body"]
            with contextlib.closing(body):
                return read_member(body, path=path, max_bytes=max_bytes, snapshot_id=snapshot_id)

    def exists(self, snapshot_id: str) -> bool:
        try:
            self._head(snapshot_id)
        except SnapshotNotFound:
            return False
        return True

    def delete(self, snapshot_id: str) -> bool:
        # S3 answers a DELETE of a missing key with 204 too: ask first.
        existed = self.exists(snapshot_id)
        with self._translated(f"delete snapshot {snapshot_id}"):
            self.client.delete_object(Bucket=self.bucket, Key=self.key(snapshot_id))
        return existed

    def list(self) -> list[StoredSnapshot]:
        found = []
        with self._translated("list the snapshots"):
            # list_objects_v2 answers 1,000 keys at a time; the paginator
            # follows the continuation tokens.
            for page in self.client.get_paginator("list_objects_v2").paginate(Bucket=self.bucket, Prefix=self.prefix):
                found += [self._stored(item["Key"]) for item in page.get("Contents", [])]
        return found
