"""Fixtures of the sandbox tests: the GitHub REST emulator and settings that point the service at it."""

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from tests.github_emulator import GitHubEmulator

ORGANIZATION = "sandbox-org"
DEPLOYMENT = "sandboxes-test"  # SANDBOX_DEPLOYMENT_ID of the tests on GitHub
APP_ID = "31337"
INSTALLATION_ID = 4242


def rsa_key_pair() -> tuple[str, str]:
    """(private PEM, public PEM) of a new RSA key, as a GitHub App's."""
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    private = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.TraditionalOpenSSL, serialization.NoEncryption()
    ).decode()
    public = key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    ).decode()
    return private, public


@pytest.fixture(scope="session")
def app_key() -> tuple[str, str]:
    """The test GitHub App's key pair: the private PEM for the service, the public one for the emulator."""
    return rsa_key_pair()


@pytest.fixture
def github(tmp_path):
    """A GitHub emulator on 127.0.0.1, with real bare repositories under tmp_path."""
    emulator = GitHubEmulator(tmp_path / "github", organization=ORGANIZATION).start()
    yield emulator
    emulator.stop()


def github_settings_for(emulator: GitHubEmulator, **overrides) -> dict:
    """settings.GITHUB as config.environment.github_settings() builds it, with tiny waits for the tests."""
    return {
        "organization": emulator.organization,
        "api_url": emulator.url,
        "token": emulator.token,
        "app_id": "",
        "app_private_key": "",
        "app_installation_id": 0,
        "private": True,
        "timeout": 2,
        "retries": 2,
        "max_rate_limit_wait": 3,
        "seconds_between_writes": 0,
        **overrides,
    }


@pytest.fixture
def github_host(settings, github):
    """GIT_HOST=github, against the emulator, with a token.

    One retry: the second would wait a second (backoff), and the retries
    themselves are tested on GitHubHost directly.
    """
    settings.GIT_HOST = "github"
    settings.GITHUB = github_settings_for(github, retries=1)
    settings.SANDBOX_DEPLOYMENT_ID = DEPLOYMENT
    return github


@pytest.fixture
def github_app(settings, github, app_key):
    """GIT_HOST=github, authenticated as a GitHub App installation that the emulator knows."""
    private, public = app_key
    github.register_app(app_id=APP_ID, public_key_pem=public, installation_id=INSTALLATION_ID)
    settings.GIT_HOST = "github"
    settings.SANDBOX_DEPLOYMENT_ID = DEPLOYMENT
    settings.GITHUB = github_settings_for(
        github, token="", app_id=APP_ID, app_private_key=private, app_installation_id=INSTALLATION_ID, retries=1
    )
    return github
