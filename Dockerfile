# The sandbox service as an image: gunicorn (the default command) or the
# django-q2 worker (`python manage.py qcluster`), as a non-root user, with the
# static files collected at build. docs/container-image.md has the settings
# and how to run it; compose.yaml runs the whole service.
#
#   docker build -t sandbox-service .
#
# With no image registry, make a Debian base from Debian's packages first
# (docker/debian-base.sh; its python3 is 3.11) and pass it as BASE;
# --network host lets apt-get and pip reach their indexes when the engine
# runs with --bridge=none:
#
#   docker build --network host --build-arg BASE=debian-base:bookworm -t sandbox-service .
#
# A base without Python (Debian's) gets python3 from apt; the official
# Python image keeps its own. Either way both stages use the same base, so
# the virtual environment's interpreter is at the same path in each.
ARG BASE=python:3.11-slim

# --- base: the base image with what both stages need ---------------------------
# git: the local git host's repositories and every checkout the service makes.
FROM ${BASE} AS base
RUN apt-get update \
    && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends \
        ca-certificates git $(command -v python3 >/dev/null || echo python3 python3-venv) \
    && apt-get clean \
    && rm -rf /var/lib/apt/lists/*

# --- build: the dependencies of pyproject.toml in a virtual environment --------
FROM base AS build

# PEM certificates pip should trust besides the base's, for a build behind a
# proxy that re-signs TLS (a company's egress proxy): e.g.
# --build-arg CA_CERTIFICATES="$(cat /usr/local/share/ca-certificates/*.crt)".
# Only this stage trusts them; the image that runs does not.
ARG CA_CERTIFICATES=""

ENV PIP_CERT=/etc/ssl/certs/ca-certificates.crt \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_NO_CACHE_DIR=1 \
    PYTHONDONTWRITEBYTECODE=1

# Only pyproject.toml: the dependencies' layer is rebuilt when they change,
# not on every change of the code.
COPY pyproject.toml /tmp/pyproject.toml
RUN if [ -n "$CA_CERTIFICATES" ]; then printf '%s\n' "$CA_CERTIFICATES" >> /etc/ssl/certs/ca-certificates.crt; fi \
    && python3 -c "import tomllib; print('\n'.join(tomllib.load(open('/tmp/pyproject.toml', 'rb'))['project']['dependencies']))" \
        > /tmp/requirements.txt \
    && python3 -m venv /opt/venv \
    && /opt/venv/bin/pip install --no-compile -r /tmp/requirements.txt

# --- runtime -------------------------------------------------------------------
FROM base AS runtime

# The user the service runs as; its state (VAR_DIR) is /var/lib/sandbox-service,
# with the local git host's repositories and the sandboxes' folders in it.
RUN groupadd --system --gid 10001 app \
    && useradd --system --uid 10001 --gid 10001 --home-dir /home/app --create-home --shell /usr/sbin/nologin app \
    && mkdir -p /var/lib/sandbox-service/git /var/lib/sandbox-service/sandboxes \
    && chown -R app:app /var/lib/sandbox-service

COPY --from=build /opt/venv /opt/venv
WORKDIR /app
COPY --chown=root:root . /app

ENV PATH=/opt/venv/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    VAR_DIR=/var/lib/sandbox-service \
    PORT=8000 \
    WEB_CONCURRENCY=2

# The static files (admin, API docs) into VAR_DIR/static, served by WhiteNoise.
# The settings refuse to load without their secrets when DEBUG is off: this
# one command gets throw-away values, which end with it.
RUN SECRET_KEY=collectstatic-only API_KEY_PEPPER=collectstatic-only ALLOWED_HOSTS=localhost \
        python manage.py collectstatic --noinput --verbosity 0 \
    && chown -R app:app /var/lib/sandbox-service/static \
    && python -m compileall -q /app /opt/venv >/dev/null

USER app
EXPOSE 8000

# /healthz answers 200 when the database and the queue's broker answer.
HEALTHCHECK --interval=15s --timeout=5s --start-period=20s --retries=3 \
    CMD ["python", "/app/docker/healthcheck.py"]

# The web server: gunicorn binds 0.0.0.0:$PORT and starts $WEB_CONCURRENCY
# workers (gunicorn reads both). The worker is the same image with
# `python manage.py qcluster`; migrations are `python manage.py migrate`.
CMD ["gunicorn", "config.wsgi", "--access-logfile", "-"]
