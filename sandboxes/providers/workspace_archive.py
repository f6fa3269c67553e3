"""A sandbox's workspace as a tar archive: the snapshot format, its listing, and archives handed to a sandbox.

A snapshot is a .tar.gz of the workspace whose members are named `./<path>`,
"." being the workspace itself (what `tarfile.add(workspace, arcname=".")`
writes). Every backend writes that format, so a snapshot taken by one restores,
lists and serves files on another, and the snapshot store never looks inside.

Archives handed to a container are rewritten member by member, as streams
(nothing is extracted on the worker): owned by the sandbox's user, and only
folders, regular files and links; a device node or a FIFO in a snapshot never
reaches a sandbox.
"""

import hashlib
import io
import tarfile
import time
from collections.abc import Callable, Iterable, Iterator, Mapping
from pathlib import Path
from typing import IO

from sandboxes.providers.base import UNLISTED_FOLDERS, FileEntry, SnapshotFileNotFound
from sandboxes.providers.snapshot_store import SnapshotStore, StoredSnapshot

WORKSPACE_MEMBER = "."


def listing_of(members: Iterable[tarfile.TarInfo]) -> tuple[FileEntry, ...]:
    """The folders and regular files among snapshot members (not links, not UNLISTED_FOLDERS), sorted by path."""
    entries = []
    for member in members:
        path = member.name.removeprefix("./")
        if member.name == WORKSPACE_MEMBER or set(path.split("/")) & UNLISTED_FOLDERS:
            continue
        if member.isdir():
            entries.append(FileEntry(path=path, type="tree"))
        elif member.isreg():
            entries.append(FileEntry(path=path, type="blob", size=member.size))
    return tuple(sorted(entries, key=lambda entry: entry.path))


class _HashingWriter(io.RawIOBase):
    """A file that hashes what is written to it (the archive's SHA-256 without reading it back)."""

    def __init__(self, target: IO[bytes]):
        self.target = target
        self.digest = hashlib.sha256()
        self.size = 0

    def writable(self) -> bool:
        return True

    def write(self, data) -> int:
        self.digest.update(data)
        self.size += len(data)
        return self.target.write(data)


class ChunkStream(io.RawIOBase):
    """An iterator of byte chunks (the Docker SDK's get_archive) read as a file, for tarfile's stream mode."""

    def __init__(self, chunks: Iterable[bytes]):
        self._chunks: Iterator[bytes] = iter(chunks)
        self._pending = b""

    def readable(self) -> bool:
        return True

    def readinto(self, buffer) -> int:
        while not self._pending:
            try:
                self._pending = next(self._chunks)
            except StopIteration:
                return 0
        count = min(len(buffer), len(self._pending))
        buffer[:count] = self._pending[:count]
        self._pending = self._pending[count:]
        return count


def _kept(member: tarfile.TarInfo) -> bool:
    return member.isdir() or member.isreg() or member.issym() or member.islnk()


def write_snapshot_archive(
    members: Iterable[tuple[tarfile.TarInfo, IO[bytes] | None]], destination: Path
) -> tuple[str, tuple[FileEntry, ...]]:
    """Write snapshot members (named "." and "./<path>") to a .tar.gz; its SHA-256 and listing."""
    written = []
    with destination.open("wb") as raw:
        hashing = _HashingWriter(raw)
        with tarfile.open(fileobj=hashing, mode="w|gz") as tar:
            for member, content in members:
                tar.addfile(member, content)
                written.append(member)
    return hashing.digest.hexdigest(), listing_of(written)


def snapshot_members_of(stream: IO[bytes], *, top: str) -> Iterator[tuple[tarfile.TarInfo, IO[bytes] | None]]:
    """The members of a folder's archive (`top`, `top/<path>`: what `docker cp` gives) renamed as a snapshot's."""
    with tarfile.open(fileobj=stream, mode="r|*") as tar:
        for member in tar:
            if not _kept(member):
                continue
            if member.name == top:
                member.name = WORKSPACE_MEMBER
            elif member.name.startswith(top + "/"):
                member.name = "./" + member.name[len(top) + 1:]
            else:
                continue
            if member.islnk():
                if not member.linkname.startswith(top + "/"):
                    continue
                member.linkname = "./" + member.linkname[len(top) + 1:]
            yield member, tar.extractfile(member) if member.isreg() else None


def extractable(member: tarfile.TarInfo, destination: str) -> tarfile.TarInfo | None:
    """A tarfile extraction filter for a workspace's archive: what `tarfile.data_filter` lets through, and
    nothing else, without failing the whole archive (a link to an absolute path, say, is left out)."""
    if not _kept(member):
        return None
    try:
        return tarfile.data_filter(member, destination)
    except tarfile.FilterError:
        return None


def owned_by(uid: int, gid: int) -> Callable[[tarfile.TarInfo], tarfile.TarInfo | None]:
    """A tarfile filter: the member owned by uid:gid, or None for what never enters a sandbox (devices, FIFOs)."""

    def owned(member: tarfile.TarInfo) -> tarfile.TarInfo | None:
        if not _kept(member):
            return None
        member.uid, member.gid, member.uname, member.gname = uid, gid, "", ""
        return member

    return owned


def archive_for_sandbox(source: IO[bytes], destination: IO[bytes], *, uid: int, gid: int) -> None:
    """Rewrite an archive (a snapshot: any compression) as a plain tar of the members a sandbox may hold, owned by uid:gid."""
    owned = owned_by(uid, gid)
    with tarfile.open(fileobj=source, mode="r|*") as read, tarfile.open(fileobj=destination, mode="w|") as write:
        for member in read:
            if owned(member) is not None:
                write.addfile(member, read.extractfile(member) if member.isreg() else None)


def folder_for_sandbox(folder: Path, destination: IO[bytes], *, uid: int, gid: int) -> None:
    """A plain tar of a folder's content (members "." and "./<path>"), owned by uid:gid."""
    with tarfile.open(fileobj=destination, mode="w|") as tar:
        tar.add(folder, arcname=WORKSPACE_MEMBER, filter=owned_by(uid, gid))


def files_for_sandbox(files: Mapping[str, bytes], destination: IO[bytes], *, uid: int, gid: int) -> None:
    """A plain tar of files (relative path → content) and the folders that hold them, owned by uid:gid."""
    folders = sorted({str(parent) for relative in files for parent in Path(relative).parents if str(parent) != "."})
    now = int(time.time())
    with tarfile.open(fileobj=destination, mode="w|") as tar:
        for folder in folders:
            member = tarfile.TarInfo(f"./{folder}")
            member.type, member.mode, member.uid, member.gid, member.mtime = tarfile.DIRTYPE, 0o755, uid, gid, now
            tar.addfile(member)
        for relative, content in files.items():
            member = tarfile.TarInfo(f"./{relative}")
            member.size, member.mode, member.uid, member.gid, member.mtime = len(content), 0o644, uid, gid, now
            tar.addfile(member, io.BytesIO(content))


class StoreBackedSnapshots:
    """The snapshot half of a sandbox backend: every backend keeps its snapshots in the snapshot store."""

    store: SnapshotStore

    def read_file(self, snapshot_id: str, path: str, *, max_bytes: int) -> bytes:
        # One member is read from the store's archive as a stream; nothing is extracted to disk.
        if set(Path(path).parts) & UNLISTED_FOLDERS:
            raise SnapshotFileNotFound(f"No file {path} in snapshot {snapshot_id}")
        return self.store.read_file(snapshot_id, path, max_bytes=max_bytes)

    def snapshot_exists(self, snapshot_id: str) -> bool:
        return self.store.exists(snapshot_id)

    def stored_snapshots(self) -> list[StoredSnapshot]:
        return self.store.list()

    def list_snapshots(self) -> list[str]:
        return sorted(stored.snapshot_id for stored in self.store.list() if stored.owned)

    def delete_snapshot(self, snapshot_id: str) -> bool:
        return self.store.delete(snapshot_id)

