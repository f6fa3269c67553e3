"""How long one client waits for a setup, and where the wait goes: the queue's pickup, then the run itself.

    .venv/bin/python bench/latency.py                                # 30 setups on each configuration and backend
    .venv/bin/python bench/latency.py --backends local --setups 10   # a quicker look
    .venv/bin/python bench/latency.py --configurations redis --backends local,docker

Configurations (--configurations):

- embedded: what `make run` runs on, with no DATABASE_URL and no REDIS_URL:
  SQLite in the service's temporary VAR_DIR, django-q2's ORM broker on it,
  the database cache, the default number of workers (QUEUE_WORKERS unset).
- redis: PostgreSQL on 127.0.0.1:5432 (a throw-away database, bench_latency:
  dropped and created for each backend) and Redis on 127.0.0.1:6379 as broker
  and cache, with one worker (QUEUE_WORKERS=1).

Backends (--backends): local, and docker (SANDBOX_BACKEND=docker,
SANDBOX_IMAGE=$SANDBOX_TEST_IMAGE or sandbox-test:busybox). Docker is
skipped, with the reason printed, when `/usr/bin/docker info` does not
answer; its containers and volumes carry a deployment id of this run's own,
and whatever of them is left at the end is named and removed.

For each configuration and backend, the service as bench/service.py starts
it (production settings less HTTPS, gunicorn with 2 workers, one qcluster,
the local git host and snapshot store) and one client: one setup first that
is not counted (the worker's imports, the engine's client), then --setups in
a row, one account each, each started when the last has ended. The client
sends POST /api/sandboxes/setup and polls GET /api/tasks/runs?runId= every
--poll-ms (50, as a new user's script would) until the run has ended.

Printed, median and p95, each next to its target where it has one:

- pickup: the run's created_at (the request accepted it) to its started_at
  (a worker claimed it), from the run's own row. Target: median at most
  10 ms on redis, at most 50 ms embedded.
- the run: started_at to finished_at, from the row.
- request to COMPLETED, as the client saw it: from sending the request to
  the poll that saw COMPLETED (so up to one poll interval late). Target: on
  docker at most 0.5 s more than on local (medians, per configuration).

Figures, not assertions: bench/README.md has the last ones measured.
"""

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
import uuid

from service import BenchService, api_call, percentile

CONFIGURATIONS = ("embedded", "redis")
BACKENDS = ("local", "docker")
PICKUP_TARGETS = {"embedded": 0.050, "redis": 0.010}  # median, seconds
DOCKER_EXTRA_TARGET = 0.5  # docker's median request -> COMPLETED minus local's, seconds
DOCKER = "/usr/bin/docker"
ACTIVE = ("QUEUED", "EXECUTING")

SEED = """
import json, sys
from service import seed_accounts
print(json.dumps([key for _, key in seed_accounts(int(sys.argv[1]), prefix=sys.argv[2])]))
"""
# The runs' own recorded times, as seconds since the epoch.
RUN_TIMES = """
import json, sys
from sandboxes.models import SetupRun
moment = lambda value: value.timestamp() if value else None
print(json.dumps({run.pk: [run.status, moment(run.created_at), moment(run.started_at), moment(run.finished_at)]
                  for run in SetupRun.objects.filter(pk__in=sys.argv[1:])}))
"""


def parse_arguments(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--setups", type=int, default=30, help="setups counted on each (default 30)")
    parser.add_argument("--configurations", default=",".join(CONFIGURATIONS),
                        help=f"comma separated, of {', '.join(CONFIGURATIONS)} (default both)")
    parser.add_argument("--backends", default="local", help=f"comma separated, of {', '.join(BACKENDS)} "
                        "(default local)")
    parser.add_argument("--image", default=os.environ.get("SANDBOX_TEST_IMAGE") or "sandbox-test:busybox",
                        help="SANDBOX_IMAGE of the docker backend (default $SANDBOX_TEST_IMAGE or "
                             "sandbox-test:busybox)")
    parser.add_argument("--poll-ms", type=int, default=50, help="the client's poll interval (default 50 ms)")
    parser.add_argument("--database-url", default="postgres://postgres@127.0.0.1:5432/bench_latency",
                        help="redis configuration: a THROW-AWAY database, dropped and created (its name must "
                             "start with 'bench')")
    parser.add_argument("--redis-url", default="redis://127.0.0.1:6379/0")
    parser.add_argument("--timeout", type=int, default=120, help="longest wait for one run, in seconds")
    parser.add_argument("--json", action="store_true", help="also print the figures as one JSON line")
    arguments = parser.parse_args(argv)
    for name, known in (("configurations", CONFIGURATIONS), ("backends", BACKENDS)):
        chosen = [value.strip() for value in getattr(arguments, name).split(",") if value.strip()]
        unknown = sorted(set(chosen) - set(known))
        if unknown or not chosen:
            parser.error(f"--{name}: {', '.join(unknown) or 'none given'}; the choices are {', '.join(known)}")
        setattr(arguments, name, chosen)
    return arguments


def docker_unavailable() -> str:
    """Why the docker backend cannot be measured here; empty when the engine answers."""
    try:
        done = subprocess.run([DOCKER, "info"], capture_output=True, text=True, timeout=30, check=False)
    except (OSError, subprocess.TimeoutExpired) as exc:
        return f"{DOCKER} info: {exc}"
    if done.returncode:
        lines = [line for line in (done.stderr or done.stdout).splitlines() if line.strip()]
        return f"{DOCKER} info: {lines[-1] if lines else f'exit status {done.returncode}'}"
    return ""


# --- one client ------------------------------------------------------------------------------
def one_setup(base_url: str, key: str, *, poll: float, timeout: int) -> dict:
    """Request a setup and poll its run until it has ended: the run's id, its status, and the client's wait."""
    sent = time.perf_counter()
    run_id = api_call(base_url, key, "POST", "/api/sandboxes/setup", b"{}")["runId"]
    while True:
        time.sleep(poll)
        run = api_call(base_url, key, "GET", f"/api/tasks/runs?runId={run_id}")["runs"][0]
        if run["status"] not in ACTIVE:
            return {"run_id": run_id, "status": run["status"], "error": run.get("error") or "",
                    "seen": time.perf_counter() - sent}
        if time.perf_counter() - sent > timeout:
            raise SystemExit(f"run {run_id} did not end within {timeout} s (status {run['status']})")


def measure(configuration: str, backend: str, arguments, deployment: str) -> dict:
    variables = {"SANDBOX_BACKEND": backend, "SANDBOX_DEPLOYMENT_ID": deployment}
    if backend == "docker":
        variables["SANDBOX_IMAGE"] = arguments.image
    if configuration == "redis":
        service = BenchService(database_url=arguments.database_url, redis_url=arguments.redis_url,
                               QUEUE_WORKERS="1", **variables)
    else:
        service = BenchService(database_url=None, redis_url=None, **variables)
    poll = arguments.poll_ms / 1000
    try:
        print(f"{configuration}, {backend}: {service.database_name}: creating, migrating, seeding", file=sys.stderr)
        service.create_database()
        keys = service.django(SEED, str(arguments.setups + 1), f"latency{configuration}{backend}")
        service.start_web(workers=2)
        service.start_worker()
        warm = one_setup(service.base_url, keys.pop(), poll=poll, timeout=arguments.timeout)
        if warm["status"] != "COMPLETED":
            raise SystemExit(f"{configuration}, {backend}: the warm-up setup ended {warm['status']}: "
                             f"{warm['error']} (logs: {service.folder})")
        setups = []
        for number, key in enumerate(keys, start=1):
            setups.append(one_setup(service.base_url, key, poll=poll, timeout=arguments.timeout))
            if number % 10 == 0:
                print(f"  {number} of {len(keys)}", file=sys.stderr)
        times = service.django(RUN_TIMES, *(setup["run_id"] for setup in setups))
    finally:
        service.close()
    return figures(setups, times)


def figures(setups: list[dict], times: dict) -> dict:
    completed = [setup for setup in setups if setup["status"] == "COMPLETED"]
    rows = [times[setup["run_id"]] for setup in completed]
    measured = {
        "pickup": [started - created for _status, created, started, _finished in rows],
        "run": [finished - started for _status, _created, started, finished in rows],
        "request_to_finished": [finished - created for _status, created, _started, finished in rows],
        "seen": [setup["seen"] for setup in completed],
    }
    return {
        "setups": len(setups),
        "completed": len(completed),
        "failed": [f"{setup['run_id']} {setup['status']}: {setup['error']}" for setup in setups
                   if setup["status"] != "COMPLETED"],
        **{f"{name}_p50": statistics.median(values) if values else float("nan") for name, values in measured.items()},
        **{f"{name}_p95": percentile(values, 0.95) for name, values in measured.items()},
    }


# --- the report -------------------------------------------------------------------------------
def verdict(met: bool) -> str:
    return "met" if met else "MISSED"


def ms(seconds: float) -> str:
    return f"{seconds * 1000:.1f}" if seconds < 0.01 else f"{seconds * 1000:.0f}"


def print_report(results: dict, skipped: dict, arguments):
    print(f"\nSetups one at a time, one account each: {arguments.setups} counted after one warm-up; the client "
          f"polls every {arguments.poll_ms} ms. Times in ms, median / p95.")
    print("\n| configuration | backend | completed | pickup (created → started) | the run (started → finished) "
          "| request → finished_at | request → COMPLETED seen |")
    print("|---|---|---:|---:|---:|---:|---:|")
    for (configuration, backend), row in results.items():
        cells = [f"{ms(row[f'{name}_p50'])} / {ms(row[f'{name}_p95'])}"
                 for name in ("pickup", "run", "request_to_finished", "seen")]
        print(f"| {configuration} | {backend} | {row['completed']} of {row['setups']} | " + " | ".join(cells) + " |")
    for (configuration, backend), row in results.items():
        for failure in row["failed"][:5]:
            print(f"  {configuration}, {backend}: run {failure}")
    for backend, reason in skipped.items():
        print(f"{backend}: skipped: {reason}")
    print()
    for (configuration, backend), row in results.items():
        target = PICKUP_TARGETS[configuration]
        pickup = row["pickup_p50"]
        print(f"pickup median, {configuration}, {backend}: {pickup * 1000:.1f} ms "
              f"(target ≤ {target * 1000:.0f} ms: {verdict(pickup <= target)})")
    for configuration in arguments.configurations:
        local, docker = results.get((configuration, "local")), results.get((configuration, "docker"))
        if local and docker:
            extra = docker["seen_p50"] - local["seen_p50"]
            print(f"request → COMPLETED, {configuration}: docker {docker['seen_p50']:.2f} s, local "
                  f"{local['seen_p50']:.2f} s, {extra:+.2f} s (target ≤ +{DOCKER_EXTRA_TARGET} s: "
                  f"{verdict(extra <= DOCKER_EXTRA_TARGET)})")


def main(argv=None):
    arguments = parse_arguments(argv)
    skipped = {}
    if "docker" in arguments.backends:
        reason = docker_unavailable()
        if reason:
            skipped["docker"] = reason
            print(f"docker: skipped: {reason}", file=sys.stderr)
    backends = [backend for backend in arguments.backends if backend not in skipped]
    deployment = f"bench-latency-{uuid.uuid4().hex[:8]}"
    results = {}
    try:
        for configuration in arguments.configurations:
            for backend in backends:
                results[configuration, backend] = measure(configuration, backend, arguments, deployment)
    finally:
        if "docker" in backends:
            left = docker_leftovers(deployment)
            if left:
                print(f"left on the engine, now removed: {', '.join(left)}", file=sys.stderr)
    print_report(results, skipped, arguments)
    if arguments.json:
        print(json.dumps({"figures": {f"{configuration},{backend}": row
                                      for (configuration, backend), row in results.items()},
                          "skipped": skipped}))


def docker_leftovers(deployment: str) -> list[str]:
    """Containers and volumes with this run's deployment id (each run removes its own); removed if found."""
    import docker.errors
    import requests.exceptions
    from runtime import leftovers

    try:
        found = leftovers(deployment, [])
    except (docker.errors.DockerException, requests.exceptions.RequestException) as problem:
        # The engine went away: say what to look for.
        return [f"(could not be checked: {problem}; look for the label sandbox-service.deployment={deployment})"]
    return [*found["containers"], *found["volumes"]]


if __name__ == "__main__":
    main()
