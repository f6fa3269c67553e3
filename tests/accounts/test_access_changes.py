"""The audit trail of who may do what: organizations, memberships, accounts' active flag, admin users' flags.

What is pinned, each through the way staff really make the change:
- the management commands (create_org, add_member) record who ran them, what
  was made, and a role's change before → after; a repeat that changes
  nothing records nothing;
- the admin's forms (the Django test client posts the page's own form, as a
  browser would): adding, changing and deleting an organization (its staff
  flag before → after), adding, changing and removing members inline and on
  the membership page, "Delete selected", an account's active flag, and a
  Django admin user's staff, superuser and active flags; each event names the
  staff user, the target account where there is one, and the values before → after;
- a save that changes nothing tracked records nothing, and a change whose
  event cannot be written does not happen.
"""

import io

import pytest
from django.contrib.auth.models import User
from django.core.management import call_command
from django.urls import reverse

from accounts.models import AuditEvent
from accounts.services import account_create
from config.admin_links import admin_change_url
from orgs.models import Membership, Organization
from orgs.services import membership_set
from tests.accounts.test_audit import audit_trail_refusing_writes
from tests.admin_forms import form_values, submit_admin_form
from tests.conftest import TESTS

pytestmark = pytest.mark.django_db

Action = AuditEvent.Action
ACCESS_ACTIONS = [
    Action.ORG_CREATED, Action.ORG_CHANGED, Action.ORG_DELETED, Action.MEMBER_ADDED, Action.MEMBER_CHANGED,
    Action.MEMBER_REMOVED, Action.ACCOUNT_ACTIVE_CHANGED, Action.USER_CREATED, Action.USER_CHANGED,
    Action.USER_DELETED,
]


@pytest.fixture
def trail(people):
    """The access events recorded from here on (the people fixture's own setting up left out), oldest first."""
    start = AuditEvent.objects.order_by("-id").values_list("id", flat=True).first() or 0

    def recorded() -> list[AuditEvent]:
        return list(AuditEvent.objects.filter(id__gt=start, action__in=ACCESS_ACTIONS).order_by("id"))

    return recorded


def summary(events) -> list[tuple]:
    return [(event.action, event.actor, event.account_ref, event.detail) for event in events]


def run(*args) -> str:
    out = io.StringIO()
    call_command(*args, stdout=out, stderr=io.StringIO())
    return out.getvalue()


# --- the management commands ------------------------------------------------------------------------


def test_create_org_records_the_new_organization_and_its_staff_flag(trail):
    run("create_org", "--name", "Initech", "--staff")

    assert summary(trail()) == [
        (Action.ORG_CREATED, "create_org", None,
         "Organization Initech (initech): name Initech, slug initech, staff organization yes"),
    ]


def test_add_member_records_the_new_member_then_the_role_before_and_after(people, trail):
    bob = people.bob.account
    run("add_member", "--org", "globex", "--account", str(bob.pk), "--role", "member")
    run("add_member", "--org", "globex", "--account", str(bob.pk), "--role", "admin")
    run("add_member", "--org", "globex", "--account", str(bob.pk), "--role", "admin")  # no change

    assert summary(trail()) == [
        (Action.MEMBER_ADDED, "add_member", bob.pk,
         "bob@example.com in globex: account Bob <bob@example.com>, organization Globex, role member"),
        (Action.MEMBER_CHANGED, "add_member", bob.pk, "bob@example.com in globex: role: member → admin"),
    ]


def test_a_role_change_whose_event_cannot_be_written_does_not_happen(people):
    with audit_trail_refusing_writes(), pytest.raises(Exception, match="refuses writes"):
        membership_set(organization=people.acme, account=people.bob.account, role=Membership.Role.OWNER,
                       actor=TESTS)

    assert Membership.objects.get(organization=people.acme, account=people.bob.account).role == "member"


# --- the admin: organizations and their members inline --------------------------------------------


def test_turning_an_organization_into_a_staff_organization_in_the_admin_is_recorded(admin_client, admin_user,
                                                                                      people, trail):
    submit_admin_form(admin_client, admin_change_url(Organization, people.globex.pk), is_staff=True)

    [event] = trail()
    assert (event.action, event.actor, event.actor_user, event.account_ref) == (
        Action.ORG_CHANGED, "staff user admin", admin_user, None
    )
    assert event.detail == "Organization Globex (globex): staff organization: no → yes"
    assert Organization.objects.get(pk=people.globex.pk).is_staff


def test_saving_an_organization_unchanged_records_nothing(admin_client, people, trail):
    submit_admin_form(admin_client, admin_change_url(Organization, people.acme.pk))

    assert trail() == []


def test_adding_an_organization_in_the_admin_is_recorded(admin_client, trail):
    submit_admin_form(admin_client, "/admin/orgs/organization/add/", name="Hooli", slug="hooli")

    assert summary(trail()) == [
        (Action.ORG_CREATED, "staff user admin", None,
         "Organization Hooli (hooli): name Hooli, slug hooli, staff organization no"),
    ]


def inline_row(admin_client, organization, account) -> str:
    """The prefix of `account`'s row among the organization page's members (memberships-N)."""
    values = form_values(admin_client.get(admin_change_url(Organization, organization.pk)).content)
    membership = Membership.objects.get(organization=organization, account=account)
    [name] = [name for name, value in values.items() if name.endswith("-id") and value == [str(membership.pk)]]
    return name.removesuffix("-id")


def test_members_added_changed_and_removed_inline_are_recorded(admin_client, people, trail):
    url = admin_change_url(Organization, people.acme.pk)
    bob, carol, mallory = people.bob.account, people.carol.account, people.mallory.account
    total = Membership.objects.filter(organization=people.acme).count()
    bob_row, carol_row = inline_row(admin_client, people.acme, bob), inline_row(admin_client, people.acme, carol)

    submit_admin_form(
        admin_client, url,
        **{
            f"{bob_row}-role": "owner",
            f"{carol_row}-DELETE": True,
            "memberships-TOTAL_FORMS": total + 1,
            f"memberships-{total}-account": mallory.pk,
            f"memberships-{total}-role": "member",
        },
    )

    assert summary(trail()) == [
        (Action.MEMBER_REMOVED, "staff user admin", carol.pk,
         "carol@example.com in acme: account Carol <carol@example.com>, organization Acme, role admin"),
        (Action.MEMBER_ADDED, "staff user admin", mallory.pk,
         "mallory@example.com in acme: account Mallory <mallory@example.com>, organization Acme, role member"),
        (Action.MEMBER_CHANGED, "staff user admin", bob.pk, "bob@example.com in acme: role: member → owner"),
    ]
    roles = dict(Membership.objects.filter(organization=people.acme).values_list("account__email", "role"))
    assert (roles["bob@example.com"], roles["mallory@example.com"], "carol@example.com" in roles) == (
        "owner", "member", False
    )


def test_deleting_an_organization_records_it_and_each_member_it_took_away(admin_client, people, trail):
    response = admin_client.post(reverse("admin:orgs_organization_delete", args=[people.globex.pk]), {"post": "yes"})

    assert response.status_code == 302
    assert summary(trail()) == [
        (Action.MEMBER_REMOVED, "staff user admin", people.dave.account.pk,
         ("dave@example.com in globex: account Dave <dave@example.com>, organization Globex, role member "
          "(organization deleted)")),
        (Action.ORG_DELETED, "staff user admin", None,
         "Organization Globex (globex): name Globex, slug globex, staff organization no"),
    ]
    assert not Organization.objects.filter(pk=people.globex.pk).exists()


def test_delete_selected_organizations_records_each(admin_client, people, trail):
    admin_client.post("/admin/orgs/organization/", {
        "action": "delete_selected", "_selected_action": [people.evil.pk, people.staff_org.pk], "post": "yes",
    })

    events = trail()
    assert sorted(event.detail for event in events if event.action == Action.ORG_DELETED) == [
        "Organization Evil Corp (evil-corp): name Evil Corp, slug evil-corp, staff organization no",
        "Organization Staff (staff): name Staff, slug staff, staff organization yes",
    ]
    assert sorted(event.account_ref for event in events if event.action == Action.MEMBER_REMOVED) == sorted(
        [people.mallory.account.pk, people.sam.account.pk]
    )


def test_organizations_are_not_deleted_when_their_events_cannot_be_written(admin_client, people):
    with audit_trail_refusing_writes(), pytest.raises(Exception, match="refuses writes"):
        admin_client.post("/admin/orgs/organization/", {
            "action": "delete_selected", "_selected_action": [people.evil.pk], "post": "yes",
        })

    assert Organization.objects.filter(pk=people.evil.pk).exists()
    assert Membership.objects.filter(organization=people.evil).exists()


def test_a_role_changed_on_the_membership_page_is_recorded(admin_client, people, trail):
    membership = Membership.objects.get(organization=people.acme, account=people.dave.account)

    submit_admin_form(admin_client, admin_change_url(Membership, membership.pk), role="admin")

    assert summary(trail()) == [
        (Action.MEMBER_CHANGED, "staff user admin", people.dave.account.pk,
         "dave@example.com in acme: role: member → admin"),
    ]


# --- the admin: accounts and admin users --------------------------------------------------------------


def test_reactivating_an_account_in_the_admin_is_recorded(admin_client, people, trail):
    account = people.bob.account
    account.is_active = False
    account.save(update_fields=["is_active"])
    url = admin_change_url(type(account), account.pk)

    submit_admin_form(admin_client, url, is_active=True)

    account.refresh_from_db()
    assert account.is_active
    assert summary(trail()) == [
        (Action.ACCOUNT_ACTIVE_CHANGED, "staff user admin", account.pk,
         "Account bob@example.com: active: no → yes"),
    ]


def test_an_active_accounts_form_has_no_active_box_deactivate_is_the_way_off(admin_client, people, trail):
    url = admin_change_url(type(people.bob.account), people.bob.account.pk)

    page = admin_client.get(url).content.decode()

    assert 'name="is_active"' not in page
    assert "Deactivate" in page


def test_deleting_an_account_in_the_admin_records_the_memberships_it_took_away(admin_client, people, trail):
    erin = account_create(name="Erin", email="erin@example.com")
    membership_set(organization=people.acme, account=erin, role=Membership.Role.ADMIN, actor=TESTS)
    start = len(trail())

    response = admin_client.post(reverse("admin:accounts_account_delete", args=[erin.pk]), {"post": "yes"})

    assert response.status_code == 302
    assert summary(trail()[start:]) == [
        (Action.MEMBER_REMOVED, "staff user admin", erin.pk,
         "erin@example.com in acme: account Erin <erin@example.com>, organization Acme, role admin (account deleted)"),
    ]


def test_a_role_changed_inline_on_the_account_page_is_recorded(admin_client, people, trail):
    url = admin_change_url(type(people.dave.account), people.dave.account.pk)
    values = form_values(admin_client.get(url).content)
    globex = Membership.objects.get(organization=people.globex, account=people.dave.account)
    [row] = [name.removesuffix("-id") for name, value in values.items()
             if name.endswith("-id") and value == [str(globex.pk)]]

    submit_admin_form(admin_client, url, **{f"{row}-role": "owner"})

    assert summary(trail()) == [
        (Action.MEMBER_CHANGED, "staff user admin", people.dave.account.pk,
         "dave@example.com in globex: role: member → owner"),
    ]


def test_an_admin_users_staff_flag_given_and_taken_in_the_admin_is_recorded(admin_client, admin_user, trail):
    olive = User.objects.create_user(username="olive", password="a long enough password")
    url = admin_change_url(User, olive.pk)

    submit_admin_form(admin_client, url, is_staff=True)
    submit_admin_form(admin_client, url, is_staff=False, is_superuser=True)

    [given, taken] = trail()
    assert (given.action, given.actor_user, given.detail) == (
        Action.USER_CHANGED, admin_user, "Admin user olive: staff: no → yes"
    )
    assert (taken.action, taken.detail) == (Action.USER_CHANGED, "Admin user olive: staff: yes → no; superuser: no → yes")


def test_adding_and_deleting_an_admin_user_is_recorded(admin_client, trail):
    submit_admin_form(admin_client, "/admin/auth/user/add/", username="olive",
                      password1="a long enough password 1", password2="a long enough password 1",
                      usable_password="true")
    olive = User.objects.get(username="olive")
    assert admin_client.post(reverse("admin:auth_user_delete", args=[olive.pk]), {"post": "yes"}).status_code == 302

    assert summary(trail()) == [
        (Action.USER_CREATED, "staff user admin", None, "Admin user olive: active yes, staff no, superuser no"),
        (Action.USER_DELETED, "staff user admin", None, "Admin user olive: active yes, staff no, superuser no"),
    ]
    assert not User.objects.filter(username="olive").exists()
