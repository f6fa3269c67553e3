"""Writes on organizations and memberships, each recorded in the audit trail (accounts/access_changes.py)."""

from django.db import transaction
from django.utils.text import slugify

from accounts.access_changes import access_change_record
from accounts.audit import Actor
from orgs.models import Membership, Organization


@transaction.atomic
def organization_create(*, name: str, actor: Actor, slug: str = "", is_staff: bool = False) -> Organization:
    organization = Organization(name=name.strip(), slug=slug or slugify(name), is_staff=is_staff)
    organization.full_clean()
    organization.save()
    access_change_record(actor=actor, before=None, after=organization)
    return organization


@transaction.atomic
def membership_set(*, organization: Organization, account, role: str, actor: Actor) -> Membership:
    """Add the account to the organization, or change its role there."""
    if role not in Membership.Role.values:
        raise ValueError(f"role must be one of {', '.join(Membership.Role.values)}, not {role!r}")
    before = (
        Membership.objects.select_for_update()
        .select_related("account", "organization")
        .filter(organization=organization, account=account)
        .first()
    )
    membership, _ = Membership.objects.update_or_create(
        organization=organization, account=account, defaults={"role": role}
    )
    access_change_record(actor=actor, before=before, after=membership)
    return membership
