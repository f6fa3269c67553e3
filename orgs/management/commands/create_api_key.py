from django.core.management.base import BaseCommand, CommandError
from django.utils import timezone

from accounts.audit import Actor
from accounts.scopes import ALL_SCOPES, scopes_display
from accounts.selectors import account_by_id
from accounts.services import api_key_create
from config.environment import parse_duration
from orgs.models import Membership
from orgs.selectors import organization_by_id_or_slug


class Command(BaseCommand):
    help = "Create an API key. The raw key is printed once, alone on the last line, and never stored."

    def add_arguments(self, parser):
        parser.add_argument("--account", required=True, help="Id of the account that owns the key")
        parser.add_argument("--org", help="Id or slug of an organization: makes an organization key")
        parser.add_argument("--name", default="", help="A name to recognise the key by")
        parser.add_argument("--expires-in", help="Lifetime such as 3600, 90m, 12h, 30d or 2w (default: never)")
        parser.add_argument("--scope", action="append", dest="scopes", choices=ALL_SCOPES, metavar="SCOPE",
                            help=f"What the key may do, once per scope: {', '.join(ALL_SCOPES)} "
                                 "(default: API_KEY_DEFAULT_SCOPES)")

    def handle(self, *args, account, org, name, expires_in, scopes, **options):
        # An empty --org or --expires-in (say, an unset shell variable) is an
        # error, never a silent personal key or a key that never expires.
        owner = account_by_id(account)
        if owner is None:
            raise CommandError(f"No account with id {account!r}")
        organization = None
        if org is not None:
            organization = organization_by_id_or_slug(org)
            if organization is None:
                raise CommandError(f"No organization with id or slug {org!r}")
            if not Membership.objects.filter(organization=organization, account=owner).exists():
                raise CommandError(f"{owner.email} is not a member of {organization.slug}")
        expires_at = None
        if expires_in is not None:
            try:
                expires_at = timezone.now() + parse_duration(expires_in)
            except ValueError as exc:
                raise CommandError(f"--expires-in: {exc}")
        key, raw_key = api_key_create(
            account=owner, organization=organization, name=name, expires_at=expires_at, scopes=scopes,
            actor=Actor.command("create_api_key"),
        )
        self.stderr.write(f"Created key {key.prefix}… for {owner.email} with scopes {scopes_display(key.scopes)}; "
                          "it is shown once and cannot be shown again:")
        self.stdout.write(raw_key)
