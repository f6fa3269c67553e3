"""The GitHub git host, through PyGithub only.

Sandbox repositories live in one organization (GITHUB_ORG) on github.com or a
GitHub Enterprise server (GITHUB_API_URL). Authentication is a token
(GITHUB_TOKEN) or a GitHub App installation (GITHUB_APP_*), both through
PyGithub's auth classes. Every call has a timeout; rate limits (Retry-After,
X-RateLimit-Reset) and transient 5xx answers are retried a bounded number of
times by PyGithub's GithubRetry; what still fails becomes a GitHostError
whose message a person can act on. This is the only module that imports
`github`, and it hands back our own dataclasses, never PyGithub's lazy objects.
"""

import base64
import json
import logging
from dataclasses import dataclass

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

from sandboxes.providers.base import EnsuredRepository, GitHostError, PushTarget, Repository

logger = logging.getLogger(__name__)

PER_PAGE = 100


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


class _BoundedRetry(GithubRetry):
    """GithubRetry that also gives up at once on a Retry-After longer than max_rate_limit_wait.

    GithubRetry bounds only the wait for X-RateLimit-Reset; urllib3 sleeps for
    whatever Retry-After says (up to six hours), which would hold the worker
    far beyond GITHUB_MAX_RATE_LIMIT_WAIT.
    """

    def increment(self, method=None, url=None, response=None, error=None, _pool=None, _stacktrace=None):
        retried = response is not None and self.is_retry(method, response.status, has_retry_after=True)
        if retried and self.max_rate_limit_wait is not None:
            wait = self.get_retry_after(response)
            if wait is not None and wait > self.max_rate_limit_wait:
                content = self.get_content(response, url)
                try:
                    data = json.loads(content)
                except ValueError:
                    data = content.decode(errors="replace")
                raise RateLimitExceededExceedsMaxWait(response.status, data, response.headers, wait=wait)
        return super().increment(method, url, response, error, _pool, _stacktrace)


class GitHubHost:
    name = "github"

    def __init__(self, *, config: GitHubConfig):
        self.config = config
        self._auth = config.auth
        self._client = Github(
            base_url=config.api_url,
            auth=self._auth,
            timeout=config.timeout,
            per_page=PER_PAGE,
            retry=_BoundedRetry(
                total=config.retries,
                backoff_factor=0.5,
                max_rate_limit_wait=config.max_rate_limit_wait,
                # Once retries run out, hand PyGithub GitHub's last answer (a
                # GithubException with its status and message) rather than
                # requests' bare RetryError.
                raise_on_status=False,
            ),
            seconds_between_writes=config.seconds_between_writes or None,
            seconds_between_requests=None,
            lazy=True,
        )
        self._organization = self._client.get_organization(config.organization)

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

    @staticmethod
    def _repository(repo) -> Repository:
        return Repository(name=repo.name, html_url=repo.html_url, clone_url=repo.clone_url)

    # --- interface ---------------------------------------------------------
    def ensure_repository(self, *, name: str, description: str) -> EnsuredRepository:
        try:
            created = self._organization.create_repo(name, description=description, private=self.config.private)
            return EnsuredRepository(repository=self._repository(created), created=True)
        except GithubException as exc:
            if not _already_exists(exc):
                raise self._failure("create repository", exc, name) from None
        except requests.RequestException as exc:
            # The create may have gone through before the connection broke;
            # the lookup below tells.
            logger.warning("Creating %s on GitHub: %s; looking it up", name, exc)
        try:
            existing = self._client.get_repo(self._full_name(name))
            return EnsuredRepository(repository=self._repository(existing), created=False)
        except UnknownObjectException:
            raise GitHostError(f"GitHub did not create repository {self._html_url(name)}; try again") from None
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

    def delete_repository(self, *, name: str) -> bool:
        try:
            self._client.get_repo(self._full_name(name)).delete()  # lazy: DELETE only
        except UnknownObjectException:
            return False
        except (GithubException, requests.RequestException) as exc:
            raise self._failure("delete repository", exc, name) from None
        return True

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
