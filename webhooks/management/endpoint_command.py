"""The base of the commands that act on one webhook endpoint, named by its id."""

from django.core.management.base import BaseCommand, CommandError

from webhooks.models import Endpoint
from webhooks.selectors import endpoint_by_id


class EndpointCommand(BaseCommand):
    def add_arguments(self, parser):
        parser.add_argument("id", help="The endpoint's id (list_webhooks)")

    def handle(self, *args, id, **options):
        endpoint = endpoint_by_id(id)
        if endpoint is None:
            raise CommandError(f"No webhook endpoint with id {id!r}")
        self.handle_endpoint(endpoint)

    def handle_endpoint(self, endpoint: Endpoint) -> None:
        raise NotImplementedError
