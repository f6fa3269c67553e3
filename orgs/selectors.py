"""Reads on organizations."""

import uuid

from orgs.models import Organization


def organization_by_id_or_slug(value: str) -> Organization | None:
    try:
        return Organization.objects.filter(pk=uuid.UUID(str(value))).first()
    except ValueError:
        return Organization.objects.filter(slug=value).first()
