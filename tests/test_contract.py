"""The API keeps the published contract (docs/api/contract.yaml, in this repository).

Two halves:

- the OpenAPI schema the project generates is a superset of the contract:
  every path, method and status code of the contract is there; request
  bodies take every field the contract sends, with the same type and format,
  and ask for nothing more; responses carry every field the contract names,
  mark at least the same fields required, document every enum value, and
  allow null wherever the contract does. Both ways of sending the key are
  documented, and so are the 403 and 404 answers where they can happen;
- real responses of the running API validate against the contract's own
  schemas (JSON Schema 2020-12, as OpenAPI 3.1 uses), and against ours.

Also: /api/docs/ serves Swagger UI from the sidecar package, so it works
without the internet.
"""

import copy
import re
import uuid
from datetime import datetime
from pathlib import Path

import pytest
import yaml
from django.contrib.staticfiles import finders
from django.core.management import call_command
from django.utils import timezone
from drf_spectacular.validation import validate_schema
from jsonschema import Draft202012Validator, FormatChecker

from sandboxes.models import Snapshot
from tests.sandboxes.local_git import make_bare_repository, make_undeletable, repository_path

CONTRACT_PATH = Path(__file__).resolve().parents[1] / "docs" / "api" / "contract.yaml"
METHODS = ("get", "put", "post", "delete", "patch", "options", "head")
JSON = "application/json"


@pytest.fixture(scope="module")
def contract() -> dict:
    assert CONTRACT_PATH.is_file(), f"the published contract is not at {CONTRACT_PATH}"
    return yaml.safe_load(CONTRACT_PATH.read_text())


@pytest.fixture(scope="module")
def schema(django_db_blocker) -> dict:
    """Our schema as clients download it."""
    from rest_framework.test import APIClient

    with django_db_blocker.unblock():
        response = APIClient().get("/api/schema/?format=json")
    assert response.status_code == 200, response.content[:500]
    return response.json()


# --- reading OpenAPI documents -----------------------------------------------------


def resolve(document: dict, node: dict) -> dict:
    """Follow local $refs (`#/components/...`) until a schema that is not one."""
    seen = set()
    while isinstance(node, dict) and "$ref" in node:
        ref = node["$ref"]
        assert ref.startswith("#/"), f"only local references are expected, not {ref}"
        assert ref not in seen, f"reference loop at {ref}"
        seen.add(ref)
        target = document
        for part in ref[2:].split("/"):
            target = target[part.replace("~1", "/").replace("~0", "~")]
        node = target
    return node


def split_null(document: dict, node: dict) -> tuple[bool, list[dict]]:
    """(accepts null?, the non-null alternatives), for each way OpenAPI writes "or null"."""
    node = resolve(document, node)
    if "oneOf" in node or "anyOf" in node:
        nullable, alternatives = False, []
        for option in node.get("oneOf", []) + node.get("anyOf", []):
            option_nullable, option_alternatives = split_null(document, option)
            nullable |= option_nullable
            alternatives += option_alternatives
        return nullable, alternatives
    types = node.get("type")
    types = [types] if isinstance(types, str) else list(types or [])
    nullable = "null" in types or node.get("nullable", False) is True
    rest = [name for name in types if name != "null"]
    if types and not rest:
        return nullable, []
    narrowed = dict(node)
    narrowed.pop("nullable", None)
    if rest:
        narrowed["type"] = rest
    return nullable, [narrowed]


def type_names(node: dict) -> set[str]:
    types = node.get("type")
    if types is None and ("properties" in node or "required" in node):
        return {"object"}
    return {types} if isinstance(types, str) else set(types or [])


def assert_compatible(contract: dict, c_node: dict, ours: dict, o_node: dict, *, where: str, direction: str):
    """Fail unless our schema serves every client the contract's schema serves.

    direction "request": we accept all the contract sends and require no more;
    direction "response": we send all the contract promises (required ⊇).
    """
    c_nullable, c_options = split_null(contract, c_node)
    o_nullable, o_options = split_null(ours, o_node)
    if c_nullable:
        assert o_nullable, f"{where}: the contract allows null, our schema does not"
    for c_option in c_options:
        problems = []
        for o_option in o_options:
            try:
                assert_same_shape(contract, c_option, ours, o_option, where=where, direction=direction)
            except AssertionError as problem:
                problems.append(str(problem))
            else:
                break
        else:
            raise AssertionError(f"{where}: no alternative of ours matches the contract's {c_option}: {problems}")


def assert_same_shape(contract: dict, c_node: dict, ours: dict, o_node: dict, *, where: str, direction: str):
    c_types, o_types = type_names(c_node), type_names(o_node)
    assert c_types <= o_types, f"{where}: type {sorted(c_types)} in the contract, {sorted(o_types)} in ours"
    if "format" in c_node:
        assert o_node.get("format") == c_node["format"], (
            f"{where}: format {c_node['format']!r} in the contract, {o_node.get('format')!r} in ours"
        )
    if "enum" in c_node:
        missing = set(c_node["enum"]) - set(o_node.get("enum", []))
        assert not missing, f"{where}: enum values {sorted(missing)} of the contract are missing in ours"
    if "object" in c_types:
        c_required, o_required = set(c_node.get("required", [])), set(o_node.get("required", []))
        if direction == "response":
            assert c_required <= o_required, f"{where}: not required in ours: {sorted(c_required - o_required)}"
        else:
            assert o_required <= c_required, f"{where}: ours requires more: {sorted(o_required - c_required)}"
        o_properties = o_node.get("properties", {})
        for name, c_property in c_node.get("properties", {}).items():
            assert name in o_properties, f"{where}: field {name!r} of the contract is missing in ours"
            assert_compatible(contract, c_property, ours, o_properties[name],
                              where=f"{where}.{name}", direction=direction)
    if "array" in c_types and "items" in c_node:
        assert "items" in o_node, f"{where}: the contract describes the items, ours does not"
        assert_compatible(contract, c_node["items"], ours, o_node["items"], where=f"{where}[]", direction=direction)


def _contract_paths() -> dict:
    """The contract's paths, read at collection to name the test cases (none if it is missing)."""
    return yaml.safe_load(CONTRACT_PATH.read_text())["paths"] if CONTRACT_PATH.is_file() else {}


def contract_operations() -> list[tuple[str, str]]:
    return [(path, method) for path, item in _contract_paths().items() for method in item if method in METHODS]


def contract_responses() -> list[tuple[str, str, str]]:
    return [
        (path, method, str(code))
        for path, item in _contract_paths().items()
        for method, operation in item.items()
        if method in METHODS
        for code in operation["responses"]
    ]


# --- the schema is a superset of the contract ---------------------------------------


def test_the_contract_is_found_beside_the_repository_and_names_operations(contract):
    assert contract["openapi"].startswith("3.1")
    assert contract_operations()


def test_our_schema_is_openapi_3_1_like_the_contract(schema):
    assert schema["openapi"].startswith("3.1")


@pytest.mark.parametrize("path, method", contract_operations())
def test_every_operation_of_the_contract_is_in_our_schema(contract, schema, path, method):
    assert path in schema["paths"], f"{path} is missing"
    assert method in schema["paths"][path], f"{method.upper()} {path} is missing"


@pytest.mark.parametrize("path, method, code", contract_responses())
def test_every_status_code_of_the_contract_is_documented_with_a_compatible_json_body(
    contract, schema, path, method, code
):
    c_response = resolve(contract, contract["paths"][path][method]["responses"][code])
    o_responses = schema["paths"][path][method]["responses"]
    assert str(code) in o_responses, f"{method.upper()} {path}: {code} is not documented"
    o_response = resolve(schema, o_responses[str(code)])
    for media_type, c_media in c_response.get("content", {}).items():
        assert media_type in o_response.get("content", {}), f"{method.upper()} {path} {code}: no {media_type} body"
        assert_compatible(contract, c_media["schema"], schema, o_response["content"][media_type]["schema"],
                          where=f"{method.upper()} {path} {code}", direction="response")


@pytest.mark.parametrize("path, method", contract_operations())
def test_every_request_body_of_the_contract_is_accepted_as_documented(contract, schema, path, method):
    c_body = contract["paths"][path][method].get("requestBody")
    if c_body is None:
        pytest.skip("the contract sends no body here")
    c_body = resolve(contract, c_body)
    o_body = schema["paths"][path][method].get("requestBody")
    assert o_body is not None, f"{method.upper()} {path}: our schema documents no request body"
    o_body = resolve(schema, o_body)
    if not c_body.get("required", False):
        assert not o_body.get("required", False), f"{method.upper()} {path}: the body is optional in the contract"
    for media_type, c_media in c_body["content"].items():
        assert media_type in o_body["content"], f"{method.upper()} {path}: request body {media_type} missing"
        assert_compatible(contract, c_media["schema"], schema, o_body["content"][media_type]["schema"],
                          where=f"{method.upper()} {path} request", direction="request")


def test_account_id_is_a_uuid_string_in_both_request_bodies(schema):
    for path, method in [("/api/sandboxes/setup", "post"), ("/api/sandboxes", "delete")]:
        body = resolve(schema, schema["paths"][path][method]["requestBody"]["content"][JSON]["schema"])
        account_id = body["properties"]["account_id"]
        assert "string" in type_names(account_id)
        assert account_id["format"] == "uuid"


def test_the_checker_finds_a_field_missing_from_a_response():
    """The comparison above is only worth something if it can fail."""
    contract = {"components": {"schemas": {"A": {"type": "object", "required": ["x"],
                                                  "properties": {"x": {"type": "string"}}}}}}
    ours = copy.deepcopy(contract)
    ours["components"]["schemas"]["A"]["properties"] = {}
    with pytest.raises(AssertionError, match="'x'"):
        assert_compatible(contract, {"$ref": "#/components/schemas/A"}, ours, {"$ref": "#/components/schemas/A"},
                          where="A", direction="response")


def test_the_checker_finds_a_nullable_field_that_became_not_nullable():
    contract = {"type": "object", "properties": {"x": {"type": ["string", "null"], "format": "date-time"}}}
    ours = {"type": "object", "properties": {"x": {"type": "string", "format": "date-time"}}}
    with pytest.raises(AssertionError, match="null"):
        assert_compatible({}, contract, {}, ours, where="A", direction="response")


def test_the_checker_finds_a_lost_enum_value_and_a_changed_format():
    with pytest.raises(AssertionError, match="enum"):
        assert_compatible({}, {"type": "string", "enum": ["a", "b"]}, {}, {"type": "string", "enum": ["a"]},
                          where="A", direction="response")
    with pytest.raises(AssertionError, match="format"):
        assert_compatible({}, {"type": "string", "format": "uuid"}, {}, {"type": "string"},
                          where="A", direction="request")


def test_the_checker_accepts_oneof_null_written_as_a_type_list():
    contract = {"oneOf": [{"type": "object", "properties": {}}, {"type": "null"}]}
    ours = {"type": ["object", "null"], "properties": {"extra": {"type": "string"}}}
    assert_compatible({}, contract, {}, ours, where="A", direction="response")


# --- security and the codes the contract leaves out -----------------------------------


def test_both_ways_of_sending_the_key_are_documented(schema):
    schemes = schema["components"]["securitySchemes"].values()
    assert any(s["type"] == "apiKey" and s["in"] == "header" and s["name"].lower() == "x-api-key" for s in schemes)
    assert any(s["type"] == "http" and s["scheme"].lower() == "bearer" for s in schemes)


@pytest.mark.parametrize("path, method", [("/api/sandboxes/setup", "post"), ("/api/sandboxes", "delete"),
                                          ("/api/tasks/runs", "get"), ("/api/sandboxes", "get"),
                                          ("/api/sandboxes", "patch"), ("/api/sandboxes/file", "get")])
def test_every_operation_takes_either_scheme_and_no_anonymous_access(schema, path, method):
    security = schema["paths"][path][method]["security"]
    names = {name for requirement in security for name in requirement}
    schemes = schema["components"]["securitySchemes"]
    assert {schemes[name]["type"] for name in names} == {"apiKey", "http"}
    assert {} not in security, "an empty requirement would mean the key is optional"
    assert all(len(requirement) == 1 for requirement in security), "either scheme alone must be enough"


@pytest.mark.parametrize(
    "path, method, code",
    [("/api/sandboxes/setup", "post", "403"), ("/api/sandboxes", "delete", "403"),
     ("/api/tasks/runs", "get", "403"), ("/api/tasks/runs", "get", "404"),
     ("/api/tasks/runs", "get", "400"), ("/api/tasks/runs", "get", "401"),
     ("/api/sandboxes", "get", "403"), ("/api/sandboxes", "patch", "403"), ("/api/sandboxes", "patch", "404"),
     ("/api/sandboxes/file", "get", "403"), ("/api/sandboxes/file", "get", "410")],
)
def test_the_errors_the_api_can_answer_are_documented(contract, schema, path, method, code):
    response = resolve(schema, schema["paths"][path][method]["responses"][code])
    assert_compatible(contract, {"$ref": "#/components/schemas/SandboxErrorResponse"},
                      schema, response["content"][JSON]["schema"], where=f"{method} {path} {code}",
                      direction="response")


def test_our_schema_is_valid_openapi_3_1(schema):
    validate_schema(schema)


def test_the_schema_generates_without_errors(capsys, tmp_path):
    call_command("spectacular", "--validate", "--file", str(tmp_path / "schema.yaml"))
    summary = re.search(r"Errors:\s+(\d+)", capsys.readouterr().err)
    assert summary is None or summary.group(1) == "0", summary.string


# --- real responses validate against the contract ----------------------------------------


def _date_time(value) -> bool:
    if not isinstance(value, str):
        return True
    datetime.fromisoformat(value)
    return True


FORMATS = FormatChecker(["uuid"])
FORMATS.checks("date-time", raises=ValueError)(_date_time)


def validator_for(document: dict, node: dict) -> Draft202012Validator:
    """A validator whose root holds the document's components, so `#/components/schemas/X` resolves."""
    root = {**node, "components": document["components"]}
    return Draft202012Validator(root, format_checker=FORMATS)


def assert_valid(document: dict, node: dict, body, *, where: str):
    errors = sorted(validator_for(document, node).iter_errors(body), key=lambda error: list(error.path))
    assert not errors, f"{where}: {body} does not match: " + "; ".join(
        f"{'/'.join(map(str, error.path)) or '(root)'}: {error.message}" for error in errors
    )


def assert_answer_keeps_the_contract(contract, schema, response, *, path, method, code):
    assert response.status_code == code, (response.status_code, response.content[:500])
    assert response["Content-Type"].startswith(JSON)
    body = response.json()
    c_schema = contract["paths"][path][method]["responses"][str(code)]["content"][JSON]["schema"]
    assert_valid(contract, c_schema, body, where=f"contract {method.upper()} {path} {code}")
    o_schema = schema["paths"][path][method]["responses"][str(code)]["content"][JSON]["schema"]
    assert_valid(schema, o_schema, body, where=f"our schema {method.upper()} {path} {code}")
    return body


def test_a_validator_from_the_contract_rejects_a_wrong_answer(contract):
    snapshot = {"$ref": "#/components/schemas/DeleteSandboxResponse"}
    bad = {"status": "success", "deleted_snapshot": {"account_id": "not-a-uuid", "snapshot_id": "s",
                                                      "expires_at": "soon", "github_repo": None, "created_at": None}}
    messages = [error.message for error in validator_for(contract, snapshot).iter_errors(bad)]
    assert messages, "a wrong answer passed"
    with pytest.raises(AssertionError):
        assert_valid(contract, snapshot, bad, where="bad")


SETUP, DELETE = "/api/sandboxes/setup", "/api/sandboxes"


def test_setup_200_keeps_the_contract(contract, schema, people, api):
    body = assert_answer_keeps_the_contract(contract, schema, api.setup(people.alice.key),
                                            path=SETUP, method="post", code=200)
    assert body["runId"].startswith("run_")


def test_setup_200_for_a_reachable_account_keeps_the_contract(contract, schema, people, api):
    response = api.setup(people.alice.key, body={"account_id": str(people.bob.account.pk)})
    assert_answer_keeps_the_contract(contract, schema, response, path=SETUP, method="post", code=200)


@pytest.mark.parametrize("body", [{"account_id": "not-a-uuid"}, ["not", "an", "object"]], ids=["account_id", "list"])
def test_setup_400_keeps_the_contract(contract, schema, people, api, body):
    assert_answer_keeps_the_contract(contract, schema, api.setup(people.alice.key, body=body),
                                     path=SETUP, method="post", code=400)


@pytest.mark.parametrize("key", [None, "sbx_unknown", ""], ids=["no key", "unknown key", "empty key"])
def test_setup_401_keeps_the_contract(contract, schema, db, api, key):
    assert_answer_keeps_the_contract(contract, schema, api.setup(key), path=SETUP, method="post", code=401)


def test_setup_403_answers_the_contracts_error_shape(contract, schema, people, api):
    response = api.setup(people.mallory.key, body={"account_id": str(people.alice.account.pk)})
    assert response.status_code == 403
    assert_valid(contract, {"$ref": "#/components/schemas/SandboxErrorResponse"}, response.json(), where="setup 403")
    assert_valid(schema, schema["paths"][SETUP]["post"]["responses"]["403"]["content"][JSON]["schema"],
                 response.json(), where="setup 403")


def test_delete_200_with_the_deleted_snapshot_keeps_the_contract(contract, schema, people, api, run_queued_setups):
    api.setup(people.alice.key)
    [run] = run_queued_setups()
    assert run.status == "COMPLETED", run.error
    body = assert_answer_keeps_the_contract(contract, schema, api.delete(people.alice.key),
                                            path=DELETE, method="delete", code=200)
    snapshot = body["deleted_snapshot"]
    assert snapshot["snapshot_id"] == run.output["snapshot_id"]
    assert uuid.UUID(snapshot["account_id"]) == people.alice.account.pk
    assert snapshot["github_repo"] == run.output["github_repo"]


def test_delete_200_with_no_snapshot_answers_null_and_keeps_the_contract(contract, schema, people, api):
    body = assert_answer_keeps_the_contract(contract, schema, api.delete(people.alice.key),
                                            path=DELETE, method="delete", code=200)
    assert body == {"status": "success", "deleted_snapshot": None}


def test_delete_400_for_a_bad_account_id_keeps_the_contract(contract, schema, people, api):
    body = assert_answer_keeps_the_contract(contract, schema, api.delete(people.alice.key, body={"account_id": "x"}),
                                            path=DELETE, method="delete", code=400)
    assert body["invalid_fields"] == ["account_id"]


def test_delete_400_when_the_git_host_fails_keeps_the_contract(contract, schema, people, api, tmp_path):
    # The account's repository, on a path the git host cannot delete: deleting it fails.
    account = people.alice.account
    repository = make_bare_repository(repository_path(account))
    make_undeletable(account, tmp_path)
    Snapshot.objects.create(account=account, snapshot_id="snap_x", expires_at=timezone.now(),
                            github_repo=repository.resolve().as_uri())
    body = assert_answer_keeps_the_contract(contract, schema, api.delete(people.alice.key),
                                            path=DELETE, method="delete", code=400)
    assert "repository" in body["error"]
    assert Snapshot.objects.filter(account=account).exists()


@pytest.mark.parametrize("key", [None, "sbx_unknown"], ids=["no key", "unknown key"])
def test_delete_401_keeps_the_contract(contract, schema, db, api, key):
    assert_answer_keeps_the_contract(contract, schema, api.delete(key), path=DELETE, method="delete", code=401)


def test_delete_403_keeps_the_contract(contract, schema, people, api):
    response = api.delete(people.mallory.key, body={"account_id": str(people.alice.account.pk)})
    assert_answer_keeps_the_contract(contract, schema, response, path=DELETE, method="delete", code=403)


def test_delete_403_for_an_account_that_does_not_exist_is_the_same(contract, schema, people, api):
    response = api.delete(people.mallory.key, body={"account_id": str(uuid.uuid4())})
    body = assert_answer_keeps_the_contract(contract, schema, response, path=DELETE, method="delete", code=403)
    denied = api.delete(people.mallory.key, body={"account_id": str(people.alice.account.pk)}).json()
    assert body == denied


# --- the docs page ----------------------------------------------------------------------


def test_the_docs_page_serves_swagger_ui_from_the_sidecar_under_static(api, db):
    response = api.client.get("/api/docs/")
    assert response.status_code == 200
    assert response["Content-Type"].startswith("text/html")
    html = response.content.decode()
    for asset in ("swagger-ui-bundle.js", "swagger-ui-standalone-preset.js", "swagger-ui.css"):
        url = f"/static/drf_spectacular_sidecar/swagger-ui-dist/{asset}"
        assert url in html, f"{url} is not referenced"
        assert finders.find(f"drf_spectacular_sidecar/swagger-ui-dist/{asset}"), f"{asset} is not installed"
    for cdn in ("cdn.jsdelivr.net", "unpkg.com", "cdnjs"):
        assert cdn not in html, f"the docs page loads from {cdn}: it would not work offline"
    assert "/api/schema/" in html


# --- the endpoints beyond the contract: every answer is the one our schema documents --------


def assert_answer_keeps_our_schema(schema, response, *, path, method, code):
    assert response.status_code == code, (response.status_code, response.content[:500])
    assert response["Content-Type"].startswith(JSON)
    documented = schema["paths"][path][method]["responses"]
    assert str(code) in documented, f"{method.upper()} {path} answers {code}, which the schema does not document"
    assert_valid(schema, documented[str(code)]["content"][JSON]["schema"], response.json(),
                 where=f"our schema {method.upper()} {path} {code}")
    return response.json()


@pytest.fixture
def ready_sandbox(people, api, run_queued_setups, settings):
    settings.SANDBOX_FILE_MAX_BYTES = 100  # the starter's README.md is larger, .gitignore is not
    api.setup(people.alice.key)
    [run] = run_queued_setups()
    assert run.status == "COMPLETED", run.error
    return Snapshot.objects.get(account=people.alice.account)


def test_sandbox_state_answers_keep_our_schema(schema, people, api, ready_sandbox):
    ready = assert_answer_keeps_our_schema(schema, api.sandbox(people.alice.key), path=DELETE, method="get", code=200)
    none = assert_answer_keeps_our_schema(schema, api.sandbox(people.bob.key), path=DELETE, method="get", code=200)
    assert (ready["state"], none["state"]) == ("ready", "none")
    assert_answer_keeps_our_schema(schema, api.sandbox(people.alice.key, account_id="x"), path=DELETE, method="get",
                                   code=400)
    assert_answer_keeps_our_schema(schema, api.sandbox(people.mallory.key, account_id=people.alice.account.pk),
                                   path=DELETE, method="get", code=403)


FILE = "/api/sandboxes/file"


@pytest.mark.parametrize("path, code", [
    (".gitignore", 200), ("README.md", 413), ("/etc/passwd", 400), ("nothing", 404),
])
def test_file_answers_keep_our_schema(schema, people, api, ready_sandbox, path, code):
    assert_answer_keeps_our_schema(schema, api.read_file(people.alice.key, path=path), path=FILE, method="get",
                                   code=code)


def test_file_of_an_expired_snapshot_keeps_our_schema(schema, people, api, ready_sandbox):
    Snapshot.objects.filter(pk=ready_sandbox.pk).update(expires_at=timezone.now())
    assert_answer_keeps_our_schema(schema, api.read_file(people.alice.key, path=".gitignore"), path=FILE,
                                   method="get", code=410)


def test_renew_answers_keep_our_schema(schema, people, api, ready_sandbox):
    key = {"Idempotency-Key": "renew-1"}
    assert_answer_keeps_our_schema(schema, api.renew(people.alice.key, {}, headers=key), path=DELETE,
                                   method="patch", code=200)
    assert_answer_keeps_our_schema(schema, api.renew(people.alice.key, {"account_id": None}, headers=key),
                                   path=DELETE, method="patch", code=422)
    assert_answer_keeps_our_schema(schema, api.renew(people.bob.key, {}), path=DELETE, method="patch", code=404)


def test_the_idempotency_key_is_documented_on_the_three_writes(schema):
    for path, method in ((SETUP, "post"), (DELETE, "delete"), (DELETE, "patch")):
        operation = schema["paths"][path][method]
        assert "Idempotency-Key" in [p["name"] for p in operation["parameters"] if p["in"] == "header"]
        assert {"409", "422"} <= set(operation["responses"])
