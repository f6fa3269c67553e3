"""The WEBHOOK_* settings as a started process reads them (config/settings.py, config/environment.py)."""

import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]


def settings_of(tmp_path, **variables: str) -> subprocess.CompletedProcess:
    env = {name: value for name, value in os.environ.items() if not name.startswith("WEBHOOK_")}
    env.update(DJANGO_SETTINGS_MODULE="config.settings", DEBUG="1", VAR_DIR=str(tmp_path / "var"),
               PYTHONWARNINGS="ignore", **variables)
    code = ("from django.conf import settings as s; print('VALUES', s.WEBHOOK_TIMEOUT, "
            "[int(d.total_seconds()) for d in s.WEBHOOK_RETRY_SCHEDULE], int(s.WEBHOOK_EXPIRY_WARNING.total_seconds()),"
            " int(s.WEBHOOK_DISABLE_AFTER.total_seconds()), s.WEBHOOK_ALLOW_HTTP, s.WEBHOOK_ALLOW_PRIVATE)")
    return subprocess.run([sys.executable, "manage.py", "shell", "-c", code], cwd=REPO, env=env,
                          capture_output=True, text=True, timeout=120)


def values(completed) -> str:
    assert completed.returncode == 0, completed.stderr
    return next(line for line in completed.stdout.splitlines() if line.startswith("VALUES"))


def test_the_defaults(tmp_path):
    assert values(settings_of(tmp_path)) == (
        "VALUES 10 [5, 300, 1800, 7200, 28800, 86400] 86400 259200 False False")


def test_each_setting_is_read(tmp_path):
    completed = settings_of(tmp_path, WEBHOOK_TIMEOUT="3", WEBHOOK_RETRY_SCHEDULE="1s, 10m 1h",
                            WEBHOOK_EXPIRY_WARNING="2h", WEBHOOK_DISABLE_AFTER="1w", WEBHOOK_ALLOW_HTTP="1",
                            WEBHOOK_ALLOW_PRIVATE="yes")
    assert values(completed) == "VALUES 3 [1, 600, 3600] 7200 604800 True True"


@pytest.mark.parametrize("name, value", [
    ("WEBHOOK_RETRY_SCHEDULE", "5s soon"), ("WEBHOOK_RETRY_SCHEDULE", "0"), ("WEBHOOK_TIMEOUT", "0"),
    ("WEBHOOK_EXPIRY_WARNING", "a day"), ("WEBHOOK_ALLOW_HTTP", "maybe"),
])
def test_a_value_that_cannot_be_used_stops_start_up_with_one_line(tmp_path, name, value):
    completed = settings_of(tmp_path, **{name: value})
    assert completed.returncode == 1
    assert completed.stderr.strip().splitlines()[-1].startswith(f"Configuration error: {name}")
