"""API keys are secrets the service cannot give away.

- Stored only as HMAC-SHA256 hashes: after a client has used every endpoint
  with both ways of sending its key (and been throttled), no table of the
  database, no log line and no answer holds the raw key or its secret part.
- Looked up by the hash alone, in one query that never filters on the visible
  prefix, and compared with `hmac.compare_digest` (constant time): a spy on
  the standard library's function sees the comparison; our own code is not
  patched.
- The visible prefix never authenticates: not alone, not with another tail.
"""

import hmac
import logging
import secrets

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext
from rest_framework.exceptions import AuthenticationFailed

from accounts.authentication import ApiKeyAuthentication
from accounts.keys import KEY_PREFIX, VISIBLE_PREFIX_LENGTH, hash_key
from tests.rate_limits import start_of_a_window


def _every_text_in_the_database():
    for table in connection.introspection.table_names():
        with connection.cursor() as cursor:
            cursor.execute(f"SELECT * FROM {connection.ops.quote_name(table)}")
            for row in cursor.fetchall():
                for value in row:
                    if isinstance(value, (bytes, bytearray, memoryview)):
                        yield table, bytes(value).decode("latin-1")
                    elif value is not None:
                        yield table, str(value)


def test_after_every_endpoint_no_table_log_or_answer_holds_the_raw_key(people, api, settings, caplog):
    settings.API_THROTTLE_RATES = {"setup": "2/min", "delete": "2/min"}
    start_of_a_window(settings, people.bob.api_key)
    key = people.bob.key
    secret_part = key[VISIBLE_PREFIX_LENGTH:]
    answers = []
    with caplog.at_level(logging.DEBUG):
        for headers in ({"x-api-key": key}, {"Authorization": f"Bearer {key}"}):
            answers += [
                api.call("post", "/api/sandboxes/setup", headers=headers),
                api.call("delete", "/api/sandboxes", headers=headers),
                api.call("get", "/api/tasks/runs", headers=headers),
                api.call("get", "/api/ping", headers=headers),
            ]
        answers.append(api.setup(key))  # over the rate: the throttle's count is stored too

    assert answers[-1].status_code == 429
    texts = list(_every_text_in_the_database())
    assert any(table == "sandbox_cache" for table, _ in texts), "the throttle's count was stored"
    for table, text in texts:
        assert secret_part not in text, f"the key is stored in {table}"
    assert hash_key(key) in {text for _, text in texts}, "the hash is what is stored"
    assert secret_part not in caplog.text
    for answer in answers:
        assert secret_part.encode() not in answer.content
        assert all(secret_part not in value for value in answer.headers.values())


def test_the_key_is_found_by_its_hash_in_one_query_that_ignores_the_prefix(people):
    authenticator = ApiKeyAuthentication()
    authenticator.authenticate_key(people.bob.key)  # the first use records last_used_at

    with CaptureQueriesContext(connection) as captured:
        authenticator.authenticate_key(people.bob.key)

    [query] = captured.captured_queries
    where = query["sql"].split("WHERE", 1)[1]
    assert "key_hash" in where
    assert "prefix" not in where
    assert hash_key(people.bob.key) in where
    assert people.bob.key[VISIBLE_PREFIX_LENGTH:] not in query["sql"]


def test_the_stored_hash_is_compared_in_constant_time(people, monkeypatch):
    comparisons = []
    real_compare_digest = hmac.compare_digest

    def spy(a, b):
        comparisons.append((a, b))
        return real_compare_digest(a, b)

    monkeypatch.setattr(hmac, "compare_digest", spy)

    account, api_key = ApiKeyAuthentication().authenticate_key(people.bob.key)

    assert account == people.bob.account
    assert comparisons == [(api_key.key_hash, hash_key(people.bob.key))]


def _same_prefix_other_tail(key: str) -> str:
    tail_length = len(key) - VISIBLE_PREFIX_LENGTH
    return key[:VISIBLE_PREFIX_LENGTH] + secrets.token_urlsafe(64)[:tail_length]


@pytest.mark.parametrize(
    "make_key",
    [
        pytest.param(lambda key: key[:VISIBLE_PREFIX_LENGTH], id="visible_prefix_alone"),
        pytest.param(_same_prefix_other_tail, id="visible_prefix_with_another_tail"),
        pytest.param(lambda key: key[:-1] + ("A" if key[-1] != "A" else "B"), id="last_character_changed"),
        pytest.param(lambda key: KEY_PREFIX, id="scheme_prefix_alone"),
    ],
)
def test_a_prefix_of_a_real_key_never_authenticates(people, api, make_key):
    candidate = make_key(people.bob.key)
    assert candidate != people.bob.key

    with pytest.raises(AuthenticationFailed):
        ApiKeyAuthentication().authenticate_key(candidate)
    response = api.setup(candidate)
    assert response.status_code == 401
    assert response.json()["status"] == "error"
