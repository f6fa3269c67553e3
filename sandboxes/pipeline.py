"""The setup pipeline, run by a django-q2 worker for one SetupRun.

Steps, each recorded on the run as it starts and ends:

1. create_sandbox     start a sandbox in the backend: in a thread of its own, beside
                      steps 2 and 3's git work, which needs no sandbox (a
                      container takes a tenth of a second to start); step 3
                      waits for it before writing into it, and it is recorded
                      when it has finished
2. ensure_repository  create the account's repository, or reuse it
3. provision          on the worker, in a checkout folder: write the starter layout,
                      commit, push to the repository (a repository that already has
                      content is fetched instead); then the checkout, .git included,
                      is written into the sandbox. The git host's credentials stay on
                      the worker and never enter a sandbox.
4. snapshot           save the sandbox as a snapshot, with its file listing
5. save_snapshot      point the account's Snapshot row at it, listing included (the previous
                      snapshot is deleted once nothing points at it)
6. shutdown           always, whatever happened before

A failure marks the run FAILED with a sentence that names the step (and
leaves the run's current step on it), and takes away what this run made: the repository it created (never one it reused) and
the snapshot it took but did not save. The Snapshot row only ever points at a
snapshot that exists.

What a client reads of a run (its error, its steps' details, its output) says
what failed in the service's words; the raw detail of a failure (git's output,
the folders of this host, an unexpected exception) goes to the log.
"""

import contextvars
import logging
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import contextmanager, suppress
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path

from django.conf import settings
from django.db import transaction
from django.utils import timezone

from accounts.audit import WORKER, audit_record
from accounts.models import AuditEvent
from config import logs
from sandboxes import events
from sandboxes.models import SetupRun, Snapshot
from sandboxes.providers import get_git_host, get_sandbox_backend
from sandboxes.providers.base import (
    GitHost,
    ProviderError,
    Repository,
    SandboxBackend,
    SandboxBackendError,
    SandboxOwner,
    new_sandbox_id,
    repository_name_for,
    repository_name_from_url,
)
from sandboxes.repository_checkout import Checkout, checkout_folder

logger = logging.getLogger(__name__)

STEP_LABELS = {
    "create_sandbox": "Creating the sandbox",
    "ensure_repository": "Creating the repository",
    "provision": "Provisioning the sandbox",
    "snapshot": "Taking the snapshot",
    "save_snapshot": "Saving the snapshot",
    "shutdown": "Shutting the sandbox down",
}


class RunCanceled(Exception):
    """The run was canceled (for example by a delete) while it executed."""


class StepFailed(Exception):
    def __init__(self, message: str, *, step: str):
        super().__init__(message)
        self.step = step


@dataclass
class SetupContext:
    run: SetupRun
    backend: SandboxBackend
    git_host: GitHost
    repository: Repository | None = None
    repository_created: bool = False
    unsaved_snapshot_id: str = ""
    unsaved_filetree: list = field(default_factory=list)
    previous_snapshot_id: str = ""
    output: dict = field(default_factory=dict)
    sandbox_started: "BackgroundStep | None" = None


def _now_iso() -> str:
    return timezone.now().isoformat()


class StepRecorder:
    """Writes each step's start and end onto the run, so a poller sees progress."""

    def __init__(self, run: SetupRun):
        self.run = run

    def _save(self):
        self.run.save(update_fields=["steps", "current_step"])

    @contextmanager
    def record(self, name: str):
        entry = {"name": name, "started": _now_iso(), "finished": None, "ok": None, "detail": ""}
        self.run.steps.append(entry)
        self.run.current_step = name
        self._save()
        outcome = {"detail": ""}
        try:
            yield outcome
        except ProviderError as exc:
            logger.warning("Setup run %s: step %s failed: %s%s", self.run.pk, name, exc,
                           f"\n{exc.detail}" if exc.detail else "")
            entry.update(ok=False, detail=str(exc))
            raise StepFailed(f"{STEP_LABELS[name]} failed: {exc}", step=name) from exc
        except RunCanceled:
            entry.update(ok=False, detail="Canceled")
            raise
        except StepFailed:
            # A step running beside this one failed (create_sandbox): the run fails there.
            entry.update(ok=False, detail="Stopped: an earlier step failed")
            raise
        except Exception as exc:
            logger.exception("Setup run %s: unexpected error in step %s", self.run.pk, name)
            entry.update(ok=False, detail="Unexpected error")
            raise StepFailed(
                f"{STEP_LABELS[name]} failed unexpectedly (an error in the service; its log has the details)",
                step=name,
            ) from exc
        else:
            entry.update(ok=True, detail=outcome["detail"])
        finally:
            entry["finished"] = _now_iso()
            self._save()


    def start_in_background(self, name: str, work: Callable[[], str]) -> "BackgroundStep":
        """Record the step as started and run `work` (its detail) in a thread; `wait()` records how it ended."""
        entry = {"name": name, "started": _now_iso(), "finished": None, "ok": None, "detail": ""}
        self.run.steps.append(entry)
        self.run.current_step = name
        self._save()
        # In the run's logging context (config/logs.py): its lines carry the run's id.
        return BackgroundStep(self, name, entry, _STEP_THREADS.submit(contextvars.copy_context().run, work))


# Threads of the steps that run beside others (a sandbox's start).
_STEP_THREADS = ThreadPoolExecutor(max_workers=4, thread_name_prefix="setup-step")


@dataclass
class BackgroundStep:
    recorder: StepRecorder
    name: str
    entry: dict
    future: Future
    recorded: bool = False
    ok: bool = False

    def wait(self) -> None:
        """Wait for the step's work and record its end; StepFailed (naming this step) when it failed."""
        if self.recorded:
            return
        self.recorded = True
        try:
            detail, ok = self.future.result(), True
        except ProviderError as exc:
            logger.warning("Setup run %s: step %s failed: %s%s", self.recorder.run.pk, self.name, exc,
                           f"\n{exc.detail}" if exc.detail else "")
            failure = StepFailed(f"{STEP_LABELS[self.name]} failed: {exc}", step=self.name)
            detail, ok = str(exc), False
        except Exception:
            logger.exception("Setup run %s: unexpected error in step %s", self.recorder.run.pk, self.name)
            failure = StepFailed(
                f"{STEP_LABELS[self.name]} failed unexpectedly (an error in the service; its log has the details)",
                step=self.name,
            )
            detail, ok = "Unexpected error", False
        self.ok = ok
        self.entry.update(ok=ok, detail=detail, finished=_now_iso())
        self.recorder._save()
        if not ok:
            raise failure

    def settle(self) -> None:
        """Wait for the work to end, whatever its outcome (before the sandbox is shut down)."""
        with suppress(StepFailed):
            self.wait()


# --- the steps ----------------------------------------------------------------


def _start_sandbox(context: SetupContext, steps: StepRecorder) -> None:
    """Step 1, in a thread: the sandbox's id is recorded on the run first, so a shutdown always finds it."""
    run = context.run
    run.sandbox_id = new_sandbox_id()
    run.save(update_fields=["sandbox_id"])
    # Labelled (by a container runtime) with the run that holds it and the
    # moment the sweep gives the run up: past it, reconcile removes what is left.
    owner = SandboxOwner(account_id=str(run.account_id), holder=run.pk,
                         expires_at=timezone.now() + timedelta(seconds=settings.SETUP_RUN_STALE_AFTER))

    def create() -> str:
        context.backend.create(owner=owner, sandbox_id=run.sandbox_id)
        return f"Sandbox {run.sandbox_id}"

    context.sandbox_started = steps.start_in_background("create_sandbox", create)


def _ensure_repository(context: SetupContext) -> str:
    account = context.run.account
    ensured = context.git_host.ensure_repository(
        name=repository_name_for(account_name=account.name, account_id=account.pk),
        description=f"Sandbox of {account.name} ({account.pk})",
        run_id=context.run.pk,
    )
    context.repository, context.repository_created = ensured.repository, ensured.created
    if ensured.created:
        context.run.created_repository = ensured.repository.name
        context.run.created_repository_id = ensured.repository.id
        context.run.save(update_fields=["created_repository", "created_repository_id"])
    return f"{'Created' if ensured.created else 'Reused'} {ensured.repository.html_url}"


def _starter_files() -> dict[str, bytes]:
    root = Path(settings.SANDBOX_TEMPLATE_DIR)
    if not root.is_dir():
        raise SandboxBackendError("The starter layout folder (SANDBOX_TEMPLATE_DIR) does not exist", detail=str(root))
    return {str(path.relative_to(root)): path.read_bytes() for path in sorted(root.rglob("*")) if path.is_file()}


def _provision(context: SetupContext) -> str:
    try:
        return _provision_checkout(context)
    except Exception:
        context.sandbox_started.wait()  # the sandbox's failed start, if it failed, is what the run failed at
        raise


def _provision_checkout(context: SetupContext) -> str:
    with checkout_folder(context.run.pk) as folder:
        checkout = Checkout(git_host=context.git_host, repository=context.repository, folder=folder,
                            just_created=context.repository_created)
        # The repository has content already (an earlier setup, or the
        # account's own work): start the sandbox from it, never overwrite it.
        # Its own default branch (`master`, say); a new repository's is `main`.
        if checkout.fetch():
            detail = f"Checked out the repository's existing content (branch {checkout.branch})"
        else:
            files = _starter_files()
            checkout.write_files(files)
            checkout.commit_and_push("Set up sandbox")
            detail = f"Pushed {len(files)} starter files to branch {checkout.branch}"
        context.sandbox_started.wait()
        context.backend.write_tree(context.run.sandbox_id, folder)
    return detail


def _snapshot(context: SetupContext) -> str:
    info = context.backend.snapshot(context.run.sandbox_id)
    context.unsaved_snapshot_id = info.snapshot_id
    context.unsaved_filetree = [entry.as_json() for entry in info.files]
    return f"Snapshot {info.snapshot_id} ({info.size_bytes} bytes, sha256 {info.checksum[:12]}…)"


def _save_snapshot(context: SetupContext) -> str:
    run = context.run
    expires_at = timezone.now() + settings.SNAPSHOT_TTL
    with transaction.atomic():
        # Locking the run orders this write with a concurrent delete, which
        # cancels the run first: either the delete sees this row, or this
        # step sees the cancellation.
        if SetupRun.objects.select_for_update().get(pk=run.pk).status == SetupRun.Status.CANCELED:
            raise RunCanceled
        previous = Snapshot.objects.select_for_update().filter(account_id=run.account_id).first()
        context.previous_snapshot_id = previous.snapshot_id if previous else ""
        Snapshot.objects.update_or_create(
            account_id=run.account_id,
            defaults={
                "snapshot_id": context.unsaved_snapshot_id,
                "expires_at": expires_at,
                "github_repo": context.repository.html_url,
                "github_repo_id": context.repository.id,
                "filetree": context.unsaved_filetree,
            },
        )
    context.output = {
        "snapshot_id": context.unsaved_snapshot_id,
        "github_repo": context.repository.html_url,
        "expires_at": expires_at.isoformat(),
    }
    context.unsaved_snapshot_id = ""
    return f"Expires {expires_at.isoformat()}"


# After create_sandbox, which starts beside them (_start_sandbox).
STEPS = [
    ("ensure_repository", _ensure_repository),
    ("provision", _provision),
    ("snapshot", _snapshot),
    ("save_snapshot", _save_snapshot),
]


# --- running and undoing --------------------------------------------------------


def _claim(run_id: str, task_id: str = "") -> SetupRun | None:
    """Move the run from QUEUED to EXECUTING; None if it is gone or not queued.

    The conditional update makes a second delivery of the same task a no-op.
    """
    claimed = SetupRun.objects.filter(pk=run_id, status=SetupRun.Status.QUEUED).update(
        status=SetupRun.Status.EXECUTING, started_at=timezone.now(), **({"task_id": task_id} if task_id else {})
    )
    if not claimed:
        logger.info("Setup run %s is not queued any more; nothing to do", run_id)
        return None
    return SetupRun.objects.select_related("account").get(pk=run_id)


def _raise_if_canceled(run: SetupRun):
    if SetupRun.objects.filter(pk=run.pk, status=SetupRun.Status.CANCELED).exists():
        raise RunCanceled


def _snapshot_row_uses(run: SetupRun, repository_name: str) -> bool:
    """Whether the account's Snapshot row points at the repository.

    A run whose worker died after save_snapshot (while shutting down) made a
    repository that the saved row now uses; deleting it would leave the row
    pointing at nothing.
    """
    github_repo = Snapshot.objects.filter(account_id=run.account_id).values_list("github_repo", flat=True).first()
    return bool(github_repo) and repository_name_from_url(github_repo) == repository_name


def undo_run_resources(*, run: SetupRun, backend: SandboxBackend, git_host: GitHost, snapshot_id: str = "") -> list[str]:
    """Take away what an unfinished run made; returns a sentence per thing that could not be.

    The repository it created is found by its recorded id (a rename keeps it)
    and deleted only if it carries this deployment's mark.
    """
    problems = []
    if snapshot_id:
        try:
            backend.delete_snapshot(snapshot_id)
        except ProviderError as exc:
            problems.append(f"snapshot {snapshot_id} it took could not be deleted ({exc})")
    if run.created_repository and not _snapshot_row_uses(run, run.created_repository):
        try:
            created = git_host.find_repository(name=run.created_repository, repository_id=run.created_repository_id)
            if created is not None:
                git_host.delete_repository(repository=created)
        except ProviderError as exc:
            problems.append(
                f"repository {run.created_repository} it created could not be deleted ({exc}); delete it by hand"
            )
    return problems


def _shutdown(context: SetupContext, steps: StepRecorder) -> str:
    if not context.run.sandbox_id:
        return ""
    if context.sandbox_started is not None:
        context.sandbox_started.settle()  # a sandbox still starting is shut down once it has started
        if not context.sandbox_started.ok:
            # It was never made: a backend takes away what a failed start made.
            context.run.sandbox_id = ""
            context.run.save(update_fields=["sandbox_id"])
            return ""
    try:
        with steps.record("shutdown") as outcome:
            context.backend.stop(context.run.sandbox_id)
            outcome["detail"] = f"Sandbox {context.run.sandbox_id} stopped"
    except StepFailed as exc:
        logger.error("Setup run %s: %s", context.run.pk, exc)
        return str(exc)
    return ""


@dataclass(frozen=True)
class RunOutcome:
    status: str  # SetupRun.Status: COMPLETED, FAILED or CANCELED
    error: str = ""

    @property
    def failed(self) -> bool:
        return self.status == SetupRun.Status.FAILED


def setup_run_execute(*, run_id: str, task_id: str = "") -> RunOutcome | None:
    """Run the setup run; None when it is gone or not queued (a second delivery of its task).

    Every line logged meanwhile, by any code, carries the run's id (config/logs.py).
    """
    with logs.run_context(run_id):
        return _execute(run_id, task_id)


def _execute(run_id: str, task_id: str) -> RunOutcome | None:
    run = _claim(run_id, task_id)
    if run is None:
        return None
    context = SetupContext(run=run, backend=get_sandbox_backend(), git_host=get_git_host())
    steps = StepRecorder(run)
    error, failed_step, canceled = "", "", False
    try:
        _raise_if_canceled(run)
        _start_sandbox(context, steps)
        for name, action in STEPS:
            _raise_if_canceled(run)
            with steps.record(name) as outcome:
                outcome["detail"] = action(context)
    except RunCanceled:
        canceled = True
    except StepFailed as exc:
        error, failed_step = str(exc), exc.step
    shutdown_error = _shutdown(context, steps)
    if failed_step:
        # The step that failed, not the shutdown that always follows it.
        run.current_step = failed_step

    if error or canceled:
        problems = undo_run_resources(
            run=run, backend=context.backend, git_host=context.git_host, snapshot_id=context.unsaved_snapshot_id
        )
        if problems:
            error = f"{error or 'Canceled'}; also, the " + "; the ".join(problems)
    else:
        error = shutdown_error
        _delete_replaced_snapshot(context)

    return _finish(run, error=error, canceled=canceled, output=context.output or None)


def _finish(run: SetupRun, *, error: str, canceled: bool, output: dict | None) -> RunOutcome:
    fields = {"finished_at": timezone.now(), "steps": run.steps, "current_step": run.current_step}
    if canceled:
        SetupRun.objects.filter(pk=run.pk).update(error=error, **fields)
        logger.info("Setup run %s for account %s was canceled%s", run.pk, run.account_id,
                    f" ({error})" if error else "")
        return RunOutcome(SetupRun.Status.CANCELED, error)
    final = SetupRun.Status.FAILED if error else SetupRun.Status.COMPLETED
    with transaction.atomic():
        # Conditional: a delete may have canceled the run meanwhile; that status stays.
        finished = SetupRun.objects.filter(pk=run.pk, status=SetupRun.Status.EXECUTING).update(
            status=final, error=error, output=output, **fields
        )
        if finished:
            audit_record(
                action=AuditEvent.Action.RUN_FAILED if error else AuditEvent.Action.RUN_COMPLETED,
                outcome=AuditEvent.Outcome.FAILURE if error else AuditEvent.Outcome.SUCCESS,
                actor=WORKER,
                account=run.account_id,
                run_id=run.pk,
                detail=error or f"Snapshot {output['snapshot_id']}",
            )
            events.run_ended(run_id=run.pk, account_id=run.account_id)
    if not finished:
        logger.info("Setup run %s for account %s was canceled while it finished", run.pk, run.account_id)
        return RunOutcome(SetupRun.Status.CANCELED)
    if error:
        logger.error("Setup run %s for account %s failed: %s", run.pk, run.account_id, error)
    else:
        logger.info("Setup run %s for account %s completed", run.pk, run.account_id)
    return RunOutcome(final, error)


def _delete_replaced_snapshot(context: SetupContext):
    old = context.previous_snapshot_id
    if old and old != context.output.get("snapshot_id"):
        try:
            context.backend.delete_snapshot(old)
        except ProviderError as exc:
            logger.warning("Could not delete replaced snapshot %s: %s", old, exc)
