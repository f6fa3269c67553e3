"""Every bad request to the API gets a JSON error with the right status code.

Never a 500, never an HTML page: malformed or non-object bodies, bad
account ids, wrong content types, oversized bodies, unknown paths (also with
DEBUG on), wrong methods, bad query parameters of the runs endpoint, unknown
runs. Also: the CORS preflight a browser sends before it calls the API with a
key, and GET /healthz, including its 503 when the queue broker is down.
"""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from sandboxes.models import SetupRun

REPO = Path(__file__).resolve().parents[2]
SETUP = "/api/sandboxes/setup"
DELETE = "/api/sandboxes"


def assert_json_error(response, status: int) -> dict:
    """The answer has the status, is JSON and says what went wrong."""
    assert response.status_code == status, (response.status_code, response.content[:500])
    assert response["Content-Type"].startswith("application/json"), response["Content-Type"]
    body = response.json()
    assert body["status"] == "error", body
    assert isinstance(body["error"], str) and body["error"], body
    return body


def send_raw(api, method: str, path: str, *, key: str, data, content_type: str, **extra):
    """Send a body exactly as given, with no JSON encoding on the way."""
    return getattr(api.client, method)(path, data=data, content_type=content_type, HTTP_X_API_KEY=key, **extra)


# --- bodies ---------------------------------------------------------------------


@pytest.mark.parametrize("method, path", [("post", SETUP), ("delete", DELETE)])
def test_malformed_json_is_a_400_json_error(people, api, method, path):
    response = send_raw(api, method, path, key=people.alice.key, data='{"account_id": ',
                        content_type="application/json")
    body = assert_json_error(response, 400)
    assert "JSON" in body["error"]


@pytest.mark.parametrize("method, path", [("post", SETUP), ("delete", DELETE)])
@pytest.mark.parametrize("payload", [[], ["account_id"], "account_id", 42, 1.5, True], ids=repr)
def test_a_body_that_is_not_a_json_object_is_a_400_naming_the_body(people, api, method, path, payload):
    response = send_raw(api, method, path, key=people.alice.key, data=json.dumps(payload),
                        content_type="application/json")
    body = assert_json_error(response, 400)
    assert body["invalid_fields"] == ["body"]
    assert "JSON object" in body["error"]


@pytest.mark.parametrize("method, path", [("post", SETUP), ("delete", DELETE)])
def test_a_json_null_body_is_a_400_naming_the_body(people, api, method, path):
    response = send_raw(api, method, path, key=people.alice.key, data="null", content_type="application/json")
    assert assert_json_error(response, 400)["invalid_fields"] == ["body"]


def test_setup_with_a_body_that_is_not_an_object_queues_nothing(people, api):
    send_raw(api, "post", SETUP, key=people.alice.key, data="[]", content_type="application/json")
    assert not SetupRun.objects.exists()


@pytest.mark.parametrize("method, path", [("post", SETUP), ("delete", DELETE)])
@pytest.mark.parametrize("account_id", ["not-a-uuid", "", 12, True, ["00000000-0000-0000-0000-000000000000"], {}],
                         ids=repr)
def test_an_account_id_that_is_not_a_uuid_is_a_400_naming_account_id(people, api, method, path, account_id):
    response = api.call(method, path, key=people.alice.key, body={"account_id": account_id})
    body = assert_json_error(response, 400)
    assert body["invalid_fields"] == ["account_id"]
    assert body["error"].startswith("account_id:")


def test_setup_with_a_null_account_id_sets_up_the_keys_own_account(people, api):
    response = api.setup(people.alice.key, body={"account_id": None})
    assert response.status_code == 200, response.json()
    run = SetupRun.objects.get(pk=response.json()["runId"])
    assert run.account == people.alice.account


def test_delete_with_a_null_account_id_deletes_the_keys_own_sandbox(people, api, run_queued_setups):
    api.setup(people.alice.key)
    api.setup(people.bob.key)
    run_queued_setups()
    response = api.delete(people.alice.key, body={"account_id": None})
    assert response.status_code == 200, response.json()
    assert response.json()["deleted_snapshot"]["account_id"] == str(people.alice.account.pk)
    assert people.bob.account.snapshot is not None


@pytest.mark.parametrize("method, path", [("post", SETUP), ("delete", DELETE)])
@pytest.mark.parametrize(
    "content_type, data",
    [
        ("text/plain", '{"account_id": null}'),
        ("application/x-www-form-urlencoded", "account_id=00000000-0000-0000-0000-000000000000"),
        ("multipart/form-data; boundary=XXX",
         '--XXX\r\nContent-Disposition: form-data; name="a"\r\n\r\nb\r\n--XXX--\r\n'),
        ("application/xml", "<account_id/>"),
    ],
    ids=["text", "form", "multipart", "xml"],
)
def test_a_body_that_is_not_json_is_a_415_json_error(people, api, method, path, content_type, data):
    response = send_raw(api, method, path, key=people.alice.key, data=data, content_type=content_type)
    body = assert_json_error(response, 415)
    assert content_type.split(";")[0] in body["error"]


@pytest.mark.parametrize("method, path", [("post", SETUP), ("delete", DELETE)])
def test_a_body_over_the_size_limit_is_a_413_json_error(settings, people, api, method, path):
    padding = "x" * settings.API_MAX_BODY_BYTES
    response = api.call(method, path, key=people.alice.key, body={"account_id": None, "padding": padding})
    body = assert_json_error(response, 413)
    assert str(settings.API_MAX_BODY_BYTES) in body["error"]


def test_a_body_just_under_the_size_limit_is_read(settings, people, api):
    padding = " " * (settings.API_MAX_BODY_BYTES - 100)  # JSON allows any whitespace between tokens
    response = send_raw(api, "post", SETUP, key=people.alice.key, data='{"account_id": null' + padding + "}",
                        content_type="application/json")
    assert response.status_code == 200, response.json()


def test_the_size_limit_is_checked_before_the_key(settings, api):
    response = api.setup("sbx_unknown", body={"padding": "x" * settings.API_MAX_BODY_BYTES})
    assert_json_error(response, 413)


@pytest.mark.parametrize("length", ["abc", "12abc", "1e3"])
def test_a_content_length_that_is_not_a_number_is_a_400_json_error(people, api, length):
    response = send_raw(api, "post", SETUP, key=people.alice.key, data="{}", content_type="application/json",
                        CONTENT_LENGTH=length)
    body = assert_json_error(response, 400)
    assert "Content-Length" in body["error"]


# --- paths and methods ------------------------------------------------------------


@pytest.mark.parametrize("path", ["/api/nope", "/api/", "/api/sandboxes/setup/", "/api/sandboxes/nope/deeper",
                                  "/api/tasks/runs/run_123"])
@pytest.mark.parametrize("debug", [False, True], ids=["debug-off", "debug-on"])
def test_an_unknown_api_path_is_a_404_json_error(settings, people, api, path, debug):
    settings.DEBUG = debug
    response = api.call("get", path, key=people.alice.key)
    body = assert_json_error(response, 404)
    assert path in body["error"]


@pytest.mark.parametrize("debug", [False, True], ids=["debug-off", "debug-on"])
def test_an_unknown_api_path_is_a_404_json_error_without_a_key_too(settings, api, debug):
    settings.DEBUG = debug
    assert_json_error(api.call("post", "/api/nope"), 404)


def test_an_unknown_page_outside_the_api_stays_an_html_404(api):
    response = api.call("get", "/nope")
    assert response.status_code == 404
    assert not response["Content-Type"].startswith("application/json")


@pytest.mark.parametrize(
    "method, path",
    [("get", SETUP), ("put", SETUP), ("patch", SETUP), ("delete", SETUP),
     ("put", DELETE), ("post", "/api/sandboxes/file"), ("delete", "/api/sandboxes/file"),
     ("post", "/api/tasks/runs"), ("delete", "/api/tasks/runs"), ("get", "/api/sandboxes/stop"),
     ("get", "/api/sandboxes/files"), ("delete", "/api/sandboxes/commands")],
)
def test_a_method_an_endpoint_does_not_take_is_a_405_json_error(people, api, method, path):
    response = api.call(method, path, key=people.alice.key)
    body = assert_json_error(response, 405)
    assert method.upper() in body["error"]


@pytest.mark.parametrize("method", ["post", "put", "delete"])
def test_healthz_answers_other_methods_with_a_405_json_error(api, method):
    assert_json_error(api.call(method, "/healthz"), 405)


# --- runs ---------------------------------------------------------------------------


@pytest.mark.parametrize("limit", ["0", "101", "-1", "abc", "1.5"])
def test_runs_with_a_limit_out_of_range_or_not_a_number_is_a_400_naming_limit(people, api, limit):
    body = assert_json_error(api.runs(people.alice.key, limit=limit), 400)
    assert body["invalid_fields"] == ["limit"]
    assert body["error"].startswith("limit:")


def test_runs_with_an_empty_limit_uses_the_default(people, api):
    api.setup(people.alice.key)
    response = api.runs(people.alice.key, limit="")
    assert response.status_code == 200, response.json()
    assert len(response.json()["runs"]) == 1


@pytest.mark.parametrize("limit", ["1", "100"])
def test_runs_with_a_limit_at_either_end_of_the_range_answers(people, api, limit):
    response = api.runs(people.alice.key, limit=limit)
    assert response.status_code == 200, response.json()
    assert response.json() == {"status": "success", "runs": []}


def test_runs_with_an_account_id_that_is_not_a_uuid_is_a_400_naming_account_id(people, api):
    body = assert_json_error(api.runs(people.alice.key, account_id="nope"), 400)
    assert body["invalid_fields"] == ["account_id"]


@pytest.mark.parametrize("run_id", ["run_doesnotexist", "nope", "run_" + "0" * 24])
def test_runs_with_an_unknown_run_id_is_a_404_json_error(people, api, run_id):
    body = assert_json_error(api.runs(people.alice.key, runId=run_id), 404)
    assert run_id in body["error"]


def test_runs_with_a_run_id_longer_than_any_run_id_is_a_400_naming_run_id(people, api):
    body = assert_json_error(api.runs(people.alice.key, runId="run_" + "x" * 100), 400)
    assert body["invalid_fields"] == ["runId"]


def test_runs_with_a_run_id_of_an_unreachable_account_is_the_same_404(people, api):
    run_id = api.setup(people.alice.key).json()["runId"]
    assert api.runs(people.alice.key, runId=run_id).status_code == 200
    body = assert_json_error(api.runs(people.mallory.key, runId=run_id), 404)
    assert body["error"] == f"No run {run_id}"


# --- authentication answers are JSON too ----------------------------------------------


@pytest.mark.parametrize("method, path", [("post", SETUP), ("delete", DELETE), ("get", "/api/tasks/runs")])
def test_a_request_without_a_key_is_a_401_json_error(api, method, path):
    response = api.call(method, path)
    body = assert_json_error(response, 401)
    assert "x-api-key" in body["error"]
    assert response["WWW-Authenticate"].startswith("Bearer")


@pytest.mark.parametrize("method, path", [("post", SETUP), ("delete", DELETE), ("get", "/api/tasks/runs")])
def test_a_request_with_an_unknown_key_is_a_401_json_error(db, api, method, path):
    assert_json_error(api.call(method, path, key="sbx_" + "a" * 40), 401)


# --- CORS ---------------------------------------------------------------------------


@pytest.mark.parametrize("path", [SETUP, DELETE, "/api/tasks/runs"])
def test_a_cors_preflight_allows_any_origin_to_send_the_api_key_header(api, path):
    response = api.client.options(
        path,
        headers={
            "Origin": "https://app.example.com",
            "Access-Control-Request-Method": "POST",
            "Access-Control-Request-Headers": "x-api-key, content-type",
        },
    )
    assert response.status_code == 200
    assert response["access-control-allow-origin"] in ("*", "https://app.example.com")
    allowed = {name.strip().lower() for name in response["access-control-allow-headers"].split(",")}
    assert {"x-api-key", "content-type", "authorization"} <= allowed


def test_an_actual_cross_origin_call_carries_the_allow_origin_header(people, api):
    response = api.call("get", "/api/tasks/runs", key=people.alice.key, headers={"Origin": "https://app.example.com"})
    assert response.status_code == 200
    assert response["access-control-allow-origin"] in ("*", "https://app.example.com")


# --- health ---------------------------------------------------------------------------


def test_healthz_answers_ok_when_the_database_and_the_broker_answer(db, api):
    response = api.call("get", "/healthz")
    assert response.status_code == 200
    assert response["Content-Type"].startswith("application/json")
    assert response.json() == {"status": "ok", "checks": {"database": "ok", "broker": "ok"}}


def test_healthz_needs_no_api_key(db, api):
    response = api.call("get", "/healthz", headers={"Origin": "https://elsewhere.example"})
    assert response.status_code == 200


HEALTHZ_IN_A_FRESH_PROCESS = """
import json, django
django.setup()
from django.test import Client
response = Client().get("/healthz")
print(json.dumps({"status_code": response.status_code, "content_type": response["Content-Type"],
                  "retry_after": response.get("Retry-After"), "body": response.json()}))
"""


def test_healthz_is_a_503_json_error_naming_the_broker_when_redis_does_not_answer(tmp_path):
    env = {name: value for name, value in os.environ.items() if name not in ("DATABASE_URL", "DEBUG")}
    env.update(
        DJANGO_SETTINGS_MODULE="config.settings_test",
        REDIS_URL="redis://127.0.0.1:1/0",  # nothing listens on port 1
        VAR_DIR=str(tmp_path),  # an SQLite file of its own: the database answers
        LOG_LEVEL="WARNING",
    )
    completed = subprocess.run(
        [sys.executable, "-c", HEALTHZ_IN_A_FRESH_PROCESS],
        cwd=REPO, env=env, capture_output=True, text=True, timeout=60,
    )
    assert completed.returncode == 0, completed.stderr
    answer = json.loads(completed.stdout.strip().splitlines()[-1])
    assert answer["status_code"] == 503, answer
    assert answer["content_type"].startswith("application/json")
    body = answer["body"]
    assert body["status"] == "error"
    assert "broker" in body["error"]
    assert "database" not in body["error"]
    assert body["checks"] == {"database": "ok", "broker": "unavailable"}
    # Components and ok/unavailable only: the driver's message, host and port go to the log.
    assert "6379" not in completed.stdout and "127.0.0.1" not in completed.stdout and ":1" not in completed.stdout
    assert "Health check broker failed" in completed.stderr
    assert int(answer["retry_after"]) > 0
