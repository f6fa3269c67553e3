from django.core.exceptions import ValidationError
from django.core.management.base import BaseCommand, CommandError

from accounts.audit import Actor
from orgs.services import organization_create


class Command(BaseCommand):
    help = "Create an organization and print its id."

    def add_arguments(self, parser):
        parser.add_argument("--name", required=True)
        parser.add_argument("--slug", default="", help="Defaults to the name, slugified.")
        parser.add_argument("--staff", action="store_true", help="Members may act on any account.")

    def handle(self, *args, name, slug, staff, **options):
        try:
            organization = organization_create(name=name, slug=slug, is_staff=staff, actor=Actor.command("create_org"))
        except ValidationError as exc:
            raise CommandError("; ".join(f"{field}: {' '.join(errors)}" for field, errors in exc.message_dict.items()))
        self.stdout.write(str(organization.pk))
