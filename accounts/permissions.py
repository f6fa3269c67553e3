"""The DRF permission class every API view starts from: the request came with an API key.

The rules of which key may act on which account need organizations and live
in orgs (orgs/access.py, orgs/permissions.py, whose classes extend this one).
"""

from rest_framework.permissions import BasePermission

from accounts.models import ApiKey


class HasApiKey(BasePermission):
    """The request was authenticated with an API key."""

    def has_permission(self, request, view):
        return isinstance(request.auth, ApiKey)
