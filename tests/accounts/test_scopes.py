"""Key scopes: the rule every endpoint goes through, and the keys that existed before scopes did.

The endpoint × scope pairs themselves are in tests/orgs/test_permission_matrix.py
(the scope dimension); GET /api/audit's scope in tests/orgs/test_audit_api.py.
"""

import pytest
from django.db import connection
from django.db.migrations.executor import MigrationExecutor

from accounts.scopes import ALL_SCOPES, normalized_scopes, required_scope
from accounts.services import api_key_create, api_key_scopes_set
from tests.conftest import TESTS


class Key:
    def __init__(self, *scopes):
        self.scopes = list(scopes)


def test_a_method_asks_for_its_scope_and_head_asks_as_get():
    needs = {"GET": "sandboxes:read", "DELETE": "sandboxes:delete"}
    assert required_scope(Key("sandboxes:read"), needs, "GET") == ""
    assert required_scope(Key("sandboxes:read"), needs, "HEAD") == ""
    assert required_scope(Key("sandboxes:read"), needs, "DELETE") == "This key lacks the scope sandboxes:delete"
    assert required_scope(Key(), needs, "OPTIONS") == ""


def test_a_method_the_view_forgot_to_declare_is_refused():
    assert required_scope(Key(*ALL_SCOPES), {"GET": "sandboxes:read"}, "POST") == "This endpoint declares no scope for POST"


def test_scopes_are_kept_once_each_in_their_order_and_unknown_ones_refused():
    assert normalized_scopes(["audit:read", "sandboxes:read", "audit:read"]) == ["sandboxes:read", "audit:read"]
    with pytest.raises(ValueError, match="not a scope: sandboxes:all"):
        normalized_scopes(["sandboxes:all"])


def test_the_service_refuses_an_unknown_scope_and_changes_nothing(people):
    with pytest.raises(ValueError):
        api_key_create(account=people.bob.account, actor=TESTS, scopes=["root"])
    with pytest.raises(ValueError):
        api_key_scopes_set(key=people.bob.api_key, scopes=["root"], actor=TESTS)
    people.bob.api_key.refresh_from_db()
    assert people.bob.api_key.scopes == list(ALL_SCOPES)


def test_a_key_with_no_scope_still_pings(people, api):
    _, raw = api_key_create(account=people.bob.account, actor=TESTS, scopes=[])
    assert api.call("get", "/api/ping", key=raw).status_code == 200
    assert api.sandbox(raw).json() == {"status": "error", "error": "This key lacks the scope sandboxes:read"}


def test_a_key_without_the_scope_is_refused_before_the_body_is_read(people, api):
    """Nothing about the request is looked at: not its body, not its query, not its account."""
    _, raw = api_key_create(account=people.bob.account, actor=TESTS, scopes=["sandboxes:read"])
    answer = api.call("delete", "/api/sandboxes?bogus=1", key=raw, body={"account_id": "not-a-uuid"})
    assert answer.status_code == 403
    assert answer.json()["error"] == "This key lacks the scope sandboxes:delete"


@pytest.mark.django_db(transaction=True)
def test_keys_made_before_scopes_existed_get_every_scope():
    executor = MigrationExecutor(connection)
    before = [("accounts", "0010_live_sandbox_audit_actions")]
    executor.migrate(before)
    old_apps = executor.loader.project_state(before).apps
    Account = old_apps.get_model("accounts", "Account")
    ApiKey = old_apps.get_model("accounts", "ApiKey")
    account = Account.objects.create(name="Old", email="old@example.com")
    ApiKey.objects.create(account=account, prefix="sbx_old00000", key_hash="0" * 64)

    executor = MigrationExecutor(connection)
    executor.loader.build_graph()
    executor.migrate(executor.loader.graph.leaf_nodes())

    from accounts.models import ApiKey as CurrentApiKey

    assert CurrentApiKey.objects.get(prefix="sbx_old00000").scopes == list(ALL_SCOPES)
