"""An account's snapshot (its sandbox at rest) and the runs that set it up."""

import secrets
from contextlib import nullcontext

from django.core.serializers.json import DjangoJSONEncoder
from django.db import IntegrityError, connections, models, router, transaction
from django.db.models import Q
from django.utils import timezone

from accounts.audit import ASYNC_COMMIT_SQL


class SnapshotManager(models.Manager):
    def renew(self, *, account_id, expires_at, event: models.Model) -> "Snapshot | None":
        """Move the account's snapshot's expiry to `expires_at`; the renewed row, or None without one.

        `event`, the request's unsaved audit event, is saved in the same
        transaction when a row was renewed. On PostgreSQL one statement does
        both (an UPDATE … RETURNING and the event's INSERT in a WITH).
        """
        connection = connections[router.db_for_write(self.model)]
        now = timezone.now()
        if connection.vendor != "postgresql":
            with transaction.atomic(using=connection.alias):
                if not self.filter(account_id=account_id).update(expires_at=expires_at, updated_at=now):
                    return None
                event.save(force_insert=True, using=connection.alias)
                return self.get(account_id=account_id)
        quote = connection.ops.quote_name
        meta = self.model._meta
        columns = [field.column for field in meta.concrete_fields]
        event_columns, event_values = _insert_columns_and_values(event, connection)
        sql = f"""
            WITH renewed AS (
                UPDATE {quote(meta.db_table)} SET {quote("expires_at")} = %s, {quote("updated_at")} = %s
                WHERE {quote("account_id")} = %s
                RETURNING {", ".join(quote(column) for column in columns)}
            ), recorded AS (
                INSERT INTO {quote(event._meta.db_table)} ({event_columns})
                SELECT {", ".join(["%s"] * len(event_values))} FROM renewed
            )
            SELECT * FROM renewed
        """
        expires_at = meta.get_field("expires_at").get_db_prep_save(expires_at, connection)
        now = meta.get_field("updated_at").get_db_prep_save(now, connection)
        found = list(self.raw(sql, [expires_at, now, account_id, *event_values], using=connection.alias))
        return found[0] if found else None


class Snapshot(models.Model):
    """The account's current snapshot; it always names a snapshot that exists in the backend."""

    account = models.OneToOneField(
        "accounts.Account", on_delete=models.CASCADE, primary_key=True, related_name="snapshot"
    )
    snapshot_id = models.CharField(max_length=64, unique=True)
    expires_at = models.DateTimeField(db_index=True)
    github_repo = models.CharField(max_length=500, null=True, blank=True, help_text="URL of the repository")
    github_repo_id = models.BigIntegerField(
        null=True, blank=True, help_text="The git host's id of the repository (GitHub's, kept across renames)"
    )
    # The snapshot's listing, recorded when it is taken, so that showing it
    # opens no archive: [{"path", "type": "blob"|"tree", "size"}], sorted by path.
    filetree = models.JSONField(null=True, blank=True, help_text="The snapshot's files and folders")
    created_at = models.DateTimeField(default=timezone.now, editable=False)
    updated_at = models.DateTimeField(auto_now=True)

    objects = SnapshotManager()

    class Meta:
        # What the README, the API and the admin's actions call it: the account's sandbox, at rest.
        verbose_name = "sandbox"
        verbose_name_plural = "sandboxes"
        ordering = ["-updated_at"]
        permissions = [
            ("revoke_snapshot", "Can revoke sandboxes (deletes their repositories and snapshot)"),
        ]

    def __str__(self):
        return self.snapshot_id

    @property
    def is_expired(self) -> bool:
        return self.expires_at <= timezone.now()


def new_run_id() -> str:
    return "run_" + secrets.token_hex(12)


ACTIVE_RUN = Q(status__in=["QUEUED", "EXECUTING"])
ACTIVE_RUN_SQL = "status IN ('QUEUED', 'EXECUTING')"  # the same rule, as the constraint's index has it


def answered_detail(status: str) -> str:
    """The audit detail of a setup request answered with the account's active run."""
    return f"A run was already {status.lower()}; answered with it"


NEW_RUN_DETAIL = "Run queued"


class SetupRunManager(models.Manager):
    def create_unless_active(
        self, *, account, api_key, request_event: models.Model, stale_before
    ) -> tuple["SetupRun | None", bool]:
        """A new QUEUED run for the account, or the run that is queued or executing already.

        Returns (run, created). `request_event`, the request's unsaved audit
        event, is saved with the id of the run that answers and a detail that
        says which; with a new run, in the same transaction. The database's
        one-active-run constraint decides between concurrent callers.

        Two answers ask the caller to try again: (None, False), where the
        active run another caller made was not visible yet or finished in
        between; and a run EXECUTING since before `stale_before`, whose worker
        died: it is returned unrecorded, for the caller to fail first.
        """
        run = self.model(account=account, api_key=api_key)
        connection = connections[router.db_for_write(self.model)]
        if connection.vendor == "postgresql":
            return self._create_unless_active_in_one_statement(run, request_event, stale_before, connection)
        found = self.filter(ACTIVE_RUN, account=account).first()
        if found is not None:
            if not found.executing_since_before(stale_before):
                request_event.run_id, request_event.detail = found.pk, answered_detail(found.status)
                request_event.save(force_insert=True, using=connection.alias)
            return found, False
        request_event.run_id, request_event.detail = run.pk, NEW_RUN_DETAIL
        try:
            with transaction.atomic(using=connection.alias):
                run.save(force_insert=True, using=connection.alias)
                request_event.save(force_insert=True, using=connection.alias)
        except IntegrityError:
            return None, False
        return run, True

    def _create_unless_active_in_one_statement(self, run, event, stale_before, connection):
        # The hot path of POST /api/sandboxes/setup, in one round trip and one
        # transaction: the run's insert gives way to an active run (ON CONFLICT
        # on the conditional unique index), the answer is the new run or the
        # active one, and the event is inserted naming it (unless it is stale).
        # The read of the active run sees the rows committed when the
        # statement began, so a run committed while it waited is not seen:
        # (None, False), try again. Where that read finds a run that finished
        # in between while the insert made a new one, the new one answers.
        # https://www.postgresql.org/docs/current/sql-insert.html#SQL-ON-CONFLICT
        #
        # Answered with the active run, the request changed nothing: its event
        # is the statement's only write, and its commit does not wait for the
        # disk (accounts/audit.py, ASYNC_COMMIT_SQL); never inside a caller's
        # transaction.
        quote = connection.ops.quote_name
        table = quote(self.model._meta.db_table)
        relax = ("" if connection.in_atomic_block
                 else f", CASE WHEN NOT created THEN {ASYNC_COMMIT_SQL} END")
        run_columns, run_values = _insert_columns_and_values(run, connection)
        event_columns, event_values = _insert_columns_and_values(event, connection, leave_out={"run_id", "detail"})
        sql = f"""
            WITH inserted AS (
                INSERT INTO {table} ({run_columns}) VALUES ({", ".join(["%s"] * len(run_values))})
                ON CONFLICT (account_id) WHERE {ACTIVE_RUN_SQL} DO NOTHING
                RETURNING id, status, started_at, TRUE AS created
            ), answer AS (
                SELECT * FROM inserted
                UNION ALL
                SELECT id, status, started_at, FALSE FROM {table} WHERE account_id = %s AND {ACTIVE_RUN_SQL}
                ORDER BY created DESC LIMIT 1
            ), recorded AS (
                INSERT INTO {quote(event._meta.db_table)} ({event_columns}, {quote("run_id")}, {quote("detail")})
                SELECT {", ".join(["%s"] * len(event_values))}, id,
                       CASE WHEN created THEN %s WHEN status = 'QUEUED' THEN %s ELSE %s END
                FROM answer WHERE created OR NOT (status = 'EXECUTING' AND started_at < %s)
            )
            SELECT id, status, started_at, created{relax} FROM answer
        """
        parameters = [
            *run_values, run.account_id, *event_values,
            NEW_RUN_DETAIL, answered_detail(SetupRun.Status.QUEUED), answered_detail(SetupRun.Status.EXECUTING),
            stale_before,
        ]
        # One statement is a transaction of its own; inside a caller's
        # transaction, a savepoint keeps a failure from spoiling the rest of it.
        savepoint = transaction.atomic(using=connection.alias) if connection.in_atomic_block else nullcontext()
        with savepoint, connection.cursor() as cursor:
            cursor.execute(sql, parameters)
            found = cursor.fetchone()
        if found is None:
            return None, False
        run_id, status, started_at, created = found[:4]
        if created:
            run._state.adding, run._state.db = False, connection.alias
            return run, True
        # The other fields load on first use, as with QuerySet.only().
        return self.model.from_db(connection.alias, ["id", "status", "started_at"], [run_id, status, started_at]), False


def _insert_columns_and_values(instance: models.Model, connection, leave_out=frozenset()) -> tuple[str, list]:
    """The quoted columns of an INSERT of `instance` and their values, prepared as Model.save() prepares them."""
    meta = instance._meta
    fields = [field for field in meta.local_concrete_fields
              if field.attname not in leave_out
              and not (field is meta.auto_field and getattr(instance, field.attname) is None)]
    columns = ", ".join(connection.ops.quote_name(field.column) for field in fields)
    return columns, [field.get_db_prep_save(field.pre_save(instance, True), connection) for field in fields]


class SetupRun(models.Model):
    class Status(models.TextChoices):
        QUEUED = "QUEUED"
        EXECUTING = "EXECUTING"
        COMPLETED = "COMPLETED"
        FAILED = "FAILED"
        CANCELED = "CANCELED"

    ACTIVE_STATUSES = (Status.QUEUED, Status.EXECUTING)
    TASK_IDENTIFIER = "setup-sandbox"

    id = models.CharField(primary_key=True, max_length=40, default=new_run_id, editable=False)
    account = models.ForeignKey("accounts.Account", on_delete=models.CASCADE, related_name="setup_runs")
    api_key = models.ForeignKey(
        "accounts.ApiKey", on_delete=models.SET_NULL, null=True, blank=True, related_name="setup_runs"
    )
    status = models.CharField(max_length=10, choices=Status.choices, default=Status.QUEUED)
    current_step = models.CharField(max_length=40, blank=True)
    steps = models.JSONField(default=list, blank=True)
    error = models.TextField(blank=True)
    output = models.JSONField(null=True, blank=True)
    # What this run made, so that a failure (or the sweep, if the worker
    # died) can take it away again.
    sandbox_id = models.CharField(max_length=64, blank=True, help_text="The sandbox this run started, if any")
    created_repository = models.CharField(
        max_length=200, blank=True, help_text="The repository this run created (not one it reused)"
    )
    created_repository_id = models.BigIntegerField(
        null=True, blank=True, help_text="The git host's id of the repository this run created"
    )
    created_at = models.DateTimeField(default=timezone.now, editable=False)
    started_at = models.DateTimeField(null=True, blank=True)
    finished_at = models.DateTimeField(null=True, blank=True)
    task_id = models.CharField(max_length=64, blank=True, help_text="django-q2 task id")

    objects = SetupRunManager()

    class Meta:
        ordering = ["-created_at"]
        permissions = [
            ("start_setuprun", "Can start setup runs from the admin"),
            ("cancel_setuprun", "Can cancel queued setup runs"),
        ]
        indexes = [models.Index(fields=["account", "-created_at"], name="setuprun_account_recent")]
        constraints = [
            # At most one run per account is queued or executing: concurrent
            # setup requests cannot start two.
            models.UniqueConstraint(
                fields=["account"],
                condition=ACTIVE_RUN,
                name="one_active_setup_run_per_account",
            )
        ]

    def __str__(self):
        return self.id

    @property
    def is_active(self) -> bool:
        return self.status in self.ACTIVE_STATUSES

    def executing_since_before(self, moment) -> bool:
        """Executing since before `moment`: past the timeout, its worker has died."""
        return self.status == self.Status.EXECUTING and self.started_at is not None and self.started_at < moment


class IdempotencyRecord(models.Model):
    """The answer to a request sent with an Idempotency-Key, kept for replaying it (sandboxes/idempotency.py).

    One row per API key and key string: the unique constraint decides which
    of several concurrent requests with the same key is processed.
    """

    class State(models.TextChoices):
        IN_FLIGHT = "in_flight", "In flight"
        DONE = "done", "Done"

    api_key = models.ForeignKey("accounts.ApiKey", on_delete=models.CASCADE, related_name="+")
    key = models.CharField(max_length=255)
    fingerprint = models.CharField(max_length=200, help_text="Method, path and SHA-256 of the body")
    state = models.CharField(max_length=10, choices=State.choices, default=State.IN_FLIGHT)
    status_code = models.PositiveSmallIntegerField(null=True, blank=True)
    body = models.JSONField(null=True, blank=True, encoder=DjangoJSONEncoder)
    created_at = models.DateTimeField(default=timezone.now, db_index=True, help_text="When the key was taken")

    class Meta:
        constraints = [models.UniqueConstraint(fields=["api_key", "key"], name="one_idempotency_record_per_key")]

    def __str__(self):
        return f"{self.key} ({self.state})"


# --- live sandboxes ----------------------------------------------------------------------


def new_live_sandbox_id() -> str:
    return "sbx_" + secrets.token_hex(10)


def new_command_id() -> str:
    return "cmd_" + secrets.token_hex(12)


LIVE_SANDBOX = Q(status__in=["pending", "running", "stopping"])


class LiveSandbox(models.Model):
    """An account's sandbox while it runs: started from the snapshot, taking commands and files, stopped.

    Everything about it is in this row (which engine holds it and its
    container's id), so any web server or worker on any host can reach it.
    """

    class Status(models.TextChoices):
        PENDING = "pending"  # being started
        RUNNING = "running"
        STOPPING = "stopping"  # its snapshot is being taken, then it is removed
        STOPPED = "stopped"
        FAILED = "failed"  # it could not be started, or it was lost

    class StopReason(models.TextChoices):
        API = "api"
        IDLE = "idle"
        STAFF = "staff"
        DELETED = "deleted"
        LOST = "lost"  # its start or stop never finished (the process doing it died)

    LIVE_STATUSES = (Status.PENDING, Status.RUNNING, Status.STOPPING)

    id = models.CharField(primary_key=True, max_length=40, default=new_live_sandbox_id, editable=False)
    account = models.ForeignKey("accounts.Account", on_delete=models.CASCADE, related_name="live_sandboxes")
    api_key = models.ForeignKey("accounts.ApiKey", on_delete=models.SET_NULL, null=True, blank=True,
                                related_name="+")
    status = models.CharField(max_length=10, choices=Status.choices, default=Status.PENDING)
    backend = models.CharField(max_length=20, help_text="The sandbox backend that runs it (SANDBOX_BACKEND)")
    engine = models.CharField(max_length=300, blank=True, help_text="The engine that holds it (DOCKER_HOST)")
    runtime_id = models.CharField(max_length=64, blank=True, help_text="The backend's id of its container")
    started_from = models.CharField(max_length=64, blank=True,
                                    help_text="The snapshot it started from; blank for fresh starting content")
    snapshot_id = models.CharField(max_length=64, blank=True, help_text="The snapshot its stop took")
    stop_reason = models.CharField(max_length=10, choices=StopReason.choices, blank=True)
    error = models.TextField(blank=True)
    created_at = models.DateTimeField(default=timezone.now, editable=False)
    started_at = models.DateTimeField(null=True, blank=True)
    last_activity_at = models.DateTimeField(null=True, blank=True,
                                            help_text="Its start or last command: the idle timeout counts from here")
    stopped_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-created_at"]
        verbose_name = "live sandbox"
        permissions = [("stop_livesandbox", "Can stop live sandboxes (takes a snapshot first)")]
        indexes = [models.Index(fields=["account", "-created_at"], name="live_sandbox_account_recent")]
        constraints = [
            # One live sandbox per account: concurrent starts cannot make two.
            models.UniqueConstraint(fields=["account"], condition=LIVE_SANDBOX, name="one_live_sandbox_per_account"),
        ]

    def __str__(self):
        return self.id

    @property
    def is_live(self) -> bool:
        return self.status in self.LIVE_STATUSES


class SandboxCommand(models.Model):
    """One command a client ran in a live sandbox: who, what, and how it ended (never its environment's values)."""

    class Status(models.TextChoices):
        RUNNING = "running"
        FINISHED = "finished"  # it exited by itself; exit_code says how
        TIMED_OUT = "timed_out"  # killed at its time limit
        KILLED = "killed"  # killed by staff, or by its sandbox's stop
        FAILED = "failed"  # it could not be run: error says why

    id = models.CharField(primary_key=True, max_length=40, default=new_command_id, editable=False)
    sandbox = models.ForeignKey(LiveSandbox, on_delete=models.CASCADE, related_name="commands")
    account = models.ForeignKey("accounts.Account", on_delete=models.CASCADE, related_name="sandbox_commands")
    api_key = models.ForeignKey("accounts.ApiKey", on_delete=models.SET_NULL, null=True, blank=True,
                                related_name="+")
    command = models.CharField(max_length=4096)
    args = models.JSONField(default=list, blank=True)
    cwd = models.CharField(max_length=4096, blank=True)
    env_names = models.JSONField(default=list, blank=True, help_text="The names of its environment variables only")
    timeout_ms = models.PositiveIntegerField()
    background = models.BooleanField(default=False)
    status = models.CharField(max_length=10, choices=Status.choices, default=Status.RUNNING)
    exit_code = models.IntegerField(null=True, blank=True)
    stdout = models.TextField(blank=True)
    stderr = models.TextField(blank=True)
    stdout_truncated = models.BooleanField(default=False)
    stderr_truncated = models.BooleanField(default=False)
    error = models.TextField(blank=True)
    duration_ms = models.PositiveIntegerField(null=True, blank=True)
    created_at = models.DateTimeField(default=timezone.now, editable=False)
    finished_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-created_at"]
        permissions = [("kill_sandboxcommand", "Can kill running commands in live sandboxes")]
        indexes = [models.Index(fields=["account", "-created_at"], name="command_account_recent"),
                   models.Index(fields=["status", "background"], name="command_status_background")]

    def __str__(self):
        return self.id

    @property
    def timed_out(self) -> bool:
        return self.status == self.Status.TIMED_OUT
