from django.core.management.base import BaseCommand, CommandError

from accounts.audit import Actor
from accounts.selectors import account_by_id
from orgs.selectors import organization_by_id_or_slug
from webhooks.services import WebhookError, endpoint_create


class Command(BaseCommand):
    help = ("Register a webhook endpoint of an account or an organization. The signing secret is printed once, "
            "alone on the last line.")

    def add_arguments(self, parser):
        owner = parser.add_mutually_exclusive_group(required=True)
        owner.add_argument("--account", help="Id of the account whose events the endpoint receives")
        owner.add_argument("--org", help="Id or slug of the organization whose members' events it receives")
        parser.add_argument("--url", required=True, help="https:// URL that receives the events")
        parser.add_argument("--events", help="Comma-separated event types (default: every type)")

    def handle(self, *args, account, org, url, events, **options):
        owner = {}
        if account is not None:
            owner["account"] = account_by_id(account)
            if owner["account"] is None:
                raise CommandError(f"No account with id {account!r}")
        else:
            owner["organization"] = organization_by_id_or_slug(org)
            if owner["organization"] is None:
                raise CommandError(f"No organization with id or slug {org!r}")
        if events is not None and not events.strip():
            raise CommandError("--events is empty; leave it out to receive every event type")
        try:
            endpoint = endpoint_create(url=url, event_types=(events or "").split(","),
                                       actor=Actor.command("create_webhook"), **owner)
        except WebhookError as exc:
            raise CommandError(str(exc))
        types = ", ".join(endpoint.event_type_list) or "every event type"
        self.stderr.write(f"Created webhook endpoint {endpoint.pk} of {endpoint.owner_label} for {types}; "
                          "its signing secret is shown once:")
        self.stdout.write(endpoint.secret)
