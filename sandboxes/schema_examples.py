"""Real values as the OpenAPI schema's examples, so Swagger UI shows what the service answers, not "string".

A drf-spectacular postprocessing hook: every string property (and array of
strings) of the schema's components gets an `example` by its name, as the
service writes such a value: ids with their prefixes, UUIDs, times to the
second with their zone, errors as the API words them.
https://drf-spectacular.readthedocs.io/en/latest/settings.html (POSTPROCESSING_HOOKS)
"""

ACCOUNT_ID = "4f6c2a9e-8b1d-4c3e-9a7f-2d5b8e1c0a36"
EXAMPLES = {
    "account_id": ACCOUNT_ID,
    "at": "2026-12-06T10:15:42+00:00",
    "createdAt": "2026-12-06T10:15:40+00:00",
    "created_at": "2026-12-06T10:15:40+00:00",
    "startedAt": "2026-12-06T10:15:40+00:00",
    "started": "2026-12-06T10:15:40+00:00",
    "finishedAt": "2026-12-06T10:15:41+00:00",
    "finished": "2026-12-06T10:15:41+00:00",
    "expires_at": "2026-12-13T10:15:41+00:00",
    "command": "python3",
    "args": ["-c", "print('hello')"],
    "commandId": "cmd_5a0f3c2b9d8e7f6a1b2c3d4e",
    "content": "# Alice's sandbox\n",
    "currentStep": "shutdown",
    "cwd": "src",
    "detail": "Snapshot snap_9b1e4c7a2f6d8e0b3a5c7d9f (4096 bytes, sha256 3f9a1c0b7e2d…)",
    "error": "This key lacks the scope sandboxes:delete",
    "github_repo": f"https://github.com/my-sandbox-org/alice-example-{ACCOUNT_ID}",
    "message": "Upload files via API",
    "name": "provision",
    "next": "eyJhdCI6IjIwMjYtMTItMDZUMTA6MTU6NDIrMDA6MDAiLCJpZCI6NDJ9:1tJ3k2:Qe8w",
    "path": "src/app.py",
    "runId": "run_7d2e9a4b1c8f3e6a0b5d2c9e",
    "sandboxId": "sbx_3c8e1f0a9b7d6e2c4a5f",
    "sha": "ce013625030ba8dba906f756967f9e9ca394464a",
    "snapshot_id": "snap_9b1e4c7a2f6d8e0b3a5c7d9f",
    "stdout": "hello\n",
    "stderr": "",
    "target": "sbx_3c8e1f0a9b7d6e2c4a5f",
    "taskIdentifier": "setup-sandbox",
    "invalid_fields": ["account_id"],
    "missing_fields": ["command"],
}
# `id` is a run's in the runs' schema; other components name their own.
IDS = {"Run": "run_7d2e9a4b1c8f3e6a0b5d2c9e"}


def _is_string(schema: dict) -> bool:
    kind = schema.get("type")
    return kind == "string" or (isinstance(kind, list) and "string" in kind)


def _is_string_array(schema: dict) -> bool:
    kind = schema.get("type")
    return (kind == "array" or (isinstance(kind, list) and "array" in kind)) and _is_string(schema.get("items", {}))


def add_examples(result: dict, generator, request, public) -> dict:
    """POSTPROCESSING_HOOKS: an example for every string property that has none."""
    for component, schema in result.get("components", {}).get("schemas", {}).items():
        for name, prop in (schema.get("properties") or {}).items():
            if "example" in prop or not (_is_string(prop) or _is_string_array(prop)):
                continue
            example = IDS.get(component) if name == "id" else EXAMPLES.get(name)
            if example is not None:
                prop["example"] = example
    return result
