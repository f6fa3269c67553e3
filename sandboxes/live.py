"""Live sandboxes: an account's sandbox started from its snapshot, running commands and taking files, stopped.

- start     one live sandbox per account (a database constraint): from the
            account's snapshot, or from the starter layout where it has none
            or it has expired; asking again answers the one that is live
- commands  a client's command in the running sandbox (sandboxes/providers/
            commands.py): in the foreground, answered with its output, or in
            the background, read by its id; each recorded (never its
            environment's values), each resetting the idle clock
- files     written into the sandbox, and committed and pushed to the
            account's repository from this host (repository_checkout.py)
- stop      a new snapshot of the workspace (a new id, its expiry renewed),
            pushed to the repository as a commit, then the container removed;
            by the client, by staff, or by the sweep once it has been idle
            for SANDBOX_IDLE_TIMEOUT; a delete removes it without a snapshot

The row holds everything about a live sandbox (which engine holds it, its
container's id), so any web server or worker reaches it; the sweep finishes
what a process that died left half done, and reconcile removes a container
whose row is not live.
"""

import logging
import time
from datetime import timedelta
from pathlib import Path

from django.conf import settings
from django.db import IntegrityError, transaction
from django.utils import timezone
from django_q.tasks import async_task

from accounts.audit import Actor, audit_record
from accounts.models import Account, AuditEvent
from sandboxes import events
from sandboxes.models import LIVE_SANDBOX, LiveSandbox, SandboxCommand, Snapshot
from sandboxes.providers import get_git_host, get_sandbox_backend, get_snapshot_store
from sandboxes.providers.base import (
    CommandOutput,
    CommandSpec,
    ProviderError,
    SandboxBackend,
    SandboxOwner,
    SnapshotInfo,
    repository_name_for,
)
from sandboxes.repository_checkout import Checkout, checkout_folder

logger = logging.getLogger(__name__)

Action, Outcome = AuditEvent.Action, AuditEvent.Outcome
DEFAULT_UPLOAD_MESSAGE = "Upload files via API"
# A start or stop still unfinished this long after it began lost its process: the sweep ends it.
LOST_AFTER = timedelta(minutes=10)
# How often a background command's watcher looks at it.
WATCH_INTERVAL_SECONDS = 0.2


class LiveSandboxError(Exception):
    """A live sandbox request that cannot be done; the message says why, in words a client can act on."""


class NoRunningSandbox(LiveSandboxError):
    pass


class CommandsUnavailable(LiveSandboxError):
    pass


class SandboxUnreachable(LiveSandboxError):
    """The backend, the engine or the git host failed."""


class InvalidCommand(LiveSandboxError):
    pass


class NoSuchCommand(LiveSandboxError):
    pass


def live_sandboxes_unavailable() -> str:
    """Why live sandboxes cannot run here ("" when they can): the local backend runs commands unisolated."""
    if settings.SANDBOX_BACKEND == "local" and settings.SANDBOX_LOCAL_EXEC != "unsafe":
        return ("Live sandboxes on the local backend run commands on the server itself, with no isolation: "
                "set SANDBOX_BACKEND=docker, or SANDBOX_LOCAL_EXEC=unsafe (development only)")
    return ""


def _check_available() -> None:
    reason = live_sandboxes_unavailable()
    if reason:
        raise CommandsUnavailable(reason)


def _backend_of(sandbox: LiveSandbox) -> SandboxBackend:
    """The backend and engine that hold the sandbox, whatever this server's own."""
    if sandbox.backend != settings.SANDBOX_BACKEND:
        raise SandboxUnreachable(f"Sandbox {sandbox.pk} runs on the {sandbox.backend} backend, not this server's "
                                 f"({settings.SANDBOX_BACKEND})")
    backend = get_sandbox_backend(engine=sandbox.engine)
    if backend.engine != sandbox.engine:
        raise SandboxUnreachable(f"Sandbox {sandbox.pk} is held by another host ({sandbox.engine.partition('#')[2]})"
                                 ", which this server does not reach")
    return backend


def _starter_files() -> dict[str, bytes]:
    root = Path(settings.SANDBOX_TEMPLATE_DIR)
    return {str(path.relative_to(root)): path.read_bytes() for path in sorted(root.rglob("*")) if path.is_file()}


def _event(sandbox: LiveSandbox, event_type: str, **data) -> None:
    events.live_event(event_type=event_type, account_id=sandbox.account_id,
                      data={"sandbox": sandbox_representation(sandbox), **data})


def sandbox_representation(sandbox: LiveSandbox, *, now=None) -> dict:
    """The sandbox as the API shows it: id, status, milliseconds until it stops by itself, creation time."""
    timeout = None
    if sandbox.status == LiveSandbox.Status.RUNNING and sandbox.last_activity_at is not None:
        left = sandbox.last_activity_at + settings.SANDBOX_IDLE_TIMEOUT - (now or timezone.now())
        timeout = max(int(left.total_seconds() * 1000), 0)
    return {"sandboxId": sandbox.pk, "sandboxStatus": sandbox.status, "timeout": timeout,
            "createdAt": sandbox.created_at.isoformat()}


# --- start ---------------------------------------------------------------------------------


def live_sandbox_start(*, account: Account, actor: Actor) -> LiveSandbox:
    """The account's live sandbox: the one that is live, or a new one started from its snapshot."""
    _check_available()
    for _attempt in range(3):
        live = LiveSandbox.objects.filter(LIVE_SANDBOX, account=account).first()
        if live is not None:
            return live
        backend = get_sandbox_backend()
        sandbox = LiveSandbox(account=account, api_key=actor.api_key, backend=backend.name, engine=backend.engine)
        try:
            with transaction.atomic():
                sandbox.save(force_insert=True)
        except IntegrityError:
            continue  # another request started one a moment ago: answer that one
        return _start(sandbox, backend, actor)
    raise SandboxUnreachable(f"Could not start or find the live sandbox of account {account.pk}")


def _start(sandbox: LiveSandbox, backend: SandboxBackend, actor: Actor) -> LiveSandbox:
    snapshot = Snapshot.objects.filter(account_id=sandbox.account_id, expires_at__gt=timezone.now()).first()
    owner = SandboxOwner(account_id=str(sandbox.account_id), holder=sandbox.pk)
    try:
        if snapshot is not None:
            runtime_id = backend.restore(snapshot.snapshot_id, owner=owner)
        else:
            runtime_id = backend.create(owner=owner)
            try:
                backend.write_files(runtime_id, _starter_files())
            except ProviderError:
                backend.stop(runtime_id)
                raise
    except ProviderError as exc:
        error = f"The sandbox could not be started: {exc}"
        logger.warning("Live sandbox %s: %s%s", sandbox.pk, error, f"\n{exc.detail}" if exc.detail else "")
        LiveSandbox.objects.filter(pk=sandbox.pk).update(status=LiveSandbox.Status.FAILED, error=error,
                                                         stopped_at=timezone.now())
        audit_record(action=Action.SANDBOX_STARTED, outcome=Outcome.FAILURE, actor=actor,
                     account=sandbox.account_id, detail=error)
        raise SandboxUnreachable(error) from None
    now = timezone.now()
    sandbox.runtime_id, sandbox.started_from = runtime_id, snapshot.snapshot_id if snapshot else ""
    sandbox.status, sandbox.started_at, sandbox.last_activity_at = LiveSandbox.Status.RUNNING, now, now
    with transaction.atomic():
        # Conditional: a delete may have ended the row while it started.
        started = LiveSandbox.objects.filter(pk=sandbox.pk, status=LiveSandbox.Status.PENDING).update(
            status=sandbox.status, runtime_id=runtime_id, started_from=sandbox.started_from, started_at=now,
            last_activity_at=now)
        if started:
            audit_record(action=Action.SANDBOX_STARTED, actor=actor, account=sandbox.account_id,
                         detail=f"Sandbox {sandbox.pk} started from "
                                + (f"snapshot {snapshot.snapshot_id}" if snapshot else "the starter layout"))
            _event(sandbox, "sandbox.started")
    if not started:
        backend.stop(runtime_id)
        raise NoRunningSandbox(f"Sandbox {sandbox.pk} was ended while it started")
    return sandbox


def live_sandbox_running(*, account: Account) -> LiveSandbox:
    """The account's running sandbox; NoRunningSandbox (409) says to start one."""
    _check_available()
    sandbox = LiveSandbox.objects.filter(account=account, status=LiveSandbox.Status.RUNNING).first()
    if sandbox is None:
        raise NoRunningSandbox("No sandbox is running for the account; start one with POST /api/sandboxes")
    return sandbox


# --- commands --------------------------------------------------------------------------------


def command_run(*, account: Account, actor: Actor, command: str, args: list[str], cwd: str, env: dict[str, str],
                timeout_ms: int, background: bool) -> SandboxCommand:
    """Run a client's command in the account's running sandbox: to its end, or started in the background."""
    sandbox = live_sandbox_running(account=account)
    backend = _backend_of(sandbox)
    spec_fields = {"argv": (command, *args), "cwd": cwd, "env": env, "timeout_seconds": timeout_ms / 1000}
    try:
        if cwd and not backend.is_folder(sandbox.runtime_id, cwd):
            raise InvalidCommand(f"cwd {cwd!r} is not a folder of the sandbox's workspace")
    except ProviderError as exc:
        raise SandboxUnreachable(f"The sandbox could not be reached: {exc}") from None
    now = timezone.now()
    with transaction.atomic():  # one commit: each is a flush of the database's log
        record = SandboxCommand.objects.create(
            sandbox=sandbox, account=account, api_key=actor.api_key, command=command, args=args, cwd=cwd,
            env_names=sorted(env), timeout_ms=timeout_ms, background=background, created_at=now,
        )
        LiveSandbox.objects.filter(pk=sandbox.pk).update(last_activity_at=now)
    spec = CommandSpec(command_id=record.pk, **spec_fields)
    try:
        if background:
            backend.start_in_background(sandbox.runtime_id, spec)
        else:
            output = backend.execute(sandbox.runtime_id, spec, output_cap=settings.SANDBOX_OUTPUT_MAX_BYTES)
    except ProviderError as exc:
        error = f"The command could not be run: {exc}"
        SandboxCommand.objects.filter(pk=record.pk).update(status=SandboxCommand.Status.FAILED, error=error,
                                                            finished_at=timezone.now())
        raise SandboxUnreachable(error) from None
    if background:
        transaction.on_commit(lambda: _watch(record.pk))
        return record
    with transaction.atomic():
        _record_output(record, output)
        LiveSandbox.objects.filter(pk=sandbox.pk).update(last_activity_at=timezone.now())
    return record


def _record_output(record: SandboxCommand, output: CommandOutput, *, killed: bool = False) -> bool:
    """Write how the command ended onto its row (only while it is running); whether this call did."""
    status = (SandboxCommand.Status.KILLED if killed else SandboxCommand.Status.TIMED_OUT if output.timed_out
              else SandboxCommand.Status.FINISHED)
    now = timezone.now()
    fields = {
        "status": status, "exit_code": output.exit_code, "stdout": output.stdout, "stderr": output.stderr,
        "stdout_truncated": output.stdout_truncated, "stderr_truncated": output.stderr_truncated,
        "duration_ms": output.duration_ms or int((now - record.created_at).total_seconds() * 1000),
        "finished_at": now,
    }
    recorded = SandboxCommand.objects.filter(pk=record.pk, status=SandboxCommand.Status.RUNNING).update(**fields)
    for name, value in fields.items():
        setattr(record, name, value)
    return bool(recorded)


def _watch(command_id: str) -> None:
    try:
        async_task("sandboxes.tasks.watch_background_command", command_id,
                   task_name=f"watch command {command_id}")
    except Exception:  # the broker is down: GET /api/sandboxes/commands and the sweep still finish it
        logger.exception("Could not queue the watch of background command %s", command_id)


def command_read(*, account_ids, command_id: str) -> SandboxCommand:
    """A command of one of the accounts (the caller's); a running background command is looked at first."""
    record = SandboxCommand.objects.select_related("sandbox").filter(pk=command_id, account_id__in=account_ids).first()
    if record is None:
        raise NoSuchCommand(f"No command {command_id}")
    if record.status == SandboxCommand.Status.RUNNING and record.background:
        _finish_background(record)
    return record


def _finish_background(record: SandboxCommand, *, deadline_passed: bool = False) -> bool:
    """Record a background command that has ended (killing it first past its deadline); whether it has."""
    sandbox = record.sandbox
    if sandbox.status not in LiveSandbox.LIVE_STATUSES:
        output = CommandOutput(exit_code=None, stdout="", stderr="")
        if _record_output(record, output, killed=True):
            _command_completed(record)
        return True
    try:
        backend = _backend_of(sandbox)
        if deadline_passed:
            backend.kill_command(sandbox.runtime_id, record.pk)
        output = backend.background_output(sandbox.runtime_id, record.pk, output_cap=settings.SANDBOX_OUTPUT_MAX_BYTES)
    except (ProviderError, LiveSandboxError) as exc:
        logger.warning("Background command %s could not be read: %s", record.pk, exc)
        return False
    if output is None:
        return False
    if _record_output(record, output):
        _command_completed(record)
    return True


def _command_completed(record: SandboxCommand) -> None:
    events.live_event(event_type="command.completed", account_id=record.account_id,
                      data={"command": command_representation(record)})


def command_representation(record: SandboxCommand) -> dict:
    return {
        "commandId": record.pk,
        "commandStatus": record.status,
        "exitCode": record.exit_code,
        "stdout": record.stdout,
        "stderr": record.stderr,
        "stdoutTruncated": record.stdout_truncated,
        "stderrTruncated": record.stderr_truncated,
        "timedOut": record.timed_out,
        "durationMs": record.duration_ms,
    }


def background_command_watch(*, command_id: str) -> None:
    """The worker's watch of a background command: until it ends, or past its deadline, killed."""
    record = SandboxCommand.objects.select_related("sandbox").filter(pk=command_id).first()
    if record is None or record.status != SandboxCommand.Status.RUNNING:
        return
    from sandboxes.providers.commands import KILL_AFTER_SECONDS, OUTSIDE_GRACE_SECONDS

    deadline = record.created_at + timedelta(milliseconds=record.timeout_ms,
                                             seconds=KILL_AFTER_SECONDS + OUTSIDE_GRACE_SECONDS)
    while not _finish_background(record, deadline_passed=timezone.now() >= deadline):
        record.refresh_from_db(fields=["status"])
        if record.status != SandboxCommand.Status.RUNNING:
            return
        if timezone.now() >= deadline + timedelta(seconds=30):
            return  # the engine does not answer: the sweep tries again
        time.sleep(WATCH_INTERVAL_SECONDS)


def command_kill(*, record: SandboxCommand, actor: Actor) -> bool:
    """Staff: kill a running command's process group; whether it was running."""
    sandbox = record.sandbox
    if record.status != SandboxCommand.Status.RUNNING:
        return False
    try:
        if sandbox.status in LiveSandbox.LIVE_STATUSES:
            _backend_of(sandbox).kill_command(sandbox.runtime_id, record.pk)
    except ProviderError as exc:
        raise SandboxUnreachable(f"The command could not be killed: {exc}") from None
    killed = _record_output(record, CommandOutput(exit_code=None, stdout=record.stdout, stderr=record.stderr),
                            killed=True)
    if killed:
        audit_record(action=Action.COMMAND_KILLED, actor=actor, account=record.account_id,
                     detail=f"Command {record.pk} in sandbox {sandbox.pk} killed")
        if record.background:
            _command_completed(record)
    return killed


# --- files -----------------------------------------------------------------------------------


def files_upload(*, account: Account, actor: Actor, files: dict[str, bytes], message: str) -> list[dict]:
    """Write the files into the running sandbox and commit them to the account's repository: [{path, sha}]."""
    sandbox = live_sandbox_running(account=account)
    backend = _backend_of(sandbox)
    try:
        backend.write_files(sandbox.runtime_id, files)
        git_host = get_git_host()
        repository = _account_repository(account, git_host)
        with checkout_folder(f"upload-{sandbox.pk}-{time.monotonic_ns()}") as folder:
            checkout = Checkout(git_host=git_host, repository=repository, folder=folder)
            checkout.fetch()
            checkout.write_files(files)
            checkout.commit_and_push(message or DEFAULT_UPLOAD_MESSAGE)
            uploaded = [{"path": path, "sha": checkout.blob_sha(path)} for path in files]
    except ProviderError as exc:
        raise SandboxUnreachable(f"The files could not be uploaded: {exc}") from None
    LiveSandbox.objects.filter(pk=sandbox.pk).update(last_activity_at=timezone.now())
    audit_record(action=Action.FILES_UPLOADED, actor=actor, account=account,
                 detail=f"{len(files)} file(s) written into sandbox {sandbox.pk} and committed")
    return uploaded


def _account_repository(account: Account, git_host):
    return git_host.ensure_repository(
        name=repository_name_for(account_name=account.name, account_id=account.pk),
        description=f"Sandbox of {account.name} ({account.pk})",
    ).repository


# --- stop --------------------------------------------------------------------------------------


def live_sandbox_stop(*, sandbox: LiveSandbox, actor: Actor, reason: str, take_snapshot: bool = True
                      ) -> Snapshot | None:
    """Stop a running sandbox: its snapshot taken, saved and pushed (with `take_snapshot`), its container removed.

    Returns the account's new Snapshot row (None without one). A failure
    leaves it running, so the same stop can be asked again.
    """
    if not LiveSandbox.objects.filter(pk=sandbox.pk, status=LiveSandbox.Status.RUNNING).update(
            status=LiveSandbox.Status.STOPPING, stopped_at=timezone.now()):
        raise NoRunningSandbox(f"Sandbox {sandbox.pk} is not running")
    snapshot = None
    try:
        backend = _backend_of(sandbox)
        if take_snapshot:
            snapshot = _snapshot_and_push(sandbox, backend)
        backend.stop(sandbox.runtime_id)
    except (ProviderError, LiveSandboxError) as exc:
        LiveSandbox.objects.filter(pk=sandbox.pk, status=LiveSandbox.Status.STOPPING).update(
            status=LiveSandbox.Status.RUNNING, stopped_at=None)
        raise SandboxUnreachable(f"The sandbox could not be stopped (it is still running): {exc}") from None
    _ended(sandbox, actor=actor, reason=reason, snapshot_id=snapshot.snapshot_id if snapshot else "")
    return snapshot


def _snapshot_and_push(sandbox: LiveSandbox, backend: SandboxBackend) -> Snapshot:
    info = backend.snapshot(sandbox.runtime_id)
    try:
        git_host = get_git_host()
        repository = _account_repository(sandbox.account, git_host)
        _push_workspace(info, repository, git_host, sandbox)
        snapshot, previous = _save_snapshot(sandbox, info, repository)
    except Exception:
        backend.delete_snapshot(info.snapshot_id)
        raise
    if previous and previous != info.snapshot_id:
        try:
            backend.delete_snapshot(previous)
        except ProviderError as exc:
            logger.warning("Could not delete replaced snapshot %s: %s", previous, exc)
    return snapshot


def _push_workspace(info: SnapshotInfo, repository, git_host, sandbox: LiveSandbox) -> None:
    with checkout_folder(f"stop-{sandbox.pk}") as folder:
        archive = folder.parent / f"{folder.name}.tar.gz"
        try:
            get_snapshot_store().get(info.snapshot_id, archive)
            checkout = Checkout(git_host=git_host, repository=repository, folder=folder)
            checkout.fetch()
            checkout.replace_with_archive(archive)
            checkout.commit_and_push(f"Snapshot {info.snapshot_id} of sandbox {sandbox.pk}")
        finally:
            archive.unlink(missing_ok=True)


def _save_snapshot(sandbox: LiveSandbox, info: SnapshotInfo, repository) -> tuple[Snapshot, str]:
    with transaction.atomic():
        previous = Snapshot.objects.select_for_update().filter(account_id=sandbox.account_id).first()
        snapshot, _created = Snapshot.objects.update_or_create(
            account_id=sandbox.account_id,
            defaults={
                "snapshot_id": info.snapshot_id,
                "expires_at": timezone.now() + settings.SNAPSHOT_TTL,
                "github_repo": repository.html_url,
                "github_repo_id": repository.id,
                "filetree": [entry.as_json() for entry in info.files],
            },
        )
    return snapshot, previous.snapshot_id if previous else ""


def _ended(sandbox: LiveSandbox, *, actor: Actor, reason: str, snapshot_id: str = "",
           status: str = LiveSandbox.Status.STOPPED, error: str = "") -> None:
    now = timezone.now()
    with transaction.atomic():
        LiveSandbox.objects.filter(pk=sandbox.pk).update(status=status, stop_reason=reason, stopped_at=now,
                                                         snapshot_id=snapshot_id, error=error)
        running = list(SandboxCommand.objects.filter(sandbox=sandbox, status=SandboxCommand.Status.RUNNING))
        SandboxCommand.objects.filter(pk__in=[record.pk for record in running]).update(
            status=SandboxCommand.Status.KILLED, finished_at=now)
        sandbox.status, sandbox.stop_reason, sandbox.stopped_at, sandbox.snapshot_id = status, reason, now, snapshot_id
        audit_record(action=Action.SANDBOX_STOPPED, actor=actor, account=sandbox.account_id,
                     outcome=Outcome.FAILURE if error else Outcome.SUCCESS,
                     detail=error or f"Sandbox {sandbox.pk} stopped ({reason})"
                     + (f", snapshot {snapshot_id}" if snapshot_id else ""))
        _event(sandbox, "sandbox.stopped", reason=reason, snapshot_id=snapshot_id or None)
        for record in running:
            if record.background:
                record.status = SandboxCommand.Status.KILLED
                _command_completed(record)


def live_sandboxes_remove(*, account_ids, actor: Actor) -> dict:
    """A delete: remove the accounts' live sandboxes without a snapshot; {account id: why one could not be}."""
    problems = {}
    for sandbox in LiveSandbox.objects.filter(LIVE_SANDBOX, account_id__in=list(account_ids)):
        try:
            if sandbox.runtime_id:
                _backend_of(sandbox).stop(sandbox.runtime_id)
        except (ProviderError, LiveSandboxError) as exc:
            problems[sandbox.account_id] = f"Failed to remove sandbox {sandbox.pk}: {exc}"
            continue
        _ended(sandbox, actor=actor, reason=LiveSandbox.StopReason.DELETED)
    return problems


# --- the sweep ---------------------------------------------------------------------------------


def live_sandboxes_sweep(*, actor: Actor) -> str:
    """Every minute: stop idle sandboxes (with a snapshot), end starts and stops whose process died, finish
    background commands past their deadline."""
    now = timezone.now()
    idle = LiveSandbox.objects.filter(status=LiveSandbox.Status.RUNNING,
                                      last_activity_at__lt=now - settings.SANDBOX_IDLE_TIMEOUT)
    stopped = failed = 0
    for sandbox in idle.select_related("account"):
        try:
            live_sandbox_stop(sandbox=sandbox, actor=actor, reason=LiveSandbox.StopReason.IDLE)
            stopped += 1
        except LiveSandboxError as exc:
            logger.warning("Idle sandbox %s: %s", sandbox.pk, exc)
            failed += 1
    lost = LiveSandbox.objects.filter(status__in=[LiveSandbox.Status.PENDING, LiveSandbox.Status.STOPPING],
                                      created_at__lt=now - LOST_AFTER)
    lost = [sandbox for sandbox in lost if (sandbox.stopped_at or sandbox.created_at) < now - LOST_AFTER]
    for sandbox in lost:
        try:
            if sandbox.runtime_id:
                _backend_of(sandbox).stop(sandbox.runtime_id)
        except (ProviderError, LiveSandboxError) as exc:
            logger.warning("Lost sandbox %s: %s", sandbox.pk, exc)
        _ended(sandbox, actor=actor, reason=LiveSandbox.StopReason.LOST, status=LiveSandbox.Status.FAILED,
               error=f"Its {'start' if sandbox.status == LiveSandbox.Status.PENDING else 'stop'} never finished "
                     "(the process doing it stopped)")
    overdue = SandboxCommand.objects.select_related("sandbox").filter(
        status=SandboxCommand.Status.RUNNING, created_at__lt=now - timedelta(minutes=1))
    finished = 0
    for record in overdue:
        past_deadline = record.created_at + timedelta(milliseconds=record.timeout_ms) < now
        if record.background:
            finished += _finish_background(record, deadline_passed=past_deadline)
        elif past_deadline:
            # A foreground command whose server stopped before it answered: nothing will record its end.
            finished += SandboxCommand.objects.filter(pk=record.pk, status=SandboxCommand.Status.RUNNING).update(
                status=SandboxCommand.Status.FAILED, finished_at=now,
                error="The server running it stopped before it ended")
    return (f"Stopped {stopped} idle sandbox(es) ({failed} could not be stopped); ended {len(lost)} lost; "
            f"finished {finished} command(s) left running")
