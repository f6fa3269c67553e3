from django.apps import AppConfig


class WebhooksConfig(AppConfig):
    default_auto_field = "django.db.models.BigAutoField"
    name = "webhooks"
    verbose_name = "Webhooks"

    def ready(self):
        from config import events
        from webhooks.outbox import OutboxRecorder

        events.register_recorder(OutboxRecorder())
