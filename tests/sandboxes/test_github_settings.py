"""GIT_HOST=github settings: `manage.py check` stops with one readable line, or passes.

Each case runs the real start-up in a subprocess, from the test's environment
without any GITHUB_* or GIT_HOST variable. The subprocesses are started
together, once per module, because each takes a second to import Django.
"""

import os
import subprocess
import sys
from pathlib import Path

import pytest
from django.conf import settings

from tests.sandboxes.conftest import rsa_key_pair

PRIVATE_KEY, _ = rsa_key_pair()
APP = {"GITHUB_APP_ID": "31337", "GITHUB_APP_PRIVATE_KEY": PRIVATE_KEY, "GITHUB_APP_INSTALLATION_ID": "4242"}
DEPLOYMENT = {"SANDBOX_DEPLOYMENT_ID": "prod-eu"}

FAILING = {
    "missing organization": (
        {"GITHUB_TOKEN": "ghp_x"},
        "GIT_HOST=github needs GITHUB_ORG, the organization that holds the sandbox repositories",
    ),
    "neither token nor app": (
        {"GITHUB_ORG": "sandbox-org"},
        "GIT_HOST=github needs GITHUB_TOKEN, or a GitHub App: GITHUB_APP_ID, GITHUB_APP_PRIVATE_KEY"
        " (or GITHUB_APP_PRIVATE_KEY_PATH) and GITHUB_APP_INSTALLATION_ID",
    ),
    "token and app": (
        {"GITHUB_ORG": "sandbox-org", "GITHUB_TOKEN": "ghp_x", **APP},
        "set either GITHUB_TOKEN or the GITHUB_APP_* settings, not both",
    ),
    "app incomplete": (
        {"GITHUB_ORG": "sandbox-org", "GITHUB_APP_ID": "31337", "GITHUB_APP_PRIVATE_KEY": PRIVATE_KEY},
        "the GitHub App settings are incomplete: set GITHUB_APP_INSTALLATION_ID",
    ),
    "key path unreadable": (
        {"GITHUB_ORG": "sandbox-org", "GITHUB_APP_ID": "31337", "GITHUB_APP_INSTALLATION_ID": "4242",
         "GITHUB_APP_PRIVATE_KEY_PATH": "/nonexistent/app-key.pem"},
        "GITHUB_APP_PRIVATE_KEY_PATH cannot be read: No such file or directory",
    ),
    "no deployment id": (
        {"GITHUB_ORG": "sandbox-org", "GITHUB_TOKEN": "ghp_x"},
        "GIT_HOST=github needs SANDBOX_DEPLOYMENT_ID, a name for this deployment that no other deployment using "
        "the organization or bucket has (e.g. prod-eu); it marks every repository and snapshot the service "
        "creates as its own",
    ),
    "deployment id that cannot be a topic": (
        {"GITHUB_ORG": "sandbox-org", "GITHUB_TOKEN": "ghp_x", "SANDBOX_DEPLOYMENT_ID": "Prod_EU"},
        "SANDBOX_DEPLOYMENT_ID must be lowercase letters, digits and hyphens, starting with a letter or digit, "
        "at most 31 characters, not 'Prod_EU'",
    ),
}
PASSING = {
    "token": {"GITHUB_ORG": "sandbox-org", "GITHUB_TOKEN": "ghp_x", **DEPLOYMENT},
    "app": {"GITHUB_ORG": "sandbox-org", **APP, **DEPLOYMENT},
}


def base_environment() -> dict[str, str]:
    environment = {
        name: value for name, value in os.environ.items()
        if not name.startswith("GITHUB_") and name not in ("GIT_HOST", "SANDBOX_DEPLOYMENT_ID")
    }
    return {**environment, "DEBUG": "1", "GIT_HOST": "github"}


@pytest.fixture(scope="module")
def checks() -> dict[str, subprocess.CompletedProcess]:
    """`manage.py check` under every case's environment, run side by side."""
    cases = {name: variables for name, (variables, _) in FAILING.items()} | PASSING
    started = {
        name: subprocess.Popen(
            [sys.executable, "manage.py", "check"],
            cwd=Path(settings.BASE_DIR),
            env={**base_environment(), **variables},
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for name, variables in cases.items()
    }
    finished = {}
    for name, process in started.items():
        stdout, stderr = process.communicate(timeout=60)
        finished[name] = subprocess.CompletedProcess(process.args, process.returncode, stdout, stderr)
    return finished


@pytest.mark.parametrize("case", FAILING)
def test_a_github_configuration_that_cannot_work_stops_start_up_with_one_line(checks, case):
    result = checks[case]

    assert result.returncode != 0
    lines = [line for line in result.stderr.splitlines() if not line.startswith("WARNING: ")]
    assert lines == [f"Configuration error: {FAILING[case][1]}"]
    assert "Traceback" not in result.stderr


@pytest.mark.parametrize("case", PASSING)
def test_a_complete_github_configuration_passes_the_checks(checks, case):
    result = checks[case]

    assert result.returncode == 0, result.stderr
    assert "System check identified no issues" in result.stdout


def test_the_local_git_hosts_deployment_id_is_local_unless_set():
    """The embedded default marks its bare repositories `local`: the same on every run of one checkout."""
    program = "from django.conf import settings; print(settings.SANDBOX_DEPLOYMENT_ID)"
    environment = {name: value for name, value in base_environment().items() if name != "GIT_HOST"}
    outputs = [
        subprocess.run([sys.executable, "manage.py", "shell", "-c", program], cwd=Path(settings.BASE_DIR),
                       env={**environment, **variables}, capture_output=True, text=True, timeout=60).stdout.split()[-1]
        for variables in ({}, {"SANDBOX_DEPLOYMENT_ID": "laptop-ann"})
    ]
    assert outputs == ["local", "laptop-ann"]
