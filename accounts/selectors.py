"""Reads on accounts."""

import uuid

from accounts.models import Account


def account_by_id(raw_id: str) -> Account | None:
    """The account with this id; None for an unknown id or one that is not a UUID."""
    try:
        return Account.objects.filter(pk=uuid.UUID(str(raw_id))).first()
    except ValueError:
        return None
