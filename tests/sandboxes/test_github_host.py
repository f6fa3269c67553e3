"""GitHubHost against the GitHub emulator: PyGithub really talks HTTP to 127.0.0.1."""

import base64
import subprocess
import threading
import time
import uuid

import pytest

from sandboxes.providers.base import GitHostError, NotOurRepository, Repository
from sandboxes.providers.github import GitHubConfig, GitHubHost
from tests.sandboxes.conftest import (
    APP_ID,
    DEPLOYMENT,
    INSTALLATION_ID,
    github_settings_for,
    rsa_key_pair,
)

MARK = f"sandbox-deployment-{DEPLOYMENT}"


def make_host(emulator, *, deployment_id=DEPLOYMENT, **overrides) -> GitHubHost:
    return GitHubHost(config=GitHubConfig(**github_settings_for(emulator, **overrides), deployment_id=deployment_id))


def ours(github, name: str, **fields) -> Repository:
    """A repository as the host hands it back, carrying this deployment's mark."""
    stored = github.repository(name)
    return Repository(name=name, html_url=stored["html_url"], clone_url=stored["clone_url"], id=stored["id"],
                      deployment=DEPLOYMENT, owned=True, **fields)


@pytest.fixture
def host(github) -> GitHubHost:
    return make_host(github)


@pytest.fixture
def app_host(github, app_key) -> GitHubHost:
    private, public = app_key
    github.register_app(app_id=APP_ID, public_key_pem=public, installation_id=INSTALLATION_ID)
    return make_host(github, token="", app_id=APP_ID, app_private_key=private, app_installation_id=INSTALLATION_ID)


# --- ensure -------------------------------------------------------------------------


def test_ensure_creates_a_private_repository_marked_as_this_deployments(github, host):
    ensured = host.ensure_repository(name="alice-1234", description="Sandbox of Alice (1234)", run_id="run_abc1")

    assert ensured.created is True
    stored = github.repository("alice-1234")
    assert ensured.repository == Repository(
        name="alice-1234",
        html_url=f"{github.url}/sandbox-org/alice-1234",
        clone_url=f"{github.url}/git/sandbox-org/alice-1234.git",
        id=stored["id"],
        default_branch="main",
        deployment=DEPLOYMENT,
        created_by_run="run_abc1",
        owned=True,
    )
    assert stored["private"] is True
    # The mark travels in the create call itself, then as the topic.
    assert stored["description"] == f"Sandbox of Alice (1234) [{MARK} run_abc1]"
    assert stored["topics"] == [MARK]
    assert [call.route for call in github.requests] == ["create", "topics"]
    [create] = github.calls("create")
    assert create.headers["Authorization"] == f"token {github.token}"


def test_ensure_twice_reuses_the_repository_after_githubs_422(github, host):
    first = host.ensure_repository(name="alice-1234", description="Sandbox of Alice (1234)", run_id="run_abc1")
    second = host.ensure_repository(name="alice-1234", description="Sandbox of Alice (1234)", run_id="run_abc2")

    assert second.created is False  # another run made it
    assert second.repository == first.repository
    assert [call.route for call in github.requests] == ["create", "topics", "create", "get"]
    assert github.repository_names() == ["alice-1234"]


def test_a_create_whose_answer_was_lost_counts_as_created_by_this_run(github, host):
    # GitHub made the repository, the 502 lost the answer, the retry met 422 "name already exists".
    github.fail("create", 502, after=True)

    ensured = host.ensure_repository(name="alice-1234", description="Sandbox of Alice", run_id="run_abc1")

    assert ensured.created is True
    assert ensured.repository.owned
    assert [call.route for call in github.requests] == ["create", "create", "get", "topics"]
    assert github.repository("alice-1234")["topics"] == [MARK]


def test_a_lost_create_of_another_run_is_reused_not_counted_as_created(github, host):
    host.ensure_repository(name="alice-1234", description="Sandbox of Alice", run_id="run_abc1")

    assert host.ensure_repository(name="alice-1234", description="x", run_id="run_abc2").created is False


def test_a_failed_topic_write_leaves_the_repository_marked_by_its_description(github, host):
    github.fail("topics", 500, times=None)

    ensured = host.ensure_repository(name="alice-1234", description="Sandbox of Alice", run_id="run_abc1")

    assert ensured.created is True and ensured.repository.owned
    assert github.repository("alice-1234")["topics"] == []
    [listed] = host.list_all_repositories()
    assert listed.owned is True
    github.clear_faults()
    host.ensure_repository(name="alice-1234", description="Sandbox of Alice", run_id="run_abc2")
    assert github.repository("alice-1234")["topics"] == [MARK]  # the next setup writes it


def test_ensure_refuses_a_repository_marked_by_another_deployment(github, host):
    github.add_repository("alice-1234", topics=["sandbox-deployment-staging"])

    with pytest.raises(NotOurRepository, match="carries the mark of deployment 'staging'"):
        host.ensure_repository(name="alice-1234", description="x", run_id="run_abc1")
    assert github.calls("topics") == []


def test_ensure_reuses_an_unmarked_repository_without_marking_it(github, host):
    github.add_repository("alice-1234", description="made before the mark existed")

    ensured = host.ensure_repository(name="alice-1234", description="x", run_id="run_abc1")

    assert ensured.created is False and ensured.repository.owned is False
    assert github.repository("alice-1234")["topics"] == []


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


def test_list_tells_this_deployments_repositories_from_the_others(github, host):
    github.add_repository("by-topic", topics=["python", MARK])
    github.add_repository("by-description", description=f"Sandbox of A [{MARK} run_ab12]")
    github.add_repository("by-topic-only-added-by-hand", topics=[MARK])
    github.add_repository("staging", description="x [sandbox-deployment-staging run_ab12]",
                          topics=["sandbox-deployment-staging"])
    github.add_repository("unmarked", description="Sandbox of B")

    listed = {repository.name: repository for repository in host.list_all_repositories()}

    assert {name for name, repository in listed.items() if repository.owned} == {
        "by-topic", "by-description", "by-topic-only-added-by-hand"}
    assert listed["by-description"].created_by_run == "run_ab12"
    assert listed["staging"].deployment == "staging" and listed["staging"].created_by_run == ""
    assert listed["unmarked"].deployment == ""
    assert len(github.calls("list")) == 1  # the marks come with the listing: no call per repository


def test_list_of_an_empty_organization_is_empty(github, host):
    assert host.list_repositories(account_id=uuid.uuid4()) == []
    assert len(github.calls("list")) == 1


# --- delete ----------------------------------------------------------------------------


def test_delete_removes_the_repository_and_a_second_delete_reports_it_gone(github, host):
    github.add_repository("alice-1234", topics=[MARK])

    assert host.delete_repository(repository=ours(github, "alice-1234")) is True
    assert github.repository("alice-1234") is None
    assert host.delete_repository(repository=Repository(name="alice-1234", html_url="", owned=True)) is False


def test_delete_never_touches_a_repository_without_this_deployments_mark(github, host):
    github.add_repository("alice-1234", topics=["sandbox-deployment-staging"])
    [listed] = host.list_all_repositories()

    with pytest.raises(NotOurRepository, match="carries the mark of deployment 'staging', not this one's"):
        host.delete_repository(repository=listed)

    assert github.repository("alice-1234") is not None
    assert github.calls("delete") == []


def test_delete_of_a_renamed_repository_deletes_it_by_its_id(github, host):
    github.add_repository("alice-1234", topics=[MARK])
    [listed] = host.list_all_repositories()
    github.rename("alice-1234", "alice-renamed")  # after the listing: GitHub answers the old name 307

    assert host.delete_repository(repository=listed) is True

    assert github.repository_names() == []
    routes = [(call.method, call.route) for call in github.requests if call.route != "list"]
    assert routes == [("DELETE", "delete"), ("GET", "get_by_id"), ("DELETE", "delete_by_id")]
    [redirected] = github.calls("delete")
    assert redirected.path == "/repos/sandbox-org/alice-1234"


def test_delete_of_a_renamed_repository_without_a_recorded_id_follows_the_redirects_id(github, host):
    github.add_repository("alice-1234", topics=[MARK])
    github.rename("alice-1234", "alice-renamed")

    assert host.delete_repository(repository=Repository(name="alice-1234", html_url="", owned=True)) is True
    assert github.repository_names() == []


def test_a_renamed_repository_that_lost_the_mark_is_not_deleted(github, host):
    github.add_repository("alice-1234", topics=[MARK])
    [listed] = host.list_all_repositories()
    github.rename("alice-1234", "their-project")
    github.set_topics("their-project", [])

    with pytest.raises(NotOurRepository, match="now .*/sandbox-org/their-project, carries no deployment's mark"):
        host.delete_repository(repository=listed)
    assert github.repository_names() == ["their-project"]


def test_a_redirect_that_persists_is_a_failure_never_a_deletion(github, host):
    github.add_repository("alice-1234", topics=[MARK])
    [listed] = host.list_all_repositories()
    github.rename("alice-1234", "alice-renamed")
    github.fail("delete_by_id", 307, headers={"Location": f"{github.url}/repositories/{listed.id}"})

    with pytest.raises(GitHostError, match="answered 307 .*it was not deleted"):
        host.delete_repository(repository=listed)
    assert github.repository_names() == ["alice-renamed"]


def test_delete_refused_by_github_names_the_reason_and_the_repository(github, host):
    github.add_repository("alice-1234", topics=[MARK])
    github.fail("delete", 403, message="Must have admin rights to Repository.")

    with pytest.raises(GitHostError) as failure:
        host.delete_repository(repository=ours(github, "alice-1234"))

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


def test_a_429_primary_rate_limit_is_waited_out_until_its_reset(github, host):
    github.rate_limit("create", status=429, retry_after=None, reset_in=1)
    started = time.monotonic()

    ensured = host.ensure_repository(name="alice-1234", description="x")

    assert ensured.created is True
    [limited, succeeded] = github.calls("create")
    assert succeeded.at - limited.at >= 1  # waited for x-ratelimit-reset, not retried at once
    assert time.monotonic() - started < 3 + 1  # within GITHUB_MAX_RATE_LIMIT_WAIT


def test_a_429_resetting_later_than_the_longest_wait_fails_at_once(github, host):
    github.rate_limit("list", status=429, retry_after=None, reset_in=600)

    with pytest.raises(GitHostError, match=r"GitHub rate limit while trying to list .*; retry after 60\d s"):
        host.list_all_repositories()
    assert len(github.calls("list")) == 1


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
    github.add_repository("alice-1234", topics=[MARK])
    github.drop("delete")

    assert host.delete_repository(repository=ours(github, "alice-1234")) is True


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


# --- pacing of writes -----------------------------------------------------------------------


def write_gaps(github) -> list[float]:
    """Seconds between writes, as the emulator received them."""
    writes = sorted(call.at for call in github.requests if call.method in ("POST", "PATCH", "PUT", "DELETE"))
    return [later - earlier for earlier, later in zip(writes, writes[1:])]


def test_writes_of_every_threads_client_pass_one_gate_and_reads_do_not_wait(github):
    interval = 0.1
    hosts = [make_host(github, seconds_between_writes=interval) for _ in range(4)]  # one client per thread

    def create_three(host_number: int):
        for number in range(3):
            hosts[host_number].ensure_repository(name=f"repo-{host_number}-{number}", description="x")

    threads = [threading.Thread(target=create_three, args=(number,)) for number in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()

    assert len(github.repository_names()) == 12
    gaps = write_gaps(github)
    assert len(gaps) == 23  # a create and a topic write each
    assert min(gaps) >= interval

    reads_started = time.monotonic()
    for host in hosts:
        host.list_all_repositories()
    assert time.monotonic() - reads_started < interval * 4  # reads are not paced


def test_a_retried_write_waits_the_pause_between_writes_too(github):
    host = make_host(github, seconds_between_writes=0.3)
    github.add_repository("alice-1234", topics=[MARK])
    github.fail("delete", 502)

    assert host.delete_repository(repository=ours(github, "alice-1234")) is True

    [failed, retried] = github.calls("delete")
    assert retried.at - failed.at >= 0.3  # urllib3 alone would retry at once
