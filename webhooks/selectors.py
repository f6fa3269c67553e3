"""Reads on webhooks."""

from webhooks.models import Endpoint


def endpoint_by_id(raw_id: str) -> Endpoint | None:
    """The endpoint with this id; None for an unknown id or one that is not a number."""
    return Endpoint.objects.filter(pk=int(raw_id)).first() if str(raw_id).isdigit() else None
