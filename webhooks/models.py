"""Webhook endpoints, the events recorded for them (the outbox), and each attempt to deliver one.

An event is recorded in the transaction of the change that causes it, one row
per endpoint that wants it; a worker delivers it afterwards (webhooks/delivery.py).
"""

import secrets

from django.db import models
from django.db.models import Q
from django.utils import timezone

EVENT_TYPES = (
    "run.completed",
    "run.failed",
    "run.canceled",
    "sandbox.deleted",
    "snapshot.expiring",
    "snapshot.expired",
    "sandbox.started",
    "sandbox.stopped",
    "command.completed",
)


def new_event_id() -> str:
    """The event's webhook-id: unique per event, the same on every attempt."""
    return "msg_" + secrets.token_hex(12)


class Endpoint(models.Model):
    """A URL that receives the events of one account, or of every member account of an organization."""

    organization = models.ForeignKey(
        "orgs.Organization", on_delete=models.CASCADE, null=True, blank=True, related_name="webhook_endpoints"
    )
    account = models.ForeignKey(
        "accounts.Account", on_delete=models.CASCADE, null=True, blank=True, related_name="webhook_endpoints"
    )
    url = models.URLField(max_length=2000)
    # Kept readable: every delivery is signed with it. Shown once, when made.
    secret = models.CharField(max_length=200, editable=False)
    previous_secret = models.CharField(max_length=200, blank=True, editable=False)
    previous_secret_expires_at = models.DateTimeField(null=True, blank=True, editable=False)
    # ",run.completed,run.failed," (commas around each, so one LIKE finds a type); empty: every type.
    event_types = models.CharField(max_length=500, blank=True, help_text="Empty: every event type")
    is_active = models.BooleanField(default=True)
    disabled_reason = models.CharField(max_length=300, blank=True)
    failing_since = models.DateTimeField(
        null=True, blank=True, help_text="The first failed attempt since the last success"
    )
    created_at = models.DateTimeField(default=timezone.now, editable=False)

    class Meta:
        ordering = ["-created_at"]
        verbose_name = "webhook endpoint"
        permissions = [("disable_endpoint", "Can disable webhook endpoints")]
        constraints = [
            models.CheckConstraint(
                condition=Q(organization__isnull=True, account__isnull=False)
                | Q(organization__isnull=False, account__isnull=True),
                name="webhook_endpoint_has_one_owner",
            )
        ]

    def __str__(self):
        return f"#{self.pk} {self.url}"

    @property
    def owner_label(self) -> str:
        if self.organization_id:
            return f"organization {self.organization.slug}"
        return f"account {self.account_id}"

    @property
    def event_type_list(self) -> list[str]:
        return [name for name in self.event_types.split(",") if name]

    def signing_secrets(self, now) -> list[str]:
        """The current secret, and the previous one while its grace period lasts."""
        found = [self.secret]
        if self.previous_secret and self.previous_secret_expires_at and self.previous_secret_expires_at > now:
            found.append(self.previous_secret)
        return found


class Event(models.Model):
    """One event for one endpoint: the outbox row, delivered by a worker after its transaction commits."""

    class State(models.TextChoices):
        PENDING = "pending", "Pending"
        DELIVERED = "delivered", "Delivered"
        FAILED = "failed", "Failed"

    id = models.CharField(primary_key=True, max_length=40, default=new_event_id, editable=False)
    endpoint = models.ForeignKey(Endpoint, on_delete=models.CASCADE, related_name="events")
    type = models.CharField(max_length=40)
    account_id = models.UUIDField(db_index=True)
    body = models.TextField(help_text="The JSON body, exactly as signed and sent")
    # Set where an event must fire once per thing (snapshot.expiring: per snapshot and expiry).
    dedupe_key = models.CharField(max_length=200, blank=True)
    state = models.CharField(max_length=10, choices=State.choices, default=State.PENDING)
    attempts = models.PositiveIntegerField(default=0)
    next_attempt_at = models.DateTimeField(default=timezone.now)
    # A worker holds the event until then; past it, a worker that died lost it, and the sweep takes it.
    claimed_until = models.DateTimeField(null=True, blank=True)
    created_at = models.DateTimeField(default=timezone.now, editable=False)
    delivered_at = models.DateTimeField(null=True, blank=True)
    last_error = models.CharField(max_length=500, blank=True)

    class Meta:
        ordering = ["-created_at"]
        verbose_name = "webhook event"
        permissions = [("redeliver_event", "Can send webhook events again")]
        indexes = [models.Index(fields=["state", "next_attempt_at"], name="webhook_event_due")]
        constraints = [
            models.UniqueConstraint(
                fields=["endpoint", "dedupe_key"], condition=~Q(dedupe_key=""), name="webhook_event_once_per_key"
            )
        ]

    def __str__(self):
        return f"{self.type} {self.pk}"


class DeliveryAttempt(models.Model):
    """One HTTP POST of an event: what the receiver answered, and how long it took."""

    event = models.ForeignKey(Event, on_delete=models.CASCADE, related_name="delivery_attempts")
    number = models.PositiveIntegerField()
    started_at = models.DateTimeField()
    duration_ms = models.PositiveIntegerField()
    status_code = models.PositiveIntegerField(null=True, blank=True)
    succeeded = models.BooleanField()
    error = models.CharField(max_length=500, blank=True)
    response_body = models.TextField(blank=True, help_text="The first 1 KiB of the answer")

    class Meta:
        ordering = ["event", "number"]

    def __str__(self):
        return f"attempt {self.number} of {self.event_id}"
