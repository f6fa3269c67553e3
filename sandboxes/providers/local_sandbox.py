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
import resource
import secrets
import selectors
import shutil
import socket
import subprocess
import tarfile
import time
from collections.abc import Mapping
from pathlib import Path

from sandboxes.providers import commands
from sandboxes.providers.base import (
    CommandOutput,
    CommandResult,
    CommandSpec,
    RuntimeResource,
    SandboxBackendError,
    SandboxOwner,
    SnapshotInfo,
    new_sandbox_id,
    os_reason,
)
from sandboxes.providers.process import BASE_ENV, run_command
from sandboxes.providers.snapshot_store import (
    LocalSnapshotStore,
    SnapshotStore,
    checked_snapshot_id,
    sha256_of,
)
from sandboxes.providers.workspace_archive import StoreBackedSnapshots, extractable, listing_of


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
    def create(self, *, owner: SandboxOwner | None = None, sandbox_id: str | None = None) -> str:
        # A folder has no labels: the owner is recorded by the caller (the run's sandbox_id).
        sandbox_id = sandbox_id or new_sandbox_id()
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
                tar.extractall(self._workspace(sandbox_id), filter=extractable)
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
        # Its commands still running (in the background) go with it: each leads a process group.
        commands_folder = sandbox_dir / "commands"
        for pid_file in [*commands_folder.glob("*.job"), *commands_folder.glob("*.pid")]:
            with contextlib.suppress(OSError, ValueError):
                _kill_group(int(pid_file.read_text()))
        try:
            shutil.rmtree(sandbox_dir)
        except FileNotFoundError:
            return
        except OSError as exc:
            raise SandboxBackendError(f"Could not shut sandbox {sandbox_id} down: {os_reason(exc)}", detail=str(exc)) from None

    # --- a client's commands: subprocesses of this host, no isolation (SANDBOX_LOCAL_EXEC) ----------------
    @property
    def engine(self) -> str:
        return f"local#{socket.gethostname()}"

    def _commands_folder(self, sandbox_id: str) -> Path:
        return self._sandbox_dir(sandbox_id) / "commands"

    def _command_argv(self, script: str, sandbox_id: str, spec: CommandSpec) -> list[str]:
        workdir = self._workspace(sandbox_id) / spec.cwd if spec.cwd else self._workspace(sandbox_id)
        return ["sh", "-c", script, spec.command_id, str(self._commands_folder(sandbox_id)), str(workdir),
                f"{spec.timeout_seconds:g}", *spec.argv]

    def _command_env(self, sandbox_id: str, spec: CommandSpec) -> dict[str, str]:
        return {**BASE_ENV, "HOME": str(self._sandbox_dir(sandbox_id) / "home"), **spec.env}

    def _popen(self, argv: list[str], env: dict, **streams) -> subprocess.Popen:
        try:
            # Its own session: the whole process group is killed at the deadline.
            return subprocess.Popen(argv, env=env, start_new_session=True, preexec_fn=_command_limits, **streams)
        except OSError as exc:
            raise SandboxBackendError(f"The command could not be started: {os_reason(exc)}", detail=str(exc)) from None

    def execute(self, sandbox_id: str, spec: CommandSpec, *, output_cap: int) -> CommandOutput:
        argv = self._command_argv(commands.FOREGROUND, sandbox_id, spec)
        started = time.monotonic()
        process = self._popen(argv, self._command_env(sandbox_id, spec), stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, stdin=subprocess.DEVNULL)
        output, killed = commands.CappedOutput(cap=output_cap), False
        deadline = started + spec.timeout_seconds + commands.OUTSIDE_GRACE_SECONDS
        with selectors.DefaultSelector() as streams:
            streams.register(process.stdout, selectors.EVENT_READ, "stdout")
            streams.register(process.stderr, selectors.EVENT_READ, "stderr")
            while streams.get_map():
                remaining = deadline - time.monotonic()
                if remaining <= 0 and not killed:
                    _kill_group(process.pid)
                    killed = True
                for key, _events in streams.select(timeout=max(remaining, 0.1)):
                    chunk = os.read(key.fileobj.fileno(), 65536)
                    if not chunk:
                        streams.unregister(key.fileobj)
                    output.add(key.data, chunk)
        exit_code = process.wait()
        elapsed = time.monotonic() - started
        return commands.finished_command(output, exit_code=exit_code, elapsed=elapsed,
                                         timeout_seconds=spec.timeout_seconds, killed=killed)

    def start_in_background(self, sandbox_id: str, spec: CommandSpec) -> None:
        argv = self._command_argv(commands.BACKGROUND, sandbox_id, spec)
        self._popen(argv, self._command_env(sandbox_id, spec), stdout=subprocess.DEVNULL,
                    stderr=subprocess.DEVNULL, stdin=subprocess.DEVNULL)

    def _script(self, sandbox_id: str, script: str, *arguments: str) -> subprocess.CompletedProcess:
        self._workspace(sandbox_id)  # the sandbox is running
        return subprocess.run(["sh", "-c", script, *arguments], capture_output=True, env=BASE_ENV, timeout=30,
                              check=False)

    def background_output(self, sandbox_id: str, command_id: str, *, output_cap: int) -> CommandOutput | None:
        read = self._script(sandbox_id, commands.READ_BACKGROUND, command_id, str(self._commands_folder(sandbox_id)),
                            str(output_cap + 1))
        return commands.background_command(read.stdout, read.stderr, cap=output_cap)

    def kill_command(self, sandbox_id: str, command_id: str) -> None:
        self._script(sandbox_id, commands.KILL, command_id, str(self._commands_folder(sandbox_id)))

    def is_folder(self, sandbox_id: str, relative: str) -> bool:
        workspace = self._workspace(sandbox_id).resolve()
        folder = workspace / relative
        return folder.is_dir() and not folder.is_symlink() and folder.resolve().is_relative_to(workspace)

    # Folders have no labels to list: a sandbox's folder lives as long as the run that made it.
    def runtime_resources(self) -> list[RuntimeResource]:
        return []

    def remove_runtime_resource(self, resource: RuntimeResource) -> bool:
        raise SandboxBackendError("The local backend has no containers or volumes")


# What one command of the local backend may use: it runs on the host itself.
COMMAND_MEMORY_BYTES = 2 * 1024**3
COMMAND_FILE_BYTES = 1024**3


def _command_limits() -> None:
    """In the command's process, before it starts: limits of address space and file size."""
    resource.setrlimit(resource.RLIMIT_AS, (COMMAND_MEMORY_BYTES, COMMAND_MEMORY_BYTES))
    resource.setrlimit(resource.RLIMIT_FSIZE, (COMMAND_FILE_BYTES, COMMAND_FILE_BYTES))


def _kill_group(pid: int) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pid, 9)
