"""Staff users of the admin tests: who may look, and who may also act.

- a viewer: staff with the view permissions only; sees everything, is offered no action
- an operator: a viewer who also holds the custom permissions of the actions
- a superuser has everything (pytest-django's `admin_client`)
"""

from django.contrib.auth.models import Permission, User

VIEW_PERMISSIONS = [
    "accounts.view_account",
    "accounts.view_apikey",
    "accounts.view_auditevent",
    "orgs.view_organization",
    "orgs.view_membership",
    "sandboxes.view_snapshot",
    "sandboxes.view_setuprun",
]
ACTION_PERMISSIONS = [
    "accounts.add_apikey",
    "accounts.revoke_apikey",
    "sandboxes.revoke_snapshot",
    "sandboxes.start_setuprun",
    "sandboxes.cancel_setuprun",
    "accounts.deactivate_account",
]


PASSWORD = "correct horse battery"


def make_staff(username: str, permissions: list[str]) -> User:
    user = User.objects.create_user(username=username, password=PASSWORD, is_staff=True)
    for name in permissions:
        app_label, codename = name.split(".")
        user.user_permissions.add(Permission.objects.get(content_type__app_label=app_label, codename=codename))
    return User.objects.get(pk=user.pk)  # a fresh object: permissions are cached on the instance


def viewer(client) -> User:
    user = make_staff("viewer", VIEW_PERMISSIONS)
    client.force_login(user)
    return user


def operator(client) -> User:
    user = make_staff("operator", VIEW_PERMISSIONS + ACTION_PERMISSIONS)
    client.force_login(user)
    return user


def offered_actions(response) -> list[str]:
    """The names of the actions the change list offers."""
    form = response.context["action_form"]
    if form is None:  # no action at all
        return []
    return [name for name, _label in form.fields["action"].choices if name]


def messages_of(response) -> list[str]:
    return [str(message) for message in response.context["messages"]]
