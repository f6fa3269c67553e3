"""The docker sandbox backend: a locked-down container per sandbox, through the Docker SDK for Python.

The only module that imports `docker`. The engine is the one Docker's own
environment names (DOCKER_HOST, DOCKER_TLS_VERIFY, DOCKER_CERT_PATH): the local
socket by default, a remote engine over TLS the same way.

A sandbox is a container of SANDBOX_IMAGE with its workspace at /workspace, a
volume of its own made and removed with the container (a tmpfs there would not
take `put_archive` under a read-only root). Safe by default, whatever the image says:

- the user SANDBOX_USER (never root), every capability dropped,
  no-new-privileges, a read-only root file system, /tmp a small tmpfs
  (noexec, nosuid, nodev);
- no network but loopback (SANDBOX_NETWORK=none), or a named network an
  operator made for sandboxes; never the host's;
- memory equal to memory+swap (no swap), CPUs, a pids limit, an init process
  (tini) as PID 1, so no zombie outlives a command;
- never privileged, never a mounted Docker socket; SANDBOX_OCI_RUNTIME (gVisor's
  runsc, say) is passed through.

Files go in with `put_archive` and come out with `get_archive`, as streams
rewritten member by member on the worker (workspace_archive.py): a snapshot
has the same format and checksum as the local backend's. Credentials never
enter a container: git runs on the worker (the setup pipeline).

Every container and volume carries labels: this deployment's mark, the
account, the sandbox id, the run or live sandbox that holds it and when it must be gone.
Reconcile lists them by those labels and removes only this deployment's.
https://docs.docker.com/reference/api/engine/version/v1.41/
"""

import contextlib
import os
import secrets
import socket
import tempfile
import threading
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

import docker
import docker.errors
import requests.exceptions
from docker.types import Mount

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
from sandboxes.providers.snapshot_store import SnapshotStore, checked_snapshot_id
from sandboxes.providers.workspace_archive import (
    ChunkStream,
    StoreBackedSnapshots,
    archive_for_sandbox,
    files_for_sandbox,
    folder_for_sandbox,
    snapshot_members_of,
    write_snapshot_archive,
)

WORKSPACE = "/workspace"
# The engine's API version the backend speaks: Docker 20.10 and every later
# engine answer it, and naming it spares a round trip to ask.
API_VERSION = "1.41"
DEFAULT_SOCKET = "unix:///var/run/docker.sock"
LABEL_PREFIX = "sandbox-service."
DEPLOYMENT_LABEL = LABEL_PREFIX + "deployment"
ACCOUNT_LABEL = LABEL_PREFIX + "account"
SANDBOX_LABEL = LABEL_PREFIX + "sandbox"
HOLDER_LABEL = LABEL_PREFIX + "holder"
EXPIRES_LABEL = LABEL_PREFIX + "expires-at"
# The container's own process: it only keeps the container alive for the
# commands run in it, and ends at once on SIGTERM (tini forwards it).
KEEP_ALIVE = ["sleep", "infinity"]
# Removing a sandbox is tried again while the engine does not answer (a
# restart takes a second or two): what a run made must not outlive it.
REMOVE_ATTEMPTS = 4
REMOVE_BACKOFF_SECONDS = 0.5
# A client's command keeps its pid and background output here: outside the
# workspace, so no snapshot holds them.
COMMANDS_FOLDER = "/tmp/.commands"
SPOOL_BYTES = 8 * 1024 * 1024
SPOOL_CHUNK = 1024 * 1024


@dataclass(frozen=True)
class DockerSandboxSettings:
    image: str
    user: str  # "uid:gid"
    network: str
    memory_bytes: int
    nano_cpus: int
    pids: int
    tmp_bytes: int
    oci_runtime: str
    engine_timeout: int

    @property
    def uid_gid(self) -> tuple[int, int]:
        uid, _, gid = self.user.partition(":")
        return int(uid), int(gid or uid)


def _first_line(text: str) -> str:
    return (text or "").strip().splitlines()[0] if (text or "").strip() else ""


def _engine_reason(exc: Exception, *, timeout: int) -> str | None:
    """What an engine failure means, in words; None when it is not one of those we name."""
    if isinstance(exc, requests.exceptions.Timeout):
        return f"the Docker engine did not answer within {timeout} s"
    if isinstance(exc, requests.exceptions.ConnectionError | ConnectionError | FileNotFoundError):
        return "the Docker engine does not answer (DOCKER_HOST, or the local socket)"
    if isinstance(exc, docker.errors.DockerException) and not isinstance(exc, docker.errors.APIError):
        text = str(exc)
        if "Connection" in text or "connect" in text or "No such file" in text:
            return "the Docker engine does not answer (DOCKER_HOST, or the local socket)"
        return "the Docker engine's settings (DOCKER_HOST, DOCKER_TLS_VERIFY, DOCKER_CERT_PATH) cannot be used"
    if isinstance(exc, docker.errors.APIError):
        explanation = str(exc.explanation or exc)
        if "no space left on device" in explanation.lower():
            return "the Docker engine's disk is full"
    return None


def engine_address() -> str:
    """The engine this process reaches: DOCKER_HOST; a local socket is this host's own, so it names the host."""
    address = os.environ.get("DOCKER_HOST") or DEFAULT_SOCKET
    return f"{address}#{socket.gethostname()}" if address.startswith("unix://") else address


def _parse_time(value: str) -> datetime | None:
    try:
        return datetime.fromisoformat(value) if value else None
    except ValueError:
        return None


class DockerSandboxBackend(StoreBackedSnapshots):
    name = "docker"

    def __init__(self, *, settings: DockerSandboxSettings, store: SnapshotStore, scratch: Path,
                 deployment_id: str, command_timeout: float, engine: str = ""):
        """`engine`: the engine's address (a live sandbox's row records it); "" is DOCKER_HOST's."""
        self._engine = engine
        self.settings = settings
        self.store = store
        self.scratch = Path(scratch)  # the worker's folder for archives on their way to or from the store
        self.deployment_id = deployment_id
        self.command_timeout = command_timeout
        self._client = None

    # --- the engine ----------------------------------------------------------
    @property
    def api(self) -> docker.APIClient:
        if self._client is None:
            with self._translated("reach the engine"):
                options = docker.utils.kwargs_from_env()  # DOCKER_HOST, DOCKER_TLS_VERIFY, DOCKER_CERT_PATH
                if self._engine and self._engine != engine_address():
                    if self._engine.startswith("unix://"):
                        host = self._engine.partition("#")[2]
                        raise SandboxBackendError(f"The sandbox is held by the Docker engine of host {host}, "
                                                  "which this server does not reach (set DOCKER_HOST)")
                    options["base_url"] = self._engine  # another engine, with the same TLS settings
                self._client = docker.DockerClient(version=API_VERSION, timeout=self.settings.engine_timeout,
                                                   **options)
        return self._client.api

    @property
    def engine(self) -> str:
        return self._engine or engine_address()

    @contextlib.contextmanager
    def _translated(self, action: str, sandbox_id: str = "") -> Iterator[None]:
        """Docker's and requests' exceptions as SandboxBackendError, with a sentence a client can act on."""
        try:
            yield
        except SandboxBackendError:
            raise
        except docker.errors.ImageNotFound as exc:
            raise SandboxBackendError(
                f"The sandbox image {self.settings.image!r} (SANDBOX_IMAGE) is not on the Docker engine; build it "
                "(docker/sandbox.Dockerfile) or set SANDBOX_IMAGE to an image the engine has",
                detail=str(exc)) from None
        except docker.errors.NotFound as exc:
            subject = f"Sandbox {sandbox_id}" if sandbox_id else "The sandbox"
            raise SandboxBackendError(f"{subject} is not running (its container is gone)", detail=str(exc)) from None
        except (docker.errors.DockerException, requests.exceptions.RequestException, OSError) as exc:
            reason = _engine_reason(exc, timeout=self.settings.engine_timeout)
            if reason is None and isinstance(exc, docker.errors.APIError):
                explanation = _first_line(str(exc.explanation or ""))
                # The engine's own words, unless they name its folders.
                said = f": {explanation}" if explanation and "/" not in explanation else ""
                reason = f"the Docker engine refused (HTTP {exc.status_code}){said}"
            elif reason is None:
                reason = os_reason(exc) if isinstance(exc, OSError) else type(exc).__name__
            raise SandboxBackendError(f"Could not {action}: {reason}", detail=repr(exc)) from None

    def ping(self) -> None:
        """Raise SandboxBackendError unless the engine answers and holds SANDBOX_IMAGE."""
        with self._translated("start sandboxes"):
            self.api.ping()
            self.api.inspect_image(self.settings.image)

    # --- names and labels ------------------------------------------------------
    def _container_name(self, sandbox_id: str) -> str:
        return f"{self.deployment_id}-{self._checked_id(sandbox_id)}"

    @staticmethod
    def _checked_id(sandbox_id: str) -> str:
        if not sandbox_id.startswith("sbx_") or not sandbox_id[4:].isalnum():
            raise SandboxBackendError(f"{sandbox_id!r} is not a valid id")
        return sandbox_id

    def _labels(self, sandbox_id: str, owner: SandboxOwner) -> dict[str, str]:
        labels = {
            DEPLOYMENT_LABEL: self.deployment_id,
            SANDBOX_LABEL: sandbox_id,
            ACCOUNT_LABEL: str(owner.account_id or ""),
            HOLDER_LABEL: owner.holder,
        }
        if owner.expires_at is not None:
            labels[EXPIRES_LABEL] = owner.expires_at.isoformat()
        return labels

    def _host_config(self, labels: dict[str, str]) -> dict:
        settings = self.settings
        return self.api.create_host_config(
            # A volume of its own, made with the container and removed with it
            # (remove_container's v), carrying the container's labels.
            mounts=[Mount(target=WORKSPACE, source=None, type="volume", labels=labels)],
            read_only=True,
            cap_drop=["ALL"],
            security_opt=["no-new-privileges"],
            tmpfs={"/tmp": f"rw,noexec,nosuid,nodev,size={settings.tmp_bytes}"},
            network_mode=settings.network,
            mem_limit=settings.memory_bytes,
            memswap_limit=settings.memory_bytes,
            nano_cpus=settings.nano_cpus,
            pids_limit=settings.pids,
            init=True,
            privileged=False,
            runtime=settings.oci_runtime or None,
        )

    # --- interface -----------------------------------------------------------
    def create(self, *, owner: SandboxOwner | None = None, sandbox_id: str | None = None) -> str:
        sandbox_id = sandbox_id or new_sandbox_id()
        labels = self._labels(sandbox_id, owner or SandboxOwner())
        try:
            with self._translated("start a sandbox", sandbox_id):
                container = self.api.create_container(
                    self.settings.image,
                    command=KEEP_ALIVE,
                    name=self._container_name(sandbox_id),
                    user=self.settings.user,
                    working_dir=WORKSPACE,
                    labels=labels,
                    # With no network, none is set up at all: the engine then skips
                    # its network hook, a tenth of a second of every start.
                    network_disabled=self.settings.network == "none",
                    host_config=self._host_config(labels),
                )
                self.api.start(container["Id"])
        except SandboxBackendError:
            with contextlib.suppress(SandboxBackendError):
                self.stop(sandbox_id)
            raise
        return sandbox_id

    def _running_container(self, sandbox_id: str) -> str:
        """The container's name once it is known to run; a readable reason when it died."""
        name = self._container_name(sandbox_id)
        state = self.api.inspect_container(name)["State"]
        if state.get("Running") and not state.get("Paused"):
            return name
        if state.get("OOMKilled"):
            reason = "it ran out of memory (SANDBOX_MEMORY)"
        elif state.get("ExitCode") == 137:
            reason = "it was killed"
        else:
            reason = f"it exited with status {state.get('ExitCode')}"
        raise SandboxBackendError(f"The container of sandbox {sandbox_id} stopped unexpectedly: {reason}")

    def _put(self, sandbox_id: str, write) -> None:
        """Hand the sandbox an archive that `write(file)` makes: spooled, then streamed to the engine."""
        uid, gid = self.settings.uid_gid
        with tempfile.SpooledTemporaryFile(max_size=SPOOL_BYTES, dir=self._scratch()) as archive:
            write(archive, uid=uid, gid=gid)
            archive.seek(0)
            container = self._running_container(sandbox_id)
            # Sent in chunks: handed the file itself, requests would ask for its
            # fileno(), which writes a spooled archive out to disk.
            chunks = iter(lambda: archive.read(SPOOL_CHUNK), b"")
            if not self.api.put_archive(container, WORKSPACE, chunks):
                raise SandboxBackendError(f"The Docker engine did not take the files of sandbox {sandbox_id}")

    def write_files(self, sandbox_id: str, files: Mapping[str, bytes]) -> None:
        for relative in files:
            parts = Path(relative).parts
            if Path(relative).is_absolute() or ".." in parts or not parts:
                raise SandboxBackendError(f"{relative!r} is outside the sandbox")
        with self._translated(f"write files into sandbox {sandbox_id}", sandbox_id):
            self._put(sandbox_id, lambda archive, **owner: files_for_sandbox(files, archive, **owner))

    def write_tree(self, sandbox_id: str, folder: Path) -> None:
        with self._translated(f"write the workspace of sandbox {sandbox_id}", sandbox_id):
            self._put(sandbox_id, lambda archive, **owner: folder_for_sandbox(folder, archive, **owner))

    def run(self, sandbox_id: str, argv: list[str], *, env: Mapping[str, str] | None = None) -> CommandResult:
        # The limit holds inside the container too: `timeout` kills the process there.
        seconds = f"{self.command_timeout:g}"
        with self._translated(f"run `{argv[0]}` in sandbox {sandbox_id}", sandbox_id):
            container = self._running_container(sandbox_id)
            result = self.api.exec_create(
                container, ["timeout", "-s", "KILL", seconds, *argv], user=self.settings.user,
                workdir=WORKSPACE, environment=dict(env or {}),
            )
            output = self.api.exec_start(result["Id"], demux=True)
            exit_code = self.api.exec_inspect(result["Id"])["ExitCode"]
        stdout, stderr = ((part or b"").decode("utf-8", "replace") for part in (output or (b"", b"")))
        if exit_code == 137:
            raise SandboxBackendError(f"`{' '.join(argv[:2])}` did not finish within {seconds} s")
        if exit_code != 0:
            raise SandboxBackendError(f"`{' '.join(argv[:2])}` failed with exit status {exit_code}",
                                      detail=(stderr or stdout)[-500:])
        return CommandResult(exit_code=exit_code, stdout=stdout, stderr=stderr)

    # --- a client's commands ----------------------------------------------------------
    def _exec(self, container: str, argv: list[str], *, env: Mapping[str, str] | None = None,
              workdir: str = WORKSPACE) -> str:
        return self.api.exec_create(container, argv, user=self.settings.user, workdir=workdir,
                                    environment=dict(env or {}))["Id"]

    def _exec_in_running(self, sandbox_id: str, argv: list[str], *, env: Mapping[str, str] | None = None) -> str:
        """An exec in the sandbox's container; asked without looking first (the engine refuses one in a
        container that is not running: only then is it inspected, for the reason)."""
        try:
            return self._exec(self._container_name(sandbox_id), argv, env=env)
        except docker.errors.APIError as exc:
            if exc.status_code == 409:
                self._running_container(sandbox_id)
            raise

    def _script(self, sandbox_id: str, script: str, *arguments: str) -> tuple[int, bytes, bytes]:
        """Run one of commands.py's programs; its exit status, stdout and stderr."""
        exec_id = self._exec_in_running(sandbox_id, ["sh", "-c", script, *arguments])
        stdout, stderr = self.api.exec_start(exec_id, demux=True) or (b"", b"")
        return self.api.exec_inspect(exec_id)["ExitCode"], stdout or b"", stderr or b""

    def _command_argv(self, script: str, spec: CommandSpec) -> list[str]:
        workdir = f"{WORKSPACE}/{spec.cwd}" if spec.cwd else WORKSPACE
        return ["sh", "-c", script, spec.command_id, COMMANDS_FOLDER, workdir, f"{spec.timeout_seconds:g}",
                *spec.argv]

    def execute(self, sandbox_id: str, spec: CommandSpec, *, output_cap: int) -> CommandOutput:
        output = commands.CappedOutput(cap=output_cap)
        killed = threading.Event()

        def kill_at_the_deadline():
            killed.set()
            with contextlib.suppress(SandboxBackendError):
                self.kill_command(sandbox_id, spec.command_id)

        deadline = threading.Timer(spec.timeout_seconds + commands.OUTSIDE_GRACE_SECONDS, kill_at_the_deadline)
        with self._translated(f"run a command in sandbox {sandbox_id}", sandbox_id):
            exec_id = self._exec_in_running(sandbox_id, self._command_argv(commands.FOREGROUND, spec), env=spec.env)
            started = time.monotonic()
            deadline.start()
            try:
                for stdout, stderr in self.api.exec_start(exec_id, stream=True, demux=True):
                    output.add("stdout", stdout)
                    output.add("stderr", stderr)
            finally:
                deadline.cancel()
            elapsed = time.monotonic() - started
            exit_code = self.api.exec_inspect(exec_id)["ExitCode"]
        finished = commands.finished_command(output, exit_code=exit_code, elapsed=elapsed,
                                             timeout_seconds=spec.timeout_seconds, killed=killed.is_set())
        if finished.timed_out and not killed.is_set():
            # The engine ends the stream when the process it started ends; what
            # that process started in the background is killed with its group.
            self.kill_command(sandbox_id, spec.command_id)
        return finished

    def start_in_background(self, sandbox_id: str, spec: CommandSpec) -> None:
        with self._translated(f"start a command in sandbox {sandbox_id}", sandbox_id):
            exec_id = self._exec_in_running(sandbox_id, self._command_argv(commands.BACKGROUND, spec), env=spec.env)
            self.api.exec_start(exec_id, detach=True)

    def background_output(self, sandbox_id: str, command_id: str, *, output_cap: int) -> CommandOutput | None:
        with self._translated(f"read a command of sandbox {sandbox_id}", sandbox_id):
            _status, stdout, stderr = self._script(sandbox_id, commands.READ_BACKGROUND, command_id, COMMANDS_FOLDER,
                                                   str(output_cap + 1))
        return commands.background_command(stdout, stderr, cap=output_cap)

    def kill_command(self, sandbox_id: str, command_id: str) -> None:
        with self._translated(f"kill a command of sandbox {sandbox_id}", sandbox_id):
            self._script(sandbox_id, commands.KILL, command_id, COMMANDS_FOLDER)

    def is_folder(self, sandbox_id: str, relative: str) -> bool:
        with self._translated(f"look into sandbox {sandbox_id}", sandbox_id):
            status, _out, _err = self._script(sandbox_id, commands.IS_FOLDER, f"{WORKSPACE}/{relative}")
        return status == 0

    def _scratch(self) -> Path:
        try:
            self.scratch.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise SandboxBackendError(f"Could not make the scratch folder (SANDBOX_ROOT): {os_reason(exc)}",
                                      detail=str(exc)) from None
        return self.scratch

    def snapshot(self, sandbox_id: str) -> SnapshotInfo:
        snapshot_id = "snap_" + secrets.token_hex(12)
        archive = self._scratch() / f"{snapshot_id}.tar.gz"
        try:
            with self._translated(f"take a snapshot of sandbox {sandbox_id}", sandbox_id):
                container = self._running_container(sandbox_id)
                chunks, _stat = self.api.get_archive(container, WORKSPACE)
                members = snapshot_members_of(ChunkStream(chunks), top=Path(WORKSPACE).name)
                checksum, files = write_snapshot_archive(members, archive)
                # A container that died while its archive was read gives a short one.
                self._running_container(sandbox_id)
            size = self.store.put(snapshot_id, archive, checksum=checksum)
        finally:
            with contextlib.suppress(OSError):
                archive.unlink(missing_ok=True)
        return SnapshotInfo(snapshot_id=snapshot_id, checksum=checksum, size_bytes=size, files=files)

    def restore(self, snapshot_id: str, *, owner: SandboxOwner | None = None) -> str:
        checked_snapshot_id(snapshot_id)  # before a sandbox is made for it
        archive = self._scratch() / f"{snapshot_id}-{secrets.token_hex(4)}.tar.gz"
        try:
            self.store.get(snapshot_id, archive)
            sandbox_id = self.create(owner=owner)
            try:
                with self._translated(f"restore snapshot {snapshot_id}", sandbox_id), archive.open("rb") as source:
                    self._put(sandbox_id, lambda target, **ids: archive_for_sandbox(source, target, **ids))
            except Exception:
                with contextlib.suppress(SandboxBackendError):
                    self.stop(sandbox_id)
                raise
        finally:
            with contextlib.suppress(OSError):
                archive.unlink(missing_ok=True)
        return sandbox_id

    def stop(self, sandbox_id: str) -> None:
        container = self._container_name(sandbox_id)
        self._remove(lambda: self.api.remove_container(container, force=True, v=True), f"sandbox {sandbox_id}")

    def _remove(self, remove, what: str) -> bool:
        """Remove a container or volume; False when it was gone. Tried again while the engine does not answer."""
        for attempt in range(REMOVE_ATTEMPTS):
            try:
                with self._translated(f"remove {what}"):
                    try:
                        remove()
                    except docker.errors.NotFound:
                        return False
                return True
            except SandboxBackendError as exc:
                engine_down = "does not answer" in str(exc) or "did not answer" in str(exc)
                conflict = "HTTP 409" in str(exc)  # a removal already in progress
                if attempt == REMOVE_ATTEMPTS - 1 or not (engine_down or conflict):
                    raise
                time.sleep(REMOVE_BACKOFF_SECONDS * 2**attempt)
        raise AssertionError("unreachable")

    # --- what reconcile sees ---------------------------------------------------
    def _resource(self, kind: str, name: str, labels: Mapping[str, str] | None) -> RuntimeResource:
        labels = labels or {}
        deployment = labels.get(DEPLOYMENT_LABEL, "")
        return RuntimeResource(
            kind=kind,
            name=name,
            sandbox_id=labels.get(SANDBOX_LABEL, ""),
            account_id=labels.get(ACCOUNT_LABEL, ""),
            holder=labels.get(HOLDER_LABEL, ""),
            expires_at=_parse_time(labels.get(EXPIRES_LABEL, "")),
            deployment=deployment,
            owned=deployment == self.deployment_id,
        )

    def runtime_resources(self) -> list[RuntimeResource]:
        """Every container (running or not) and volume that carries a deployment's mark, this one's or not."""
        marked = {"label": [DEPLOYMENT_LABEL]}
        with self._translated("list the sandboxes' containers and volumes"):
            containers = self.api.containers(all=True, filters=marked)
            volumes = self.api.volumes(filters=marked).get("Volumes") or []
        found = [self._resource("container", container["Names"][0].lstrip("/"), container.get("Labels"))
                 for container in containers]
        found += [self._resource("volume", volume["Name"], volume.get("Labels")) for volume in volumes]
        return found

    def remove_runtime_resource(self, resource: RuntimeResource) -> bool:
        if not resource.owned:
            raise SandboxBackendError(f"{resource.kind} {resource.name} {resource.mark_description}; it is never removed")
        if resource.kind == "container":
            return self._remove(lambda: self.api.remove_container(resource.name, force=True, v=True), resource.name)
        return self._remove(lambda: self.api.remove_volume(resource.name, force=True), resource.name)
