"""The local sandbox backend: a folder per sandbox, snapshots as archives on disk.

Layout under SANDBOX_ROOT:

    sandboxes/<sandbox id>/workspace   the sandbox's files; commands run here
    sandboxes/<sandbox id>/home        HOME of its commands
    snapshots/<snapshot id>.tar.gz     the workspace, compressed
    snapshots/<snapshot id>.sha256     its checksum, checked on restore

For one host only: another machine cannot see these folders.
"""

import contextlib
import hashlib
import os
import secrets
import shutil
import tarfile
from collections.abc import Mapping
from pathlib import Path

from sandboxes.providers.base import (
    UNLISTED_FOLDERS,
    CommandResult,
    FileEntry,
    SandboxBackendError,
    SnapshotFileNotFound,
    SnapshotFileTooLarge,
    SnapshotInfo,
    os_reason,
)
from sandboxes.providers.process import run_command

CHUNK = 1024 * 1024


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as stream:
        while chunk := stream.read(CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def _listing(workspace: Path) -> tuple[FileEntry, ...]:
    """The folders and regular files of the workspace (not symlinks, not UNLISTED_FOLDERS), sorted by path."""
    entries = []
    for folder, subfolders, files in os.walk(workspace):
        subfolders[:] = [name for name in subfolders if name not in UNLISTED_FOLDERS]
        base = Path(folder)
        for name in subfolders:
            if not (base / name).is_symlink():
                entries.append(FileEntry(path=(base / name).relative_to(workspace).as_posix(), type="tree"))
        for name in files:
            path = base / name
            if path.is_file() and not path.is_symlink():
                entries.append(FileEntry(path=path.relative_to(workspace).as_posix(), type="blob",
                                         size=path.stat().st_size))
    return tuple(sorted(entries, key=lambda entry: entry.path))


def _checked_id(value: str, prefix: str) -> str:
    # Ids become file names: refuse anything that could leave the root.
    if not value.startswith(prefix) or not value[len(prefix):].isalnum():
        raise SandboxBackendError(f"{value!r} is not a valid id")
    return value


class LocalSandboxBackend:
    name = "local"

    def __init__(self, *, root: Path, command_timeout: float):
        self.root = Path(root)
        self.command_timeout = command_timeout

    # --- paths -------------------------------------------------------------
    def _sandbox_dir(self, sandbox_id: str) -> Path:
        return self.root / "sandboxes" / _checked_id(sandbox_id, "sbx_")

    def _workspace(self, sandbox_id: str) -> Path:
        workspace = self._sandbox_dir(sandbox_id) / "workspace"
        if not workspace.is_dir():
            raise SandboxBackendError(f"Sandbox {sandbox_id} is not running")
        return workspace

    def _archive(self, snapshot_id: str) -> Path:
        return self.root / "snapshots" / f"{_checked_id(snapshot_id, 'snap_')}.tar.gz"

    # --- interface ---------------------------------------------------------
    def create(self) -> str:
        sandbox_id = "sbx_" + secrets.token_hex(10)
        sandbox_dir = self._sandbox_dir(sandbox_id)
        try:
            (sandbox_dir / "workspace").mkdir(parents=True)
            (sandbox_dir / "home").mkdir()
        except OSError as exc:
            shutil.rmtree(sandbox_dir, ignore_errors=True)
            raise SandboxBackendError(f"Could not create a sandbox under SANDBOX_ROOT: {os_reason(exc)}",
                                      detail=str(exc)) from None
        return sandbox_id

    def write_files(self, sandbox_id: str, files: Mapping[str, bytes]) -> None:
        workspace = self._workspace(sandbox_id).resolve()
        for relative, content in files.items():
            target = (workspace / relative).resolve()
            if not target.is_relative_to(workspace):
                raise SandboxBackendError(f"{relative!r} is outside the sandbox")
            try:
                target.parent.mkdir(parents=True, exist_ok=True)
                target.write_bytes(content)
            except OSError as exc:
                raise SandboxBackendError(f"Could not write {relative}: {os_reason(exc)}", detail=str(exc)) from None

    def run(self, sandbox_id: str, argv: list[str], *, env: Mapping[str, str] | None = None) -> CommandResult:
        workspace = self._workspace(sandbox_id)
        home = {"HOME": str(workspace.parent / "home")}
        return run_command(
            argv, cwd=workspace, env={**home, **(env or {})}, timeout=self.command_timeout, error=SandboxBackendError
        )

    def snapshot(self, sandbox_id: str) -> SnapshotInfo:
        workspace = self._workspace(sandbox_id)
        snapshot_id = "snap_" + secrets.token_hex(12)
        archive = self._archive(snapshot_id)
        partial = archive.with_name(archive.name + ".partial")
        try:
            archive.parent.mkdir(parents=True, exist_ok=True)
            with tarfile.open(partial, "w:gz") as tar:
                tar.add(workspace, arcname=".")
            checksum = _sha256(partial)
            files = _listing(workspace)
            self._checksum_file(snapshot_id).write_text(checksum + "\n")
            # The archive appears under its final name only when it is whole.
            partial.rename(archive)
        except OSError as exc:
            # Clean up what was written; the cleanup may fail for the same
            # reason (the folder is not there), and must not hide the error.
            for leftover in (partial, self._checksum_file(snapshot_id)):
                with contextlib.suppress(OSError):
                    leftover.unlink(missing_ok=True)
            raise SandboxBackendError(f"Could not write snapshot {snapshot_id}: {os_reason(exc)}", detail=str(exc)) from None
        return SnapshotInfo(
            snapshot_id=snapshot_id, checksum=checksum, size_bytes=archive.stat().st_size, files=files
        )

    def _checked_archive(self, snapshot_id: str) -> Path:
        """The snapshot's archive, once its checksum matches."""
        archive = self._archive(snapshot_id)
        if not archive.is_file():
            raise SandboxBackendError(f"Snapshot {snapshot_id} does not exist")
        try:
            expected = self._checksum_file(snapshot_id).read_text().strip()
        except OSError as exc:
            raise SandboxBackendError(
                f"Snapshot {snapshot_id} cannot be checked (its checksum: {os_reason(exc)})", detail=str(exc)
            ) from None
        if _sha256(archive) != expected:
            raise SandboxBackendError(f"Snapshot {snapshot_id} is damaged (checksum mismatch)")
        return archive

    def read_file(self, snapshot_id: str, path: str, *, max_bytes: int) -> bytes:
        # One member is read from the archive; nothing is extracted to disk.
        if set(Path(path).parts) & UNLISTED_FOLDERS:
            raise SnapshotFileNotFound(f"No file {path} in snapshot {snapshot_id}")
        archive = self._checked_archive(snapshot_id)
        try:
            with tarfile.open(archive, "r:gz") as tar:
                try:
                    member = tar.getmember(f"./{path}")
                except KeyError:
                    raise SnapshotFileNotFound(f"No file {path} in snapshot {snapshot_id}") from None
                if not member.isfile():
                    raise SnapshotFileNotFound(f"No file {path} in snapshot {snapshot_id}")
                if member.size > max_bytes:
                    raise SnapshotFileTooLarge(
                        f"{path} is {member.size} bytes, more than {max_bytes}", size=member.size
                    )
                return tar.extractfile(member).read()
        except (OSError, tarfile.TarError) as exc:
            reason = os_reason(exc) if isinstance(exc, OSError) else "the archive is damaged"
            raise SandboxBackendError(f"Could not read snapshot {snapshot_id}: {reason}", detail=str(exc)) from None

    def restore(self, snapshot_id: str) -> str:
        archive = self._checked_archive(snapshot_id)
        sandbox_id = self.create()
        try:
            with tarfile.open(archive, "r:gz") as tar:
                tar.extractall(self._workspace(sandbox_id), filter="data")
        except (OSError, tarfile.TarError) as exc:
            self.stop(sandbox_id)
            reason = os_reason(exc) if isinstance(exc, OSError) else "the archive cannot be read"
            raise SandboxBackendError(f"Could not restore snapshot {snapshot_id}: {reason}", detail=str(exc)) from None
        return sandbox_id

    def _checksum_file(self, snapshot_id: str) -> Path:
        return self._archive(snapshot_id).with_suffix("").with_suffix(".sha256")

    def snapshot_exists(self, snapshot_id: str) -> bool:
        return self._archive(snapshot_id).is_file()

    def list_snapshots(self) -> list[str]:
        folder = self.root / "snapshots"
        return sorted(path.name.removesuffix(".tar.gz") for path in folder.glob("snap_*.tar.gz"))

    def delete_snapshot(self, snapshot_id: str) -> bool:
        archive = self._archive(snapshot_id)
        existed = archive.is_file()
        try:
            archive.unlink(missing_ok=True)
            self._checksum_file(snapshot_id).unlink(missing_ok=True)
        except OSError as exc:
            raise SandboxBackendError(f"Could not delete snapshot {snapshot_id}: {os_reason(exc)}", detail=str(exc)) from None
        return existed

    def stop(self, sandbox_id: str) -> None:
        sandbox_dir = self._sandbox_dir(sandbox_id)
        try:
            shutil.rmtree(sandbox_dir)
        except FileNotFoundError:
            return
        except OSError as exc:
            raise SandboxBackendError(f"Could not shut sandbox {sandbox_id} down: {os_reason(exc)}", detail=str(exc)) from None
