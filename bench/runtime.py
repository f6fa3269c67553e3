"""The docker sandbox backend against its baselines: a whole setup against the local backend's, and
the start of a sandbox container against the Docker SDK's bare `containers.run`.

    .venv/bin/python bench/runtime.py                          # 20 setups each, 30 container starts each
    .venv/bin/python bench/runtime.py --image sandbox-service-sandbox:latest
    .venv/bin/python bench/runtime.py --only creates           # no service: the container starts alone

Needs a Docker engine (Docker's own DOCKER_HOST, or the local socket) that
holds `--image` (default sandbox-test:busybox: `bash docker/test-image.sh`),
and for the setups PostgreSQL on 127.0.0.1:5432 and Redis on 127.0.0.1:6379.

1. Setups. Two services as the other benchmarks start them (bench/service.py:
   a throw-away database each, bench_runtime_local and bench_runtime_docker,
   gunicorn with 2 workers, a qcluster on the Redis broker), one with
   SANDBOX_BACKEND=local, one with SANDBOX_BACKEND=docker, SANDBOX_IMAGE=--image
   and a SANDBOX_DEPLOYMENT_ID of this run's own (bench-runtime-...); the local
   git host and snapshot store for both. Setups go one at a time, one account
   each, alternating between the two services (which one goes first changes
   every round), after one warm-up setup on each that is not counted. The
   client sends POST /api/sandboxes/setup and polls GET /api/tasks/runs?runId=
   every --poll-ms until the run has ended; the figure is the time from
   sending to seeing COMPLETED. Target: the docker backend's median at most
   1.5 times the local backend's. The runs' own times (queue wait, time in the
   worker, each step) are printed beside it.

2. Container starts, in this process, no service: `DockerSandboxBackend.create()`
   (settings from config.environment.docker_sandbox_settings(), so the SANDBOX_*
   variables apply, with SANDBOX_IMAGE=--image) against the SDK's
   `client.containers.run(image, command=["sleep", "infinity"], detach=True)`,
   alternating, --creates of each after one warm-up of each. Only the create
   call is timed; each sandbox is stopped (container and volume removed) and
   each bare container removed outside the timed part. Throughput is starts
   / the sum of their times. Target: the backend at least 0.8 of the bare
   call. For reference, the same bare call with network_mode="none" (the
   sandbox's network) is timed in the same rotation, and every call each
   makes to the engine's API is counted and timed.

3. What the engine leaves for the target, when both parts ran: the engine
   calls of the three steps a setup makes one after another once its content
   exists (writing it, archiving it, removing the container and its volume:
   part 2's in-process medians, each call times its count) against what 1.5
   times the local median allows beyond the local setup. The start is left
   out, since it runs beside the repository's creation and the git work; the
   three cannot, each needing the one before it, and the run ends after the
   last. When they alone take more than the allowance, no work of the
   service's own can meet the target on that engine.

4. What is left: containers and volumes labelled with this run's deployment
   id, and the bare containers, must all be gone (target: none). Anything
   found is named, then removed.

Figures, not assertions: bench/README.md has the last ones measured.
"""

import argparse
import json
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from datetime import datetime
from functools import partial
from pathlib import Path

from service import ROOT, BenchService, api_call, percentile

SETUP_TARGET = 1.5  # docker's median setup / local's, at most
CREATE_TARGET = 0.8  # backend's create throughput / bare containers.run's, at least
DEFAULT_IMAGE = "sandbox-test:busybox"
BARE_COMMAND = ["sleep", "infinity"]
ACTIVE = ("QUEUED", "EXECUTING")
STEPS = ["create_sandbox", "ensure_repository", "provision", "snapshot", "save_snapshot", "shutdown"]

# Seeds accounts in a child process with a service's environment (Django runs
# once per process, and the two services have a database each).
SEED = """
import json, sys
from service import seed_accounts
import django
django.setup()
print(json.dumps([key for _, key in seed_accounts(int(sys.argv[1]), prefix=sys.argv[2])]))
"""


def parse_arguments(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--image", default=DEFAULT_IMAGE, help=f"SANDBOX_IMAGE (default {DEFAULT_IMAGE})")
    parser.add_argument("--setups", type=int, default=20, help="setups on each backend, counted (default 20)")
    parser.add_argument("--creates", type=int, default=30, help="container starts of each kind (default 30)")
    parser.add_argument("--profile", type=int, default=5,
                        help="sandboxes taken through a setup's steps in this process, call by call (default 5)")
    parser.add_argument("--poll-ms", type=int, default=25, help="the client's poll interval (default 25 ms)")
    parser.add_argument("--workers", type=int, default=1,
                        help="QUEUE_WORKERS of each qcluster (default 1: setups go one at a time)")
    parser.add_argument("--only", choices=["setups", "creates"], help="measure one part alone")
    parser.add_argument("--database-url", default="postgres://postgres@127.0.0.1:5432/bench_runtime",
                        help="THROW-AWAY databases: this name with _local and _docker appended, dropped and "
                             "created (the name must start with 'bench')")
    parser.add_argument("--redis-url", default="redis://127.0.0.1:6379/0")
    parser.add_argument("--keep-database", action="store_true")
    parser.add_argument("--timeout", type=int, default=120, help="longest wait for one run, in seconds")
    parser.add_argument("--json", action="store_true", help="also print the figures as one JSON line")
    return parser.parse_args(argv)


def verdict(met: bool) -> str:
    return "met" if met else "missed"


def ms(seconds: float) -> str:
    return f"{seconds * 1000:.0f}"


# --- 1. setups through the service ------------------------------------------------------------
def seed_keys(service: BenchService, count: int, prefix: str) -> list[str]:
    done = subprocess.run([sys.executable, "-c", SEED, str(count), prefix], cwd=ROOT / "bench", env=service.env,
                          capture_output=True, text=True, check=False)
    if done.returncode:
        raise SystemExit(f"seeding the accounts failed:\n{done.stderr[-2000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def one_setup(base_url: str, key: str, *, poll: float, timeout: int) -> dict:
    """Request a setup, poll the run until it has ended; the run as the API gives it, and the client's times."""
    sent_wall, sent = time.time(), time.perf_counter()
    run_id = api_call(base_url, key, "POST", "/api/sandboxes/setup", b"{}")["runId"]
    deadline = sent + timeout
    while True:
        time.sleep(poll)
        run = api_call(base_url, key, "GET", f"/api/tasks/runs?runId={run_id}")["runs"][0]
        if run["status"] not in ACTIVE:
            seen = time.perf_counter()
            break
        if time.perf_counter() > deadline:
            raise SystemExit(f"run {run_id} did not end within {timeout} s (status {run['status']})")
    return {"run": run, "seen_seconds": seen - sent, "sent_wall": sent_wall}


def _seconds(start: str | None, end: str | None) -> float:
    if not start or not end:
        return float("nan")
    return (datetime.fromisoformat(end) - datetime.fromisoformat(start)).total_seconds()


def setup_figures(setups: list[dict]) -> dict:
    completed = [setup for setup in setups if setup["run"]["status"] == "COMPLETED"]
    runs = [setup["run"] for setup in completed]
    steps: dict[str, list[float]] = {name: [] for name in STEPS}
    for run in runs:
        for step in run["metadata"]["steps"]:
            steps.setdefault(step["name"], []).append(_seconds(step["started"], step["finished"]))
    return {
        "setups": len(setups),
        "completed": len(completed),
        "failed": [(setup["run"]["id"], setup["run"]["status"], setup["run"]["error"]) for setup in setups
                   if setup["run"]["status"] != "COMPLETED"],
        "seen_p50": statistics.median([setup["seen_seconds"] for setup in completed]) if completed else float("nan"),
        "seen_p95": percentile([setup["seen_seconds"] for setup in completed], 0.95),
        "seen_min": min((setup["seen_seconds"] for setup in completed), default=float("nan")),
        "finished_p50": statistics.median(
            [datetime.fromisoformat(run["finishedAt"]).timestamp() - setup["sent_wall"]
             for setup, run in zip(completed, runs)]) if completed else float("nan"),
        "queued_p50": statistics.median([_seconds(run["createdAt"], run["startedAt"]) for run in runs])
        if runs else float("nan"),
        "worker_p50": statistics.median([_seconds(run["startedAt"], run["finishedAt"]) for run in runs])
        if runs else float("nan"),
        "steps_p50": {name: statistics.median(values) for name, values in steps.items() if values},
    }


def measure_setups(arguments, deployment: str) -> dict:
    common = {"redis_url": arguments.redis_url, "keep_database": arguments.keep_database,
              "QUEUE_WORKERS": str(arguments.workers), "THROTTLE_SETUP_RATE": "off"}
    services = {
        "local": BenchService(database_url=arguments.database_url + "_local", SANDBOX_BACKEND="local", **common),
        "docker": BenchService(database_url=arguments.database_url + "_docker", SANDBOX_BACKEND="docker",
                               SANDBOX_IMAGE=arguments.image, SANDBOX_DEPLOYMENT_ID=deployment, **common),
    }
    poll = arguments.poll_ms / 1000
    try:
        keys = {}
        for name, service in services.items():
            print(f"{name}: database {service.database_name}: creating, migrating, seeding", file=sys.stderr)
            service.create_database()
            keys[name] = seed_keys(service, arguments.setups + 1, prefix=f"runtime{name}")
            service.start_web(workers=2)
            service.start_worker()
        time.sleep(2)  # the clusters' workers start
        for name, service in services.items():  # warm-up: the worker's imports, the engine's client
            warm = one_setup(service.base_url, keys[name].pop(), poll=poll, timeout=arguments.timeout)
            if warm["run"]["status"] != "COMPLETED":
                raise SystemExit(f"the {name} warm-up setup ended {warm['run']['status']}: {warm['run']['error']}\n"
                                 f"(logs: {service.folder})")
        results = {name: [] for name in services}
        for number in range(arguments.setups):
            order = ["local", "docker"] if number % 2 == 0 else ["docker", "local"]
            for name in order:
                results[name].append(one_setup(services[name].base_url, keys[name][number], poll=poll,
                                               timeout=arguments.timeout))
            if number % 5 == 4:
                print(f"  {number + 1} of {arguments.setups} setups on each", file=sys.stderr)
        return {name: setup_figures(setups) for name, setups in results.items()}
    finally:
        for service in services.values():
            service.close()


# --- 2. container starts, no service --------------------------------------------------------
def _call_name(method: str, url: str) -> str:
    path = re.sub(r"^https?://[^/]+|^http\+docker://[^/]+", "", url).split("?")[0]
    path = re.sub(r"^/v[0-9.]+", "", path)
    path = re.sub(r"^/containers/(?!create$)[^/]+", "/containers/{id}", path)
    path = re.sub(r"^/volumes/(?!create$)[^/]+", "/volumes/{name}", path)
    return f"{method} {path}"


class CallLog:
    """Wraps an APIClient's `request` (it is a requests.Session): each engine call's name and time."""

    def __init__(self, api):
        self.calls: list[tuple[str, float]] | None = None
        original = api.request

        def request(method, url, *args, **kwargs):
            started = time.perf_counter()
            try:
                return original(method, url, *args, **kwargs)
            finally:
                if self.calls is not None:
                    self.calls.append((_call_name(method, url), time.perf_counter() - started))

        api.request = request

    def timed(self, action):
        """(seconds, result, the calls it made)."""
        self.calls = []
        started = time.perf_counter()
        result = action()
        seconds = time.perf_counter() - started
        calls, self.calls = self.calls, None
        return seconds, result, calls


def measure_creates(arguments, deployment: str, bare_ids: list[str]) -> dict:
    """The figures; the ids of the bare containers go into `bare_ids` as they are made."""
    import docker

    from config.environment import docker_sandbox_settings
    from sandboxes.providers.docker_sandbox import DockerSandboxBackend, DockerSandboxSettings
    from sandboxes.providers.snapshot_store import LocalSnapshotStore

    os.environ["SANDBOX_IMAGE"] = arguments.image
    settings = DockerSandboxSettings(**docker_sandbox_settings())
    scratch = Path(tempfile.mkdtemp(prefix="bench-runtime-"))
    backend = DockerSandboxBackend(settings=settings, store=LocalSnapshotStore(folder=scratch / "snapshots",
                                                                               deployment_id=deployment),
                                   scratch=scratch / "scratch", deployment_id=deployment, command_timeout=60)
    backend.ping()  # the engine answers and holds the image; the client is made
    client = docker.from_env()
    backend_log, bare_log = CallLog(backend.api), CallLog(client.api)
    kinds = {
        "backend": (backend_log, lambda: backend.create()),
        "bare": (bare_log, lambda: client.containers.run(arguments.image, command=BARE_COMMAND, detach=True)),
        "bare, network none": (bare_log, lambda: client.containers.run(arguments.image, command=BARE_COMMAND,
                                                                         detach=True, network_mode="none")),
    }

    def remove(kind, made):
        if kind == "backend":
            backend.stop(made)
        else:
            made.remove(force=True)

    times = {kind: [] for kind in kinds}
    calls = {kind: [] for kind in kinds}
    try:
        for kind, (log, action) in kinds.items():  # warm-up, not counted
            _, made, _ = log.timed(action)
            if kind != "backend":
                bare_ids.append(made.id)
            remove(kind, made)
        names = list(kinds)
        for number in range(arguments.creates):
            shift = number % len(names)
            for kind in names[shift:] + names[:shift]:
                log, action = kinds[kind]
                seconds, made, made_calls = log.timed(action)
                if kind != "backend":
                    bare_ids.append(made.id)
                times[kind].append(seconds)
                calls[kind].append(made_calls)
                remove(kind, made)
        profile = profile_steps(backend, backend_log, arguments.profile, scratch)
    finally:
        client.close()
        shutil.rmtree(scratch, ignore_errors=True)
    engine = client_info()
    figures = {
        "engine": engine,
        "settings": {"image": settings.image, "network": settings.network, "user": settings.user,
                     "runtime": settings.oci_runtime or "(engine's default)"},
        "creates": arguments.creates,
        "per_second": {kind: len(values) / sum(values) for kind, values in times.items()},
        "median_ms": {kind: statistics.median(values) * 1000 for kind, values in times.items()},
        "calls": {kind: summarize_calls(made) for kind, made in calls.items()},
        "profile": profile,
    }
    figures["ratio"] = figures["per_second"]["backend"] / figures["per_second"]["bare"]
    figures["ratio_network_none"] = figures["per_second"]["backend"] / figures["per_second"]["bare, network none"]
    return figures


def profile_steps(backend, log: "CallLog", cycles: int, scratch: Path) -> dict:
    """The backend's part of a setup's steps, `cycles` times: each step's time and the engine calls it makes."""
    checkout = scratch / "checkout"  # what provision writes: the starter layout, committed, .git included
    shutil.copytree(ROOT / "sandboxes" / "starter", checkout)
    for argv in (["git", "init", "--quiet", "--initial-branch=main"], ["git", "add", "--all"],
                 ["git", "-c", "user.name=bench", "-c", "user.email=bench@localhost", "commit", "--quiet",
                  "-m", "Set up sandbox"]):
        subprocess.run(argv, cwd=checkout, check=True, capture_output=True)
    steps = {"create_sandbox": [], "provision (write_tree)": [], "snapshot": [], "shutdown (stop)": []}
    calls = {name: [] for name in steps}
    for cycle in range(cycles + 1):  # the first is a warm-up
        made = {"create_sandbox": log.timed(backend.create)}
        sandbox_id = made["create_sandbox"][1]
        made["provision (write_tree)"] = log.timed(partial(backend.write_tree, sandbox_id, checkout))
        made["snapshot"] = log.timed(partial(backend.snapshot, sandbox_id))
        made["shutdown (stop)"] = log.timed(partial(backend.stop, sandbox_id))
        backend.delete_snapshot(made["snapshot"][1].snapshot_id)
        if cycle:
            for name, (seconds, _result, step_calls) in made.items():
                steps[name].append(seconds)
                calls[name].append(step_calls)
    return {name: {"median_ms": statistics.median(values) * 1000, "calls": summarize_calls(calls[name])}
            for name, values in steps.items()}


def summarize_calls(per_create: list[list[tuple[str, float]]]) -> list[tuple[str, float, float]]:
    """(call, calls per create, median ms) in the order the calls are made."""
    order: list[str] = []
    seen: dict[str, list[float]] = {}
    for made in per_create:
        for name, seconds in made:
            if name not in seen:
                order.append(name)
                seen[name] = []
            seen[name].append(seconds)
    return [(name, len(seen[name]) / len(per_create), statistics.median(seen[name]) * 1000) for name in order]


def client_info() -> str:
    import docker

    client = docker.from_env()
    try:
        info = client.info()
        networks = sorted(network.name for network in client.networks.list())
        return (f"Docker {info.get('ServerVersion')}, {info.get('Driver')}, runtime {info.get('DefaultRuntime')}, "
                f"cgroup v{info.get('CgroupVersion')}, {info.get('NCPU')} CPUs; networks: {', '.join(networks)}")
    finally:
        client.close()


# --- 4. what is left ------------------------------------------------------------------------
def leftovers(deployment: str, bare_ids: list[str]) -> dict:
    """What carries this run's deployment id, and which bare containers exist; whatever is found is removed."""
    import docker

    from sandboxes.providers.docker_sandbox import DEPLOYMENT_LABEL

    client = docker.from_env()
    try:
        marked = {"label": f"{DEPLOYMENT_LABEL}={deployment}"}
        containers = [container.name for container in client.containers.list(all=True, filters=marked)]
        volumes = [volume.name for volume in client.volumes.list(filters=marked)]
        bare = []
        for container_id in bare_ids:
            try:
                bare.append(client.containers.get(container_id).name)
            except docker.errors.NotFound:
                pass
        for name in [*containers, *bare]:
            client.api.remove_container(name, force=True)
        for name in volumes:
            client.api.remove_volume(name, force=True)
        return {"containers": containers, "volumes": volumes, "bare": bare, "bare_checked": len(bare_ids)}
    finally:
        client.close()


# --- the report -------------------------------------------------------------------------------
def print_setups(figures: dict, arguments):
    local, docker = figures["local"], figures["docker"]
    ratio = docker["seen_p50"] / local["seen_p50"]
    figures["ratio"] = ratio
    print(f"\n1. Setups: {arguments.setups} on each backend, one at a time, alternating; the client polls the run "
          f"every {arguments.poll_ms} ms; QUEUE_WORKERS={arguments.workers}; image {arguments.image}")
    print("\n| figure (ms) | local | docker | docker / local |\n|---|---:|---:|---:|")
    rows = [("request → COMPLETED seen by the client, median", "seen_p50"),
            ("request → COMPLETED seen by the client, p95", "seen_p95"),
            ("request → COMPLETED seen by the client, fastest", "seen_min"),
            ("request → the run's finishedAt, median", "finished_p50"),
            ("queue wait (createdAt → startedAt), median", "queued_p50"),
            ("the run in the worker (startedAt → finishedAt), median", "worker_p50")]
    for label, name in rows:
        print(f"| {label} | {ms(local[name])} | {ms(docker[name])} | {docker[name] / local[name]:.2f} |")
    for step in STEPS:
        if step in local["steps_p50"] and step in docker["steps_p50"]:
            left, right = local["steps_p50"][step], docker["steps_p50"][step]
            print(f"| step {step}, median | {left * 1000:.1f} | {right * 1000:.1f} | {right / left:.1f} |")
    print(f"\ncompleted: local {local['completed']} of {local['setups']}, docker {docker['completed']} of "
          f"{docker['setups']}")
    for backend in ("local", "docker"):
        for run_id, status, error in figures[backend]["failed"][:5]:
            print(f"  {backend} run {run_id} {status}: {error}")
    print(f"docker / local median setup: {ratio:.2f} (target ≤ {SETUP_TARGET}: {verdict(ratio <= SETUP_TARGET)})")


def print_creates(figures: dict):
    print(f"\n2. Container starts: {figures['creates']} of each, alternating; {figures['engine']}")
    settings = figures["settings"]
    print(f"   sandbox settings: network {settings['network']}, user {settings['user']}, "
          f"runtime {settings['runtime']}, image {settings['image']}")
    print("\n| start | per second | median ms |\n|---|---:|---:|")
    labels = {"backend": "`DockerSandboxBackend.create()`", "bare": "bare `containers.run`",
              "bare, network none": "bare `containers.run(network_mode=\"none\")` (reference)"}
    for kind, label in labels.items():
        print(f"| {label} | {figures['per_second'][kind]:.2f} | {figures['median_ms'][kind]:.0f} |")
    print("\nengine calls per start (median ms each):")
    for kind, label in labels.items():
        made = ", ".join(f"{name} ×{count:g} {median:.1f}" for name, count, median in figures["calls"][kind])
        print(f"  {label}: {made}")
    ratio = figures["ratio"]
    print("\nthe backend's part of a setup's steps, in this process (median ms; engine calls, median ms each):")
    for step, profile in figures["profile"].items():
        made = ", ".join(f"{name} ×{count:g} {median:.1f}" for name, count, median in profile["calls"])
        print(f"  {step}: {profile['median_ms']:.0f} ms: {made}")
    print(f"backend / bare throughput: {ratio:.2f} (target ≥ {CREATE_TARGET}: {verdict(ratio >= CREATE_TARGET)}); "
          f"against the bare call with network none: {figures['ratio_network_none']:.2f}")


# The steps of part 2's profile that follow one another once a setup's content exists.
SERIAL_STEPS = ("provision (write_tree)", "snapshot", "shutdown (stop)")


def engine_allowance(setups: dict, creates: dict) -> dict:
    """The engine's time for a setup's serial steps, against what the target allows beyond a local setup."""
    serial_ms = sum(count * median for step in SERIAL_STEPS
                    for _name, count, median in creates["profile"][step]["calls"])
    allowed_ms = (SETUP_TARGET - 1) * setups["local"]["seen_p50"] * 1000
    return {"serial_ms": serial_ms, "allowed_ms": allowed_ms}


def print_engine_allowance(found: dict):
    print(f"\n3. The engine's calls of a setup's serial steps (write, archive, remove; part 2's medians): "
          f"{found['serial_ms']:.0f} ms; the target allows {found['allowed_ms']:.0f} ms beyond the local setup: "
          + ("no work of the service's own can meet it on this engine" if found["serial_ms"] > found["allowed_ms"]
             else f"{found['allowed_ms'] - found['serial_ms']:.0f} ms are left for the rest"))


def print_leftovers(found: dict, deployment: str):
    left = len(found["containers"]) + len(found["volumes"]) + len(found["bare"])
    print(f"\n4. Left behind: {len(found['containers'])} containers and {len(found['volumes'])} volumes labelled "
          f"with deployment {deployment}, {len(found['bare'])} of the {found['bare_checked']} bare containers "
          f"(target: none: {verdict(left == 0)})")
    for kind in ("containers", "volumes", "bare"):
        if found[kind]:
            print(f"   found and removed ({kind}): {', '.join(found[kind])}")


def main(argv=None):
    arguments = parse_arguments(argv)
    deployment = f"bench-runtime-{uuid.uuid4().hex[:8]}"
    figures: dict = {"deployment": deployment}
    bare_ids: list[str] = []
    try:
        if arguments.only != "creates":
            figures["setups"] = measure_setups(arguments, deployment)
            print_setups(figures["setups"], arguments)
        if arguments.only != "setups":
            from sandboxes.providers.base import SandboxBackendError

            try:
                figures["creates"] = measure_creates(arguments, deployment, bare_ids)
            except SandboxBackendError as exc:
                raise SystemExit(f"container starts: {exc}") from None
            print_creates(figures["creates"])
        if "setups" in figures and "creates" in figures:
            figures["engine_allowance"] = engine_allowance(figures["setups"], figures["creates"])
            print_engine_allowance(figures["engine_allowance"])
    finally:
        import docker.errors
        import requests.exceptions

        try:
            found = leftovers(deployment, bare_ids)
        except (docker.errors.DockerException, requests.exceptions.RequestException) as problem:
            # The engine went away: say what to look for, and keep the first error.
            print(f"\n4. Left behind: could not be checked ({problem}); look for containers and volumes labelled "
                  f"sandbox-service.deployment={deployment}", file=sys.stderr)
        else:
            figures["leftovers"] = found
            print_leftovers(found, deployment)
    if arguments.json:
        print(json.dumps(figures, default=str))


if __name__ == "__main__":
    main()
