"""Organizations and memberships in the audit trail of who may do what (accounts/access_changes.py).

Added from OrgsConfig.ready(): an organization's or a membership's creation,
change and deletion, and the memberships deleted with an organization or an
account, one event each.
"""

from accounts.access_changes import Action, Tracked, track, track_deleted_with
from accounts.models import Account
from orgs.models import Membership, Organization


def access_changes_track() -> None:
    track(Organization, Tracked(
        fields={"name": "name", "slug": "slug", "is_staff": "staff organization"},
        created=Action.ORG_CREATED,
        changed=Action.ORG_CHANGED,
        deleted=Action.ORG_DELETED,
        describe=lambda org: f"Organization {org.name} ({org.slug})",
    ))
    track(Membership, Tracked(
        fields={"account": "account", "organization": "organization", "role": "role"},
        created=Action.MEMBER_ADDED,
        changed=Action.MEMBER_CHANGED,
        deleted=Action.MEMBER_REMOVED,
        describe=lambda membership: f"{membership.account.email} in {membership.organization.slug}",
        account_id=lambda membership: membership.account_id,
        select_related=("account", "organization"),
    ))
    track_deleted_with(Organization, related=Membership, field="organization")
    track_deleted_with(Account, related=Membership, field="account")
