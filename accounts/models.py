"""Accounts (who a sandbox belongs to) and the API keys they call the API with."""

import uuid

from django.conf import settings
from django.db import models
from django.utils import timezone


class Account(models.Model):
    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    name = models.CharField(max_length=200)
    email = models.EmailField(unique=True)
    is_active = models.BooleanField(default=True)
    created_at = models.DateTimeField(default=timezone.now, editable=False)

    class Meta:
        ordering = ["name"]
        permissions = [("deactivate_account", "Can deactivate accounts (revokes their sandbox and API keys)")]

    def __str__(self):
        return f"{self.name} <{self.email}>"

    # The account is what DRF sees as `request.user` of an API request.
    is_authenticated = True


def default_scopes() -> list[str]:
    """The scopes of a key made without naming any: API_KEY_DEFAULT_SCOPES."""
    return list(settings.API_KEY_DEFAULT_SCOPES)


class ApiKey(models.Model):
    """An API key, stored only as its HMAC-SHA256 hash (see accounts/keys.py).

    A key with an organization is an organization key: it may act on the
    accounts of that organization's members (orgs/access.py). Its scopes say
    what it may do to them (accounts/scopes.py).
    """

    account = models.ForeignKey(Account, on_delete=models.CASCADE, related_name="api_keys")
    organization = models.ForeignKey(
        "orgs.Organization", on_delete=models.CASCADE, null=True, blank=True, related_name="api_keys"
    )
    name = models.CharField(max_length=100, blank=True)
    prefix = models.CharField(max_length=16, help_text="The first characters of the key, to recognise it.")
    key_hash = models.CharField(max_length=64, unique=True, editable=False)
    created_at = models.DateTimeField(default=timezone.now, editable=False)
    expires_at = models.DateTimeField(null=True, blank=True)
    revoked_at = models.DateTimeField(null=True, blank=True)
    last_used_at = models.DateTimeField(null=True, blank=True, editable=False)
    scopes = models.JSONField(default=default_scopes, blank=True,
                              help_text="What the key may do, e.g. [\"sandboxes:read\", \"sandboxes:setup\"]")

    class Meta:
        verbose_name = "API key"
        ordering = ["-created_at"]
        permissions = [("revoke_apikey", "Can revoke API keys")]

    def __str__(self):
        return f"{self.prefix}… ({self.name or 'unnamed'})"

    def is_usable(self, *, now) -> bool:
        return self.revoked_at is None and (self.expires_at is None or self.expires_at > now)


class AuditEvent(models.Model):
    """One thing that happened to a sandbox, a key or a run: who, to whom, what, and how it ended.

    Written in the same transaction as the change it records (accounts/audit.py).
    The target account's id is copied, so the trail outlives the account.
    """

    class Action(models.TextChoices):
        SETUP_REQUESTED = "setup.requested", "Setup requested"
        SANDBOX_DELETED = "sandbox.deleted", "Sandbox deleted"
        SANDBOX_REVOKED = "sandbox.revoked", "Sandbox revoked by staff"
        # A delete or revoke that found no snapshot row and no repository: nothing was deleted.
        NOTHING_TO_DELETE = "sandbox.nothing_to_delete", "Delete found no sandbox"
        SANDBOX_RENEWED = "sandbox.renewed", "Sandbox renewed"
        KEY_CREATED = "key.created", "API key created"
        KEY_REVOKED = "key.revoked", "API key revoked"
        RUN_COMPLETED = "run.completed", "Setup run completed"
        RUN_FAILED = "run.failed", "Setup run failed"
        RUN_CANCELED = "run.canceled", "Setup run canceled"
        CLEANUP = "cleanup.finished", "Cleanup finished"
        RECONCILE = "reconcile.finished", "Reconcile finished"
        RECONCILE_FIXED = "reconcile.fixed", "Reconcile fixed an item"
        RECONCILE_FIX_FAILED = "reconcile.fix_failed", "Reconcile fix failed"
        # Changes to who may act on what (accounts/access_changes.py).
        ORG_CREATED = "org.created", "Organization created"
        ORG_CHANGED = "org.changed", "Organization changed"
        ORG_DELETED = "org.deleted", "Organization deleted"
        MEMBER_ADDED = "membership.added", "Member added"
        MEMBER_CHANGED = "membership.changed", "Membership changed"
        MEMBER_REMOVED = "membership.removed", "Member removed"
        ACCOUNT_ACTIVE_CHANGED = "account.active_changed", "Account activated or deactivated"
        USER_CREATED = "user.created", "Admin user created"
        USER_CHANGED = "user.changed", "Admin user's staff flags changed"
        USER_DELETED = "user.deleted", "Admin user deleted"
        ACCOUNT_DEACTIVATED = "account.deactivated", "Account deactivated by staff"
        WEBHOOK_DISABLED = "webhook.disabled", "Webhook endpoint disabled"
        # Live sandboxes (sandboxes/live.py); each command is recorded on its own row, not here.
        SANDBOX_STARTED = "sandbox.started", "Live sandbox started"
        SANDBOX_STOPPED = "sandbox.stopped", "Live sandbox stopped"
        FILES_UPLOADED = "sandbox.files_uploaded", "Files uploaded into a live sandbox"
        COMMAND_KILLED = "command.killed", "Command killed by staff"
        KEY_SCOPES_CHANGED = "key.scopes_changed", "API key's scopes changed"

    class Outcome(models.TextChoices):
        SUCCESS = "success", "Success"
        FAILURE = "failure", "Failure"

    created_at = models.DateTimeField(default=timezone.now, editable=False)
    action = models.CharField(max_length=32, choices=Action.choices)
    outcome = models.CharField(max_length=10, choices=Outcome.choices, default=Outcome.SUCCESS)
    actor = models.CharField(max_length=200, help_text="Who acted: an API key and its owner, a staff user, or a command")
    actor_key = models.ForeignKey(ApiKey, on_delete=models.SET_NULL, null=True, blank=True, related_name="+")
    actor_user = models.ForeignKey(
        "auth.User", on_delete=models.SET_NULL, null=True, blank=True, related_name="sandbox_audit_events"
    )
    account = models.ForeignKey(
        Account, on_delete=models.SET_NULL, null=True, blank=True, related_name="audit_events", db_constraint=False
    )
    account_ref = models.UUIDField(null=True, blank=True, help_text="The target account's id")
    run_id = models.CharField(max_length=40, blank=True)
    client_ip = models.GenericIPAddressField(null=True, blank=True)
    request_id = models.CharField(max_length=128, blank=True)
    detail = models.TextField(blank=True)

    class Meta:
        verbose_name = "audit event"
        verbose_name_plural = "audit trail"
        ordering = ["-created_at", "-id"]
        # Every request that changes something inserts an event, so each index
        # is paid for on the API's hot path: only those the back office looks
        # up by. Declared here rather than with db_index, which on PostgreSQL
        # adds a second (LIKE) index to a text column; nothing searches these
        # by prefix. The first serves lookups by account_ref alone too.
        indexes = [
            models.Index(fields=["account_ref", "-created_at", "-id"], name="audit_account_recent"),
            models.Index(fields=["action"], name="audit_action"),
            models.Index(fields=["run_id"], name="audit_run"),
            models.Index(fields=["request_id"], name="audit_request"),
            # GET /api/audit walks (created_at, id) newest first (orgs/audit_trail.py): the first index
            # for one account's events, this one for everything (and the admin's dates).
            models.Index(fields=["-created_at", "-id"], name="audit_walk"),
        ]

    def __str__(self):
        return f"{self.created_at:%Y-%m-%d %H:%M:%S} {self.action} {self.outcome}"
