"""The admin answers a bad address with a 4xx, never a 500.

A query string a filter cannot use (`?account_ref=not-a-uuid`) and a NUL
character anywhere in the path, the query string or a form (which PostgreSQL
cannot take in a query; config.middleware.NulCharacterGuardMiddleware) are
refused with 400. Under /api/ the API's own serializers refuse it (JSON 400).
"""

import pytest

from accounts.models import AuditEvent
from sandboxes.models import SetupRun
from tests.conftest import requires_postgres

EVENTS = "/admin/accounts/auditevent/"


@pytest.fixture
def staff_client(admin_client):
    return admin_client


@pytest.mark.parametrize("value", ["not-a-uuid", "12", "x" * 200])
def test_the_audit_list_answers_400_to_an_account_filter_that_is_not_an_account_id(staff_client, people, value):
    response = staff_client.get(EVENTS, {"account_ref": value})
    assert response.status_code == 400


def test_the_audit_list_still_filters_by_an_account_id(staff_client, people, api):
    api.setup(people.alice.key)
    response = staff_client.get(EVENTS, {"account_ref": str(people.alice.account.pk)})
    assert response.status_code == 200
    listed = {event.account_ref for event in response.context["cl"].result_list}
    assert listed == {people.alice.account.pk}
    assert response.context["cl"].result_count == AuditEvent.objects.filter(account_ref=people.alice.account.pk).count()


PAGES_WITH_A_NUL = [
    "/admin/sandboxes/setuprun/%00/change/",
    "/admin/sandboxes/snapshot/%00/change/",
    "/admin/accounts/account/%00/change/",
    "/admin/accounts/apikey/%00/change/",
    "/admin/sandboxes/setuprun/?q=%00",
    "/admin/accounts/auditevent/?q=a%00b",
    "/admin/sandboxes/setuprun/?status=%00",
]


@requires_postgres
@pytest.mark.postgres
@pytest.mark.parametrize("path", PAGES_WITH_A_NUL)
def test_a_nul_in_an_admin_address_is_a_400_on_postgresql(staff_client, db, path):
    assert staff_client.get(path).status_code == 400


@requires_postgres
@pytest.mark.postgres
def test_a_nul_in_an_admin_action_form_is_a_400_on_postgresql(staff_client, people, api):
    api.setup(people.alice.key)
    response = staff_client.post("/admin/sandboxes/setuprun/",
                                 {"action": "cancel_queued_runs", "_selected_action": ["run_\x00"]})
    assert response.status_code == 400
    assert SetupRun.objects.get().status == SetupRun.Status.QUEUED


@pytest.mark.parametrize("path", PAGES_WITH_A_NUL)
def test_a_nul_in_an_admin_address_is_a_400_on_any_database(staff_client, db, path):
    assert staff_client.get(path).status_code == 400


def test_the_admin_pages_without_a_nul_still_answer(staff_client, people, api):
    run_id = api.setup(people.alice.key).json()["runId"]
    assert staff_client.get(f"/admin/sandboxes/setuprun/{run_id}/change/").status_code == 200
    assert staff_client.get("/admin/sandboxes/setuprun/", {"q": "alice"}).status_code == 200


@pytest.mark.parametrize("query, field", [("runId=run_%00", "runId"), ("account_id=%00", "account_id"),
                                          ("limit=1%00", "limit")])
def test_a_nul_in_a_query_parameter_of_the_api_is_a_json_400_naming_it(people, api, query, field):
    response = api.call("get", f"/api/tasks/runs?{query}", key=people.alice.key)
    assert response.status_code == 400
    assert response["Content-Type"].startswith("application/json")
    assert response.json()["invalid_fields"] == [field]


@requires_postgres
@pytest.mark.postgres
def test_a_nul_in_a_run_id_is_a_json_400_on_postgresql(people, api):
    response = api.call("get", "/api/tasks/runs?runId=run_%00", key=people.alice.key)
    assert response.status_code == 400
    assert response.json()["invalid_fields"] == ["runId"]
