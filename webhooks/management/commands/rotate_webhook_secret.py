from django.core.management.base import BaseCommand, CommandError

from accounts.audit import Actor
from webhooks.models import Endpoint
from webhooks.services import endpoint_rotate_secret


class Command(BaseCommand):
    help = ("Give a webhook endpoint a new signing secret, printed once on the last line; the old one keeps "
            "signing beside it for 24 hours.")

    def add_arguments(self, parser):
        parser.add_argument("id", help="The endpoint's id (list_webhooks)")

    def handle(self, *args, id, **options):
        endpoint = Endpoint.objects.filter(pk=id).first() if id.isdigit() else None
        if endpoint is None:
            raise CommandError(f"No webhook endpoint with id {id!r}")
        secret = endpoint_rotate_secret(endpoint=endpoint, actor=Actor.command("rotate_webhook_secret"))
        self.stderr.write(f"New secret of webhook endpoint {endpoint.pk}; the old one is valid until "
                          f"{endpoint.previous_secret_expires_at.isoformat()}:")
        self.stdout.write(secret)
