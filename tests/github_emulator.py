"""A small GitHub REST API emulator for the tests of the GitHub git host.

PyGithub talks to it over real HTTP on 127.0.0.1 (GITHUB_API_URL points here),
so the host's code runs unchanged: no PyGithub mocking. It emulates what the
host calls, with the shapes github.com answers with:

    GET    /user                                        token check ("user")
    POST   /app/installations/{id}/access_tokens        App JWT -> installation token ("token")
    GET    /orgs/{org}                                  ("org")
    GET    /orgs/{org}/repos?per_page=&page=            Link-header pagination ("list")
    POST   /orgs/{org}/repos                            201, or 422 "name already exists" ("create")
    GET    /repos/{owner}/{repo}                        200 or 404 ("get"); 301 once renamed
    DELETE /repos/{owner}/{repo}                        204 or 404 ("delete"); 307 once renamed
    PUT    /repos/{owner}/{repo}/topics                 200, or 422 for an invalid topic ("topics")
    GET    /repositories/{id}                           200 or 404 ("get_by_id")
    DELETE /repositories/{id}                           204 or 404 ("delete_by_id")
    *      /git/{owner}/{repo}.git/...                  git smart HTTP through the real
                                                        `git http-backend` ("push" for
                                                        receive-pack, "fetch" for upload-pack;
                                                        both are also "git")

Errors look like GitHub's: 401 {"message": "Bad credentials"}, 404 {"message":
"Not Found", "documentation_url": ...}, 422 {"message": "Repository creation
failed.", "errors": [...]}, rate limits as 403 or 429 with X-RateLimit-* /
Retry-After.

GitHub's awkward answers, as its documentation gives them:

- A renamed or transferred repository (`rename`) answers its old name with
  301 to reads and 307 to every other method, `Location` naming
  `/repositories/{id}`; a 307 changes nothing.
  https://docs.github.com/en/rest/using-the-rest-api/getting-started-with-the-rest-api#http-redirects
- A primary rate limit is 403 or 429 with `x-ratelimit-remaining: 0` and
  `x-ratelimit-reset` (epoch seconds); a secondary one may carry `retry-after`.
  https://docs.github.com/en/rest/using-the-rest-api/rate-limits-for-the-rest-api
- Topics are lowercase letters, digits and hyphens, at most 50 characters,
  and a PUT replaces them all.
  https://docs.github.com/en/rest/repos/repos#replace-all-repository-topics
  https://docs.github.com/en/repositories/managing-your-repositorys-settings-and-features/customizing-your-repository/classifying-your-repository-with-topics
- A repository's `default_branch` may be other than `main` (`add_repository`
  with `default_branch="master"` and files on it).
  https://docs.github.com/en/rest/repos/repos#get-a-repository
- A create whose answer is lost after the repository was made (`fail(...,
  after=True)`: the request takes effect, then the fault answers), so the retry
  meets GitHub's 422 "name already exists".
  https://docs.github.com/en/rest/repos/repos#create-an-organization-repository

The clone URLs point at real bare repositories under `root`, and the git
endpoint demands `Authorization: Basic` with a valid token as the password, so a
passing push proves the token reached git (through its environment).

Fault knobs, per route name: `fail` (the next N calls answer a status, with
optional headers and body; `after=True` first does what was asked),
`rate_limit` (403 or 429), `delay` (sleep before answering) and `drop` (close
the socket without answering). Every request is recorded in `requests`
(method, path, query, headers, route, and `at`, time.monotonic() on arrival).
"""

import base64
import json
import re
import secrets
import shutil
import socket
import subprocess
import tempfile
import threading
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from io import StringIO
from pathlib import Path
from socketserver import ThreadingMixIn
from urllib.parse import parse_qs, urlencode
from wsgiref.simple_server import ServerHandler, WSGIRequestHandler, WSGIServer, make_server

import jwt

DOCS = "https://docs.github.com/rest"
GIT_ENV = {
    "PATH": "/usr/local/bin:/usr/bin:/bin",
    "LANG": "C.UTF-8",
    "GIT_CONFIG_NOSYSTEM": "1",
    "GIT_CONFIG_GLOBAL": "/dev/null",
}
REASONS = {
    200: "OK", 201: "Created", 204: "No Content", 301: "Moved Permanently", 307: "Temporary Redirect",
    400: "Bad Request", 401: "Unauthorized",
    403: "Forbidden", 404: "Not Found", 409: "Conflict", 422: "Unprocessable Entity",
    429: "Too Many Requests", 500: "Internal Server Error", 502: "Bad Gateway",
    503: "Service Unavailable", 504: "Gateway Timeout",
}
DEFAULT_MESSAGES = {
    401: "Bad credentials",
    403: "Must have admin rights to Repository.",
    404: "Not Found",
    500: "Server Error",
    502: "Server Error",
    503: "Service Unavailable",
}


@dataclass
class RecordedRequest:
    method: str
    path: str
    query: dict[str, str]
    headers: dict[str, str]
    route: str
    at: float = field(default_factory=time.monotonic)


@dataclass
class _Fault:
    route: str
    remaining: int | None  # None: until cleared
    status: int = 0
    headers: dict[str, str] = field(default_factory=dict)
    body: object = None
    delay: float = 0.0
    drop: bool = False
    after: bool = False  # do what the request asks, then answer the fault (an answer lost on the way back)

    def take(self) -> bool:
        if self.remaining is None:
            return True
        if self.remaining <= 0:
            return False
        self.remaining -= 1
        return True


@dataclass
class _App:
    app_id: str
    public_key: str
    installation_id: int


class _Response(Exception):
    def __init__(self, status: int, body=None, headers: dict | None = None):
        self.status, self.body, self.headers = status, body, dict(headers or {})


def _error(status: int, message: str | None = None, **extra) -> _Response:
    return _Response(status, {"message": message or DEFAULT_MESSAGES.get(status, "Error"),
                              "documentation_url": DOCS, **extra})


class _Server(ThreadingMixIn, WSGIServer):
    daemon_threads = True
    block_on_close = False

    def handle_error(self, request, client_address):
        pass  # a client that timed out and went away is expected here


class _Handler(WSGIRequestHandler):
    """wsgiref's handler, quiet, and able to close a connection without answering."""

    def log_message(self, format, *args):
        pass

    def get_stderr(self):
        return StringIO()

    def handle(self):
        self.raw_requestline = self.rfile.readline(65537)
        if len(self.raw_requestline) > 65536 or not self.parse_request():
            return
        emulator = self.server.emulator
        path, _, query = self.path.partition("?")
        if emulator.should_drop(self.command, path, query, dict(self.headers.items())):
            self.close_connection = True
            try:
                self.connection.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            return
        # The rest of WSGIRequestHandler.handle.
        server_handler = ServerHandler(
            self.rfile, self.wfile, self.get_stderr(), self.get_environ(), multithread=True
        )
        server_handler.request_handler = self
        server_handler.run(self.server.get_app())


class GitHubEmulator:
    """One organization's worth of GitHub: repositories, tokens, Apps, and the fault knobs."""

    def __init__(self, root: Path, *, organization: str = "sandbox-org", token: str | None = None):
        self.root = Path(root)
        self.organization = organization
        self.token = token or "ghp_" + secrets.token_hex(18)
        self.requests: list[RecordedRequest] = []
        self.repos: dict[tuple[str, str], dict] = {}
        self.redirects: dict[tuple[str, str], int] = {}  # an old (owner, name) -> the id of the renamed repository
        self.orgs: dict[str, dict] = {}
        self._tokens: dict[str, datetime | None] = {self.token: None}
        self._apps: dict[int, _App] = {}
        self._faults: list[_Fault] = []
        self._while_answering: list[list] = []  # [route, action, times left]
        self._lock = threading.RLock()
        self._next_id = 1000
        self._stopping = threading.Event()
        self._server: _Server | None = None
        self._thread: threading.Thread | None = None
        self.add_organization(organization)

    # --- lifecycle ------------------------------------------------------------
    def start(self) -> "GitHubEmulator":
        self.root.mkdir(parents=True, exist_ok=True)
        self._server = make_server("127.0.0.1", 0, self._app, server_class=_Server, handler_class=_Handler)
        self._server.emulator = self
        self._thread = threading.Thread(
            target=self._server.serve_forever, kwargs={"poll_interval": 0.05}, name="github-emulator", daemon=True
        )
        self._thread.start()
        return self

    def stop(self):
        self._stopping.set()
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._thread.join(timeout=5)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self._server.server_port}"

    # --- state for the tests ----------------------------------------------------
    def _new_id(self) -> int:
        with self._lock:
            self._next_id += 1
            return self._next_id

    def add_organization(self, login: str) -> dict:
        with self._lock:
            org = self.orgs.get(login) or {
                "login": login,
                "id": self._new_id(),
                "type": "Organization",
                "description": "",
            }
            self.orgs[login] = org
            return org

    def add_repository(self, name: str, *, owner: str | None = None, description: str = "",
                       private: bool = True, topics: list[str] | tuple = (), default_branch: str = "main",
                       files: dict[str, bytes] | None = None) -> dict:
        """A repository that exists before the test (its bare repository is made on first git use).

        With `files`, its bare repository holds one commit of them on `default_branch`.
        """
        owner = owner or self.organization
        with self._lock:
            repo = {"id": self._new_id(), "name": name, "owner": owner, "private": private,
                    "description": description, "created_at": datetime.now(UTC), "topics": list(topics),
                    "default_branch": default_branch}
            self.repos[(owner, name)] = repo
        if files:
            self._commit(self._bare_repository(owner, name), default_branch, files)
        return self.repository(name, owner)

    def _commit(self, bare: Path, branch: str, files: dict[str, bytes]) -> None:
        env = {**GIT_ENV, "HOME": str(self.root), "GIT_AUTHOR_NAME": "Someone", "GIT_AUTHOR_EMAIL": "s@example.com",
               "GIT_COMMITTER_NAME": "Someone", "GIT_COMMITTER_EMAIL": "s@example.com"}
        with tempfile.TemporaryDirectory() as work:
            subprocess.run(["git", "init", "--quiet", f"--initial-branch={branch}", work], check=True, env=env)
            for relative, content in files.items():
                (Path(work) / relative).parent.mkdir(parents=True, exist_ok=True)
                (Path(work) / relative).write_bytes(content)
            subprocess.run(["git", "add", "--all"], cwd=work, check=True, env=env)
            subprocess.run(["git", "commit", "--quiet", "-m", "Their own work"], cwd=work, check=True, env=env)
            subprocess.run(["git", "push", "--quiet", str(bare), f"HEAD:refs/heads/{branch}"], cwd=work,
                           check=True, env=env)

    def rename(self, name: str, new_name: str, *, owner: str | None = None) -> None:
        """Rename a repository as a person would on github.com: its old name now redirects to its id."""
        owner = owner or self.organization
        with self._lock:
            repo = self.repos.pop((owner, name))
            repo["name"] = new_name
            self.repos[(owner, new_name)] = repo
            self.redirects[(owner, name)] = repo["id"]
            old, new = self.bare_path(name, owner), self.bare_path(new_name, owner)
            if old.exists():
                old.rename(new)

    def set_topics(self, name: str, topics: list[str], *, owner: str | None = None) -> None:
        with self._lock:
            self.repos[(owner or self.organization, name)]["topics"] = list(topics)

    def repository(self, name: str, owner: str | None = None) -> dict | None:
        with self._lock:
            repo = self.repos.get((owner or self.organization, name))
            return self._repo_json(repo) if repo else None

    def repository_names(self, owner: str | None = None) -> list[str]:
        owner = owner or self.organization
        with self._lock:
            return sorted(name for (repo_owner, name) in self.repos if repo_owner == owner)

    def bare_path(self, name: str, owner: str | None = None) -> Path:
        return self.root / (owner or self.organization) / f"{name}.git"

    def register_app(self, *, app_id: str, public_key_pem: str, installation_id: int):
        """A GitHub App whose JWTs (signed with the matching private key) the token exchange accepts."""
        with self._lock:
            self._apps[int(installation_id)] = _App(str(app_id), public_key_pem, int(installation_id))

    def issued_tokens(self) -> list[str]:
        with self._lock:
            return [token for token, expires in self._tokens.items() if expires is not None]

    def all_tokens(self) -> list[str]:
        with self._lock:
            return list(self._tokens)

    def calls(self, route: str | None = None, method: str | None = None) -> list[RecordedRequest]:
        with self._lock:
            return [r for r in self.requests
                    if (route is None or r.route == route or route in _aliases(r.route))
                    and (method is None or r.method == method)]

    # --- fault knobs --------------------------------------------------------------
    def fail(self, route: str, status: int, *, times: int | None = 1, headers: dict | None = None,
             body=None, message: str | None = None, after: bool = False):
        """The next `times` calls to `route` (None: every call) answer `status`.

        `after`: the request takes effect first (a repository is created, say)
        and then `status` answers it, as when GitHub's answer is lost on the way back.
        """
        if body is None:
            body = {"message": message or DEFAULT_MESSAGES.get(status, "Error"), "documentation_url": DOCS}
        with self._lock:
            self._faults.append(_Fault(route=route, remaining=times, status=status,
                                       headers={k: str(v) for k, v in (headers or {}).items()}, body=body,
                                       after=after))

    def rate_limit(self, route: str, *, times: int = 1, retry_after: int | None = 1, reset_in: int | None = None,
                   status: int = 403):
        """The next calls answer GitHub's primary rate limit, 403 or 429 (Retry-After and/or X-RateLimit-Reset)."""
        headers = {"X-RateLimit-Limit": "5000", "X-RateLimit-Remaining": "0", "X-RateLimit-Used": "5000",
                   "X-RateLimit-Resource": "core"}
        reset = int(datetime.now(UTC).timestamp()) + (reset_in if reset_in is not None else retry_after or 60)
        headers["X-RateLimit-Reset"] = str(reset)
        if retry_after is not None:
            headers["Retry-After"] = str(retry_after)
        self.fail(route, status, times=times, headers=headers,
                  message="API rate limit exceeded for installation ID 1. If you reach out to GitHub Support "
                          "for help, please include the request ID.")

    def delay(self, route: str, seconds: float, *, times: int | None = None):
        """Sleep `seconds` before answering the next `times` calls (None: every call)."""
        with self._lock:
            self._faults.append(_Fault(route=route, remaining=times, delay=seconds))

    def drop(self, route: str, *, times: int | None = 1):
        """Close the connection without answering the next `times` calls (None: every call)."""
        with self._lock:
            self._faults.append(_Fault(route=route, remaining=times, drop=True))

    def clear_faults(self):
        with self._lock:
            self._faults.clear()
            self._while_answering.clear()

    def while_answering(self, route: str, action, *, times: int = 1):
        """Run `action()` after the next `times` answers of `route` are made and before they are sent:
        the world changes while an answer is on its way, as it can between a listing and its use."""
        with self._lock:
            self._while_answering.append([route, action, times])

    def _changes_while_answering(self, route: str) -> None:
        names = {route, *_aliases(route)}
        with self._lock:
            due = [hook for hook in self._while_answering if hook[0] in names and hook[2] > 0]
            for hook in due:
                hook[2] -= 1
        for _route_name, action, _times in due:
            action()

    def _take_fault(self, route: str, kind: str) -> _Fault | None:
        names = {route, *_aliases(route)}
        with self._lock:
            for fault in self._faults:
                is_kind = {"drop": fault.drop, "delay": fault.delay > 0,
                           "fail": fault.status > 0}[kind]
                if is_kind and fault.route in names and fault.take():
                    return fault
        return None

    # --- HTTP ---------------------------------------------------------------------
    def _record(self, method: str, path: str, query: str, headers: dict[str, str]) -> str:
        route = _route(method, path, query)
        flat = {name: values[-1] for name, values in parse_qs(query, keep_blank_values=True).items()}
        with self._lock:
            self.requests.append(RecordedRequest(method, path, flat, headers, route))
        return route

    def should_drop(self, method: str, path: str, query: str, headers: dict[str, str]) -> bool:
        route = _route(method, path, query)
        if self._take_fault(route, "drop") is None:
            return False
        self._record(method, path, query, {k.title(): v for k, v in headers.items()})
        return True

    def _app(self, environ, start_response):
        method = environ["REQUEST_METHOD"]
        path = environ.get("PATH_INFO", "")
        query = environ.get("QUERY_STRING", "")
        headers = {key[5:].replace("_", "-").title(): value for key, value in environ.items()
                   if key.startswith("HTTP_")}
        if environ.get("CONTENT_TYPE"):
            headers["Content-Type"] = environ["CONTENT_TYPE"]
        route = self._record(method, path, query, headers)
        body = _read_body(environ)

        delay = self._take_fault(route, "delay")
        if delay is not None:
            self._stopping.wait(delay.delay)
        try:
            fault = self._take_fault(route, "fail")
            if fault is not None and not fault.after:
                raise _Response(fault.status, fault.body, fault.headers)
            if route in ("push", "fetch"):
                return self._git(environ, body, start_response)
            try:
                self._dispatch(method, path, query, headers, body, route)
                raise _error(404)
            except _Response:
                if fault is None:
                    raise
            raise _Response(fault.status, fault.body, fault.headers)  # done, but the answer is lost
        except _Response as answer:
            self._changes_while_answering(route)
            return _answer(start_response, answer)

    def _authenticated(self, headers: dict[str, str]) -> str:
        scheme, _, credential = headers.get("Authorization", "").partition(" ")
        if scheme.lower() not in ("token", "bearer") or not credential:
            raise _error(401, "Requires authentication")
        if not self._token_valid(credential.strip()):
            raise _error(401, "Bad credentials")
        return credential.strip()

    def _token_valid(self, token: str) -> bool:
        with self._lock:
            if token not in self._tokens:
                return False
            expires = self._tokens[token]
            return expires is None or expires > datetime.now(UTC)

    def _dispatch(self, method, path, query, headers, body, route):
        parts = [part for part in path.split("/") if part]
        if route == "token":
            self._token_exchange(int(parts[2]), headers)
        self._authenticated(headers)
        if route == "user":
            raise _Response(200, {"login": "sandbox-bot", "id": 1, "type": "User"})
        if route == "org":
            org = self.orgs.get(parts[1])
            if org is None:
                raise _error(404)
            raise _Response(200, self._org_json(org))
        if route == "list":
            self._list(parts[1], query)
        if route == "create":
            self._create(parts[1], body)
        if route in ("get", "delete", "topics"):
            owner, name = parts[1], parts[2]
            with self._lock:
                repo = self.repos.get((owner, name))
                if repo is None and (owner, name) in self.redirects:
                    # Renamed: reads are moved permanently, other methods temporarily; nothing changes.
                    location = f"{self.url}/repositories/{self.redirects[(owner, name)]}"
                    raise _Response(301 if method == "GET" else 307,
                                    {"message": "Moved Permanently" if method == "GET" else "Temporary Redirect",
                                     "url": location, "documentation_url": DOCS}, {"Location": location})
                if repo is None:
                    raise _error(404)
            self._repository_route(route, repo, body)
        if route in ("get_by_id", "delete_by_id"):
            with self._lock:
                repo = next((repo for repo in self.repos.values() if str(repo["id"]) == parts[1]), None)
            if repo is None:
                raise _error(404)
            self._repository_route(route.removesuffix("_by_id"), repo, body)

    def _repository_route(self, route: str, repo: dict, body: bytes):
        owner, name = repo["owner"], repo["name"]
        if route == "get":
            with self._lock:
                raise _Response(200, self._repo_json(repo))
        if route == "topics":
            try:
                names = json.loads(body or b"{}").get("names")
            except (ValueError, AttributeError):
                raise _error(400, "Problems parsing JSON") from None
            if not isinstance(names, list) or not all(
                isinstance(topic, str) and re.fullmatch(r"[a-z0-9][a-z0-9-]{0,49}", topic) for topic in names
            ):
                raise _error(422, "Invalid topics", errors=[
                    {"resource": "Repository", "code": "invalid", "field": "names",
                     "message": "Topics must start with a lowercase letter or number, consist of 50 characters "
                                "or less, and can include hyphens."}])
            with self._lock:
                repo["topics"] = list(dict.fromkeys(names))
                raise _Response(200, {"names": repo["topics"]})
        with self._lock:
            if self.repos.get((owner, name)) is not repo:
                raise _error(404)
            del self.repos[(owner, name)]
        shutil.rmtree(self.bare_path(name, owner), ignore_errors=True)
        raise _Response(204)

    def _token_exchange(self, installation_id: int, headers: dict[str, str]):
        scheme, _, credential = headers.get("Authorization", "").partition(" ")
        app = self._apps.get(installation_id)
        if scheme.lower() != "bearer" or not credential:
            raise _error(401, "A JSON web token could not be decoded")
        if app is None:
            raise _error(404)
        try:
            claims = jwt.decode(credential, app.public_key, algorithms=["RS256"],
                                options={"require": ["iat", "exp", "iss"]})
        except jwt.PyJWTError as exc:
            raise _error(401, f"A JSON web token could not be decoded ({exc})") from None
        if str(claims["iss"]) != app.app_id:
            raise _error(401, "'Issuer' claim ('iss') must be an Integer")
        token = "ghs_" + secrets.token_hex(18)
        expires = datetime.now(UTC) + timedelta(hours=1)
        with self._lock:
            self._tokens[token] = expires
        raise _Response(201, {"token": token, "expires_at": expires.strftime("%Y-%m-%dT%H:%M:%SZ"),
                              "permissions": {"administration": "write", "contents": "write"},
                              "repository_selection": "all"})

    def _list(self, org: str, query: str):
        if org not in self.orgs:
            raise _error(404)
        params = {name: values[-1] for name, values in parse_qs(query).items()}
        per_page = max(1, min(int(params.get("per_page") or 30), 100))
        page = max(1, int(params.get("page") or 1))
        with self._lock:
            repos = sorted((repo for (owner, _), repo in self.repos.items() if owner == org),
                           key=lambda repo: repo["id"])
            items = [self._repo_json(repo) for repo in repos[(page - 1) * per_page: page * per_page]]
        last = max(1, -(-len(repos) // per_page))
        links = []

        def link(number: int, rel: str):
            links.append(f'<{self.url}/orgs/{org}/repos?{urlencode({**params, "page": number})}>; rel="{rel}"')

        if page < last:
            link(page + 1, "next")
            link(last, "last")
        if page > 1:
            link(1, "first")
            link(page - 1, "prev")
        raise _Response(200, items, {"Link": ", ".join(links)} if links else {})

    def _create(self, org: str, body: bytes):
        if org not in self.orgs:
            raise _error(404)
        try:
            data = json.loads(body or b"{}")
        except ValueError:
            raise _error(400, "Problems parsing JSON") from None
        name = data.get("name") or ""
        if not re.fullmatch(r"[A-Za-z0-9._-]{1,100}", name):
            raise _error(422, "Repository creation failed.", errors=[
                {"resource": "Repository", "code": "custom", "field": "name", "message": "name is invalid"}])
        with self._lock:
            if (org, name) in self.repos:
                raise _error(422, "Repository creation failed.", errors=[
                    {"resource": "Repository", "code": "custom", "field": "name",
                     "message": "name already exists on this account"}])
            repo = {"id": self._new_id(), "name": name, "owner": org, "private": bool(data.get("private")),
                    "description": data.get("description") or "", "created_at": datetime.now(UTC),
                    "topics": [], "default_branch": "main"}
            self.repos[(org, name)] = repo
            self.redirects.pop((org, name), None)  # a new repository takes the name back from a redirect
        self._bare_repository(org, name)
        raise _Response(201, self._repo_json(repo))

    # --- git smart HTTP -------------------------------------------------------------
    def _bare_repository(self, owner: str, name: str) -> Path:
        path = self.bare_path(name, owner)
        with self._lock:
            if not path.exists():
                path.parent.mkdir(parents=True, exist_ok=True)
                subprocess.run(["git", "init", "--quiet", "--bare", "--initial-branch=main", str(path)],
                               check=True, env={**GIT_ENV, "HOME": str(self.root)})
                subprocess.run(["git", "config", "http.receivepack", "true"], cwd=path, check=True,
                               env={**GIT_ENV, "HOME": str(self.root)})
        return path

    def _git(self, environ, body: bytes, start_response):
        scheme, _, credential = environ.get("HTTP_AUTHORIZATION", "").partition(" ")
        user = password = ""
        if scheme.lower() == "basic":
            try:
                user, _, password = base64.b64decode(credential).decode().partition(":")
            except ValueError:
                pass
        if not password or not self._token_valid(password):
            raise _Response(401, b"Authentication required\n",
                            {"WWW-Authenticate": 'Basic realm="GitHub"', "Content-Type": "text/plain"})
        match = re.match(r"^/git/([^/]+)/([^/]+)\.git(/.*)$", environ.get("PATH_INFO", ""))
        if not match or (match.group(1), match.group(2)) not in self.repos:
            raise _Response(404, b"Repository not found.\n", {"Content-Type": "text/plain"})
        owner, name, rest = match.groups()
        self._bare_repository(owner, name)
        cgi_env = {
            **GIT_ENV,
            "HOME": str(self.root),
            "GIT_PROJECT_ROOT": str(self.root),
            "GIT_HTTP_EXPORT_ALL": "1",
            "REQUEST_METHOD": environ["REQUEST_METHOD"],
            "PATH_INFO": f"/{owner}/{name}.git{rest}",
            "QUERY_STRING": environ.get("QUERY_STRING", ""),
            "CONTENT_TYPE": environ.get("CONTENT_TYPE", ""),
            "CONTENT_LENGTH": str(len(body)),
            "REMOTE_USER": user or "x-access-token",
            "REMOTE_ADDR": "127.0.0.1",
        }
        for key in ("HTTP_CONTENT_ENCODING", "HTTP_GIT_PROTOCOL"):
            if key in environ:
                cgi_env[key] = environ[key]
        completed = subprocess.run(["git", "http-backend"], input=body, env=cgi_env, capture_output=True,
                                   timeout=30, check=False)
        head, _, payload = completed.stdout.partition(b"\r\n\r\n")
        if not _:
            head, _, payload = completed.stdout.partition(b"\n\n")
        status, headers = 200, []
        for line in head.decode("latin-1").splitlines():
            key, _, value = line.partition(":")
            if key.lower() == "status":
                status = int(value.split()[0])
            elif key:
                headers.append((key.strip(), value.strip()))
        start_response(f"{status} {REASONS.get(status, 'Status')}", headers)
        return [payload]

    # --- JSON -----------------------------------------------------------------------------
    def _org_json(self, org: dict) -> dict:
        login = org["login"]
        return {**org, "url": f"{self.url}/orgs/{login}", "repos_url": f"{self.url}/orgs/{login}/repos",
                "html_url": f"{self.url}/{login}"}

    def _repo_json(self, repo: dict) -> dict:
        owner, name = repo["owner"], repo["name"]
        owner_id = self.orgs.get(owner, {}).get("id", 1)
        return {
            "id": repo["id"],
            "node_id": base64.b64encode(f"R_{repo['id']}".encode()).decode(),
            "name": name,
            "full_name": f"{owner}/{name}",
            "private": repo["private"],
            "visibility": "private" if repo["private"] else "public",
            "description": repo["description"],
            "fork": False,
            "html_url": f"{self.url}/{owner}/{name}",
            "url": f"{self.url}/repos/{owner}/{name}",
            "clone_url": f"{self.url}/git/{owner}/{name}.git",
            "git_url": f"{self.url}/git/{owner}/{name}.git",
            "default_branch": repo.get("default_branch", "main"),
            "topics": list(repo.get("topics", [])),
            "created_at": repo["created_at"].strftime("%Y-%m-%dT%H:%M:%SZ"),
            "owner": {"login": owner, "id": owner_id, "type": "Organization",
                      "url": f"{self.url}/users/{owner}", "html_url": f"{self.url}/{owner}"},
        }


def _route(method: str, path: str, query: str) -> str:
    if path.startswith("/git/"):
        return "push" if "git-receive-pack" in path + "?" + query else "fetch"
    parts = [part for part in path.split("/") if part]
    if parts == ["user"]:
        return "user"
    if len(parts) == 4 and parts[0] == "app" and parts[1] == "installations" and parts[3] == "access_tokens":
        return "token"
    if len(parts) == 2 and parts[0] == "orgs":
        return "org"
    if len(parts) == 3 and parts[0] == "orgs" and parts[2] == "repos":
        return {"GET": "list", "POST": "create"}.get(method, "other")
    if len(parts) == 3 and parts[0] == "repos":
        return {"GET": "get", "DELETE": "delete"}.get(method, "other")
    if len(parts) == 4 and parts[0] == "repos" and parts[3] == "topics":
        return "topics" if method == "PUT" else "other"
    if len(parts) == 2 and parts[0] == "repositories" and parts[1].isdigit():
        return {"GET": "get_by_id", "DELETE": "delete_by_id"}.get(method, "other")
    return "other"


def _aliases(route: str) -> tuple[str, ...]:
    return ("git",) if route in ("push", "fetch") else ()


def _read_body(environ) -> bytes:
    stream = environ["wsgi.input"]
    if environ.get("HTTP_TRANSFER_ENCODING", "").lower() == "chunked":
        chunks = []
        while True:
            size = int(stream.readline().split(b";")[0].strip() or b"0", 16)
            if size == 0:
                stream.readline()
                break
            chunks.append(stream.read(size))
            stream.readline()
        return b"".join(chunks)
    length = int(environ.get("CONTENT_LENGTH") or 0)
    return stream.read(length) if length else b""


def _answer(start_response, answer: _Response):
    headers = dict(answer.headers)
    if answer.body is None:
        payload = b""
    elif isinstance(answer.body, bytes):
        payload = answer.body
    else:
        payload = json.dumps(answer.body).encode()
        headers.setdefault("Content-Type", "application/json; charset=utf-8")
    headers["Content-Length"] = str(len(payload))
    start_response(f"{answer.status} {REASONS.get(answer.status, 'Status')}", list(headers.items()))
    return [payload]
