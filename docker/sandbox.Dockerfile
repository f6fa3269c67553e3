# The image sandboxes run in (SANDBOX_BACKEND=docker): git, bash, python3 and
# coreutils, as the user sandbox (1000:1000, SANDBOX_USER's default) in
# /workspace. SANDBOX_IMAGE names it; its default is the tag built here:
#
#   docker build -f docker/sandbox.Dockerfile -t sandbox-service-sandbox:latest .
#
# With no image registry, make the base from Debian's packages first
# (docker/debian-base.sh) and pass it as BASE; --network host lets apt-get
# reach the mirror when the engine runs with --bridge=none:
#
#   docker build --network host --build-arg BASE=debian-base:bookworm \
#     -f docker/sandbox.Dockerfile -t sandbox-service-sandbox:latest .
#
# No entrypoint: the backend gives each container its command.
ARG BASE=debian:bookworm-slim
FROM ${BASE}

RUN apt-get update \
    && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends \
        bash ca-certificates coreutils git python3 \
    && apt-get clean \
    && rm -rf /var/lib/apt/lists/*

# /workspace belongs to the user, so a named volume mounted there starts with that owner.
RUN groupadd --gid 1000 sandbox \
    && useradd --uid 1000 --gid 1000 --home-dir /workspace --no-create-home --shell /bin/bash sandbox \
    && mkdir -p /workspace \
    && chown 1000:1000 /workspace

USER 1000:1000
WORKDIR /workspace
