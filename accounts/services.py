"""Writes on accounts and API keys."""

from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Protocol

from django.db import transaction
from django.db.models import Count, QuerySet
from django.utils import timezone

from accounts.audit import Actor, audit_event, audit_record, audit_record_many
from accounts.keys import generate_key, hash_key, visible_prefix
from accounts.models import Account, ApiKey, AuditEvent, default_scopes
from accounts.scopes import normalized_scopes, scopes_display


class SandboxRevocation(Protocol):
    """What revoking one account's sandbox did (sandboxes.services.SandboxDeletion)."""

    account_id: object
    ok: bool
    error: str


# Revokes the sandboxes of accounts being deactivated, one SandboxRevocation each: sandboxes.services.sandboxes_delete,
# registered from SandboxesConfig.ready() (accounts sits below sandboxes and imports none of it).
_sandbox_revokers: list[Callable[..., list[SandboxRevocation]]] = []


def sandbox_revoker_register(revoke: Callable[..., list[SandboxRevocation]]) -> None:
    _sandbox_revokers[:] = [revoke]


def account_create(*, name: str, email: str) -> Account:
    account = Account(name=name.strip(), email=email.strip().lower())
    account.full_clean()
    account.save()
    return account


@transaction.atomic
def api_key_create(
    *, account: Account, actor: Actor, organization=None, name: str = "", expires_at: datetime | None = None,
    scopes: Iterable[str] | None = None,
) -> tuple[ApiKey, str]:
    """Create a key and return it with the raw key, which is never stored and cannot be shown again.

    `scopes` None: API_KEY_DEFAULT_SCOPES. ValueError for a name that is not a scope (accounts/scopes.py).
    """
    scopes = normalized_scopes(default_scopes() if scopes is None else scopes)
    raw_key = generate_key()
    key = ApiKey.objects.create(
        account=account,
        organization=organization,
        name=name,
        prefix=visible_prefix(raw_key),
        key_hash=hash_key(raw_key),
        expires_at=expires_at,
        scopes=scopes,
    )
    audit_record(
        action=AuditEvent.Action.KEY_CREATED,
        actor=actor,
        account=account,
        detail=f"Key {key.prefix}… ({name or 'unnamed'})" + (f" of organization {organization.slug}" if organization else "")
        + f", scopes {scopes_display(scopes)}",
    )
    return key, raw_key


@transaction.atomic
def api_key_scopes_set(*, key: ApiKey, scopes: Iterable[str], actor: Actor) -> bool:
    """Give the key these scopes from its next request on, recorded as before → after; False if they were its own.

    ValueError for a name that is not a scope.
    """
    scopes = normalized_scopes(scopes)
    stored = ApiKey.objects.select_for_update().get(pk=key.pk)
    if stored.scopes == scopes:
        key.scopes = scopes
        return False
    ApiKey.objects.filter(pk=key.pk).update(scopes=scopes)
    key.scopes = scopes
    audit_record(
        action=AuditEvent.Action.KEY_SCOPES_CHANGED,
        actor=actor,
        account=stored.account_id,
        detail=f"Key {stored.prefix}… ({stored.name or 'unnamed'}): scopes: {scopes_display(stored.scopes)} → "
        f"{scopes_display(scopes)}",
    )
    return True


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


@dataclass
class AccountDeactivation:
    """What deactivating one account did."""

    account: Account
    sandbox: SandboxRevocation  # its sandbox's revocation (sandboxes.services)
    keys_revoked: int = 0
    deactivated: bool = False  # False: it was inactive already


def accounts_deactivate(*, accounts: Sequence[Account], actor: Actor) -> list[AccountDeactivation]:
    """Deactivate accounts: revoke each one's sandbox and keys, and mark it inactive, with audit events.

    The sandbox goes first, as the admin's "Revoke selected sandboxes" does it
    (its queued run canceled, repositories, snapshot and row deleted). Keys
    are revoked and the account marked inactive even where the sandbox could
    not be deleted: the person is stopped at once, and revoking the sandbox
    again finishes the job (the deactivation reports which).
    """
    revoke = _sandbox_revokers[0]
    deletions = {deletion.account_id: deletion for deletion in revoke(accounts=accounts, actor=actor)}
    with transaction.atomic():
        revoking = ApiKey.objects.filter(account__in=accounts, revoked_at__isnull=True)
        revoked_per_account = dict(
            revoking.order_by().values_list("account_id").annotate(n=Count("pk")).values_list("account_id", "n")
        )
        api_keys_revoke(keys=revoking, actor=actor)
        active = set(
            Account.objects.select_for_update().filter(pk__in=[a.pk for a in accounts], is_active=True)
            .values_list("pk", flat=True)
        )
        Account.objects.filter(pk__in=active).update(is_active=False)
        results = []
        for account in accounts:
            deletion = deletions[account.pk]
            result = AccountDeactivation(
                account=account, sandbox=deletion, keys_revoked=revoked_per_account.get(account.pk, 0),
                deactivated=account.pk in active,
            )
            account.is_active = False
            results.append(result)
        audit_record_many(
            audit_event(
                action=AuditEvent.Action.ACCOUNT_DEACTIVATED, actor=actor, account=result.account,
                outcome=AuditEvent.Outcome.SUCCESS if result.sandbox.ok else AuditEvent.Outcome.FAILURE,
                detail=_deactivation_detail(result),
            )
            for result in results
        )
    return results


def _deactivation_detail(result: AccountDeactivation) -> str:
    parts = ["marked inactive" if result.deactivated else "was inactive already",
             f"{result.keys_revoked} key(s) revoked"]
    parts.append(f"the sandbox could not be revoked: {result.sandbox.error}" if not result.sandbox.ok
                 else "sandbox revoked")
    return "Deactivated: " + "; ".join(parts)
