from django.core.management.base import BaseCommand

from webhooks.models import Endpoint


class Command(BaseCommand):
    help = "List the webhook endpoints: id, state, owner, event types and URL (never the secret)."

    def handle(self, *args, **options):
        endpoints = Endpoint.objects.select_related("organization").order_by("pk")
        for endpoint in endpoints:
            state = "active" if endpoint.is_active else f"disabled ({endpoint.disabled_reason})"
            types = ",".join(endpoint.event_type_list) or "all"
            self.stdout.write(f"{endpoint.pk}\t{state}\t{endpoint.owner_label}\t{types}\t{endpoint.url}")
        if not endpoints:
            self.stderr.write("No webhook endpoints.")
