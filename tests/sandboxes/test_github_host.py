"""GitHubHost against the GitHub emulator: PyGithub really talks HTTP to 127.0.0.1."""

import base64
import subprocess
import uuid

import pytest

from sandboxes.providers.base import GitHostError, Repository
from sandboxes.providers.github import GitHubConfig, GitHubHost
from tests.sandboxes.conftest import APP_ID, INSTALLATION_ID, github_settings_for, rsa_key_pair


def make_host(emulator, **overrides) -> GitHubHost:
    return GitHubHost(config=GitHubConfig(**github_settings_for(emulator, **overrides)))


@pytest.fixture
def host(github) -> GitHubHost:
    return make_host(github)


@pytest.fixture
def app_host(github, app_key) -> GitHubHost:
    private, public = app_key
    github.register_app(app_id=APP_ID, public_key_pem=public, installation_id=INSTALLATION_ID)
    return make_host(github, token="", app_id=APP_ID, app_private_key=private, app_installation_id=INSTALLATION_ID)


# --- ensure -------------------------------------------------------------------------


def test_ensure_creates_a_private_repository_described_with_the_account(github, host):
    ensured = host.ensure_repository(name="alice-1234", description="Sandbox of Alice (1234)")

    assert ensured.created is True
    assert ensured.repository == Repository(
        name="alice-1234",
        html_url=f"{github.url}/sandbox-org/alice-1234",
        clone_url=f"{github.url}/git/sandbox-org/alice-1234.git",
    )
    stored = github.repository("alice-1234")
    assert stored["private"] is True
    assert stored["description"] == "Sandbox of Alice (1234)"
    [create] = github.calls("create")
    assert create.headers["Authorization"] == f"token {github.token}"


def test_ensure_twice_reuses_the_repository_after_githubs_422(github, host):
    first = host.ensure_repository(name="alice-1234", description="Sandbox of Alice (1234)")
    second = host.ensure_repository(name="alice-1234", description="Sandbox of Alice (1234)")

    assert second.created is False
    assert second.repository == first.repository
    assert [call.route for call in github.requests] == ["create", "create", "get"]
    assert github.repository_names() == ["alice-1234"]


def test_ensure_when_github_says_exists_but_the_repository_is_missing_fails(github, host):
    github.fail(
        "create",
        422,
        body={
            "message": "Repository creation failed.",
            "errors": [{"resource": "Repository", "code": "custom", "field": "name",
                        "message": "name already exists on this account"}],
        },
    )
    with pytest.raises(GitHostError, match="did not create repository .*/sandbox-org/alice-1234; try again"):
        host.ensure_repository(name="alice-1234", description="x")


def test_ensure_with_another_422_reports_githubs_reason(github, host):
    with pytest.raises(GitHostError) as failure:
        host.ensure_repository(name="not valid!", description="x")
    assert "GitHub answered 422 when trying to create repository" in str(failure.value)
    assert "Repository creation failed. (name is invalid)" in str(failure.value)


# --- list ------------------------------------------------------------------------------


def test_list_follows_every_page_and_keeps_only_the_accounts_repositories(github, host):
    account_id = uuid.uuid4()
    for number in range(250):
        name = f"alice-{account_id}" if number in (7, 130, 249) else f"other-{number}-{uuid.uuid4()}"
        if number == 130:
            name = f"old-sandbox-{account_id}"
        if number == 249:
            name = f"{account_id}-copy-{account_id}"
        github.add_repository(name)

    names = [repository.name for repository in host.list_repositories(account_id=account_id)]

    assert sorted(names) == sorted([f"alice-{account_id}", f"old-sandbox-{account_id}",
                                    f"{account_id}-copy-{account_id}"])
    pages = [call.query.get("page", "1") for call in github.calls("list")]
    assert pages == ["1", "2", "3"]
    assert all(call.query["per_page"] == "100" for call in github.calls("list"))


def test_list_of_an_empty_organization_is_empty(github, host):
    assert host.list_repositories(account_id=uuid.uuid4()) == []
    assert len(github.calls("list")) == 1


# --- delete ----------------------------------------------------------------------------


def test_delete_removes_the_repository_and_a_second_delete_reports_it_gone(github, host):
    github.add_repository("alice-1234")

    assert host.delete_repository(name="alice-1234") is True
    assert github.repository("alice-1234") is None
    assert host.delete_repository(name="alice-1234") is False


def test_delete_refused_by_github_names_the_reason_and_the_repository(github, host):
    github.add_repository("alice-1234")
    github.fail("delete", 403, message="Must have admin rights to Repository.")

    with pytest.raises(GitHostError) as failure:
        host.delete_repository(name="alice-1234")

    assert str(failure.value) == (
        f"GitHub answered 403 when trying to delete repository {github.url}/sandbox-org/alice-1234: "
        "Must have admin rights to Repository."
    )
    assert github.repository("alice-1234") is not None
    assert len(github.calls("delete")) == 1  # a 403 that is no rate limit is not retried


# --- retries, rate limits, timeouts ------------------------------------------------------


def test_rate_limit_with_retry_after_is_waited_out_and_retried(github, host):
    github.rate_limit("create", retry_after=1)

    ensured = host.ensure_repository(name="alice-1234", description="x")

    assert ensured.created is True
    [limited, succeeded] = github.calls("create")
    assert succeeded.path == limited.path


def test_rate_limit_resetting_later_than_the_longest_wait_fails_at_once(github, host):
    github.rate_limit("create", retry_after=None, reset_in=600)

    with pytest.raises(GitHostError, match=r"GitHub rate limit while trying to create repository .*; retry after"):
        host.ensure_repository(name="alice-1234", description="x")
    assert len(github.calls("create")) == 1


def test_rate_limit_asking_for_a_longer_wait_than_allowed_fails_at_once(github, host):
    github.rate_limit("create", retry_after=30)

    with pytest.raises(GitHostError) as failure:
        host.ensure_repository(name="alice-1234", description="x")

    assert str(failure.value) == (
        f"GitHub rate limit while trying to create repository {github.url}/sandbox-org/alice-1234; retry after 30 s"
    )
    assert len(github.calls("create")) == 1


def test_rate_limit_outlasting_the_retries_fails_with_githubs_message(github, host):
    github.rate_limit("list", retry_after=0, times=None)

    with pytest.raises(GitHostError, match="GitHub answered 403 when trying to list .*: API rate limit exceeded"):
        host.list_repositories(account_id=uuid.uuid4())
    assert len(github.calls("list")) == 3


def test_server_errors_are_retried_until_github_answers(github, host):
    github.add_repository("alice-1234")
    github.fail("get", 502, times=2)

    ensured = host.ensure_repository(name="alice-1234", description="x")

    assert ensured.created is False
    assert len(github.calls("get")) == 3


def test_more_server_errors_than_retries_fail_with_githubs_answer(github, host):
    github.fail("list", 502, times=3)

    with pytest.raises(GitHostError, match="GitHub answered 502 when trying to list the repositories of sandbox-org"):
        host.list_repositories(account_id=uuid.uuid4())
    assert len(github.calls("list")) == 3  # the first try and two retries


def test_github_answering_later_than_the_timeout_fails_saying_so(github):
    host = make_host(github, timeout=1, retries=0)
    github.delay("list", 3)

    with pytest.raises(GitHostError) as failure:
        host.list_repositories(account_id=uuid.uuid4())
    assert str(failure.value) == "GitHub did not answer within 1 s when trying to list the repositories of sandbox-org"


def test_a_dropped_connection_fails_after_the_retries(github, host):
    github.drop("list", times=None)

    with pytest.raises(GitHostError, match="GitHub could not be reached when trying to list the repositories"):
        host.list_repositories(account_id=uuid.uuid4())
    assert len(github.calls("list")) == 3


def test_one_dropped_connection_is_retried(github, host):
    github.add_repository("alice-1234")
    github.drop("delete")

    assert host.delete_repository(name="alice-1234") is True


# --- credentials ---------------------------------------------------------------------------


def test_a_bad_token_fails_with_githubs_bad_credentials(github):
    host = make_host(github, token="ghp_not-a-valid-token")

    with pytest.raises(GitHostError, match="GitHub answered 401 .*: Bad credentials"):
        host.ensure_repository(name="alice-1234", description="x")
    assert github.repository_names() == []


def test_push_target_carries_the_token_in_gits_environment_only(github, host):
    repository = host.ensure_repository(name="alice-1234", description="x").repository

    target = host.push_target(repository=repository)

    assert target.url == repository.clone_url
    assert github.token not in target.url and github.token not in repr(target)
    basic = base64.b64encode(f"x-access-token:{github.token}".encode()).decode()
    assert target.env == {
        "GIT_CONFIG_COUNT": "1",
        "GIT_CONFIG_KEY_0": "http.extraHeader",
        "GIT_CONFIG_VALUE_0": f"Authorization: Basic {basic}",
    }


def git(*argv, cwd, env=None) -> subprocess.CompletedProcess:
    base = {"PATH": "/usr/local/bin:/usr/bin:/bin", "HOME": str(cwd), "GIT_TERMINAL_PROMPT": "0",
            "GIT_CONFIG_NOSYSTEM": "1", "GIT_CONFIG_GLOBAL": "/dev/null"}
    return subprocess.run(["git", *argv], cwd=cwd, env={**base, **(env or {})}, capture_output=True, text=True)


def test_git_pushes_with_the_push_target_and_is_refused_without_it(github, host, tmp_path):
    repository = host.ensure_repository(name="alice-1234", description="x").repository
    target = host.push_target(repository=repository)
    work = tmp_path / "work"
    work.mkdir()
    git("init", "-q", "-b", "main", cwd=work)
    git("-c", "user.name=T", "-c", "user.email=t@example.com", "commit", "-q", "--allow-empty", "-m", "x", cwd=work)

    refused = git("push", "-q", target.url, "HEAD:refs/heads/main", cwd=work)
    assert refused.returncode != 0
    assert git("push", "-q", target.url, "HEAD:refs/heads/main", cwd=work, env=target.env).returncode == 0

    pushed = git("rev-parse", "main", cwd=github.bare_path("alice-1234")).stdout
    assert pushed == git("rev-parse", "HEAD", cwd=work).stdout
    [unauthenticated, *_] = github.calls("push")
    assert "Authorization" not in unauthenticated.headers


def test_app_exchanges_its_jwt_for_an_installation_token_and_uses_it(github, app_host):
    app_host.ensure_repository(name="alice-1234", description="x")

    [exchange] = github.calls("token")
    assert exchange.method == "POST"
    assert exchange.path == f"/app/installations/{INSTALLATION_ID}/access_tokens"
    assert exchange.headers["Authorization"].startswith("Bearer ey")  # a JWT, never a token
    [installation_token] = github.issued_tokens()
    [create] = github.calls("create")
    assert create.headers["Authorization"] == f"token {installation_token}"

    target = app_host.push_target(repository=Repository(name="alice-1234", html_url="", clone_url=""))
    basic = base64.b64encode(f"x-access-token:{installation_token}".encode()).decode()
    assert target.env["GIT_CONFIG_VALUE_0"] == f"Authorization: Basic {basic}"
    assert len(github.calls("token")) == 1  # the token is reused until it nears its expiry


def test_app_with_a_key_github_does_not_know_fails(github, app_host):
    _, other = rsa_key_pair()
    github.register_app(app_id=APP_ID, public_key_pem=other, installation_id=INSTALLATION_ID)

    with pytest.raises(GitHostError, match="GitHub answered 401 .*JSON web token could not be decoded"):
        app_host.ensure_repository(name="alice-1234", description="x")
    assert github.repository_names() == []
