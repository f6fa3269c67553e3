"""DRF permission classes; the rules themselves live in orgs/access.py and accounts/scopes.py.

HasApiKey, which they extend, needs no organization and lives in accounts/permissions.py.
"""

from accounts.permissions import HasApiKey
from accounts.scopes import required_scope
from orgs.access import ACCESS_DENIED_MESSAGE, may_act_on_account


class MayActOnAccount(HasApiKey):
    """The API key may act on the account the request targets."""

    message = ACCESS_DENIED_MESSAGE

    def has_object_permission(self, request, view, obj):
        return may_act_on_account(key=request.auth, account=obj)


class KeyHasScope(HasApiKey):
    """The API key holds the scope the view names for this method (config.api_input.ApiView adds it to every view)."""

    def has_permission(self, request, view):
        if not super().has_permission(request, view):
            return False
        if not hasattr(view, request.method.lower()):
            return True  # a method the view does not answer: DRF's 405 follows
        refusal = required_scope(request.auth, view.required_scopes, request.method)
        if refusal:
            self.message = refusal
            return False
        return True
