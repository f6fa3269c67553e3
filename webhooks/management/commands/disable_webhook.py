from django.core.management.base import BaseCommand, CommandError

from accounts.audit import Actor
from webhooks.models import Endpoint
from webhooks.services import endpoint_disable


class Command(BaseCommand):
    help = "Disable a webhook endpoint: nothing more is delivered to it. Recorded in the audit trail."

    def add_arguments(self, parser):
        parser.add_argument("id", help="The endpoint's id (list_webhooks)")

    def handle(self, *args, id, **options):
        endpoint = Endpoint.objects.filter(pk=id).first() if id.isdigit() else None
        if endpoint is None:
            raise CommandError(f"No webhook endpoint with id {id!r}")
        if endpoint_disable(endpoint=endpoint, actor=Actor.command("disable_webhook"), reason="disabled by command"):
            self.stdout.write(f"Disabled webhook endpoint {endpoint.pk} ({endpoint.url})")
        else:
            self.stdout.write(f"Webhook endpoint {endpoint.pk} was disabled already")
