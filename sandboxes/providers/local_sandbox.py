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
import secrets
import shutil
import tarfile
from collections.abc import Mapping
from pathlib import Path

from sandboxes.providers.base import (
    CommandResult,
    RuntimeResource,
    SandboxBackendError,
    SandboxOwner,
    SnapshotInfo,
    os_reason,
)
from sandboxes.providers.process import run_command
from sandboxes.providers.snapshot_store import (
    LocalSnapshotStore,
    SnapshotStore,
    checked_snapshot_id,
    sha256_of,
)
from sandboxes.providers.workspace_archive import StoreBackedSnapshots, listing_of


def _checked_id(value: str, prefix: str) -> str:
    # Ids become file names: refuse anything that could leave the root.
    if not value.startswith(prefix) or not value[len(prefix):].isalnum():
        raise SandboxBackendError(f"{value!r} is not a valid id")
    return value


class LocalSandboxBackend(StoreBackedSnapshots):
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
    def create(self, *, owner: SandboxOwner | None = None) -> str:
        # A folder has no labels: the owner is recorded by the caller (the run's sandbox_id).
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

    def write_tree(self, sandbox_id: str, folder: Path) -> None:
        workspace = self._workspace(sandbox_id)
        try:
            shutil.copytree(folder, workspace, symlinks=True, dirs_exist_ok=True)
        except (OSError, shutil.Error) as exc:
            reason = os_reason(exc) if isinstance(exc, OSError) else "some files could not be copied"
            raise SandboxBackendError(f"Could not write the workspace of sandbox {sandbox_id}: {reason}",
                                      detail=str(exc)) from None

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
        members = []

        def listed(member: tarfile.TarInfo) -> tarfile.TarInfo:
            members.append(member)
            return member

        try:
            try:
                with tarfile.open(scratch, "w:gz") as tar:
                    tar.add(workspace, arcname=".", filter=listed)
                checksum = sha256_of(scratch)
                files = listing_of(members)
            except OSError as exc:
                raise SandboxBackendError(f"Could not write snapshot {snapshot_id}: {os_reason(exc)}",
                                          detail=str(exc)) from None
            size = self.store.put(snapshot_id, scratch, checksum=checksum)
        finally:
            with contextlib.suppress(OSError):
                scratch.unlink(missing_ok=True)
        return SnapshotInfo(snapshot_id=snapshot_id, checksum=checksum, size_bytes=size, files=files)

    def restore(self, snapshot_id: str, *, owner: SandboxOwner | None = None) -> str:
        checked_snapshot_id(snapshot_id)  # before a sandbox is made for it
        sandbox_id = self.create(owner=owner)
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

    def stop(self, sandbox_id: str) -> None:
        sandbox_dir = self._sandbox_dir(sandbox_id)
        try:
            shutil.rmtree(sandbox_dir)
        except FileNotFoundError:
            return
        except OSError as exc:
            raise SandboxBackendError(f"Could not shut sandbox {sandbox_id} down: {os_reason(exc)}", detail=str(exc)) from None

    # Folders have no labels to list: a sandbox's folder lives as long as the run that made it.
    def runtime_resources(self) -> list[RuntimeResource]:
        return []

    def remove_runtime_resource(self, resource: RuntimeResource) -> bool:
        raise SandboxBackendError("The local backend has no containers or volumes")
