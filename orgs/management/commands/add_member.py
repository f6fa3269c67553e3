from django.core.management.base import BaseCommand, CommandError

from accounts.audit import Actor
from accounts.selectors import account_by_id
from orgs.models import Membership
from orgs.selectors import organization_by_id_or_slug
from orgs.services import membership_set


class Command(BaseCommand):
    help = "Add an account to an organization (or change its role there)."

    def add_arguments(self, parser):
        parser.add_argument("--org", required=True, help="Organization id or slug")
        parser.add_argument("--account", required=True, help="Account id")
        parser.add_argument("--role", required=True, choices=Membership.Role.values)

    def handle(self, *args, org, account, role, **options):
        organization = organization_by_id_or_slug(org)
        if organization is None:
            raise CommandError(f"No organization with id or slug {org!r}")
        member = account_by_id(account)
        if member is None:
            raise CommandError(f"No account with id {account!r}")
        membership_set(organization=organization, account=member, role=role, actor=Actor.command("add_member"))
        self.stdout.write(f"{member.email} is {role} of {organization.slug}")
