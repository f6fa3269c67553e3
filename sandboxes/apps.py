from django.apps import AppConfig


class SandboxesConfig(AppConfig):
    name = "sandboxes"
    default_auto_field = "django.db.models.BigAutoField"

    def ready(self):
        from django_q.signals import pre_execute

        from sandboxes.tasks import pass_task_id

        pre_execute.connect(pass_task_id, dispatch_uid="sandboxes.pass_task_id")
