"""Every API endpoint refuses what it does not take (config/api_input.py).

A misspelt body field or a query parameter the endpoint does not read is a
400 naming it, and nothing happens: no run queued, no sandbox deleted, above
all not the key's own. Errors name the fields at fault as missing (required,
not sent) or invalid (sent, but wrong or not taken).

tests/test_hostile_http.py sends the same requests to a real gunicorn.
"""

import json

import pytest
from django.urls import URLPattern, URLResolver, get_resolver
from rest_framework import serializers
from rest_framework.exceptions import ValidationError
from rest_framework.views import APIView

from config.api_input import ApiView, StrictSerializer
from config.errors import api_exception_handler
from sandboxes.models import SetupRun, Snapshot
from tests.sandboxes.test_api_errors import DELETE, SETUP
from tests.sandboxes.test_api_errors import assert_json_error as error_of


@pytest.fixture
def alice_has_a_sandbox(people, api, run_queued_setups):
    api.setup(people.alice.key)
    [run] = run_queued_setups()
    assert run.status == SetupRun.Status.COMPLETED, run.error
    return Snapshot.objects.get(account=people.alice.account)


# --- body fields ----------------------------------------------------------------------------


@pytest.mark.parametrize("field", ["accountId", "account", "account_ids", "ACCOUNT_ID"])
def test_delete_with_a_misspelt_field_is_a_400_naming_it_and_deletes_nothing(people, api, alice_has_a_sandbox,
                                                                              field):
    body = error_of(api.delete(people.alice.key, body={field: str(people.bob.account.pk)}), 400)
    assert body["invalid_fields"] == [field]
    assert body["error"] == f"{field}: not a field of this request (it takes account_id)"
    assert Snapshot.objects.filter(account=people.alice.account).exists()


def test_setup_with_a_misspelt_field_is_a_400_and_queues_nothing(people, api):
    body = error_of(api.setup(people.alice.key, body={"accountId": str(people.bob.account.pk)}), 400)
    assert body["invalid_fields"] == ["accountId"]
    assert not SetupRun.objects.exists()


def test_a_known_field_beside_an_unknown_one_is_refused_too(people, api):
    body = error_of(api.setup(people.alice.key, body={"account_id": None, "force": True}), 400)
    assert body["invalid_fields"] == ["force"]
    assert not SetupRun.objects.exists()


def test_the_fields_the_endpoint_takes_are_still_taken(people, api):
    response = api.setup(people.alice.key, body={"account_id": str(people.bob.account.pk)})
    assert response.status_code == 200, response.json()
    assert SetupRun.objects.get().account == people.bob.account


# --- query parameters -----------------------------------------------------------------------


@pytest.mark.parametrize("query", ["account_id={bob}", "accountId={bob}", "dry_run=1", "account_id="])
def test_delete_with_a_query_parameter_is_a_400_naming_it_and_deletes_nothing(people, api, alice_has_a_sandbox,
                                                                              query):
    query = query.format(bob=people.bob.account.pk)
    body = error_of(api.call("delete", f"{DELETE}?{query}", key=people.alice.key), 400)
    name = query.split("=")[0]
    assert body["invalid_fields"] == [name]
    assert body["error"] == f"{name}: not a query parameter of this request (it takes none)"
    assert Snapshot.objects.filter(account=people.alice.account).exists()


def test_setup_with_a_query_parameter_is_a_400_and_queues_nothing(people, api):
    body = error_of(api.call("post", f"{SETUP}?account_id={people.bob.account.pk}", key=people.alice.key), 400)
    assert body["invalid_fields"] == ["account_id"]
    assert not SetupRun.objects.exists()


def test_runs_with_an_unknown_query_parameter_is_a_400_naming_it(people, api):
    body = error_of(api.runs(people.alice.key, run_id="run_x"), 400)
    assert body["invalid_fields"] == ["run_id"]
    assert "it takes account_id, limit, runId" in body["error"]


def test_runs_with_a_query_parameter_given_twice_is_a_400_naming_it(people, api):
    response = api.call("get", "/api/tasks/runs?account_id=x&account_id=y", key=people.alice.key)
    body = error_of(response, 400)
    assert body["invalid_fields"] == ["account_id"]
    assert "more than once" in body["error"]


def test_runs_still_takes_its_own_query_parameters(people, api):
    run_id = api.setup(people.alice.key).json()["runId"]
    assert api.runs(people.alice.key, runId=run_id, limit="5").status_code == 200
    assert api.call("head", f"/api/tasks/runs?runId={run_id}", key=people.alice.key).status_code == 200


def test_ping_with_a_query_parameter_is_a_400(people, api):
    error_of(api.call("get", "/api/ping?verbose=1", key=people.alice.key), 400)
    assert api.call("get", "/api/ping", key=people.alice.key).status_code == 200


def test_a_request_without_a_key_is_a_401_whatever_its_query_string(db, api):
    error_of(api.call("delete", f"{DELETE}?account_id=x"), 401)


def _api_views(resolver=None, prefix=""):
    for pattern in (resolver or get_resolver()).url_patterns:
        route = prefix + str(pattern.pattern)
        if isinstance(pattern, URLResolver):
            yield from _api_views(pattern, route)
        elif isinstance(pattern, URLPattern) and route.startswith("api/"):
            yield route, getattr(pattern.callback, "view_class", None)


def test_every_api_view_refuses_query_parameters_it_does_not_take():
    """A new endpoint gets the rule by being an ApiView (the schema and docs views of drf-spectacular aside)."""
    views = dict(_api_views())
    assert {"api/sandboxes/setup", "api/sandboxes", "api/tasks/runs", "api/ping"} <= set(views)
    own = {route: view for route, view in views.items() if route not in ("api/schema/", "api/docs/")}
    for route, view in own.items():
        if view is not None and issubclass(view, APIView):
            assert issubclass(view, ApiView), f"{route}: {view.__name__} is not a config.api_input.ApiView"


def test_every_api_view_declares_the_scope_of_each_method_it_answers():
    """A new endpoint names its scope (accounts/scopes.py) or every request to it is refused."""
    from accounts.scopes import ALL_SCOPES, NO_SCOPE

    views = dict(_api_views())
    assert "api/audit" in views
    for route, view in views.items():
        if route in ("api/schema/", "api/docs/") or view is None or not issubclass(view, APIView):
            continue
        answered = {method.upper() for method in view.http_method_names
                    if hasattr(view, method) and method not in ("options", "head")}
        assert answered == set(view.required_scopes), f"{route}: {view.__name__} declares {view.required_scopes}"
        for method, scope in view.required_scopes.items():
            assert scope in ALL_SCOPES or scope == NO_SCOPE, f"{route} {method}: {scope!r} is not a scope"


# --- missing or invalid ---------------------------------------------------------------------


def test_an_account_id_that_is_not_a_uuid_is_invalid_not_missing(people, api):
    body = error_of(api.setup(people.alice.key, body={"account_id": "xyz"}), 400)
    assert body["invalid_fields"] == ["account_id"]
    assert "missing_fields" not in body


class _NamedSerializer(StrictSerializer):
    name = serializers.CharField()
    size = serializers.IntegerField(required=False)


def test_a_required_field_not_sent_is_missing_and_a_wrong_one_invalid():
    serializer = _NamedSerializer(data={"size": "big"})
    with pytest.raises(ValidationError) as raised:
        serializer.is_valid(raise_exception=True)
    body = api_exception_handler(raised.value, {"view": None}).data
    assert body["missing_fields"] == ["name"]
    assert body["invalid_fields"] == ["size"]


# --- bodies the parser cannot take ----------------------------------------------------------


@pytest.mark.parametrize("method, path", [("post", SETUP), ("delete", DELETE)])
@pytest.mark.parametrize("data", ["[" * 5000, '{"account_id": ' + "[" * 5000, "{\"a\": " * 5000])
def test_json_nested_too_deeply_is_a_400_json_error(people, api, method, path, data):
    response = getattr(api.client, method)(path, data=data, content_type="application/json",
                                           HTTP_X_API_KEY=people.alice.key)
    body = error_of(response, 400)
    assert "JSON" in body["error"]


@pytest.mark.parametrize("method, path", [("post", SETUP), ("delete", DELETE)])
def test_a_field_given_twice_is_a_400_and_nothing_happens(people, api, alice_has_a_sandbox, method, path):
    data = f'{{"account_id": "{people.bob.account.pk}", "account_id": null}}'
    response = getattr(api.client, method)(path, data=data, content_type="application/json",
                                           HTTP_X_API_KEY=people.alice.key)
    assert "'account_id' appears twice" in error_of(response, 400)["error"]
    assert Snapshot.objects.filter(account=people.alice.account).exists()
    assert SetupRun.objects.count() == 1  # alice's first, nobody's new one


def test_deeply_nested_json_that_python_can_read_is_refused_as_invalid(people, api):
    data = json.dumps({"account_id": json.loads("[" * 500 + "]" * 500)})
    response = api.client.post(SETUP, data=data, content_type="application/json", HTTP_X_API_KEY=people.alice.key)
    assert error_of(response, 400)["invalid_fields"] == ["account_id"]


def test_a_chunked_body_the_server_does_not_hand_over_is_a_411(people, api):
    """Django's own server (runserver) passes a chunked body on unread; gunicorn de-chunks it (test_hostile_http)."""
    response = api.client.post(SETUP, data=b"", content_type="application/json", HTTP_X_API_KEY=people.alice.key,
                               HTTP_TRANSFER_ENCODING="chunked")
    assert "Content-Length" in error_of(response, 411)["error"]
    assert not SetupRun.objects.exists()


def test_a_csrf_failure_under_the_api_is_json_and_elsewhere_django_s_page(settings, rf):
    from django.utils.module_loading import import_string

    failure_view = import_string(settings.CSRF_FAILURE_VIEW)
    api_answer = failure_view(rf.post("/api/anything"), reason="CSRF cookie not set.")
    assert api_answer.status_code == 403
    assert json.loads(api_answer.content) == {"status": "error", "error": "CSRF check failed: CSRF cookie not set."}
    admin_answer = failure_view(rf.post("/admin/login/"), reason="CSRF cookie not set.")
    assert admin_answer.status_code == 403
    assert admin_answer["Content-Type"].startswith("text/html")


def test_the_schema_says_setup_and_delete_take_no_other_body_field(db, api):
    schema = api.client.get("/api/schema/?format=json").json()
    for name in ("SetupSandboxRequest", "DeleteSandboxRequest"):
        component = schema["components"]["schemas"][name]
        assert component["additionalProperties"] is False, name
        assert set(component["properties"]) == {"account_id"}
