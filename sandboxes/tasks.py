"""django-q2 tasks: thin wrappers that take ids and call the services."""

from django.conf import settings

from accounts.audit import Actor
from sandboxes import idempotency, live, pipeline, services
from sandboxes.cleanup import CleanupRule, sandboxes_cleanup
from sandboxes.reconcile import sandboxes_reconcile

# Scheduled runs stop starting new batches at half the task timeout (django-q2
# kills a task at its timeout); the next run goes on where they stopped.
SCHEDULED_BATCH_SIZE = 200


class SetupRunFailed(Exception):
    """A setup run failed; the run holds the error and each step (the task raises so django-q2 lists it failed)."""


def run_setup(run_id: str, task_id: str = "") -> None:
    """Run a setup run; raise SetupRunFailed once the failure is recorded on the run.

    django-q2 marks a task failed only when its function raises; the cluster
    acknowledges failed tasks (ack_failures), so a failed run is neither
    retried nor handed out again.
    """
    outcome = pipeline.setup_run_execute(run_id=run_id, task_id=task_id)
    if outcome is not None and outcome.failed:
        raise SetupRunFailed(f"Setup run {run_id} failed: {outcome.error}")


def pass_task_id(sender, task: dict, **kwargs) -> None:
    """django-q2's pre_execute signal: hand run_setup the id of the task that runs it.

    The run records it when the worker claims it, in the claim's own UPDATE,
    so queueing a run costs no write to store the id.
    """
    if task.get("func") == "sandboxes.tasks.run_setup":
        task["kwargs"]["task_id"] = task["id"]


def fail_stale_runs() -> int:
    return services.setup_runs_fail_stale()


def cleanup_expired_sandboxes() -> str:
    """Hourly: delete the expired sandboxes; the summary and each deletion go to the audit trail."""
    report = sandboxes_cleanup(
        rule=CleanupRule(expired=True),
        actor=Actor.command("scheduled cleanup of expired sandboxes"),
        batch_size=SCHEDULED_BATCH_SIZE,
        time_budget=settings.SETUP_RUN_TIMEOUT / 2,
    )
    return report.summary


def reconcile_sandboxes() -> str:
    """Weekly: reconcile the database, the git host and the backend.

    Reports only (the summary is the task's result) unless RECONCILE_AUTOFIX
    is on, read here when the task runs; then the fixes and the summary go to
    the audit trail. The schedule stores no arguments, so no stored `fix`
    can outlive a change of the setting.
    """
    report = sandboxes_reconcile(
        fix=settings.RECONCILE_AUTOFIX,
        actor=Actor.command("scheduled reconcile"),
        batch_size=SCHEDULED_BATCH_SIZE,
        time_budget=settings.SETUP_RUN_TIMEOUT / 2,
    )
    return report.summary


def purge_idempotency_records() -> str:
    """Hourly: remove the Idempotency-Key records past their 24 hours."""
    return f"Removed {idempotency.idempotency_records_purge()} expired idempotency key(s)"


def watch_background_command(command_id: str) -> None:
    """Wait for a background command to end (killing it past its deadline), record it, send command.completed."""
    live.background_command_watch(command_id=command_id)


def sweep_live_sandboxes() -> str:
    """Every minute: stop the sandboxes idle for SANDBOX_IDLE_TIMEOUT, end lost starts and stops."""
    return live.live_sandboxes_sweep(actor=Actor.command("idle sandbox sweep"))
