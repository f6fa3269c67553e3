"""Production settings: `manage.py check --deploy` and HTTPS.

- `check --deploy --fail-level WARNING` exits 0 in the production
  environment that docs/security.md documents: the test runs the page's own
  block (marked `production-environment`) in bash, so the two cannot drift apart;
  without the HTTPS defaults it fails, naming what is missing.
- With DEBUG off, plain HTTP is redirected to HTTPS, except /healthz (a load
  balancer's checks speak plain HTTP); a request the proxy marks as HTTPS is
  served, with HSTS.
"""

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from tests.doc_blocks import marked_block

REPO = Path(__file__).resolve().parents[1]


def production_block() -> str:
    return marked_block("production-environment").text


def variables_of(block: str) -> list[str]:
    return re.findall(r"^export (\w+)=", block, re.MULTILINE)


def run_in_production_environment(*args: str, extra: str = "") -> subprocess.CompletedProcess:
    block = production_block()
    env = {name: value for name, value in os.environ.items()
           if name not in variables_of(block) and not name.startswith(("SECURE_", "THROTTLE_"))}
    env.update(DJANGO_SETTINGS_MODULE="config.settings", PYTHONWARNINGS="ignore")
    script = f"set -e\n{block}\n{extra}\nexec {sys.executable} manage.py {' '.join(args)}\n"
    return subprocess.run(["bash", "-c", script], cwd=REPO, env=env, check=False, capture_output=True, text=True,
                          timeout=120)


def test_the_documented_production_environment_sets_debug_off_and_every_secret():
    names = variables_of(production_block())
    assert {"DEBUG", "SECRET_KEY", "API_KEY_PEPPER", "ALLOWED_HOSTS", "DATABASE_URL", "REDIS_URL",
            "SECURE_PROXY_SSL_HEADER"} <= set(names)
    assert "export DEBUG=0" in production_block()


def test_check_deploy_passes_in_the_documented_production_environment(tmp_path):
    completed = run_in_production_environment("check", "--deploy", "--fail-level", "WARNING",
                                               extra=f"export VAR_DIR={tmp_path}")

    assert completed.returncode == 0, completed.stdout + completed.stderr
    assert "no issues" in completed.stdout


def test_check_deploy_fails_when_https_is_turned_off(tmp_path):
    completed = run_in_production_environment(
        "check", "--deploy", "--fail-level", "WARNING",
        extra=f"export VAR_DIR={tmp_path} SECURE_SSL_REDIRECT=0 SECURE_HSTS_SECONDS=0 SECURE_COOKIES=0",
    )

    assert completed.returncode != 0
    for warning in ("security.W004", "security.W008", "security.W012", "security.W016"):
        assert warning in completed.stderr, completed.stderr


@pytest.mark.parametrize("value", ["X-Forwarded-Proto", "X Forwarded: https", ": https"])
def test_a_proxy_ssl_header_that_cannot_be_read_stops_start_up(tmp_path, value):
    completed = run_in_production_environment(
        "check", extra=f"export VAR_DIR={tmp_path} SECURE_PROXY_SSL_HEADER='{value}'"
    )

    assert completed.returncode == 1
    assert completed.stderr.strip().startswith("Configuration error: SECURE_PROXY_SSL_HEADER")


# --- HTTPS in a running service ----------------------------------------------------


@pytest.fixture
def https_only(settings):
    """The production HTTPS settings (the test settings leave the redirect off for the test client)."""
    settings.SECURE_SSL_REDIRECT = True
    settings.SECURE_PROXY_SSL_HEADER = ("HTTP_X_FORWARDED_PROTO", "https")
    settings.SECURE_HSTS_SECONDS = 31536000
    return settings


def test_healthz_answers_over_plain_http_for_the_load_balancer(db, https_only, client):
    assert https_only.SECURE_REDIRECT_EXEMPT == [r"^healthz$"]

    response = client.get("/healthz")

    assert response.status_code == 200
    assert response.json()["status"] == "ok"


def test_the_api_over_plain_http_is_redirected_to_https(db, https_only, client):
    response = client.get("/api/ping")

    assert response.status_code == 301
    assert response["Location"] == "https://testserver/api/ping"


def test_a_request_the_proxy_marks_as_https_is_served_with_hsts(people, https_only, client):
    response = client.get("/api/ping", headers={"x-api-key": people.bob.key, "x-forwarded-proto": "https"})

    assert response.status_code == 200
    assert response["Strict-Transport-Security"] == "max-age=31536000; includeSubDomains; preload"
