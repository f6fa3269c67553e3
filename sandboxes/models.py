"""An account's snapshot (its sandbox at rest) and the runs that set it up."""

import secrets

from django.db import models
from django.db.models import Q
from django.utils import timezone


class Snapshot(models.Model):
    """The account's current snapshot; it always names a snapshot that exists in the backend."""

    account = models.OneToOneField(
        "accounts.Account", on_delete=models.CASCADE, primary_key=True, related_name="snapshot"
    )
    snapshot_id = models.CharField(max_length=64, unique=True)
    expires_at = models.DateTimeField(db_index=True)
    github_repo = models.CharField(max_length=500, null=True, blank=True, help_text="URL of the repository")
    created_at = models.DateTimeField(default=timezone.now, editable=False)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
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
    created_at = models.DateTimeField(default=timezone.now, editable=False)
    started_at = models.DateTimeField(null=True, blank=True)
    finished_at = models.DateTimeField(null=True, blank=True)
    task_id = models.CharField(max_length=64, blank=True, help_text="django-q2 task id")

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
                condition=Q(status__in=["QUEUED", "EXECUTING"]),
                name="one_active_setup_run_per_account",
            )
        ]

    def __str__(self):
        return self.id

    @property
    def is_active(self) -> bool:
        return self.status in self.ACTIVE_STATUSES
