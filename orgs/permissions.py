"""DRF permission classes; the rules themselves live in orgs/access.py."""

from rest_framework.permissions import BasePermission

from accounts.models import ApiKey
from orgs.access import ACCESS_DENIED_MESSAGE, may_act_on_account


class HasApiKey(BasePermission):
    """The request was authenticated with an API key."""

    def has_permission(self, request, view):
        return isinstance(request.auth, ApiKey)


class MayActOnAccount(HasApiKey):
    """The API key may act on the account the request targets."""

    message = ACCESS_DENIED_MESSAGE

    def has_object_permission(self, request, view, obj):
        return may_act_on_account(key=request.auth, account=obj)
