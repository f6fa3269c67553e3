"""The GitHub git host, through PyGithub only.

Sandbox repositories live in one organization (GITHUB_ORG) on github.com or a
GitHub Enterprise server (GITHUB_API_URL). Authentication is a token
(GITHUB_TOKEN) or a GitHub App installation (GITHUB_APP_*), both through
PyGithub's auth classes. Every call has a timeout; rate limits (Retry-After,
X-RateLimit-Reset) and transient 5xx answers are retried a bounded number of
times by PyGithub's GithubRetry; what still fails becomes a GitHostError
whose message a person can act on. This is the only module that imports
`github`, and it hands back our own dataclasses, never PyGithub's lazy objects.

What GitHub asks of an integration, and how this module answers it:

- Ownership. Every repository it creates carries this deployment's mark
  (SANDBOX_DEPLOYMENT_ID): in the description sent with the create call
  itself, `... [sandbox-deployment-<id> <run id>]`, so a repository is never
  unmarked even if the next write fails, and as the topic
  `sandbox-deployment-<id>`, written just after (the label an operator sees,
  filters on and can add by hand to adopt a repository). Only a repository
  that carries the mark is deleted (NotOurRepository otherwise).
  https://docs.github.com/en/rest/repos/repos#replace-all-repository-topics
- Renamed or transferred repositories answer 301 (reads, which PyGithub
  follows) or 307 (writes) with the repository's `/repositories/{id}` URL. A
  307 to a DELETE deleted nothing: the repository is read by its id and, if it
  still carries the mark, deleted there.
  https://docs.github.com/en/rest/using-the-rest-api/getting-started-with-the-rest-api#http-redirects
- A primary rate limit answers 403 or 429 with `x-ratelimit-remaining: 0` and
  `x-ratelimit-reset`; both are waited out up to GITHUB_MAX_RATE_LIMIT_WAIT.
  https://docs.github.com/en/rest/using-the-rest-api/rate-limits-for-the-rest-api
- Writes (POST, PATCH, PUT, DELETE) are made serially, GITHUB_MS_BETWEEN_WRITES
  apart, by every thread of the process together (one gate per API and
  organization), to stay clear of the secondary rate limits.
  https://docs.github.com/en/rest/using-the-rest-api/best-practices-for-using-the-rest-api#avoid-concurrent-requests
"""

import base64
import json
import logging
import re
import threading
import time
from contextlib import contextmanager
from dataclasses import dataclass
from functools import cache

import requests
from github import (
    Auth,
    Github,
    GithubException,
    GithubRetry,
    RateLimitExceededExceedsMaxWait,
    UnknownObjectException,
)
from urllib3.exceptions import TimeoutError as Urllib3Timeout

from sandboxes.providers.base import (
    RETRY_BACKOFF_SECONDS,
    EnsuredRepository,
    GitHostError,
    NotOurRepository,
    PushTarget,
    Repository,
    deployment_mark,
    described_with_mark,
    mark_fields,
)

logger = logging.getLogger(__name__)

PER_PAGE = 100
WRITE_METHODS = frozenset({"POST", "PATCH", "PUT", "DELETE"})
_REPOSITORY_ID_IN_URL = re.compile(r"/repositories/(\d+)(?:[/?#]|$)")


@dataclass(frozen=True)
class GitHubConfig:
    organization: str
    api_url: str
    token: str = ""
    app_id: str = ""
    app_private_key: str = ""
    app_installation_id: int = 0
    private: bool = True
    timeout: float = 15
    retries: int = 3
    max_rate_limit_wait: float = 60
    seconds_between_writes: float = 1.0
    deployment_id: str = ""

    @property
    def auth(self) -> Auth.Auth:
        if self.token:
            return Auth.Token(self.token)
        app = Auth.AppAuth(int(self.app_id), self.app_private_key)
        return app.get_installation_auth(self.app_installation_id)


def _message(exc: GithubException) -> str:
    data = exc.data if isinstance(exc.data, dict) else {}
    message = data.get("message") or str(exc.data or "") or "no message"
    details = [error.get("message") or error.get("code") for error in data.get("errors") or [] if isinstance(error, dict)]
    details = [detail for detail in details if detail]
    return f"{message} ({'; '.join(details)})" if details else message


def _timed_out(exc: Exception) -> bool:
    # Once GithubRetry has retried a read timeout, requests reports it as a
    # ConnectionError wrapping urllib3's MaxRetryError(reason=ReadTimeoutError).
    reason = getattr(exc.args[0], "reason", None) if exc.args else None
    return isinstance(exc, requests.ConnectionError) and isinstance(reason, Urllib3Timeout)


def _already_exists(exc: GithubException) -> bool:
    return exc.status == 422 and "already exists" in _message(exc).lower()


class WriteGate:
    """Writes one at a time, each starting `interval` seconds after the one before it ended.

    One per GitHub API and organization in a process (write_gate), shared by
    the clients of every thread: a cleanup with --concurrency 4 has four
    clients and still one write in flight. Measured from the end of the last
    write, so GitHub receives them at least `interval` apart.
    """

    def __init__(self):
        self._lock = threading.Lock()
        self._last_end = float("-inf")

    @contextmanager
    def write(self, interval: float):
        with self._lock:
            wait = self._last_end + interval - time.monotonic()
            if wait > 0:
                time.sleep(wait)
            try:
                yield
            finally:
                self._last_end = time.monotonic()


@cache
def write_gate(api_url: str, organization: str) -> WriteGate:
    """The process's gate for writes to one organization (a lock per process is the point of it)."""
    return WriteGate()


class _BoundedRetry(GithubRetry):
    """GithubRetry that also waits out a 429 rate limit, and bounds every wait by max_rate_limit_wait.

    GithubRetry bounds only the wait for X-RateLimit-Reset of a 403; urllib3
    sleeps for whatever Retry-After says (up to six hours), which would hold
    the worker far beyond GITHUB_MAX_RATE_LIMIT_WAIT, and a 429 carrying only
    X-RateLimit-Reset was not retried at all. A retried write waits at least
    the pause between writes.
    """

    seconds_between_writes = 0.0

    def new(self, **kw):
        retry = super().new(**kw)
        retry.seconds_between_writes = self.seconds_between_writes
        return retry

    def get_backoff_time(self) -> float:
        backoff = super().get_backoff_time()
        if self.history and self.history[-1].method in WRITE_METHODS:
            backoff = max(backoff, self.seconds_between_writes)
        return backoff

    def _rate_limit_wait(self, response) -> float:
        """GitHub's rule for a primary limit: until X-RateLimit-Reset (plus a second, as GithubRetry does)."""
        reset = response.headers.get("X-RateLimit-Reset", "")
        if response.headers.get("X-RateLimit-Remaining") == "0" and reset.isdigit():
            return max(0.0, int(reset) - time.time()) + 1
        return self.secondary_rate_wait

    def _exceeds_max_wait(self, response, url, wait: float) -> RateLimitExceededExceedsMaxWait:
        content = self.get_content(response, url)
        try:
            data = json.loads(content)
        except ValueError:
            data = content.decode(errors="replace")
        return RateLimitExceededExceedsMaxWait(response.status, data, response.headers, wait=wait)

    def increment(self, method=None, url=None, response=None, error=None, _pool=None, _stacktrace=None):
        if response is not None and response.status == 429 and "Retry-After" not in response.headers:
            wait = self._rate_limit_wait(response)
            if self.max_rate_limit_wait is not None and wait > self.max_rate_limit_wait:
                raise self._exceeds_max_wait(response, url, wait)
            retry = super().increment(method, url, response, error, _pool, _stacktrace)
            backoff = max(wait, retry.get_backoff_time())
            retry.get_backoff_time = lambda: backoff
            return retry
        retried = response is not None and self.is_retry(method, response.status, has_retry_after=True)
        if retried and self.max_rate_limit_wait is not None:
            wait = self.get_retry_after(response)
            if wait is not None and wait > self.max_rate_limit_wait:
                raise self._exceeds_max_wait(response, url, wait)
        return super().increment(method, url, response, error, _pool, _stacktrace)


class GitHubHost:
    name = "github"

    def __init__(self, *, config: GitHubConfig):
        self.config = config
        self.deployment_id = config.deployment_id
        self.remote_retries = config.retries  # git over HTTPS: the same policy as the API calls
        self._auth = config.auth
        retry = _BoundedRetry(
            total=config.retries,
            backoff_factor=RETRY_BACKOFF_SECONDS,
            max_rate_limit_wait=config.max_rate_limit_wait,
            # A 429 is a rate limit (403 is added by GithubRetry itself).
            status_forcelist=[*range(500, 600), 429],
            # Once retries run out, hand PyGithub GitHub's last answer (a
            # GithubException with its status and message) rather than
            # requests' bare RetryError.
            raise_on_status=False,
        )
        retry.seconds_between_writes = config.seconds_between_writes
        self._client = Github(
            base_url=config.api_url,
            auth=self._auth,
            timeout=config.timeout,
            per_page=PER_PAGE,
            retry=retry,
            # Writes are paced by the process-wide gate, not per client.
            seconds_between_writes=None,
            seconds_between_requests=None,
            lazy=True,
        )
        self._organization = self._client.get_organization(config.organization)
        self._gate = write_gate(config.api_url, config.organization)

    def _write(self):
        """Hold the process's write gate for one write (and PyGithub's retries of it)."""
        return self._gate.write(self.config.seconds_between_writes)

    def _full_name(self, name: str) -> str:
        return f"{self.config.organization}/{name}"

    def _html_url(self, name: str) -> str:
        # Where the repository would be, for messages about one we could not read.
        web = self.config.api_url.rstrip("/").removesuffix("/api/v3").replace("://api.", "://", 1)
        return f"{web}/{self._full_name(name)}"

    def _failure(self, action: str, exc: Exception, name: str | None = None) -> GitHostError:
        where = f" {self._html_url(name)}" if name else ""
        if isinstance(exc, RateLimitExceededExceedsMaxWait):
            return GitHostError(f"GitHub rate limit while trying to {action}{where}; retry after {exc.wait:.0f} s")
        if isinstance(exc, GithubException):
            return GitHostError(f"GitHub answered {exc.status} when trying to {action}{where}: {_message(exc)}")
        if isinstance(exc, requests.Timeout) or _timed_out(exc):
            return GitHostError(f"GitHub did not answer within {self.config.timeout:g} s when trying to {action}{where}")
        if isinstance(exc, requests.RequestException):
            return GitHostError(f"GitHub could not be reached when trying to {action}{where}: {type(exc).__name__}")
        raise exc

    def _repository(self, repo) -> Repository:
        """Our dataclass from a PyGithub repository whose JSON is loaded (every field read is in it)."""
        return Repository(
            name=repo.name,
            html_url=repo.html_url,
            clone_url=repo.clone_url,
            id=repo.id,
            default_branch=repo.default_branch or "main",
            **mark_fields(topics=repo.topics or [], description=repo.description or "",
                          deployment_id=self.deployment_id),
        )

    def _write_mark_topic(self, repository: Repository, topics: list[str]) -> None:
        """Add the mark's topic. Best effort: the description carries the mark already, and the next setup retries."""
        mark = deployment_mark(self.deployment_id)
        if mark in topics:
            return
        try:
            with self._write():
                self._client.requester.requestJsonAndCheck(
                    "PUT", f"/repos/{self._full_name(repository.name)}/topics", input={"names": [*topics, mark]}
                )
        except (GithubException, requests.RequestException) as exc:
            logger.warning("Could not add the topic %s to %s: %s", mark, self._html_url(repository.name),
                           self._failure("add the topic", exc))

    # --- interface ---------------------------------------------------------
    def ensure_repository(self, *, name: str, description: str, run_id: str = "") -> EnsuredRepository:
        """Create the repository with the mark in its description, then its topic; or find the one there.

        A create whose answer was lost (a 5xx or a broken connection after
        GitHub made the repository) is retried, answered 422, and found here:
        it counts as created when its mark names this run, so a later failure
        deletes it. One marked by another deployment is refused.
        """
        described = described_with_mark(description, deployment_id=self.deployment_id, run_id=run_id)
        try:
            with self._write():
                made = self._organization.create_repo(name, description=described, private=self.config.private)
            repository = self._repository(made)
            self._write_mark_topic(repository, list(made.topics or []))
            return EnsuredRepository(repository=repository, created=True)
        except GithubException as exc:
            if not _already_exists(exc):
                raise self._failure("create repository", exc, name) from None
        except requests.RequestException as exc:
            # The create may have gone through before the connection broke;
            # the lookup below tells.
            logger.warning("Creating %s on GitHub: %s; looking it up", name, exc)
        try:
            found = self._client.get_repo(self._full_name(name))
            existing, topics = self._repository(found), list(found.topics or [])
        except UnknownObjectException:
            raise GitHostError(f"GitHub did not create repository {self._html_url(name)}; try again") from None
        except (GithubException, requests.RequestException) as exc:
            raise self._failure("read repository", exc, name) from None
        if existing.deployment and not existing.owned:
            raise NotOurRepository(
                f"Repository {self._html_url(name)} {existing.mark_description}; it is not used or changed"
            )
        if existing.owned:
            self._write_mark_topic(existing, topics)
        created = bool(run_id) and existing.created_by_run == run_id
        return EnsuredRepository(repository=existing, created=created)

    def find_repository(self, *, name: str, repository_id: int | None = None) -> Repository | None:
        try:
            return self._repository(self._client.get_repo(repository_id or self._full_name(name)))
        except UnknownObjectException:
            return None
        except (GithubException, requests.RequestException) as exc:
            raise self._failure("read repository", exc, name) from None

    def list_repositories(self, *, account_id) -> list[Repository]:
        needle = str(account_id)
        return [repository for repository in self.list_all_repositories() if needle in repository.name]

    def list_all_repositories(self) -> list[Repository]:
        try:
            # Every page: the organization may hold thousands of repositories.
            return [self._repository(repo) for repo in self._organization.get_repos(type="all")]
        except (GithubException, requests.RequestException) as exc:
            raise self._failure(f"list the repositories of {self.config.organization}", exc) from None

    def _delete(self, url: str, name: str) -> tuple[int, dict]:
        """DELETE `url`: (status, headers) of a 204, 404 or redirect; a GitHostError for anything else."""
        try:
            with self._write():
                status, headers, body = self._client.requester.requestJson("DELETE", url)
        except (GithubException, requests.RequestException) as exc:
            raise self._failure("delete repository", exc, name) from None
        if status >= 400 and status != 404:
            try:
                data = json.loads(body) if body else None
            except ValueError:
                data = body
            raise self._failure("delete repository", GithubException(status, data, headers), name)
        return status, headers

    def delete_repository(self, *, repository: Repository) -> bool:
        """Delete a repository that carries this deployment's mark; False when it is gone already.

        GitHub answers a DELETE of a renamed or transferred repository with a
        307 to `/repositories/{id}`, deleting nothing. The repository is then
        read by its recorded id (or the redirect's), and deleted there only if
        it still carries the mark. Success is only ever GitHub's 204.
        """
        name = repository.name
        if not repository.owned:
            raise NotOurRepository(f"Repository {self._html_url(name)} {repository.mark_description}; it was left alone")
        status, headers = self._delete(f"/repos/{self._full_name(name)}", name)
        if status == 204:
            return True
        if status == 404:
            return False
        found = _REPOSITORY_ID_IN_URL.search(headers.get("location", ""))
        repository_id = repository.id or (int(found.group(1)) if found else None)
        if not repository_id:
            raise GitHostError(f"GitHub answered {status} when trying to delete repository {self._html_url(name)}, "
                               "which was moved, and named no repository id; it was not deleted")
        moved = self.find_repository(name=name, repository_id=repository_id)
        if moved is None:
            return False
        if not moved.owned:
            raise NotOurRepository(f"Repository {self._html_url(name)}, now {moved.html_url}, "
                                   f"{moved.mark_description}; it was left alone")
        status, _ = self._delete(f"/repositories/{repository_id}", name)
        if status == 204:
            return True
        if status == 404:
            return False
        raise GitHostError(f"GitHub answered {status} when trying to delete repository {moved.html_url} "
                           f"(id {repository_id}, renamed from {name}); it was not deleted")

    def push_target(self, *, repository: Repository) -> PushTarget:
        """The HTTPS clone URL, with the token in git's environment only.

        git reads `http.extraHeader` from GIT_CONFIG_* variables, so the token
        is in no URL, argument, file or log.
        """
        try:
            token = self._auth.token
        except (GithubException, requests.RequestException) as exc:
            raise self._failure("get a token for git", exc) from None
        basic = base64.b64encode(f"x-access-token:{token}".encode()).decode()
        return PushTarget(
            url=repository.clone_url,
            env={
                "GIT_CONFIG_COUNT": "1",
                "GIT_CONFIG_KEY_0": "http.extraHeader",
                "GIT_CONFIG_VALUE_0": f"Authorization: Basic {basic}",
            },
        )
