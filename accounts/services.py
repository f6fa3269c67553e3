"""Writes on accounts and API keys."""

from datetime import datetime

from django.db import transaction
from django.db.models import QuerySet
from django.utils import timezone

from accounts.audit import Actor, audit_event, audit_record, audit_record_many
from accounts.keys import generate_key, hash_key, visible_prefix
from accounts.models import Account, ApiKey, AuditEvent


def account_create(*, name: str, email: str) -> Account:
    account = Account(name=name.strip(), email=email.strip().lower())
    account.full_clean()
    account.save()
    return account


@transaction.atomic
def api_key_create(
    *, account: Account, actor: Actor, organization=None, name: str = "", expires_at: datetime | None = None
) -> tuple[ApiKey, str]:
    """Create a key and return it with the raw key, which is never stored and cannot be shown again."""
    raw_key = generate_key()
    key = ApiKey.objects.create(
        account=account,
        organization=organization,
        name=name,
        prefix=visible_prefix(raw_key),
        key_hash=hash_key(raw_key),
        expires_at=expires_at,
    )
    audit_record(
        action=AuditEvent.Action.KEY_CREATED,
        actor=actor,
        account=account,
        detail=f"Key {key.prefix}… ({name or 'unnamed'})" + (f" of organization {organization.slug}" if organization else ""),
    )
    return key, raw_key


@transaction.atomic
def api_keys_revoke(*, keys: QuerySet[ApiKey], actor: Actor) -> int:
    """Revoke the keys not revoked yet; they stop working on their next request. Returns how many."""
    now = timezone.now()
    # A fresh queryset: the admin's carries outer joins (list_select_related),
    # which PostgreSQL refuses to lock with FOR UPDATE.
    revoking = list(
        ApiKey.objects.filter(pk__in=list(keys.values_list("pk", flat=True)), revoked_at__isnull=True)
        .select_for_update()
    )
    ApiKey.objects.filter(pk__in=[key.pk for key in revoking]).update(revoked_at=now)
    audit_record_many(
        audit_event(action=AuditEvent.Action.KEY_REVOKED, actor=actor, account=key.account_id,
                    detail=f"Key {key.prefix}… ({key.name or 'unnamed'})")
        for key in revoking
    )
    return len(revoking)
