from accounts.audit import Actor
from webhooks.management.endpoint_command import EndpointCommand
from webhooks.services import endpoint_rotate_secret


class Command(EndpointCommand):
    help = ("Give a webhook endpoint a new signing secret, printed once on the last line; the old one keeps "
            "signing beside it for 24 hours.")

    def handle_endpoint(self, endpoint):
        secret = endpoint_rotate_secret(endpoint=endpoint, actor=Actor.command("rotate_webhook_secret"))
        self.stderr.write(f"New secret of webhook endpoint {endpoint.pk}; the old one is valid until "
                          f"{endpoint.previous_secret_expires_at.isoformat()}:")
        self.stdout.write(secret)
