"""See, read and renew a sandbox: GET /api/sandboxes, GET /api/sandboxes/file, PATCH /api/sandboxes.

Each field and status of the three endpoints, against real setups: the
pipeline runs (the task function, as a worker runs it) on the local backend
and git host, with a starter layout of this module's own (a text file, a
file that is not UTF-8, one over the read limit). The permission rules of
each endpoint across people are in tests/orgs/test_permission_matrix.py;
their query budgets in test_query_budget.py.
"""

import base64
from datetime import timedelta
from pathlib import Path

import pytest
from django.utils import timezone
from django.utils.dateparse import parse_datetime

from accounts.models import AuditEvent
from orgs.access import ACCESS_DENIED_MESSAGE
from sandboxes.models import SetupRun, Snapshot

pytestmark = pytest.mark.django_db

FILE_LIMIT = 1000
TEXT = "# Hello\n\nÜnïcode text.\n"
BINARY = bytes(range(256))


@pytest.fixture(autouse=True)
def starter_layout(settings, tmp_path):
    root = tmp_path / "starter"
    (root / "docs").mkdir(parents=True)
    (root / "README.md").write_text(TEXT)
    (root / "docs" / "logo.bin").write_bytes(BINARY)
    (root / "docs" / "big.txt").write_text("x" * (FILE_LIMIT + 1))
    settings.SANDBOX_TEMPLATE_DIR = root
    settings.SANDBOX_FILE_MAX_BYTES = FILE_LIMIT
    settings.SNAPSHOT_TTL = timedelta(days=3)
    return root


def expire(snapshot: Snapshot) -> Snapshot:
    Snapshot.objects.filter(pk=snapshot.pk).update(expires_at=timezone.now() - timedelta(minutes=5))
    return Snapshot.objects.get(pk=snapshot.pk)


def as_time(value: str):
    return parse_datetime(value)


# --- GET /api/sandboxes ---------------------------------------------------------------


def test_a_sandbox_never_set_up_is_none_with_every_field_null(people, api):
    response = api.sandbox(people.bob.key)

    assert response.status_code == 200
    assert response.json() == {
        "status": "success", "account_id": str(people.bob.account.pk), "state": "none", "snapshot_id": None,
        "github_repo": None, "expires_at": None, "created_at": None, "last_run": None, "sandbox": None,
        "filetree": None,
    }


def test_a_queued_setup_is_provisioning_with_the_run_as_the_runs_endpoint_shows_it(people, api):
    run_id = api.setup(people.bob.key).json()["runId"]

    body = api.sandbox(people.bob.key).json()

    assert body["state"] == "provisioning"
    assert body["snapshot_id"] is None and body["filetree"] is None
    assert body["last_run"] == api.runs(people.bob.key, runId=run_id).json()["runs"][0]
    assert body["last_run"]["status"] == "QUEUED"


def test_a_set_up_sandbox_is_ready_with_its_snapshot_repository_expiry_and_file_tree(people, api, sandbox_set_up):
    snapshot = sandbox_set_up(people.bob)

    body = api.sandbox(people.bob.key).json()

    assert body["state"] == "ready"
    assert body["snapshot_id"] == snapshot.snapshot_id
    assert body["github_repo"] == snapshot.github_repo
    assert as_time(body["expires_at"]) == snapshot.expires_at
    assert as_time(body["created_at"]) == snapshot.created_at
    assert body["last_run"]["status"] == "COMPLETED"
    assert body["last_run"]["output"]["snapshot_id"] == snapshot.snapshot_id
    assert body["filetree"] == [
        {"path": "README.md", "type": "blob", "size": len(TEXT.encode())},
        {"path": "docs", "type": "tree", "size": None},
        {"path": "docs/big.txt", "type": "blob", "size": FILE_LIMIT + 1},
        {"path": "docs/logo.bin", "type": "blob", "size": len(BINARY)},
    ]


def test_a_second_setup_of_a_ready_sandbox_is_provisioning_and_keeps_showing_the_snapshot(people, api, sandbox_set_up):
    snapshot = sandbox_set_up(people.bob)
    api.setup(people.bob.key)

    body = api.sandbox(people.bob.key).json()

    assert body["state"] == "provisioning"
    assert body["snapshot_id"] == snapshot.snapshot_id
    assert body["last_run"]["status"] == "QUEUED"


def test_a_sandbox_past_its_expiry_is_expired(people, api, sandbox_set_up):
    snapshot = expire(sandbox_set_up(people.bob))

    body = api.sandbox(people.bob.key).json()

    assert body["state"] == "expired"
    assert as_time(body["expires_at"]) == snapshot.expires_at


def test_a_failed_setup_without_a_snapshot_is_failed(people, api, run_queued_setups, settings, tmp_path):
    settings.SANDBOX_TEMPLATE_DIR = tmp_path / "no-such-folder"
    api.setup(people.bob.key)
    run_queued_setups()

    body = api.sandbox(people.bob.key).json()

    assert body["state"] == "failed"
    assert body["snapshot_id"] is None
    assert body["last_run"]["status"] == "FAILED" and body["last_run"]["error"]


def test_a_failed_setup_over_a_snapshot_leaves_it_ready(people, api, sandbox_set_up, run_queued_setups, settings, tmp_path):
    sandbox_set_up(people.bob)
    settings.SANDBOX_TEMPLATE_DIR = tmp_path / "no-such-folder"
    # A setup of an existing repository checks it out instead of pushing the starter files: break the backend.
    Path(settings.SANDBOX_ROOT, "snapshots").rename(Path(settings.SANDBOX_ROOT, "moved"))
    Path(settings.SANDBOX_ROOT, "snapshots").write_text("not a folder")
    api.setup(people.bob.key)
    run_queued_setups()

    body = api.sandbox(people.bob.key).json()

    assert body["last_run"]["status"] == "FAILED"
    assert body["state"] == "ready"


def test_a_deleted_sandbox_is_none_again(people, api, sandbox_set_up):
    sandbox_set_up(people.bob)
    api.delete(people.bob.key)

    body = api.sandbox(people.bob.key).json()

    assert body["state"] == "none"
    assert body["snapshot_id"] is None and body["filetree"] is None
    assert body["last_run"]["status"] == "COMPLETED"


def test_an_owner_sees_a_members_sandbox_and_an_outsider_does_not(people, api, sandbox_set_up):
    snapshot = sandbox_set_up(people.bob)

    allowed = api.sandbox(people.alice.key, account_id=people.bob.account.pk)
    denied = api.sandbox(people.mallory.key, account_id=people.bob.account.pk)

    assert allowed.status_code == 200
    assert allowed.json()["account_id"] == str(people.bob.account.pk)
    assert allowed.json()["snapshot_id"] == snapshot.snapshot_id
    assert denied.status_code == 403
    assert denied.json() == {"status": "error", "error": ACCESS_DENIED_MESSAGE}


@pytest.mark.parametrize("endpoint", ["sandbox", "read_file"])
def test_an_account_id_that_is_not_a_uuid_is_a_400(people, api, endpoint):
    path = {"path": "README.md"} if endpoint == "read_file" else {}
    response = getattr(api, endpoint)(people.bob.key, account_id="nope", **path)

    assert response.status_code == 400
    assert response.json()["invalid_fields"] == ["account_id"]


@pytest.mark.parametrize("endpoint", ["sandbox", "read_file"])
def test_an_unknown_query_parameter_is_a_400_naming_it(people, api, endpoint):
    path = {"path": "README.md"} if endpoint == "read_file" else {}
    response = getattr(api, endpoint)(people.bob.key, acount_id=people.bob.account.pk, **path)

    assert response.status_code == 400
    assert response.json()["status"] == "error"
    assert "acount_id" in response.json()["error"]


@pytest.mark.parametrize("call", ["sandbox", "read_file", "renew"])
def test_the_new_endpoints_need_a_key(api, call):
    response = getattr(api, call)(None)

    assert response.status_code == 401
    assert response.json()["status"] == "error"


# --- GET /api/sandboxes/file -------------------------------------------------------------


def test_a_text_file_is_read_from_the_snapshot_as_utf8(people, api, sandbox_set_up):
    sandbox_set_up(people.bob)

    response = api.read_file(people.bob.key, path="README.md")

    assert response.status_code == 200
    assert response.json() == {
        "status": "success", "path": "README.md", "size": len(TEXT.encode()), "encoding": "utf-8", "content": TEXT,
    }


def test_a_file_that_is_not_utf8_comes_base64(people, api, sandbox_set_up):
    sandbox_set_up(people.bob)

    body = api.read_file(people.bob.key, path="docs/logo.bin").json()

    assert (body["encoding"], body["size"]) == ("base64", len(BINARY))
    assert base64.b64decode(body["content"]) == BINARY


def test_the_file_comes_from_the_snapshot_archive_not_the_repository(people, api, sandbox_set_up, settings):
    snapshot = sandbox_set_up(people.bob)
    archive = Path(settings.SANDBOX_ROOT, "snapshots", f"{snapshot.snapshot_id}.tar.gz")
    archive.write_bytes(archive.read_bytes()[:-20])  # damaged: the backend refuses it

    response = api.read_file(people.bob.key, path="README.md")

    assert response.status_code == 502
    assert "damaged" in response.json()["error"]


def test_a_snapshot_without_a_recorded_listing_is_read_through_the_backend(people, api, sandbox_set_up):
    snapshot = sandbox_set_up(people.bob)
    Snapshot.objects.filter(pk=snapshot.pk).update(filetree=None)  # taken before listings were recorded

    found = api.read_file(people.bob.key, path="README.md")
    missing = api.read_file(people.bob.key, path="nothing.txt")
    too_large = api.read_file(people.bob.key, path="docs/big.txt")

    assert found.json()["content"] == TEXT
    assert missing.status_code == 404
    assert too_large.status_code == 413
    assert api.sandbox(people.bob.key).json()["filetree"] is None


@pytest.mark.parametrize("path", [
    "/etc/passwd", "../README.md", "docs/../README.md", "./README.md", "docs//logo.bin", "docs/", ".", "",
    "README.md\x00.txt", "x" * 4097,
])
def test_a_path_that_is_absolute_climbs_or_is_not_normalized_is_a_400(people, api, sandbox_set_up, path):
    sandbox_set_up(people.bob)

    response = api.read_file(people.bob.key, path=path)

    assert response.status_code == 400
    assert response.json()["invalid_fields"] == ["path"]


def test_a_missing_path_is_a_400(people, api, sandbox_set_up):
    response = api.read_file(people.bob.key)

    assert response.status_code == 400
    assert response.json()["missing_fields"] == ["path"]


@pytest.mark.parametrize("path", ["nothing.txt", "docs", ".git/HEAD", "readme.md"])
def test_a_path_that_is_no_file_of_the_snapshot_is_a_404(people, api, sandbox_set_up, path):
    sandbox_set_up(people.bob)

    response = api.read_file(people.bob.key, path=path)

    assert response.status_code == 404
    assert response.json() == {"status": "error", "error": f"No file {path} in the snapshot"}


def test_reading_without_a_snapshot_is_a_404(people, api):
    response = api.read_file(people.bob.key, path="README.md")

    assert response.status_code == 404
    assert "no snapshot" in response.json()["error"]


def test_reading_an_expired_snapshot_is_a_410_saying_when_and_how_to_bring_it_back(people, api, sandbox_set_up):
    snapshot = expire(sandbox_set_up(people.bob))

    response = api.read_file(people.bob.key, path="README.md")

    assert response.status_code == 410
    error = response.json()["error"]
    assert snapshot.expires_at.isoformat() in error
    assert "PATCH /api/sandboxes" in error and "POST /api/sandboxes/setup" in error


def test_a_file_over_the_limit_is_a_413_naming_its_size(people, api, sandbox_set_up):
    sandbox_set_up(people.bob)

    response = api.read_file(people.bob.key, path="docs/big.txt")

    assert response.status_code == 413
    assert f"{FILE_LIMIT + 1} bytes" in response.json()["error"]
    assert str(FILE_LIMIT) in response.json()["error"]


def test_an_owner_reads_a_members_file_and_an_outsider_cannot(people, api, sandbox_set_up):
    sandbox_set_up(people.bob)

    allowed = api.read_file(people.alice.key, path="README.md", account_id=people.bob.account.pk)
    denied = api.read_file(people.mallory.key, path="README.md", account_id=people.bob.account.pk)

    assert allowed.json()["content"] == TEXT
    assert denied.status_code == 403
    assert denied.json()["error"] == ACCESS_DENIED_MESSAGE


# --- PATCH /api/sandboxes ---------------------------------------------------------------


def test_renewing_moves_the_expiry_to_now_plus_the_ttl_and_answers_the_snapshot(people, api, sandbox_set_up, settings):
    snapshot = sandbox_set_up(people.bob)
    Snapshot.objects.filter(pk=snapshot.pk).update(expires_at=timezone.now() + timedelta(hours=1))
    before = timezone.now()

    response = api.renew(people.bob.key, {})

    assert response.status_code == 200
    body = response.json()
    assert body["status"] == "success"
    renewed = Snapshot.objects.get(pk=snapshot.pk)
    assert body["snapshot"] == {
        "account_id": str(people.bob.account.pk), "snapshot_id": snapshot.snapshot_id,
        "expires_at": body["snapshot"]["expires_at"], "github_repo": snapshot.github_repo,
        "created_at": body["snapshot"]["created_at"],
    }
    assert as_time(body["snapshot"]["expires_at"]) == renewed.expires_at
    assert as_time(body["snapshot"]["created_at"]) == snapshot.created_at
    assert before + settings.SNAPSHOT_TTL <= renewed.expires_at <= timezone.now() + settings.SNAPSHOT_TTL


def test_renewing_is_recorded_in_the_audit_trail(people, api, sandbox_set_up):
    sandbox_set_up(people.bob)

    api.renew(people.bob.key, {})

    event = AuditEvent.objects.get(action=AuditEvent.Action.SANDBOX_RENEWED)
    assert event.account_id == people.bob.account.pk
    assert event.actor_key_id == people.bob.api_key.pk
    assert event.outcome == AuditEvent.Outcome.SUCCESS
    assert event.detail == f"Expires {Snapshot.objects.get(account=people.bob.account).expires_at.isoformat()}"


def test_renewing_an_expired_snapshot_makes_it_ready_and_readable_again(people, api, sandbox_set_up):
    expire(sandbox_set_up(people.bob))

    assert api.renew(people.bob.key).status_code == 200

    assert api.sandbox(people.bob.key).json()["state"] == "ready"
    assert api.read_file(people.bob.key, path="README.md").json()["content"] == TEXT


def test_renewing_without_a_snapshot_is_a_404_and_records_nothing(people, api):
    response = api.renew(people.bob.key, {})

    assert response.status_code == 404
    assert response.json()["status"] == "error"
    assert not AuditEvent.objects.filter(action=AuditEvent.Action.SANDBOX_RENEWED).exists()


def test_an_owner_renews_a_members_sandbox_and_an_outsider_cannot(people, api, sandbox_set_up):
    snapshot = expire(sandbox_set_up(people.bob))

    denied = api.renew(people.mallory.key, {"account_id": str(people.bob.account.pk)})
    assert denied.status_code == 403
    assert Snapshot.objects.get(pk=snapshot.pk).expires_at == snapshot.expires_at

    allowed = api.renew(people.alice.key, {"account_id": str(people.bob.account.pk)})
    assert allowed.status_code == 200
    assert allowed.json()["snapshot"]["account_id"] == str(people.bob.account.pk)


@pytest.mark.parametrize("body, field", [
    ({"account_id": "nope"}, "account_id"),
    ({"acount_id": "x"}, "acount_id"),
    ({"account_id": None, "ttl": "30d"}, "ttl"),
])
def test_a_renewal_with_a_bad_or_unknown_field_is_a_400_naming_it(people, api, sandbox_set_up, body, field):
    sandbox_set_up(people.bob)

    response = api.renew(people.bob.key, body)

    assert response.status_code == 400
    assert field in response.json()["invalid_fields"]


def test_a_renewal_with_an_unknown_query_parameter_is_a_400_naming_it(people, api, sandbox_set_up):
    sandbox_set_up(people.bob)

    response = api.call("patch", "/api/sandboxes?days=30", key=people.bob.key, body={})

    assert response.status_code == 400
    assert "days" in response.json()["error"]


def test_a_renewal_body_that_is_not_an_object_is_a_400(people, api, sandbox_set_up):
    sandbox_set_up(people.bob)

    response = api.renew(people.bob.key, ["account_id"])

    assert response.status_code == 400
    assert response.json()["status"] == "error"


def test_renewals_are_rate_limited_per_key(people, api, sandbox_set_up, settings):
    settings.CACHES = {"default": {"BACKEND": "django.core.cache.backends.locmem.LocMemCache"}}
    settings.API_THROTTLE_RATES = {**settings.API_THROTTLE_RATES, "renew": "2/min"}
    sandbox_set_up(people.bob)

    answers = [api.renew(people.bob.key, {}) for _ in range(3)]

    assert [answer.status_code for answer in answers] == [200, 200, 429]
    assert int(answers[2]["Retry-After"]) >= 1
    assert api.sandbox(people.bob.key).status_code == 200  # reading is not limited


def test_the_three_endpoints_refuse_other_methods_with_json(people, api):
    response = api.call("put", "/api/sandboxes", key=people.bob.key, body={})
    file_post = api.call("post", "/api/sandboxes/file", key=people.bob.key, body={})

    assert response.status_code == file_post.status_code == 405
    assert response.json()["status"] == file_post.json()["status"] == "error"


def test_a_second_run_is_not_started_by_reading_or_renewing(people, api, sandbox_set_up):
    sandbox_set_up(people.bob)

    api.sandbox(people.bob.key)
    api.read_file(people.bob.key, path="README.md")
    api.renew(people.bob.key)

    assert SetupRun.objects.filter(account=people.bob.account).count() == 1


def test_a_snapshot_without_any_run_is_ready_with_no_last_run(people, api):
    snapshot = Snapshot.objects.create(account=people.bob.account, snapshot_id="snap_" + "a" * 24,
                                       expires_at=timezone.now() + timedelta(days=1), filetree=[])

    body = api.sandbox(people.bob.key).json()

    assert (body["state"], body["snapshot_id"], body["last_run"], body["filetree"]) == (
        "ready", snapshot.snapshot_id, None, [])


def test_the_file_tree_comes_from_the_row_without_opening_the_archive(people, api, sandbox_set_up, settings):
    snapshot = sandbox_set_up(people.bob)
    for archive in Path(settings.SANDBOX_ROOT, "snapshots").glob(f"{snapshot.snapshot_id}.*"):
        archive.unlink()

    body = api.sandbox(people.bob.key).json()

    assert body["state"] == "ready"
    assert body["filetree"] == snapshot.filetree and len(body["filetree"]) == 4
