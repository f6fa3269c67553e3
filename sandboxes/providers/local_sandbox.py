"""The local sandbox backend: a scratch folder per sandbox on the worker that runs it.

Layout under SANDBOX_ROOT:

    sandboxes/<sandbox id>/workspace   the sandbox's files; commands run here
    sandboxes/<sandbox id>/home        HOME of its commands

The folder lives as long as the run that uses it: stop() removes it. A
snapshot is the workspace as a .tar.gz, kept by the snapshot store
(snapshot_store.py): on this disk (`local`, one host) or in object storage
(`s3`), where any process on any host reads it back.
"""

import contextlib
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
    SnapshotInfo,
    os_reason,
)
from sandboxes.providers.process import run_command
from sandboxes.providers.snapshot_store import (
    LocalSnapshotStore,
    SnapshotStore,
    StoredSnapshot,
    checked_snapshot_id,
    sha256_of,
)


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

    def __init__(self, *, root: Path, command_timeout: float, store: SnapshotStore | None = None):
        self.root = Path(root)
        self.command_timeout = command_timeout
        self.store = store or LocalSnapshotStore(folder=self.root / "snapshots", deployment_id="local")

    # --- paths -------------------------------------------------------------
    def _sandbox_dir(self, sandbox_id: str) -> Path:
        return self.root / "sandboxes" / _checked_id(sandbox_id, "sbx_")

    def _workspace(self, sandbox_id: str) -> Path:
        workspace = self._sandbox_dir(sandbox_id) / "workspace"
        if not workspace.is_dir():
            raise SandboxBackendError(f"Sandbox {sandbox_id} is not running")
        return workspace

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
        # The archive is written in the sandbox's scratch folder (which stop()
        # removes), then handed to the store.
        scratch = workspace.parent / f"{snapshot_id}.tar.gz"
        try:
            try:
                with tarfile.open(scratch, "w:gz") as tar:
                    tar.add(workspace, arcname=".")
                checksum = sha256_of(scratch)
                files = _listing(workspace)
            except OSError as exc:
                raise SandboxBackendError(f"Could not write snapshot {snapshot_id}: {os_reason(exc)}",
                                          detail=str(exc)) from None
            size = self.store.put(snapshot_id, scratch, checksum=checksum)
        finally:
            with contextlib.suppress(OSError):
                scratch.unlink(missing_ok=True)
        return SnapshotInfo(snapshot_id=snapshot_id, checksum=checksum, size_bytes=size, files=files)

    def read_file(self, snapshot_id: str, path: str, *, max_bytes: int) -> bytes:
        # One member is read from the store's archive as a stream; nothing is extracted to disk.
        if set(Path(path).parts) & UNLISTED_FOLDERS:
            raise SnapshotFileNotFound(f"No file {path} in snapshot {snapshot_id}")
        return self.store.read_file(snapshot_id, path, max_bytes=max_bytes)

    def restore(self, snapshot_id: str) -> str:
        checked_snapshot_id(snapshot_id)  # before a sandbox is made for it
        sandbox_id = self.create()
        scratch = self._sandbox_dir(sandbox_id) / f"{snapshot_id}.tar.gz"
        try:
            self.store.get(snapshot_id, scratch)
            with tarfile.open(scratch, "r:gz") as tar:
                tar.extractall(self._workspace(sandbox_id), filter="data")
        except SandboxBackendError:
            self.stop(sandbox_id)
            raise
        except (OSError, tarfile.TarError) as exc:
            self.stop(sandbox_id)
            reason = os_reason(exc) if isinstance(exc, OSError) else "the archive cannot be read"
            raise SandboxBackendError(f"Could not restore snapshot {snapshot_id}: {reason}", detail=str(exc)) from None
        finally:
            with contextlib.suppress(OSError):
                scratch.unlink(missing_ok=True)
        return sandbox_id

    def snapshot_exists(self, snapshot_id: str) -> bool:
        return self.store.exists(snapshot_id)

    def stored_snapshots(self) -> list[StoredSnapshot]:
        return self.store.list()

    def list_snapshots(self) -> list[str]:
        return sorted(stored.snapshot_id for stored in self.store.list() if stored.owned)

    def delete_snapshot(self, snapshot_id: str) -> bool:
        return self.store.delete(snapshot_id)

    def stop(self, sandbox_id: str) -> None:
        sandbox_dir = self._sandbox_dir(sandbox_id)
        try:
            shutil.rmtree(sandbox_dir)
        except FileNotFoundError:
            return
        except OSError as exc:
            raise SandboxBackendError(f"Could not shut sandbox {sandbox_id} down: {os_reason(exc)}", detail=str(exc)) from None
