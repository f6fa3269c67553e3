"""Give existing keys other scopes: `manage.py set_api_key_scopes --key sbx_AbCdEfGh --scope sandboxes:read`.

Keys are named by their visible prefix (as the admin lists them), or every
active key of an account with --account. Each change is recorded in the audit
trail as before → after; a key that holds these scopes already is left as it is.
"""

from django.core.management.base import BaseCommand, CommandError

from accounts.audit import Actor
from accounts.models import ApiKey
from accounts.scopes import ALL_SCOPES, scopes_display
from accounts.selectors import account_by_id
from accounts.services import api_key_scopes_set


class Command(BaseCommand):
    help = "Give API keys these scopes (the ones not named are taken away); recorded in the audit trail."

    def add_arguments(self, parser):
        which = parser.add_mutually_exclusive_group(required=True)
        which.add_argument("--key", action="append", dest="prefixes", metavar="PREFIX",
                           help="A key's visible prefix (sbx_ and 8 characters), once per key")
        which.add_argument("--account", help="Id of an account: every key of it that is not revoked")
        scopes = parser.add_mutually_exclusive_group(required=True)
        scopes.add_argument("--scope", action="append", dest="scopes", choices=ALL_SCOPES, metavar="SCOPE",
                            help=f"A scope the keys keep or get, once per scope: {', '.join(ALL_SCOPES)}")
        scopes.add_argument("--no-scope", action="store_true", help="Take every scope away (only ping answers)")

    def handle(self, *args, prefixes, account, scopes, no_scope, **options):
        scopes = [] if no_scope else scopes
        if account is not None:
            owner = account_by_id(account)
            if owner is None:
                raise CommandError(f"No account with id {account!r}")
            keys = list(ApiKey.objects.filter(account=owner, revoked_at__isnull=True).order_by("created_at"))
        else:
            keys = []
            for prefix in prefixes:
                found = list(ApiKey.objects.filter(prefix=prefix.rstrip("…")))
                if not found:
                    raise CommandError(f"No key with the prefix {prefix!r}")
                if len(found) > 1:
                    raise CommandError(f"{len(found)} keys have the prefix {prefix!r}: use --account")
                keys += found
        actor = Actor.command("set_api_key_scopes")
        changed = 0
        for key in keys:
            before = scopes_display(key.scopes)
            if api_key_scopes_set(key=key, scopes=scopes, actor=actor):
                changed += 1
                self.stdout.write(f"{key.prefix}… ({key.name or 'unnamed'}): {before} → {scopes_display(key.scopes)}")
            else:
                self.stdout.write(f"{key.prefix}… ({key.name or 'unnamed'}): {before}, unchanged")
        self.stdout.write(f"{changed} of {len(keys)} key(s) changed.")
