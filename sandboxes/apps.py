import sys

from django.apps import AppConfig
from django.conf import settings


class SandboxesConfig(AppConfig):
    name = "sandboxes"
    default_auto_field = "django.db.models.BigAutoField"

    def ready(self):
        from django_q.signals import pre_execute

        from accounts.services import sandbox_revoker_register
        from config import events
        from sandboxes.events import snapshots_expiring_record
        from sandboxes.services import sandboxes_delete
        from sandboxes.tasks import pass_task_id

        pre_execute.connect(pass_task_id, dispatch_uid="sandboxes.pass_task_id")
        events.register_producer("snapshot.expiring", snapshots_expiring_record)
        sandbox_revoker_register(sandboxes_delete)
        warn_if_the_sandbox_engine_is_unreachable(argv=sys.argv)


def warn_if_the_sandbox_engine_is_unreachable(*, argv: list[str]) -> None:
    """One line at a server's start when the docker backend's engine does not answer or lacks SANDBOX_IMAGE.

    A warning, not a refusal: the web server still serves what needs no
    engine, and setups fail with the same reason on their runs until it answers.
    """
    from config.environment import starts_a_server, warn
    from sandboxes.providers import get_sandbox_backend
    from sandboxes.providers.base import ProviderError

    if settings.SANDBOX_BACKEND != "docker" or not starts_a_server(argv):
        return
    try:
        get_sandbox_backend().ping()
    except ProviderError as exc:
        warn(f"SANDBOX_BACKEND=docker: {exc}")
