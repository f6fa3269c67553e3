"""Writes on organizations and memberships."""

from django.utils.text import slugify

from orgs.models import Membership, Organization


def organization_create(*, name: str, slug: str = "", is_staff: bool = False) -> Organization:
    organization = Organization(name=name.strip(), slug=slug or slugify(name), is_staff=is_staff)
    organization.full_clean()
    organization.save()
    return organization


def membership_set(*, organization: Organization, account, role: str) -> Membership:
    """Add the account to the organization, or change its role there."""
    if role not in Membership.Role.values:
        raise ValueError(f"role must be one of {', '.join(Membership.Role.values)}, not {role!r}")
    membership, _ = Membership.objects.update_or_create(
        organization=organization, account=account, defaults={"role": role}
    )
    return membership
