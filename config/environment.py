"""Reading settings from the environment.

Every setting of the service comes from an environment variable with a safe
default. A value that cannot be used stops start-up with one line that says
what to set, instead of a traceback deep inside Django.
"""

import os
import re
import sys
from datetime import timedelta
from pathlib import Path

_TRUE = {"1", "true", "yes", "on"}
_FALSE = {"0", "false", "no", "off", ""}
_DURATION = re.compile(r"^\s*(\d+)\s*([smhdw]?)\s*$")
_DURATION_UNITS = {"": 1, "s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}


def stop(message: str):
    """Stop start-up with a one-line message (exit status 1)."""
    raise SystemExit(f"Configuration error: {message}")


def warn(message: str):
    sys.stderr.write(f"WARNING: {message}\n")


def text(name: str, default: str = "") -> str:
    return os.environ.get(name, default).strip()


def flag(name: str, default: bool = False) -> bool:
    raw = os.environ.get(name)
    if raw is None:
        return default
    value = raw.strip().lower()
    if value in _TRUE:
        return True
    if value in _FALSE:
        return False
    stop(f"{name} must be true or false (1/0, yes/no), not {raw!r}")


def integer(name: str, default: int, *, minimum: int = 0) -> int:
    raw = os.environ.get(name)
    if raw is None or not raw.strip():
        return default
    try:
        value = int(raw)
    except ValueError:
        stop(f"{name} must be a whole number, not {raw!r}")
    if value < minimum:
        stop(f"{name} must be at least {minimum}, not {value}")
    return value


def parse_duration(raw: str) -> timedelta:
    """'90' (seconds), '15m', '12h', '7d' or '2w' as a timedelta; ValueError otherwise."""
    match = _DURATION.match(raw or "")
    if not match or int(match.group(1)) == 0:
        raise ValueError(f"{raw!r} is not a duration such as 3600, 90m, 12h, 7d or 2w")
    return timedelta(seconds=int(match.group(1)) * _DURATION_UNITS[match.group(2)])


def duration(name: str, default: str) -> timedelta:
    raw = os.environ.get(name) or default
    try:
        return parse_duration(raw)
    except ValueError as error:
        stop(f"{name}: {error}")


def durations(name: str, default: str) -> list[timedelta]:
    """A list of durations separated by spaces or commas, e.g. '5s 5m 30m'."""
    raw = os.environ.get(name) or default
    try:
        found = [parse_duration(part) for part in re.split(r"[\s,]+", raw.strip()) if part]
    except ValueError as error:
        stop(f"{name}: {error}")
    if not found:
        stop(f"{name} must list at least one duration, e.g. {default!r}")
    return found


def choice(name: str, default: str, allowed: tuple[str, ...]) -> str:
    value = text(name, default).lower()
    if value not in allowed:
        stop(f"{name} must be one of {', '.join(allowed)}, not {value!r}")
    return value


_RATE = re.compile(r"^\s*(\d+)\s*/\s*(s|sec|second|m|min|minute|h|hour|d|day)\s*$", re.IGNORECASE)


def rate(name: str, default: str) -> str | None:
    """A request rate as DRF's throttles read it ('30/min', '5/s', '1000/hour', '10/day'); 'off' is None."""
    raw = os.environ.get(name) or default
    if raw.strip().lower() in ("off", "none"):
        return None
    match = _RATE.match(raw)
    if not match or int(match.group(1)) == 0:
        stop(f"{name} must be a rate such as 30/min, 5/s, 1000/hour or 10/day (or off), not {raw!r}")
    return f"{int(match.group(1))}/{match.group(2).lower()}"


def proxy_ssl_header(name: str) -> tuple[str, str] | None:
    """'X-Forwarded-Proto: https' as Django's SECURE_PROXY_SSL_HEADER ('HTTP_X_FORWARDED_PROTO', 'https')."""
    raw = text(name)
    if not raw:
        return None
    header, separator, value = raw.partition(":")
    header, value = header.strip(), value.strip()
    if not separator or not value or not re.match(r"^[A-Za-z0-9-]+$", header):
        stop(f"{name} must be a header and the value that means HTTPS, e.g. 'X-Forwarded-Proto: https', not {raw!r}")
    return "HTTP_" + header.upper().replace("-", "_"), value


def words(name: str, default: str = "") -> list[str]:
    return [item for item in re.split(r"[,\s]+", text(name, default)) if item]


def choices(name: str, default: str, allowed: tuple[str, ...]) -> list[str]:
    """Words separated by spaces or commas, each one of `allowed`; kept in the order of `allowed`, each once."""
    given = words(name, default)
    unknown = [word for word in given if word not in allowed]
    if unknown:
        stop(f"{name}: {', '.join(unknown)} is not one of {', '.join(allowed)} (in {text(name, default)!r})")
    return [word for word in allowed if word in given]


def secret(name: str, *, debug: bool, development_value: str) -> str:
    """A secret that production must set; with DEBUG on, a development value (see `announce_development_values`)."""
    value = text(name)
    if value:
        return value
    if not debug:
        stop(f"{name} is not set; set it to a long random value, or DEBUG=1 for development (DEBUG is off)")
    return development_value


# Marks a process tree that has shown the development warning: the children
# of a server (runserver's reloaded child, the workers of qcluster) inherit
# the environment and stay quiet.
_ANNOUNCED = "SANDBOX_DEVELOPMENT_VALUES_ANNOUNCED"
# The management commands that start a server; any other command is a
# one-off that a user types (create_account, migrate, shell...).
SERVER_COMMANDS = ("runserver", "qcluster")


def starts_a_server(argv: list[str]) -> bool:
    """Whether the process is a server (runserver, qcluster, gunicorn), not a one-off management command."""
    if argv and Path(argv[0]).name in ("manage.py", "django-admin"):
        return len(argv) > 1 and argv[1] in SERVER_COMMANDS
    return True


def announce_development_values(names: list[str], *, argv: list[str] | None = None) -> None:
    """Warn once, in the server that starts, that these secrets have development values.

    One line per started server, not one per secret, not again in the
    processes it starts, and not from every management command.
    """
    if not names or os.environ.get(_ANNOUNCED) or not starts_a_server(sys.argv if argv is None else argv):
        return
    os.environ[_ANNOUNCED] = "1"
    verb = "is" if len(names) == 1 else "are"
    warn(f"DEBUG is on and {' and '.join(names)} {verb} not set: using development values "
         "(never do this in production)")


# The mark on what a deployment creates is a repository topic (sandboxes/providers/base.py: lowercase
# letters, digits and hyphens, at most 50 characters, 19 of them its prefix), so the id is at most 31.
DEPLOYMENT_ID_PATTERN = re.compile(r"^[a-z0-9][a-z0-9-]{0,30}$")


def deployment_id(name: str, *, required_by: str, default: str) -> str:
    """The id that marks what this deployment creates (a repository topic: lowercase, at most 31 characters).

    `required_by` names the settings that need it ("GIT_HOST=github"); "" where none does.
    """
    value = text(name)
    if not value:
        if required_by:
            stop(f"{required_by} needs {name}, a name for this deployment that no other deployment using the "
                 "organization or bucket has (e.g. prod-eu); it marks every repository and snapshot the service "
                 "creates as its own")
        return default
    if not DEPLOYMENT_ID_PATTERN.match(value):
        stop(f"{name} must be lowercase letters, digits and hyphens, starting with a letter or digit, "
             f"at most 31 characters, not {value!r}")
    return value

def github_settings() -> dict:
    """The GitHub git host's settings (GIT_HOST=github): a token or a GitHub App, never both."""
    organization = text("GITHUB_ORG")
    if not organization:
        stop("GIT_HOST=github needs GITHUB_ORG, the organization that holds the sandbox repositories")
    token = text("GITHUB_TOKEN")
    app = {name: text(name) for name in ("GITHUB_APP_ID", "GITHUB_APP_PRIVATE_KEY", "GITHUB_APP_PRIVATE_KEY_PATH",
                                          "GITHUB_APP_INSTALLATION_ID")}
    if token and any(app.values()):
        stop("set either GITHUB_TOKEN or the GITHUB_APP_* settings, not both")
    private_key = app["GITHUB_APP_PRIVATE_KEY"]
    if not token:
        if app["GITHUB_APP_PRIVATE_KEY"] and app["GITHUB_APP_PRIVATE_KEY_PATH"]:
            stop("set either GITHUB_APP_PRIVATE_KEY or GITHUB_APP_PRIVATE_KEY_PATH, not both")
        missing = [name for name in ("GITHUB_APP_ID", "GITHUB_APP_INSTALLATION_ID") if not app[name]]
        if not (app["GITHUB_APP_PRIVATE_KEY"] or app["GITHUB_APP_PRIVATE_KEY_PATH"]):
            missing.append("GITHUB_APP_PRIVATE_KEY (or GITHUB_APP_PRIVATE_KEY_PATH)")
        if len(missing) == 3:
            stop("GIT_HOST=github needs GITHUB_TOKEN, or a GitHub App: GITHUB_APP_ID, GITHUB_APP_PRIVATE_KEY"
                 " (or GITHUB_APP_PRIVATE_KEY_PATH) and GITHUB_APP_INSTALLATION_ID")
        if missing:
            stop(f"the GitHub App settings are incomplete: set {', '.join(missing)}")
        for name in ("GITHUB_APP_ID", "GITHUB_APP_INSTALLATION_ID"):
            if not app[name].isdigit():
                stop(f"{name} must be a number, not {app[name]!r}")
        if app["GITHUB_APP_PRIVATE_KEY_PATH"]:
            try:
                private_key = open(app["GITHUB_APP_PRIVATE_KEY_PATH"]).read()
            except OSError as error:
                stop(f"GITHUB_APP_PRIVATE_KEY_PATH cannot be read: {error.strerror}")
        if "PRIVATE KEY" not in private_key:
            stop("the GitHub App private key is not a PEM key (-----BEGIN RSA PRIVATE KEY----- ...)")
    return {
        "organization": organization,
        "api_url": text("GITHUB_API_URL", "https://api.github.com").rstrip("/"),
        "token": token,
        "app_id": app["GITHUB_APP_ID"],
        "app_private_key": private_key,
        "app_installation_id": int(app["GITHUB_APP_INSTALLATION_ID"] or 0),
        "private": flag("GITHUB_REPO_PRIVATE", default=True),
        "timeout": integer("GITHUB_TIMEOUT", 15, minimum=1),
        "retries": integer("GITHUB_RETRIES", 3, minimum=0),
        "max_rate_limit_wait": integer("GITHUB_MAX_RATE_LIMIT_WAIT", 60, minimum=0),
        "seconds_between_writes": float(integer("GITHUB_MS_BETWEEN_WRITES", 1000, minimum=0)) / 1000,
    }


def snapshot_s3_settings() -> dict:
    """The S3 snapshot store's settings (SNAPSHOT_STORE=s3): the bucket, a key prefix, retries and timeouts."""
    bucket = text("SNAPSHOT_S3_BUCKET")
    if not bucket:
        stop("SNAPSHOT_STORE=s3 needs SNAPSHOT_S3_BUCKET, the bucket that holds the snapshots")
    prefix = text("SNAPSHOT_S3_PREFIX").strip("/")
    return {
        "bucket": bucket,
        "prefix": f"{prefix}/" if prefix else "",
        "max_attempts": integer("SNAPSHOT_S3_MAX_ATTEMPTS", 5, minimum=1),
        "connect_timeout": integer("SNAPSHOT_S3_CONNECT_TIMEOUT", 5, minimum=1),
        "read_timeout": integer("SNAPSHOT_S3_READ_TIMEOUT", 60, minimum=1),
    }


_SIZE = re.compile(r"^\s*(\d+)\s*([bkmg]?)b?\s*$", re.IGNORECASE)
_SIZE_UNITS = {"": 1, "b": 1, "k": 1024, "m": 1024**2, "g": 1024**3}
_DOCKER_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")
_DOCKER_USER = re.compile(r"^(\d+)(?::(\d+))?$")
# Docker refuses a memory limit below 6 MiB.
_MIN_SANDBOX_MEMORY = 6 * 1024**2


def size(name: str, default: str, *, minimum: int = 1) -> int:
    """A size in bytes from '512m', '2g', '64k' or '1048576'."""
    raw = os.environ.get(name) or default
    match = _SIZE.match(raw)
    if not match:
        stop(f"{name} must be a size such as 512m, 2g or 65536 (bytes), not {raw!r}")
    value = int(match.group(1)) * _SIZE_UNITS[match.group(2).lower()]
    if value < minimum:
        stop(f"{name} must be at least {minimum} bytes, not {raw!r}")
    return value


def docker_sandbox_settings() -> dict:
    """The docker sandbox backend's settings (SANDBOX_BACKEND=docker): the image and each container's limits.

    The engine itself is named by Docker's own DOCKER_HOST, DOCKER_TLS_VERIFY
    and DOCKER_CERT_PATH, read by the Docker SDK.
    """
    image = text("SANDBOX_IMAGE", "sandbox-service-sandbox:latest")
    if not image or any(character.isspace() for character in image):
        stop(f"SANDBOX_IMAGE must name an image, e.g. sandbox-service-sandbox:latest, not {image!r}")
    user = text("SANDBOX_USER", "1000:1000")
    found = _DOCKER_USER.match(user)
    if not found:
        stop(f"SANDBOX_USER must be a numeric uid:gid such as 1000:1000, not {user!r}")
    if int(found.group(1)) == 0 or found.group(2) == "0":
        stop(f"SANDBOX_USER must not be root (uid or gid 0), not {user!r}: sandboxes run as a non-root user")
    network = text("SANDBOX_NETWORK", "none")
    if network in ("host", "bridge", "default") or network.startswith("container:") or not _DOCKER_NAME.match(network):
        stop(f"SANDBOX_NETWORK must be none or the name of a Docker network made for sandboxes, not {network!r}"
             " (never host, bridge or another container's network)")
    raw_cpus = text("SANDBOX_CPUS", "1")
    try:
        cpus = float(raw_cpus)
    except ValueError:
        cpus = 0.0
    if not 0.01 <= cpus <= 1024:
        stop(f"SANDBOX_CPUS must be a number of CPUs such as 1 or 0.5, not {raw_cpus!r}")
    runtime = text("SANDBOX_OCI_RUNTIME")
    if runtime and not _DOCKER_NAME.match(runtime):
        stop(f"SANDBOX_OCI_RUNTIME must be the name of a runtime the engine knows (e.g. runsc), not {runtime!r}")
    return {
        "image": image,
        "user": user if found.group(2) else f"{user}:{user}",
        "network": network,
        "memory_bytes": size("SANDBOX_MEMORY", "512m", minimum=_MIN_SANDBOX_MEMORY),
        "nano_cpus": int(cpus * 1_000_000_000),
        "pids": integer("SANDBOX_PIDS", 256, minimum=8),
        "tmp_bytes": size("SANDBOX_TMP_SIZE", "64m", minimum=1024**2),
        "oci_runtime": runtime,
        "engine_timeout": integer("SANDBOX_ENGINE_TIMEOUT", 60, minimum=1),
    }
