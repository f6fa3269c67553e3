"""The one answer to "may this API key act on that account?".

The rules (DESIGN.md, "Who may act on which account"):

- every key may act on its own account;
- a key of a member of a staff organization may act on any account;
- an organization key may act on the members of its organization, while its
  holder is a member too;
- a personal key may act on the members of every organization in which the
  key's account is an owner or an admin.

Nothing else is reachable. Callers answer an unreachable account exactly as
they answer one that does not exist, so ids cannot be probed.
"""

from django.db.models import Exists, OuterRef, Q, QuerySet

from accounts.models import Account, ApiKey
from orgs.models import MANAGING_ROLES, Membership

ACCESS_DENIED_MESSAGE = "Access denied to specified account_id"


def _reach(key: ApiKey) -> Q:
    is_staff_member = Exists(Membership.objects.filter(account_id=key.account_id, organization__is_staff=True))
    if key.organization_id is not None:
        # Only while the key's holder is still a member: leaving the
        # organization takes its key's reach away.
        holder_is_member = Membership.objects.filter(
            account_id=key.account_id, organization_id=key.organization_id
        )
        shares_organization = Membership.objects.filter(
            Exists(holder_is_member), account_id=OuterRef("pk"), organization_id=key.organization_id
        )
    else:
        shares_organization = Membership.objects.filter(
            account_id=OuterRef("pk"),
            organization__memberships__account_id=key.account_id,
            organization__memberships__role__in=MANAGING_ROLES,
        )
    return Q(pk=key.account_id) | Q(is_staff_member) | Q(Exists(shares_organization))


def reachable_accounts(*, key: ApiKey) -> QuerySet[Account]:
    """The accounts the key may act on, as one query."""
    return Account.objects.filter(_reach(key))


def may_act_on_account(*, key: ApiKey, account: Account) -> bool:
    if account.pk == key.account_id:
        return True
    return reachable_accounts(key=key).filter(pk=account.pk).exists()
