"""The OpenAPI schema shows real values: every string property of every component has an example that is
not the placeholder "string", and ids carry their prefixes."""

import pytest


@pytest.fixture
def schema(api):
    response = api.call("get", "/api/schema/?format=json")
    assert response.status_code == 200
    return response.json()


def string_properties(schema):
    for component, body in schema["components"]["schemas"].items():
        for name, prop in (body.get("properties") or {}).items():
            kind = prop.get("type")
            kinds = kind if isinstance(kind, list) else [kind]
            items = prop.get("items", {}).get("type")
            if "string" in kinds or ("array" in kinds and items == "string"):
                yield f"{component}.{name}", prop


def test_every_string_property_has_a_real_example(schema):
    missing = [where for where, prop in string_properties(schema) if prop.get("example") in (None, "string")]

    assert missing == []


def test_ids_and_times_look_as_the_service_writes_them(schema):
    examples = dict((where, prop["example"]) for where, prop in string_properties(schema))

    assert examples["Run.id"].startswith("run_")
    assert examples["SetupSandboxResponse.runId"].startswith("run_")
    assert examples["LiveSandbox.sandboxId"].startswith("sbx_")
    assert examples["Run.createdAt"].endswith("+00:00")
