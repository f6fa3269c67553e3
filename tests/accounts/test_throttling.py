"""Rate limits per API key (accounts/throttling.py).

- Over its scope's rate a key gets 429 JSON with Retry-After, and the
  throttled request does nothing (no run is queued, nothing is deleted).
- Setup and delete count apart; each key counts apart (a second key of the
  same account, or another account's key, still gets through); runs and ping
  are not limited.
- Rates come from settings (THROTTLE_SETUP_RATE, THROTTLE_DELETE_RATE);
  `off` lifts the limit; Retry-After is when the key's window closes, and
  then the key gets in again.
- The count lives in the shared cache: the database cache table (created by
  `migrate`) without REDIS_URL, Redis with it; a real Redis counts for every
  process alike, and requests of one key sent at the same moment are each
  counted. A Redis that does not answer refuses setups and deletes with a
  JSON 503 and Retry-After (and they do nothing).

Requests are counted in fixed windows (accounts/throttling.py), so a test
that expects its requests to share a window first waits, if the window is
about to close, for the next one (`start_of_a_window`).
"""

import json
import os
import socket
import subprocess
import sys
import threading
import time
import uuid
from pathlib import Path
from types import SimpleNamespace

import pytest
from django.core.cache import caches
from django.db import connection

from accounts.audit import Actor
from accounts.services import api_key_create
from accounts.throttling import ApiKeyRateThrottle, counter_name, counting_window
from sandboxes.models import SetupRun, Snapshot
from tests.processes import REDIS_URL
from tests.rate_limits import start_of_a_window

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture
def rates(settings, people):
    """Small rates for the test, starting in a window of the personas' keys; returns the settings."""
    settings.API_THROTTLE_RATES = {"setup": "3/min", "delete": "2/min"}
    start_of_a_window(settings, people.bob.api_key, people.alice.api_key)
    return settings


def assert_throttled(response):
    assert response.status_code == 429, response.content
    body = response.json()
    assert body["status"] == "error"
    assert body["error"].startswith("Request was throttled")
    retry_after = int(response.headers["Retry-After"])
    assert 1 <= retry_after <= 60
    return retry_after


def test_setup_over_its_rate_is_429_json_with_retry_after(people, api, rates):
    answers = [api.setup(people.bob.key).status_code for _ in range(3)]

    assert answers == [200, 200, 200]
    assert_throttled(api.setup(people.bob.key))


def test_a_throttled_setup_queues_nothing(people, api, rates):
    for _ in range(3):
        api.setup(people.bob.key)
    SetupRun.objects.all().delete()

    assert_throttled(api.setup(people.bob.key))

    assert not SetupRun.objects.exists()


def test_delete_over_its_rate_is_429_and_deletes_nothing(people, api, rates):
    for _ in range(2):
        assert api.delete(people.bob.key).status_code == 200
    Snapshot.objects.create(account=people.bob.account, snapshot_id="snap_kept", expires_at="2099-01-01T00:00Z")

    assert_throttled(api.delete(people.bob.key))

    assert Snapshot.objects.filter(snapshot_id="snap_kept").exists()


def test_setup_and_delete_count_apart(people, api, rates):
    for _ in range(3):
        api.setup(people.bob.key)
    assert_throttled(api.setup(people.bob.key))

    assert api.delete(people.bob.key).status_code == 200


def test_each_key_counts_apart_even_for_the_same_account(people, api, rates):
    second, second_key = api_key_create(actor=Actor.command("tests"), account=people.bob.account, name="second")
    start_of_a_window(rates, second)
    for _ in range(3):
        api.setup(people.bob.key)
    assert_throttled(api.setup(people.bob.key))

    assert api.setup(second_key).status_code == 200
    assert api.setup(people.alice.key).status_code == 200


def test_runs_and_ping_are_not_limited(people, api, rates):
    for _ in range(3):
        api.setup(people.bob.key)
    assert_throttled(api.setup(people.bob.key))

    assert all(api.runs(people.bob.key).status_code == 200 for _ in range(10))
    assert all(api.call("get", "/api/ping", key=people.bob.key).status_code == 200 for _ in range(10))


def test_an_unauthenticated_request_is_401_not_429(people, api, rates):
    for _ in range(5):
        assert api.setup("sbx_" + "A" * 43).status_code == 401


def test_a_rate_of_off_lifts_the_limit(people, api, settings):
    settings.API_THROTTLE_RATES = {"setup": None, "delete": None}

    assert {api.setup(people.bob.key).status_code for _ in range(40)} == {200}


def test_retry_after_is_when_the_window_closes_and_then_the_key_gets_in_again(people, api, settings):
    settings.API_THROTTLE_RATES = {"setup": "2/s", "delete": "2/s"}
    start_of_a_window(settings, people.bob.api_key)
    window = counting_window(counter_name("setup", people.bob.api_key.pk), 1, time.time())
    api.setup(people.bob.key)
    api.setup(people.bob.key)
    assert assert_throttled(api.setup(people.bob.key)) == 1

    time.sleep(max(0.0, window.closes_at - time.time()) + 0.01)

    assert api.setup(people.bob.key).status_code == 200


def test_retry_after_counts_the_seconds_left_in_the_window(people, api, rates):
    for _ in range(3):
        api.setup(people.bob.key)
    window = counting_window(counter_name("setup", people.bob.api_key.pk), 60, time.time())

    retry_after = assert_throttled(api.setup(people.bob.key))

    assert abs(retry_after - (window.closes_at - time.time())) <= 1


def test_each_key_has_its_own_place_of_the_window_in_the_period():
    closing = {counting_window(counter_name("setup", pk), 60, 1_000_000.0).closes_at % 60 for pk in range(1, 50)}

    assert len(closing) > 20  # refused keys do not all come back in the same second


def test_the_schema_documents_the_429_answers(api):
    schema = api.client.get("/api/schema/?format=json").json()

    assert "429" in schema["paths"]["/api/sandboxes/setup"]["post"]["responses"]
    assert "429" in schema["paths"]["/api/sandboxes"]["delete"]["responses"]


# --- where the count lives --------------------------------------------------------


def test_without_redis_the_count_lives_in_the_database_cache_table_that_migrate_created(people, api, rates):
    assert caches["default"].__class__.__name__ == "DatabaseCache"
    assert "sandbox_cache" in connection.introspection.table_names()

    api.setup(people.bob.key)

    with connection.cursor() as cursor:
        cursor.execute("SELECT cache_key FROM sandbox_cache")
        keys = [row[0] for row in cursor.fetchall()]
    assert any(f"throttle_setup_key_{people.bob.api_key.pk}" in key for key in keys), keys


def _redis_answers() -> bool:
    import redis

    try:
        return redis.Redis.from_url(REDIS_URL, socket_connect_timeout=1).ping()
    except redis.RedisError:
        return False


@pytest.mark.skipif(not _redis_answers(), reason="needs Redis on 127.0.0.1:6379")
def test_with_redis_the_count_is_shared_through_redis(people, api, rates):
    prefix = f"test-throttle-{uuid.uuid4().hex[:8]}"
    rates.CACHES = {"default": {"BACKEND": "django_redis.cache.RedisCache", "LOCATION": REDIS_URL,
                                "KEY_PREFIX": prefix}}
    import redis

    client = redis.Redis.from_url(REDIS_URL)
    try:
        for _ in range(3):
            assert api.setup(people.bob.key).status_code == 200
        assert_throttled(api.setup(people.bob.key))
        # Another process sees the same count: it is in Redis under the service's prefix.
        [counter] = client.scan_iter(match=f"{prefix}:*throttle_setup_key_{people.bob.api_key.pk}:*")
        assert int(client.get(counter)) == 4
        assert 0 < client.ttl(counter) <= 61  # it goes when its window has closed
    finally:
        _remove_keys(client, prefix)


def _remove_keys(client, prefix):
    keys = list(client.scan_iter(match=f"{prefix}:*"))
    if keys:
        client.delete(*keys)
    client.close()


@pytest.mark.skipif(not _redis_answers(), reason="needs Redis on 127.0.0.1:6379")
def test_with_redis_requests_of_one_key_at_the_same_moment_are_each_counted(people, settings):
    # DRF's own throttle reads and writes back the key's history, and requests
    # that read it at the same moment overwrite each other's entry. Here 40
    # threads ask at once with a rate of 25: exactly 25 get through.
    prefix = f"test-throttle-{uuid.uuid4().hex[:8]}"
    settings.CACHES = {"default": {"BACKEND": "django_redis.cache.RedisCache", "LOCATION": REDIS_URL,
                                   "KEY_PREFIX": prefix}}
    settings.API_THROTTLE_RATES = {"setup": "25/min", "delete": None}
    start_of_a_window(settings, people.bob.api_key)
    request, view = SimpleNamespace(auth=people.bob.api_key), SimpleNamespace(throttle_scope="setup")
    start, answers = threading.Barrier(40), []

    def ask():
        throttle = ApiKeyRateThrottle()
        start.wait()
        answers.append(throttle.allow_request(request, view))

    threads = [threading.Thread(target=ask) for _ in range(40)]
    try:
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
    finally:
        import redis

        _remove_keys(redis.Redis.from_url(REDIS_URL), prefix)

    assert answers.count(True) == 25
    assert answers.count(False) == 15


def _a_port_nobody_listens_on() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def test_when_redis_does_not_answer_setup_and_delete_are_503_json_and_do_nothing(people, api, settings):
    settings.CACHES = {"default": {"BACKEND": "django_redis.cache.RedisCache",
                                   "LOCATION": f"redis://127.0.0.1:{_a_port_nobody_listens_on()}/0",
                                   "OPTIONS": {"SOCKET_CONNECT_TIMEOUT": 1, "SOCKET_TIMEOUT": 1}}}
    Snapshot.objects.create(account=people.bob.account, snapshot_id="snap_kept", expires_at="2099-01-01T00:00Z")

    for response in (api.setup(people.bob.key), api.delete(people.bob.key)):
        assert response.status_code == 503, response.content
        assert response.json() == {"status": "error",
                                   "error": "The rate limits' store is not answering; try again shortly"}
        assert response.headers["Retry-After"] == "5"

    assert not SetupRun.objects.exists()
    assert Snapshot.objects.filter(snapshot_id="snap_kept").exists()
    assert api.call("get", "/api/ping", key=people.bob.key).status_code == 200  # not rate-limited


# --- settings from the environment ------------------------------------------------


def read_settings(**variables) -> subprocess.CompletedProcess:
    env = {name: value for name, value in os.environ.items()
           if not name.startswith("THROTTLE_") and name not in ("REDIS_URL", "DATABASE_URL")}
    env.update(DJANGO_SETTINGS_MODULE="config.settings_test", PYTHONWARNINGS="ignore", **variables)
    code = ("import json; from django.conf import settings; "
            "print('SETTINGS=' + json.dumps([settings.API_THROTTLE_RATES, settings.CACHES['default']]))")
    return subprocess.run([sys.executable, "manage.py", "shell", "-c", code], cwd=REPO, env=env,
                          check=False, capture_output=True, text=True, timeout=60)


def settings_of(**variables):
    completed = read_settings(**variables)
    assert completed.returncode == 0, completed.stderr
    [line] = [line for line in completed.stdout.splitlines() if line.startswith("SETTINGS=")]
    return json.loads(line.removeprefix("SETTINGS="))


def test_default_rates_are_30_a_minute_for_setup_delete_and_renew_and_600_for_a_live_sandboxs_work(tmp_path):
    rates, _cache = settings_of(VAR_DIR=str(tmp_path))
    assert rates == {"setup": "30/min", "delete": "30/min", "renew": "30/min", "exec": "600/min"}


def test_rates_come_from_the_environment(tmp_path):
    rates, _cache = settings_of(VAR_DIR=str(tmp_path), THROTTLE_SETUP_RATE="5/s", THROTTLE_DELETE_RATE="off",
                                THROTTLE_RENEW_RATE="7/hour", THROTTLE_EXEC_RATE="2/s")
    assert rates == {"setup": "5/s", "delete": None, "renew": "7/hour", "exec": "2/s"}


@pytest.mark.parametrize("value", ["fast", "10", "0/min", "10/fortnight"])
def test_a_rate_that_cannot_be_read_stops_start_up_with_one_line(tmp_path, value):
    completed = read_settings(VAR_DIR=str(tmp_path), THROTTLE_SETUP_RATE=value)

    assert completed.returncode == 1
    assert completed.stderr.strip().startswith("Configuration error: THROTTLE_SETUP_RATE must be a rate")
    assert "Traceback" not in completed.stderr


def test_the_cache_is_redis_when_redis_url_is_set_and_the_database_otherwise(tmp_path):
    _rates, cache = settings_of(VAR_DIR=str(tmp_path), REDIS_URL=REDIS_URL, QUEUE_NAME="svc")
    assert (cache["BACKEND"], cache["LOCATION"], cache["KEY_PREFIX"]) == (
        "django_redis.cache.RedisCache", REDIS_URL, "svc")
    assert cache["OPTIONS"] == {"SOCKET_CONNECT_TIMEOUT": 2, "SOCKET_TIMEOUT": 2}  # a silent Redis costs seconds

    _rates, cache = settings_of(VAR_DIR=str(tmp_path))
    assert (cache["BACKEND"], cache["LOCATION"]) == ("django.core.cache.backends.db.DatabaseCache", "sandbox_cache")
