"""Organizations and their members: the only way one account reaches another."""

import uuid

from django.db import models
from django.utils import timezone


class Organization(models.Model):
    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    name = models.CharField(max_length=200)
    slug = models.SlugField(max_length=100, unique=True)
    is_staff = models.BooleanField(
        default=False, help_text="Members of a staff organization may act on any account."
    )
    created_at = models.DateTimeField(default=timezone.now, editable=False)

    class Meta:
        ordering = ["name"]

    def __str__(self):
        return self.name


class Membership(models.Model):
    class Role(models.TextChoices):
        OWNER = "owner", "Owner"
        ADMIN = "admin", "Admin"
        MEMBER = "member", "Member"

    account = models.ForeignKey("accounts.Account", on_delete=models.CASCADE, related_name="memberships")
    organization = models.ForeignKey(Organization, on_delete=models.CASCADE, related_name="memberships")
    role = models.CharField(max_length=10, choices=Role.choices, default=Role.MEMBER)
    created_at = models.DateTimeField(default=timezone.now, editable=False)

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["account", "organization"], name="one_membership_per_account_and_org")
        ]

    def __str__(self):
        return f"{self.account} in {self.organization} ({self.role})"


MANAGING_ROLES = (Membership.Role.OWNER, Membership.Role.ADMIN)
