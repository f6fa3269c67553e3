"""Organizations in the admin: staff organizations shown in words and filterable, members inline with their roles."""

import pytest

from config.admin_links import admin_change_url
from orgs.models import Membership, Organization

pytestmark = pytest.mark.django_db

ORGANIZATIONS = "/admin/orgs/organization/"


def test_the_organization_list_shows_and_filters_staff_organizations(admin_client, people):
    everyone = admin_client.get(ORGANIZATIONS)
    staff = admin_client.get(ORGANIZATIONS, {"is_staff__exact": "1"})

    page = everyone.content.decode()
    assert '<span class="state state-waiting">staff: may act on any account</span>' in page
    assert "icon-yes.svg" not in page
    assert "id" not in everyone.context["cl"].list_display  # the id is on the organization's page
    assert [org.pk for org in staff.context["cl"].result_list] == [people.staff_org.pk]
    assert {org.pk: org.member_count for org in everyone.context["cl"].result_list}[people.acme.pk] == 4


def test_the_organization_page_lists_members_with_their_roles(admin_client, people):
    response = admin_client.get(admin_change_url(Organization, people.acme.pk))

    [members] = response.context["inline_admin_formsets"]
    roles = {form.instance.account: form.instance.role for form in members.formset.forms}
    assert roles == {
        people.alice.account: Membership.Role.OWNER,
        people.carol.account: Membership.Role.ADMIN,
        people.bob.account: Membership.Role.MEMBER,
        people.dave.account: Membership.Role.MEMBER,
    }
    assert "role" in members.formset.forms[0].fields
