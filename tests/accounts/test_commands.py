"""The operators' management commands: create_account, create_org, add_member, create_api_key, set_api_key_scopes.

Each is run through call_command as `manage.py` would run it. What is pinned:
- create_account and create_org print the new row's UUID, and refuse a
  duplicate email or slug with a CommandError that names the field;
- add_member adds an account to an organization or changes its role, and
  refuses an unknown organization, an unknown account or an unknown role;
- create_api_key prints the raw key alone on the last line of stdout (the key
  then authenticates over the API), makes an organization key with --org only
  for a member, sets an expiry with --expires-in, and refuses a bad duration
  or an unknown account; gives the scopes named with --scope, else
  API_KEY_DEFAULT_SCOPES;
- set_api_key_scopes gives keys (by prefix, or all of an account's) other
  scopes, recording each change before → after.
"""

import io
import uuid
from dataclasses import dataclass
from datetime import timedelta

import pytest
from django.core.management import call_command
from django.core.management.base import CommandError
from django.utils import timezone

from accounts.keys import KEY_PATTERN, hash_key
from accounts.models import Account, ApiKey
from orgs.models import Membership, Organization


@dataclass
class Output:
    stdout: str
    stderr: str


def run(*args) -> Output:
    stdout, stderr = io.StringIO(), io.StringIO()
    call_command(*args, stdout=stdout, stderr=stderr)
    return Output(stdout=stdout.getvalue(), stderr=stderr.getvalue())


# --- create_account ---------------------------------------------------------------------------


def test_create_account_prints_the_new_accounts_uuid(db):
    output = run("create_account", "--name", "Erin", "--email", "erin@example.com")

    account_id = uuid.UUID(output.stdout.strip())
    account = Account.objects.get(pk=account_id)
    assert (account.name, account.email, account.is_active) == ("Erin", "erin@example.com", True)


def test_create_account_stores_the_email_in_lower_case(db):
    output = run("create_account", "--name", "Erin", "--email", " Erin@Example.COM ")

    assert Account.objects.get(pk=output.stdout.strip()).email == "erin@example.com"


def test_create_account_refuses_an_email_that_is_taken(people):
    with pytest.raises(CommandError, match=r"^email: Account with this Email already exists\.$"):
        run("create_account", "--name", "Another Alice", "--email", "alice@example.com")

    assert Account.objects.filter(email="alice@example.com").count() == 1


def test_create_account_refuses_an_email_that_is_taken_in_other_letter_case(people):
    with pytest.raises(CommandError, match="email: .*already exists"):
        run("create_account", "--name", "Another Alice", "--email", "ALICE@example.com")


def test_create_account_refuses_an_invalid_email(db):
    with pytest.raises(CommandError, match="email: Enter a valid email address"):
        run("create_account", "--name", "Erin", "--email", "not-an-email")

    assert not Account.objects.exists()


# --- create_org -------------------------------------------------------------------------------


def test_create_org_prints_the_new_organizations_uuid(db):
    output = run("create_org", "--name", "Initech")

    organization = Organization.objects.get(pk=uuid.UUID(output.stdout.strip()))
    assert (organization.name, organization.slug, organization.is_staff) == (
        "Initech",
        "initech",
        False,
    )


def test_create_org_takes_an_explicit_slug(db):
    output = run("create_org", "--name", "Initech Europe", "--slug", "initech-eu")

    assert Organization.objects.get(pk=output.stdout.strip()).slug == "initech-eu"


def test_create_org_with_staff_makes_a_staff_organization(db):
    output = run("create_org", "--name", "Operators", "--staff")

    assert Organization.objects.get(pk=output.stdout.strip()).is_staff is True


def test_create_org_refuses_a_slug_that_is_taken(people):
    with pytest.raises(CommandError, match=r"^slug: Organization with this Slug already exists\.$"):
        run("create_org", "--name", "Acme")

    with pytest.raises(CommandError, match="slug: .*already exists"):
        run("create_org", "--name", "Acme Two", "--slug", "acme")

    assert Organization.objects.filter(slug="acme").count() == 1


# --- add_member -------------------------------------------------------------------------------


def test_add_member_adds_an_account_to_an_organization_with_a_role(people):
    output = run(
        "add_member", "--org", "globex", "--account", str(people.bob.account.pk), "--role", "admin"
    )

    membership = Membership.objects.get(organization=people.globex, account=people.bob.account)
    assert membership.role == Membership.Role.ADMIN
    assert output.stdout.strip() == "bob@example.com is admin of globex"


def test_add_member_changes_the_role_of_an_existing_member(people):
    run("add_member", "--org", "acme", "--account", str(people.bob.account.pk), "--role", "owner")

    memberships = Membership.objects.filter(organization=people.acme, account=people.bob.account)
    assert [membership.role for membership in memberships] == [Membership.Role.OWNER]


def test_add_member_finds_the_organization_by_its_uuid_too(people):
    run(
        "add_member",
        "--org",
        str(people.globex.pk),
        "--account",
        str(people.bob.account.pk),
        "--role",
        "member",
    )

    assert Membership.objects.filter(
        organization=people.globex, account=people.bob.account
    ).exists()


@pytest.mark.parametrize("org", ["no-such-org", "00000000-0000-0000-0000-000000000000"])
def test_add_member_refuses_an_unknown_organization(people, org):
    with pytest.raises(CommandError, match=f"No organization with id or slug '{org}'"):
        run("add_member", "--org", org, "--account", str(people.bob.account.pk), "--role", "member")


@pytest.mark.parametrize("account", ["not-a-uuid", "00000000-0000-0000-0000-000000000000"])
def test_add_member_refuses_an_unknown_account(people, account):
    with pytest.raises(CommandError, match=f"No account with id '{account}'"):
        run("add_member", "--org", "globex", "--account", account, "--role", "member")

    assert (
        not Membership.objects.filter(organization=people.globex)
        .exclude(account=people.dave.account)
        .exists()
    )


def test_add_member_refuses_a_role_that_does_not_exist(people):
    with pytest.raises(CommandError, match="invalid choice: 'boss' .*owner.*admin.*member"):
        run(
            "add_member",
            "--org",
            "globex",
            "--account",
            str(people.bob.account.pk),
            "--role",
            "boss",
        )

    assert not Membership.objects.filter(
        organization=people.globex, account=people.bob.account
    ).exists()


# --- create_api_key ---------------------------------------------------------------------------


def issued_key(output: Output) -> str:
    """The raw key: the last line of stdout, alone on it."""
    return output.stdout.splitlines()[-1]


def test_create_api_key_prints_the_raw_key_alone_on_the_last_line(people):
    output = run("create_api_key", "--account", str(people.mallory.account.pk), "--name", "ci")

    assert output.stdout.endswith("\n")
    raw = issued_key(output)
    assert KEY_PATTERN.match(raw), output.stdout
    key = ApiKey.objects.get(key_hash=hash_key(raw))
    assert key.account == people.mallory.account
    assert key.organization is None
    assert key.name == "ci"
    assert key.expires_at is None
    assert "shown once" in output.stderr and raw not in output.stderr


def test_the_key_printed_by_create_api_key_authenticates_over_the_api(people, api):
    raw = issued_key(run("create_api_key", "--account", str(people.mallory.account.pk)))

    response = api.setup(raw)

    assert response.status_code == 200, response.json()


def test_create_api_key_with_org_makes_an_organization_key(people, api):
    raw = issued_key(
        run("create_api_key", "--account", str(people.bob.account.pk), "--org", "acme")
    )

    assert ApiKey.objects.get(key_hash=hash_key(raw)).organization == people.acme
    # As an organization key it reaches the owner of Acme, which Bob's personal key does not.
    assert api.setup(raw, {"account_id": str(people.alice.account.pk)}).status_code == 200


def test_create_api_key_finds_the_organization_by_its_uuid_too(people):
    raw = issued_key(
        run("create_api_key", "--account", str(people.bob.account.pk), "--org", str(people.acme.pk))
    )

    assert ApiKey.objects.get(key_hash=hash_key(raw)).organization == people.acme


def test_create_api_key_refuses_an_organization_key_for_a_non_member(people):
    keys_before = ApiKey.objects.count()

    with pytest.raises(CommandError, match="^mallory@example.com is not a member of acme$"):
        run("create_api_key", "--account", str(people.mallory.account.pk), "--org", "acme")

    assert ApiKey.objects.count() == keys_before


def test_create_api_key_refuses_an_unknown_organization(people):
    with pytest.raises(CommandError, match="No organization with id or slug 'no-such-org'"):
        run("create_api_key", "--account", str(people.bob.account.pk), "--org", "no-such-org")


def test_create_api_key_refuses_an_empty_org_rather_than_making_a_personal_key(people):
    with pytest.raises(CommandError, match="No organization with id or slug ''"):
        run("create_api_key", "--account", str(people.alice.account.pk), "--org=")

    assert ApiKey.objects.filter(account=people.alice.account).count() == 1


def test_create_api_key_with_expires_in_30d_expires_30_days_ahead(people):
    before = timezone.now()
    raw = issued_key(
        run("create_api_key", "--account", str(people.bob.account.pk), "--expires-in", "30d")
    )
    after = timezone.now()

    expires_at = ApiKey.objects.get(key_hash=hash_key(raw)).expires_at
    assert before + timedelta(days=30) <= expires_at <= after + timedelta(days=30)


def test_create_api_key_without_expires_in_never_expires(people):
    raw = issued_key(run("create_api_key", "--account", str(people.bob.account.pk)))

    assert ApiKey.objects.get(key_hash=hash_key(raw)).expires_at is None


@pytest.mark.parametrize("lifetime", ["30x", "thirty days", "0", "-5d", "1.5d", " ", ""])
def test_create_api_key_refuses_a_lifetime_it_cannot_read(people, lifetime):
    """An empty lifetime too: it must not quietly make a key that never expires."""
    keys_before = ApiKey.objects.count()

    with pytest.raises(CommandError):
        run("create_api_key", "--account", str(people.bob.account.pk), f"--expires-in={lifetime}")

    assert ApiKey.objects.count() == keys_before


def test_create_api_key_names_the_bad_lifetime_in_its_error(people):
    with pytest.raises(CommandError, match="--expires-in: '30x' is not a duration"):
        run("create_api_key", "--account", str(people.bob.account.pk), "--expires-in", "30x")


@pytest.mark.parametrize("account", ["not-a-uuid", "00000000-0000-0000-0000-000000000000"])
def test_create_api_key_refuses_an_unknown_account(db, account):
    with pytest.raises(CommandError, match=f"^No account with id '{account}'$"):
        run("create_api_key", "--account", account)

    assert not ApiKey.objects.exists()


# --- scopes: create_api_key --scope, set_api_key_scopes --------------------------------------


def test_create_api_key_without_scope_gives_the_default_scopes(people, api):
    output = run("create_api_key", "--account", str(people.bob.account.pk))

    key = ApiKey.objects.get(key_hash=hash_key(issued_key(output)))
    assert key.scopes == ["sandboxes:read", "sandboxes:setup"]
    assert "with scopes sandboxes:read sandboxes:setup" in output.stderr
    refused = api.delete(issued_key(output))
    assert refused.json() == {"status": "error", "error": "This key lacks the scope sandboxes:delete"}


def test_create_api_key_takes_the_default_from_api_key_default_scopes(people, settings):
    settings.API_KEY_DEFAULT_SCOPES = ["audit:read"]

    raw = issued_key(run("create_api_key", "--account", str(people.bob.account.pk)))

    assert ApiKey.objects.get(key_hash=hash_key(raw)).scopes == ["audit:read"]


def test_create_api_key_with_scopes_gives_those_alone(people, api):
    raw = issued_key(run("create_api_key", "--account", str(people.bob.account.pk), "--scope", "audit:read",
                         "--scope", "sandboxes:delete"))

    assert ApiKey.objects.get(key_hash=hash_key(raw)).scopes == ["sandboxes:delete", "audit:read"]
    assert api.delete(raw).status_code == 200
    assert api.setup(raw).json()["error"] == "This key lacks the scope sandboxes:setup"


def test_create_api_key_refuses_a_scope_that_does_not_exist(people):
    with pytest.raises(CommandError, match="invalid choice: 'sandboxes:everything'"):
        run("create_api_key", "--account", str(people.bob.account.pk), "--scope", "sandboxes:everything")
    assert ApiKey.objects.filter(account=people.bob.account).count() == 1


def test_set_api_key_scopes_narrows_a_key_and_records_before_and_after(people, api):
    key = people.bob.api_key

    output = run("set_api_key_scopes", "--key", key.prefix, "--scope", "sandboxes:read")

    key.refresh_from_db()
    assert key.scopes == ["sandboxes:read"]
    assert "1 of 1 key(s) changed." in output.stdout
    from accounts.models import AuditEvent

    event = AuditEvent.objects.get(action=AuditEvent.Action.KEY_SCOPES_CHANGED)
    assert (event.actor, event.account_ref) == ("set_api_key_scopes", people.bob.account.pk)
    assert event.detail.endswith("scopes: sandboxes:read sandboxes:setup sandboxes:exec sandboxes:delete "
                                 "audit:read → sandboxes:read")
    assert api.setup(people.bob.key).status_code == 403
    assert api.sandbox(people.bob.key).status_code == 200


def test_set_api_key_scopes_of_every_key_of_an_account(people):
    run("create_api_key", "--account", str(people.bob.account.pk), "--scope", "audit:read")

    output = run("set_api_key_scopes", "--account", str(people.bob.account.pk), "--no-scope")

    assert "2 of 2 key(s) changed." in output.stdout, output.stdout
    assert list(ApiKey.objects.filter(account=people.bob.account).values_list("scopes", flat=True)) == [[], []]


def test_set_api_key_scopes_that_a_key_holds_already_changes_nothing(people):
    from accounts.models import AuditEvent

    output = run("set_api_key_scopes", "--key", people.bob.api_key.prefix, "--scope", "sandboxes:read",
                 "--scope", "sandboxes:setup", "--scope", "sandboxes:exec", "--scope", "sandboxes:delete",
                 "--scope", "audit:read")

    assert "0 of 1 key(s) changed." in output.stdout
    assert not AuditEvent.objects.filter(action=AuditEvent.Action.KEY_SCOPES_CHANGED).exists()


def test_set_api_key_scopes_refuses_an_unknown_key(people):
    with pytest.raises(CommandError, match="No key with the prefix 'sbx_nothing1'"):
        run("set_api_key_scopes", "--key", "sbx_nothing1", "--scope", "sandboxes:read")
