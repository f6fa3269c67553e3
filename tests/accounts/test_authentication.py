"""API key authentication (accounts/authentication.py) and the keys themselves (accounts/keys.py).

What is pinned here:
- a key is accepted in exactly one of `x-api-key` or `Authorization: Bearer`;
  no key, both headers, another scheme, or a key that is unknown, malformed,
  cut down to its visible prefix, revoked, expired or owned by an inactive
  account answers 401 with the API's JSON error body;
- authenticating a recently used key is one indexed query, and `last_used_at`
  is written on first use and then at most once a minute;
- keys look like `sbx_` + 43 url-safe characters, and the database holds only
  their HMAC-SHA256 under settings.API_KEY_PEPPER, never the key itself.

Requests go to GET /api/tasks/runs, which changes nothing.
"""

import hashlib
import hmac
import re
from datetime import timedelta

import pytest
from django.db import connection
from django.utils import timezone
from rest_framework.exceptions import AuthenticationFailed

from accounts.audit import Actor
from accounts.authentication import LAST_USED_RESOLUTION, ApiKeyAuthentication
from accounts.keys import KEY_PATTERN, VISIBLE_PREFIX_LENGTH
from accounts.models import Account, ApiKey
from accounts.services import api_key_create

RUNS = "/api/tasks/runs"


def get_runs(api, headers=None):
    return api.call("get", RUNS, headers=headers)


def assert_unauthorized(response):
    assert response.status_code == 401, response.content
    body = response.json()
    assert set(body) == {"status", "error"}
    assert body["status"] == "error"
    assert isinstance(body["error"], str) and body["error"]
    # DRF answers 401 rather than 403 because the scheme is announced.
    assert response["WWW-Authenticate"] == 'Bearer realm="api"'


def fresh_last_used_at(api_key: ApiKey):
    return ApiKey.objects.values_list("last_used_at", flat=True).get(pk=api_key.pk)


# --- where the key goes -----------------------------------------------------------


def test_a_key_in_the_x_api_key_header_authenticates(people, api):
    response = get_runs(api, headers={"x-api-key": people.bob.key})

    assert response.status_code == 200, response.json()
    assert response.json() == {"status": "success", "runs": []}


def test_a_key_as_an_authorization_bearer_token_authenticates(people, api):
    response = get_runs(api, headers={"Authorization": f"Bearer {people.bob.key}"})

    assert response.status_code == 200, response.json()


def test_the_bearer_scheme_name_is_case_insensitive(people, api):
    response = get_runs(api, headers={"Authorization": f"bearer {people.bob.key}"})

    assert response.status_code == 200, response.json()


def test_a_request_without_a_key_is_unauthorized(people, api):
    response = get_runs(api)

    assert_unauthorized(response)
    assert "Missing API key" in response.json()["error"]


def test_a_key_in_both_headers_is_unauthorized_even_when_both_are_valid(people, api):
    response = get_runs(
        api, headers={"x-api-key": people.bob.key, "Authorization": f"Bearer {people.bob.key}"}
    )

    assert_unauthorized(response)


def test_an_authorization_header_with_another_scheme_is_unauthorized(people, api):
    response = get_runs(api, headers={"Authorization": "Basic Ym9iOnNlY3JldA=="})

    assert_unauthorized(response)


def test_an_empty_bearer_token_is_unauthorized(people, api):
    assert_unauthorized(get_runs(api, headers={"Authorization": "Bearer "}))


def test_an_empty_x_api_key_header_is_unauthorized(people, api):
    assert_unauthorized(get_runs(api, headers={"x-api-key": ""}))


# --- which keys are refused ---------------------------------------------------------


@pytest.mark.parametrize(
    "make_key",
    [
        pytest.param(lambda people: "sbx_" + "A" * 43, id="unknown_well_formed_key"),
        pytest.param(lambda people: "not-an-api-key", id="malformed_key"),
        pytest.param(lambda people: people.bob.key + "x", id="key_with_a_character_too_many"),
        pytest.param(lambda people: people.bob.key[:-1], id="key_with_a_character_too_few"),
        pytest.param(
            lambda people: people.bob.key[:VISIBLE_PREFIX_LENGTH], id="visible_prefix_alone"
        ),
        pytest.param(lambda people: people.bob.api_key.prefix, id="stored_prefix_column"),
        pytest.param(lambda people: people.bob.api_key.key_hash, id="stored_hash_column"),
    ],
)
@pytest.mark.parametrize("header", ["x-api-key", "Authorization"])
def test_a_key_that_was_never_issued_is_unauthorized(people, api, make_key, header):
    key = make_key(people)
    value = f"Bearer {key}" if header == "Authorization" else key

    assert_unauthorized(get_runs(api, headers={header: value}))


def test_a_revoked_key_is_unauthorized(people, api):
    ApiKey.objects.filter(pk=people.bob.api_key.pk).update(revoked_at=timezone.now())

    response = api.runs(people.bob.key)

    assert_unauthorized(response)
    assert "revoked" in response.json()["error"]


def test_a_key_that_is_not_revoked_is_accepted(people, api):
    assert people.bob.api_key.revoked_at is None
    assert api.runs(people.bob.key).status_code == 200


def test_an_expired_key_is_unauthorized(people, api):
    _, raw = api_key_create(
        actor=Actor.command("tests"), account=people.bob.account, expires_at=timezone.now() - timedelta(seconds=1)
    )

    response = api.runs(raw)

    assert_unauthorized(response)
    assert "expired" in response.json()["error"]


def test_a_key_that_has_not_yet_expired_is_accepted(people, api):
    _, raw = api_key_create(
        actor=Actor.command("tests"), account=people.bob.account, expires_at=timezone.now() + timedelta(minutes=5)
    )

    assert api.runs(raw).status_code == 200


def test_the_key_of_an_inactive_account_is_unauthorized(people, api):
    Account.objects.filter(pk=people.bob.account.pk).update(is_active=False)

    response = api.runs(people.bob.key)

    assert_unauthorized(response)
    assert "inactive" in response.json()["error"]


def test_the_key_of_an_active_account_is_accepted(people, api):
    assert people.bob.account.is_active
    assert api.runs(people.bob.key).status_code == 200


def test_a_refused_key_is_not_marked_as_used(people, api):
    ApiKey.objects.filter(pk=people.bob.api_key.pk).update(revoked_at=timezone.now())

    assert_unauthorized(api.runs(people.bob.key))

    assert fresh_last_used_at(people.bob.api_key) is None


def test_the_authenticated_request_acts_as_the_keys_account(people, api):
    authenticator = ApiKeyAuthentication()

    account, api_key = authenticator.authenticate_key(people.carol.key)

    assert account == people.carol.account
    assert api_key == people.carol.api_key


# --- cost and last_used_at ------------------------------------------------------------


def test_authenticating_a_recently_used_key_is_one_query(people, django_assert_num_queries):
    authenticator = ApiKeyAuthentication()
    authenticator.authenticate_key(people.bob.key)  # first use writes last_used_at

    with django_assert_num_queries(1):
        authenticator.authenticate_key(people.bob.key)


def test_a_request_with_a_recently_used_key_costs_the_lookup_and_the_runs_query(
    people, api, django_assert_num_queries
):
    api.runs(people.bob.key)

    # One query finds the key (with its account), one reads the recent runs.
    with django_assert_num_queries(2):
        response = api.runs(people.bob.key)
    assert response.status_code == 200


def test_the_first_use_of_a_key_records_when_it_was_used(people, api):
    assert fresh_last_used_at(people.bob.api_key) is None
    before = timezone.now()

    api.runs(people.bob.key)

    last_used_at = fresh_last_used_at(people.bob.api_key)
    assert last_used_at is not None
    assert before <= last_used_at <= timezone.now()


def test_the_first_use_of_a_key_costs_one_extra_query_to_record_it(
    people, django_assert_num_queries
):
    with django_assert_num_queries(2):
        ApiKeyAuthentication().authenticate_key(people.bob.key)


def test_last_used_at_is_not_written_again_within_a_minute(people, api):
    api.runs(people.bob.key)
    first = fresh_last_used_at(people.bob.api_key)

    api.runs(people.bob.key)
    api.runs(people.bob.key)

    assert fresh_last_used_at(people.bob.api_key) == first


def test_last_used_at_is_written_again_once_a_minute_has_passed(
    people, api, django_assert_num_queries
):
    a_while_ago = timezone.now() - LAST_USED_RESOLUTION - timedelta(seconds=1)
    ApiKey.objects.filter(pk=people.bob.api_key.pk).update(last_used_at=a_while_ago)

    with django_assert_num_queries(2):  # the lookup, then the write
        ApiKeyAuthentication().authenticate_key(people.bob.key)

    assert fresh_last_used_at(people.bob.api_key) > a_while_ago + LAST_USED_RESOLUTION


# --- the keys ------------------------------------------------------------------------


def test_issued_keys_are_sbx_followed_by_43_url_safe_characters(people):
    keys = [people.bob.key] + [api_key_create(actor=Actor.command("tests"), account=people.bob.account)[1] for _ in range(20)]

    for key in keys:
        assert re.fullmatch(r"sbx_[A-Za-z0-9_-]{43}", key), key
        assert KEY_PATTERN.match(key)
    assert len(set(keys)) == len(keys)


def test_the_stored_hash_is_hmac_sha256_of_the_key_under_the_pepper(people, settings):
    expected = hmac.new(
        settings.API_KEY_PEPPER.encode(), people.bob.key.encode(), hashlib.sha256
    ).hexdigest()

    assert people.bob.api_key.key_hash == expected
    assert people.bob.api_key.key_hash != hashlib.sha256(people.bob.key.encode()).hexdigest()


def test_a_key_stops_working_when_the_pepper_changes(people, api, settings):
    assert api.runs(people.bob.key).status_code == 200

    settings.API_KEY_PEPPER = settings.API_KEY_PEPPER + "-rotated"

    assert_unauthorized(api.runs(people.bob.key))


def test_the_prefix_column_holds_only_the_first_12_characters_of_the_key(people):
    key = people.bob.key

    assert people.bob.api_key.prefix == key[:VISIBLE_PREFIX_LENGTH]
    assert len(people.bob.api_key.prefix) == 12  # "sbx_" and 8 of the 43 random characters


def _row_texts(table: str):
    """Every column of every row of a table, read with raw SQL and turned into text."""
    with connection.cursor() as cursor:
        cursor.execute(f"SELECT * FROM {connection.ops.quote_name(table)}")
        for row in cursor.fetchall():
            for value in row:
                if isinstance(value, (bytes, bytearray, memoryview)):
                    yield bytes(value).decode("latin-1")
                elif value is not None:
                    yield str(value)


def test_the_api_key_table_holds_no_raw_key(people, api):
    api.runs(people.bob.key)  # a used key has more columns filled in
    people_with_keys = (
        people.alice,
        people.carol,
        people.bob,
        people.dave,
        people.mallory,
        people.sam,
    )
    # The part after the visible prefix: finding it would mean the key is stored, whole or cut.
    secrets = [person.key[VISIBLE_PREFIX_LENGTH:] for person in people_with_keys]

    texts = list(_row_texts(ApiKey._meta.db_table))

    assert texts, "the table was read"
    for text in texts:
        for secret in secrets:
            assert secret not in text


def test_no_table_of_the_database_holds_a_raw_key(people, api):
    api.runs(people.bob.key)
    api.setup(people.bob.key)  # a setup run records the key that started it
    secret = people.bob.key[VISIBLE_PREFIX_LENGTH:]

    for table in connection.introspection.table_names():
        for text in _row_texts(table):
            assert secret not in text, f"the key is stored in {table}"


def test_authenticate_key_refuses_a_malformed_key_without_a_query(db, django_assert_num_queries):
    with django_assert_num_queries(0), pytest.raises(AuthenticationFailed):
        ApiKeyAuthentication().authenticate_key("sbx_short")
