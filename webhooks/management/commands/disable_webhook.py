from accounts.audit import Actor
from webhooks.management.endpoint_command import EndpointCommand
from webhooks.services import endpoint_disable


class Command(EndpointCommand):
    help = "Disable a webhook endpoint: nothing more is delivered to it. Recorded in the audit trail."

    def handle_endpoint(self, endpoint):
        if endpoint_disable(endpoint=endpoint, actor=Actor.command("disable_webhook"), reason="disabled by command"):
            self.stdout.write(f"Disabled webhook endpoint {endpoint.pk} ({endpoint.url})")
        else:
            self.stdout.write(f"Webhook endpoint {endpoint.pk} was disabled already")
