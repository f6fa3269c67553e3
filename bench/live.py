"""Live sandboxes on the docker backend: a command's round trip through the API against the Docker SDK's bare
`exec_run` on the same container, and the start of a sandbox from a 10 MiB snapshot.

    .venv/bin/python bench/live.py                          # 200 commands of each kind, 10 starts
    .venv/bin/python bench/live.py --commands 500 --starts 20
    .venv/bin/python bench/live.py --image sandbox-service-sandbox:latest

Needs a Docker engine (Docker's own DOCKER_HOST, or the local socket) that
holds `--image` (default sandbox-test:busybox: `bash docker/test-image.sh`),
PostgreSQL on 127.0.0.1:5432 and Redis on 127.0.0.1:6379. One service as the
other benchmarks start it (bench/service.py: a throw-away database,
bench_live, gunicorn with 2 workers, a qcluster on the Redis broker, the local
git host and snapshot store) with SANDBOX_BACKEND=docker, SANDBOX_IMAGE=--image
and a SANDBOX_DEPLOYMENT_ID of this run's own (bench-live-...). The rate
limits stay on with rates that never refuse. One account with a key (scopes
sandboxes:read, sandboxes:setup, sandboxes:exec) is set up
(POST /api/sandboxes/setup, polled to COMPLETED) and its sandbox started
(POST /api/sandboxes).

1. Commands. `{"command": "true"}` to POST /api/sandboxes/commands over HTTP,
   one at a time, against the SDK's `container.exec_run(["true"])` on the
   same container (found by its label sandbox-service.holder=<sandboxId>),
   --commands of each after --warm-up of each, in rotation (which goes first
   changes every round). Target: the API's p50 at most 30 ms more than the
   bare call's. Two references in the same rotation: the same request in this
   process through Django's test client (no HTTP, no gunicorn), with the time
   and this process's CPU of its queries and of the backend's execute() within
   it; and `exec_run` of the program the service runs around a client's
   command (commands.FOREGROUND: its pid recorded, `timeout` around it). The
   API's own durationMs (the exec's output stream) is printed beside them.
   Then, in this process, the backend's `execute()` alone, call by call
   (--profile times), with a backend made for each call (as each request makes
   one) and with one reused; and the CPU per command of gunicorn, PostgreSQL,
   Redis and the engine (from /proc), --cpu through the API back to back, then
   --cpu bare.

2. Starts. ~10 MiB of random (incompressible) bytes are uploaded into the
   workspace (POST /api/sandboxes/files, --files files in one request, base64),
   the sandbox is stopped (POST /api/sandboxes/stop: a new snapshot), and the
   snapshot archive's size is printed. Then --starts times: POST /api/sandboxes
   timed to its answer with sandboxStatus running (polling GET /api/sandboxes
   if it answers before), then, outside the timed part, POST
   /api/sandboxes/stop {"snapshot": false}, so every start restores the same
   snapshot. Target: median at most 1 s. Then, in this process, the backend's
   `restore()` of that snapshot, part by part and call by call (--profile times).

3. What is left: containers and volumes labelled with this run's deployment
   id (target: none). Anything found is named, then removed.

Figures, not assertions: bench/README.md has the last ones measured.
"""

import argparse
import base64
import http.client
import json
import os
import re
import secrets
import shutil
import statistics
import sys
import tempfile
import time
import uuid
from pathlib import Path

from cpu import PROC, CpuMeter, cpu_per_request
from runtime import (
    DEFAULT_IMAGE,
    CallLog,
    client_info,
    leftovers,
    seed_keys,
    summarize_calls,
    verdict,
)
from service import BenchService, percentile

COMMAND_TARGET_MS = 30  # the API's p50 minus the bare exec_run's p50, at most
START_TARGET_SECONDS = 1.0  # median start from the snapshot to running, at most
MIB = 1024 * 1024
ACTIVE = ("QUEUED", "EXECUTING")
HOLDER_LABEL = "sandbox-service.holder"


def parse_arguments(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--image", default=DEFAULT_IMAGE, help=f"SANDBOX_IMAGE (default {DEFAULT_IMAGE})")
    parser.add_argument("--commands", type=int, default=200, help="commands of each kind, counted (default 200)")
    parser.add_argument("--warm-up", type=int, default=10, help="commands of each kind first, not counted")
    parser.add_argument("--starts", type=int, default=10, help="starts from the snapshot, counted (default 10)")
    parser.add_argument("--snapshot-mib", type=float, default=10,
                        help="MiB of random bytes uploaded before the snapshot (default 10, the upload limit)")
    parser.add_argument("--files", type=int, default=4, help="the files those bytes are uploaded in (default 4)")
    parser.add_argument("--profile", type=int, default=20,
                        help="commands, and a quarter as many restores, taken call by call in this process")
    parser.add_argument("--cpu", type=int, default=100,
                        help="commands of each kind, back to back, for their CPU per command (default 100; 0: none)")
    parser.add_argument("--database-url", default="postgres://postgres@127.0.0.1:5432/bench_live",
                        help="a THROW-AWAY database, dropped and created (its name must start with 'bench')")
    parser.add_argument("--redis-url", default="redis://127.0.0.1:6379/0")
    parser.add_argument("--keep-database", action="store_true")
    parser.add_argument("--timeout", type=int, default=120, help="longest wait for the setup run, in seconds")
    parser.add_argument("--json", action="store_true", help="also print the figures as one JSON line")
    return parser.parse_args(argv)


# --- the API over HTTP ------------------------------------------------------------------------
class ApiFailure(Exception):
    pass


class Api:
    """One request per connection, as gunicorn's sync workers answer them."""

    def __init__(self, base_url: str, key: str):
        host_port = base_url.split("://", 1)[1]
        self.host, _, port = host_port.partition(":")
        self.port = int(port)
        self.key = key

    def request(self, method: str, path: str, body: dict | None = None) -> tuple[int, dict, float]:
        """(status, answer, seconds from sending to the whole answer read)."""
        data = json.dumps(body).encode() if body is not None else None
        headers = {"x-api-key": self.key, "Content-Type": "application/json"}
        started = time.perf_counter()
        connection = http.client.HTTPConnection(self.host, self.port, timeout=120)
        try:
            connection.request(method, path, body=data, headers=headers)
            answer = connection.getresponse()
            raw = answer.read()
        finally:
            connection.close()
        seconds = time.perf_counter() - started
        try:
            parsed = json.loads(raw)
        except ValueError:
            parsed = {"(not JSON)": raw[:500].decode("utf-8", "replace")}
        return answer.status, parsed, seconds

    def ok(self, method: str, path: str, body: dict | None = None, expect=(200,)) -> tuple[dict, float]:
        status, answer, seconds = self.request(method, path, body)
        if status not in expect:
            shown = json.dumps(body)[:200] if body is not None else ""
            raise ApiFailure(f"{method} {path} {shown} answered {status}: {json.dumps(answer)[:1000]}")
        return answer, seconds


def set_up(api: Api, timeout: int) -> dict:
    answer, _ = api.ok("POST", "/api/sandboxes/setup", {})
    run_id = answer["runId"]
    deadline = time.monotonic() + timeout
    while True:
        time.sleep(0.1)
        run = api.ok("GET", f"/api/tasks/runs?runId={run_id}")[0]["runs"][0]
        if run["status"] not in ACTIVE:
            break
        if time.monotonic() > deadline:
            raise ApiFailure(f"setup run {run_id} did not end within {timeout} s (status {run['status']})")
    if run["status"] != "COMPLETED":
        raise ApiFailure(f"setup run {run_id} ended {run['status']}: {run.get('error')}")
    return run


def start(api: Api) -> tuple[dict, float]:
    """POST /api/sandboxes; (the sandbox, seconds from sending to seeing it running)."""
    started = time.perf_counter()
    answer, _ = api.ok("POST", "/api/sandboxes", {})
    sandbox = answer["sandboxes"][0]
    while sandbox["sandboxStatus"] == "pending":
        time.sleep(0.01)
        sandbox = api.ok("GET", "/api/sandboxes")[0]["sandbox"]
    seconds = time.perf_counter() - started
    if sandbox["sandboxStatus"] != "running":
        raise ApiFailure(f"POST /api/sandboxes gave a sandbox {sandbox['sandboxStatus']}: {json.dumps(sandbox)}")
    return sandbox, seconds


def stop(api: Api, *, snapshot: bool) -> tuple[dict, float]:
    answer, seconds = api.ok("POST", "/api/sandboxes/stop", {"snapshot": snapshot})
    return answer, seconds


# --- 1. commands --------------------------------------------------------------------------------
def sandbox_container(client, sandbox_id: str):
    found = client.containers.list(filters={"label": f"{HOLDER_LABEL}={sandbox_id}"})
    if len(found) != 1:
        raise ApiFailure(f"{len(found)} running containers carry {HOLDER_LABEL}={sandbox_id}, not 1")
    return found[0]


class InProcessRequest:
    """The same request in this process: Django's test client (no HTTP, no gunicorn) on the service's database
    and settings. Each call gives its time and this process's CPU, and within them the backend's execute() and
    the queries (their count, time and CPU)."""

    PARTS = ("execute", "queries")

    def __init__(self, service: BenchService, key: str):
        service.open_django()
        from django.db import connection
        from django.test import Client

        from sandboxes.providers.docker_sandbox import DockerSandboxBackend

        self.key, self.client, self.connection = key, Client(), connection
        self.spent: dict = {}
        self.backend_class, self.original = DockerSandboxBackend, DockerSandboxBackend.execute
        original = self.original

        def execute(backend, *args, **kwargs):
            return self._timing("execute", lambda: original(backend, *args, **kwargs))

        DockerSandboxBackend.execute = execute
        connection.execute_wrappers.append(self._query)

    def _timing(self, part: str, function, *args):
        wall, cpu = time.perf_counter(), time.process_time()
        try:
            return function(*args)
        finally:
            spent_wall, spent_cpu = self.spent[part]
            self.spent[part] = (spent_wall + time.perf_counter() - wall, spent_cpu + time.process_time() - cpu)

    def _query(self, run, sql, params, many, context):
        self.spent["count"] += 1
        return self._timing("queries", run, sql, params, many, context)

    def __call__(self) -> tuple[float, dict]:
        self.spent = {**{part: (0.0, 0.0) for part in self.PARTS}, "count": 0}
        wall, cpu = time.perf_counter(), time.process_time()
        answer = self.client.post("/api/sandboxes/commands", data=json.dumps({"command": "true"}),
                                  content_type="application/json", HTTP_X_API_KEY=self.key)
        wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
        if answer.status_code != 200 or answer.json()["exitCode"] != 0:
            raise ApiFailure(f"POST /api/sandboxes/commands in this process answered {answer.status_code}: "
                             f"{answer.content[:500]!r}")
        spent = self.spent
        rest = tuple(total - spent["execute"][index] - spent["queries"][index]
                     for index, total in enumerate((wall, cpu)))
        return wall, {"total": (wall, cpu), "execute": spent["execute"], "queries": spent["queries"], "rest": rest,
                      "count": spent["count"]}

    def close(self):
        self.backend_class.execute = self.original
        self.connection.execute_wrappers.remove(self._query)
        self.connection.close()

    @staticmethod
    def figures(rows: list[dict]) -> dict:
        figures = {"query_count": statistics.median(row["count"] for row in rows)}
        for part in ("total", *InProcessRequest.PARTS, "rest"):
            figures[part] = {"wall_ms": statistics.median(row[part][0] for row in rows) * 1000,
                             "cpu_ms": statistics.median(row[part][1] for row in rows) * 1000}
        return figures


def measure_commands(api: Api, container, in_process: InProcessRequest, arguments) -> dict:
    from sandboxes.providers import commands
    from sandboxes.providers.docker_sandbox import COMMANDS_FOLDER, WORKSPACE

    def through_api():
        answer, seconds = api.ok("POST", "/api/sandboxes/commands", {"command": "true"})
        if answer["exitCode"] != 0:
            raise ApiFailure(f"`true` through the API: {json.dumps(answer)}")
        return seconds, answer["durationMs"] / 1000

    def bare():
        started = time.perf_counter()
        result = container.exec_run(["true"])
        seconds = time.perf_counter() - started
        if result.exit_code != 0:
            raise ApiFailure(f"bare exec_run(['true']) exited {result.exit_code}: {result.output!r}")
        return seconds, None

    def wrapped():
        argv = ["sh", "-c", commands.FOREGROUND, "cmd_" + secrets.token_hex(12), COMMANDS_FOLDER, WORKSPACE, "60",
                "true"]
        started = time.perf_counter()
        result = container.exec_run(argv, workdir=WORKSPACE)
        seconds = time.perf_counter() - started
        if result.exit_code != 0:
            raise ApiFailure(f"exec_run of the service's program exited {result.exit_code}: {result.output!r}")
        return seconds, None

    kinds = {"api": through_api, "in_process": in_process, "bare": bare, "wrapped": wrapped}
    names = list(kinds)
    for _ in range(arguments.warm_up):
        for kind in names:
            kinds[kind]()
    times = {kind: [] for kind in kinds}
    extra = {"api": [], "in_process": []}  # the API's durationMs (the exec's stream); the in-process parts
    for number in range(arguments.commands):
        shift = number % len(names)
        for kind in names[shift:] + names[:shift]:
            seconds, more = kinds[kind]()
            times[kind].append(seconds)
            if more is not None:
                extra[kind].append(more)
        if number % 50 == 49:
            print(f"  {number + 1} of {arguments.commands} commands of each kind", file=sys.stderr)
    figures = {kind: {"p50_ms": percentile(values, 0.5) * 1000, "p99_ms": percentile(values, 0.99) * 1000,
                      "mean_ms": statistics.fmean(values) * 1000} for kind, values in times.items()}
    figures["api_duration_p50_ms"] = percentile(extra["api"], 0.5) * 1000
    figures["in_process_parts"] = InProcessRequest.figures(extra["in_process"])
    figures["difference_p50_ms"] = figures["api"]["p50_ms"] - figures["bare"]["p50_ms"]
    figures["count"] = arguments.commands
    return figures


def by_kind(calls: list[tuple[str, float]]) -> list[tuple[str, float]]:
    """Engine calls named without the exec's id (runtime.py's CallLog names containers and volumes so)."""
    return [(re.sub(r"^(\w+ /exec/)[0-9a-f]+", r"\1{id}", name), seconds) for name, seconds in calls]


def local_backend(deployment: str, image: str, snapshots: Path, scratch: Path):
    """A DockerSandboxBackend in this process, with the service's settings and snapshot store."""
    from config.environment import docker_sandbox_settings
    from sandboxes.providers.docker_sandbox import DockerSandboxBackend, DockerSandboxSettings
    from sandboxes.providers.snapshot_store import LocalSnapshotStore

    os.environ["SANDBOX_IMAGE"] = image
    return DockerSandboxBackend(settings=DockerSandboxSettings(**docker_sandbox_settings()),
                                store=LocalSnapshotStore(folder=snapshots, deployment_id=deployment),
                                scratch=scratch, deployment_id=deployment, command_timeout=60)


def profile_commands(container, deployment: str, arguments, snapshots: Path, scratch: Path) -> dict:
    """The backend's execute() on the sandbox's container, call by call: a backend per call, and one reused."""
    from sandboxes.providers.base import CommandSpec

    runtime_id = container.name[len(deployment) + 1:]
    reused = local_backend(deployment, arguments.image, snapshots, scratch)
    reused_log = CallLog(reused.api)

    def spec():
        return CommandSpec(command_id="cmd_" + secrets.token_hex(12), argv=("true",))

    def fresh():
        started = time.perf_counter()
        backend = local_backend(deployment, arguments.image, snapshots, scratch)
        log = CallLog(backend.api)  # the client is made here, as a request's first engine call makes it
        made = time.perf_counter() - started
        seconds, output, calls = log.timed(lambda: backend.execute(runtime_id, spec(), output_cap=50_000))
        backend._client.close()
        return made, seconds, output, calls

    results = {"fresh": [], "reused": []}
    made_times, fresh_calls, reused_calls = [], [], []
    for number in range(arguments.profile + 1):  # the first is a warm-up
        made, seconds, output, calls = fresh()
        seconds_reused, output_reused, calls_reused = reused_log.timed(
            lambda: reused.execute(runtime_id, spec(), output_cap=50_000))
        if output.exit_code != 0 or output_reused.exit_code != 0:
            raise ApiFailure(f"execute(['true']) in this process exited {output.exit_code}, {output_reused.exit_code}")
        if number:
            made_times.append(made)
            results["fresh"].append(seconds)
            results["reused"].append(seconds_reused)
            fresh_calls.append(by_kind(calls))
            reused_calls.append(by_kind(calls_reused))
    reused._client.close()
    return {
        "client_made_ms": statistics.median(made_times) * 1000,
        "fresh_ms": statistics.median(results["fresh"]) * 1000,
        "reused_ms": statistics.median(results["reused"]) * 1000,
        "fresh_calls": summarize_calls(fresh_calls),
        "reused_calls": summarize_calls(reused_calls),
    }


ENGINE_PROCESSES = ("dockerd", "containerd", "containerd-shim", "runc")


def engine_cpu_seconds() -> float:
    """CPU seconds so far of the engine's processes (dockerd, containerd, each container's shim and what ended
    under them: runc, the processes of each exec), from /proc."""
    processes = {}
    for entry in PROC.iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        name = stat[stat.index("(") + 1:stat.rindex(")")]
        fields = stat[stat.rindex(")") + 2:].split()
        processes[int(entry.name)] = (int(fields[1]), name, int(fields[11]) + int(fields[12]),
                                      int(fields[13]) + int(fields[14]))
    ticks = 0
    for parent, name, own, children in processes.values():
        if name.startswith(ENGINE_PROCESSES):
            ticks += own
            if not processes.get(parent, (0, ""))[1].startswith(ENGINE_PROCESSES):
                ticks += children
    return ticks / os.sysconf("SC_CLK_TCK")


def measure_cpu(service: BenchService, api: Api, container, count: int) -> dict:
    """CPU per command: `count` through the API back to back, then `count` bare, each between two readings."""
    meter = CpuMeter(gunicorn_pid=service.processes["gunicorn"].pid)
    figures = {}
    actions = {"api": lambda: api.ok("POST", "/api/sandboxes/commands", {"command": "true"}),
               "bare": lambda: container.exec_run(["true"])}
    for kind, action in actions.items():
        before, engine_before, started = meter.reading(), engine_cpu_seconds(), time.perf_counter()
        for _ in range(count):
            action()
        seconds = time.perf_counter() - started
        after, engine_after = meter.reading(), engine_cpu_seconds()
        figures[kind] = {**cpu_per_request(before, after, count), "engine": (engine_after - engine_before) * 1000
                         / count, "wall_ms": seconds * 1000 / count}
    return figures


# --- 2. starts ----------------------------------------------------------------------------------
def fill_workspace(api: Api, arguments) -> tuple[int, float]:
    """Random bytes into the workspace in --files files through POST /api/sandboxes/files; (bytes, seconds)."""
    total = int(arguments.snapshot_mib * MIB)
    sizes = [total // arguments.files + (1 if index < total % arguments.files else 0)
             for index in range(arguments.files)]
    files = [{"path": f"data/random-{index}.bin", "content": base64.b64encode(os.urandom(size)).decode("ascii"),
              "encoding": "base64"} for index, size in enumerate(sizes)]
    answer, seconds = api.ok("POST", "/api/sandboxes/files", {"files": files, "message": "Random bytes"})
    if len(answer["uploaded"]) != len(files):
        raise ApiFailure(f"the upload answered {len(answer['uploaded'])} files of {len(files)}")
    return total, seconds


def measure_starts(api: Api, arguments) -> dict:
    times, stops = [], []
    for number in range(arguments.starts):
        _sandbox, seconds = start(api)
        times.append(seconds)
        _answer, stop_seconds = stop(api, snapshot=False)
        stops.append(stop_seconds)
    return {"count": len(times), "times_s": times, "median_s": statistics.median(times),
            "p90_s": percentile(times, 0.9), "min_s": min(times), "max_s": max(times),
            "stop_median_s": statistics.median(stops)}


def profile_restores(deployment: str, arguments, snapshot_id: str, snapshots: Path, scratch: Path) -> dict:
    """The backend's restore() of the snapshot in this process: each part's time and its engine calls."""
    backend = local_backend(deployment, arguments.image, snapshots, scratch)
    log = CallLog(backend.api)
    parts: dict[str, list[float]] = {}

    def timed(name, function):
        def wrapper(*args, **kwargs):
            started = time.perf_counter()
            try:
                return function(*args, **kwargs)
            finally:
                parts.setdefault(name, []).append(time.perf_counter() - started)
        return wrapper

    backend.store.get = timed("store.get (checksum, link or copy)", backend.store.get)
    backend.create = timed("create (the container and its workspace, start)", backend.create)
    backend._put = timed("_put (rewrite the archive, put_archive)", backend._put)
    backend.ping()
    totals, calls = [], []
    rounds = max(1, arguments.profile // 4)
    for number in range(rounds + 1):  # the first is a warm-up
        if not number:
            sandbox_id = backend.restore(snapshot_id)
            backend.stop(sandbox_id)
            parts.clear()
            continue
        seconds, sandbox_id, made = log.timed(lambda: backend.restore(snapshot_id))
        backend.stop(sandbox_id)
        totals.append(seconds)
        calls.append(made)
    backend._client.close()
    return {"count": rounds, "restore_ms": statistics.median(totals) * 1000,
            "parts_ms": {name: statistics.median(values) * 1000 for name, values in parts.items()},
            "calls": summarize_calls(calls)}


# --- the report ---------------------------------------------------------------------------------
def print_commands(figures: dict, profile: dict | None, cpu: dict | None):
    print(f"\n1. Commands: {figures['count']} of each kind, one at a time, in rotation, on the same container")
    print("\n| command | p50 ms | p99 ms | mean ms |\n|---|---:|---:|---:|")
    labels = {"api": "`{\"command\": \"true\"}` to POST /api/sandboxes/commands (HTTP, gunicorn)",
              "in_process": "the same request in this process (Django's test client, no HTTP; reference)",
              "bare": "bare `container.exec_run([\"true\"])`",
              "wrapped": "bare `exec_run` of the service's program around `true` (reference)"}
    for kind, label in labels.items():
        row = figures[kind]
        print(f"| {label} | {row['p50_ms']:.1f} | {row['p99_ms']:.1f} | {row['mean_ms']:.1f} |")
    print(f"\nthe API's durationMs (the exec's output stream, timed by the backend), p50: "
          f"{figures['api_duration_p50_ms']:.1f} ms; the API's p50 less it: "
          f"{figures['api']['p50_ms'] - figures['api_duration_p50_ms']:.1f} ms")
    parts = figures["in_process_parts"]
    print(f"the request in this process, median ms (wall / this process's CPU): all {parts['total']['wall_ms']:.1f} / "
          f"{parts['total']['cpu_ms']:.1f}; the backend's execute() {parts['execute']['wall_ms']:.1f} / "
          f"{parts['execute']['cpu_ms']:.1f}; {parts['query_count']:g} queries {parts['queries']['wall_ms']:.1f} / "
          f"{parts['queries']['cpu_ms']:.1f}; the rest (DRF, the key, the rate limit's Redis round trip, the "
          f"answer) {parts['rest']['wall_ms']:.1f} / {parts['rest']['cpu_ms']:.1f}")
    if profile:
        print("the backend's execute() in this process, alone (median ms; engine calls, median ms each):")
        for kind in ("fresh", "reused"):
            made = ", ".join(f"{name} ×{count:g} {median:.1f}" for name, count, median in profile[f"{kind}_calls"])
            label = ("a backend made for the call" if kind == "fresh" else "one backend reused")
            print(f"  {label}: {profile[f'{kind}_ms']:.1f} ms: {made}")
        print(f"  making the backend and its client: {profile['client_made_ms']:.2f} ms")
    if cpu:
        print("CPU per command in ms, back to back (from /proc; engine: dockerd, containerd, the shims and what ran "
              "under them; PostgreSQL's and the engine's include whatever else uses them meanwhile):")
        print("\n| command | wall | gunicorn | PostgreSQL | Redis | engine | idle |")
        print("|---|---:|---:|---:|---:|---:|---:|")
        for kind, label in (("api", "through the API"), ("bare", "bare `exec_run`")):
            row = cpu[kind]
            print(f"| {label} | {row['wall_ms']:.1f} | {row['gunicorn']:.2f} | {row['postgres']:.2f} | "
                  f"{row['redis']:.2f} | {row['engine']:.2f} | {row['idle_share']:.0%} |")
        print()
    difference = figures["difference_p50_ms"]
    print(f"API p50 - bare p50: {difference:.1f} ms (target ≤ {COMMAND_TARGET_MS} ms: "
          f"{verdict(difference <= COMMAND_TARGET_MS)})")


def print_starts(figures: dict, snapshot: dict, profile: dict | None):
    print(f"\n2. Starts from the snapshot: {snapshot['uploaded'] / MIB:.1f} MiB of random bytes uploaded in "
          f"{snapshot['files']} files ({snapshot['upload_s']:.2f} s), then stopped with a snapshot "
          f"({snapshot['stop_s']:.2f} s): snapshot {snapshot['snapshot_id']}, archive {snapshot['size']} bytes "
          f"({snapshot['size'] / MIB:.2f} MiB)")
    times = ", ".join(f"{seconds:.2f}" for seconds in figures["times_s"])
    print(f"   {figures['count']} starts (POST /api/sandboxes → running), s: {times}")
    print(f"   median {figures['median_s']:.3f} s, p90 {figures['p90_s']:.3f} s, fastest {figures['min_s']:.3f} s, "
          f"slowest {figures['max_s']:.3f} s; each stop without a snapshot (not timed in the figure): "
          f"{figures['stop_median_s']:.3f} s")
    if profile:
        parts = ", ".join(f"{name} {median:.0f}" for name, median in profile["parts_ms"].items())
        made = ", ".join(f"{name} ×{count:g} {median:.1f}" for name, count, median in profile["calls"])
        print(f"the backend's restore() in this process, {profile['count']} times: {profile['restore_ms']:.0f} ms "
              f"(median ms: {parts})\n  engine calls (median ms each): {made}")
    median = figures["median_s"]
    print(f"median start: {median:.3f} s (target ≤ {START_TARGET_SECONDS:g} s: "
          f"{verdict(median <= START_TARGET_SECONDS)})")


def print_leftovers(found: dict, deployment: str):
    left = len(found["containers"]) + len(found["volumes"])
    print(f"\n3. Left behind: {len(found['containers'])} containers and {len(found['volumes'])} volumes labelled "
          f"sandbox-service.deployment={deployment} (target: none: {verdict(left == 0)})")
    for kind in ("containers", "volumes"):
        if found[kind]:
            print(f"   found and removed ({kind}): {', '.join(found[kind])}")


def log_tails(service: BenchService) -> str:
    tails = []
    for name in ("gunicorn", "qcluster"):
        path = service.folder / f"{name}.log"
        if path.exists():
            lines = path.read_text(errors="replace").splitlines()[-25:]
            if lines:
                tails.append(f"--- the last lines of {name}'s log:\n" + "\n".join(lines))
    return "\n".join(tails)


def main(argv=None):
    arguments = parse_arguments(argv)
    import docker
    import requests.exceptions

    deployment = f"bench-live-{uuid.uuid4().hex[:8]}"
    figures: dict = {"deployment": deployment, "image": arguments.image}
    service = BenchService(database_url=arguments.database_url, redis_url=arguments.redis_url,
                           keep_database=arguments.keep_database, SANDBOX_BACKEND="docker",
                           SANDBOX_IMAGE=arguments.image, SANDBOX_DEPLOYMENT_ID=deployment, QUEUE_WORKERS="1",
                           THROTTLE_SETUP_RATE="100000/min", THROTTLE_EXEC_RATE="100000/min",
                           # The key's scopes: setup and start, commands, uploads and stop, the reads.
                           API_KEY_DEFAULT_SCOPES="sandboxes:read sandboxes:setup sandboxes:exec")
    snapshots = service.folder / "sandboxes" / "snapshots"  # the service's LocalSnapshotStore
    scratch = Path(tempfile.mkdtemp(prefix="bench-live-"))
    client = docker.from_env()
    api = None
    failure = None
    try:
        print(f"engine: {client_info()}; deployment {deployment}", file=sys.stderr)
        figures["engine"] = client_info()
        print(f"database {service.database_name}: creating, migrating, seeding", file=sys.stderr)
        service.create_database()
        key = seed_keys(service, 1, prefix="live")[0]
        service.start_web(workers=2)
        service.start_worker()
        api = Api(service.base_url, key)
        run = set_up(api, arguments.timeout)
        print(f"setup {run['id']} COMPLETED", file=sys.stderr)

        sandbox, seconds = start(api)
        print(f"sandbox {sandbox['sandboxId']} running ({seconds:.2f} s from the setup's snapshot)", file=sys.stderr)
        container = sandbox_container(client, sandbox["sandboxId"])
        in_process = InProcessRequest(service, key)
        try:
            figures["commands"] = measure_commands(api, container, in_process, arguments)
        finally:
            in_process.close()
        figures["commands_profile"] = (profile_commands(container, deployment, arguments, snapshots, scratch / "a")
                                       if arguments.profile else None)
        figures["cpu"] = (measure_cpu(service, api, container, arguments.cpu)
                          if arguments.cpu and CpuMeter.available() else None)
        print_commands(figures["commands"], figures["commands_profile"], figures["cpu"])

        uploaded, upload_seconds = fill_workspace(api, arguments)
        answer, stop_seconds = stop(api, snapshot=True)
        snapshot_id = answer["snapshot"]["snapshot_id"]
        size = (snapshots / f"{snapshot_id}.tar.gz").stat().st_size
        figures["snapshot"] = {"snapshot_id": snapshot_id, "size": size, "uploaded": uploaded,
                               "files": arguments.files, "upload_s": upload_seconds, "stop_s": stop_seconds}
        figures["starts"] = measure_starts(api, arguments)
        figures["starts_profile"] = (profile_restores(deployment, arguments, snapshot_id, snapshots, scratch / "b")
                                     if arguments.profile else None)
        print_starts(figures["starts"], figures["snapshot"], figures["starts_profile"])
    except ApiFailure as exc:
        failure = f"{exc}\n{log_tails(service)}"
    except (docker.errors.DockerException, requests.exceptions.RequestException) as exc:
        failure = f"the Docker engine failed or went away ({exc}); run again once it answers\n{log_tails(service)}"
    finally:
        if api is not None:  # a sandbox still running is stopped as a client would
            try:
                if api.request("GET", "/api/sandboxes")[1].get("sandbox", {}) or {}:
                    status, answer, _ = api.request("POST", "/api/sandboxes/stop", {"snapshot": False})
                    if status not in (200, 409):
                        print(f"(the last stop answered {status}: {json.dumps(answer)[:300]})", file=sys.stderr)
            except OSError as problem:
                print(f"(could not stop the sandbox: {problem})", file=sys.stderr)
        service.close()
        shutil.rmtree(scratch, ignore_errors=True)
        client.close()
        try:
            found = leftovers(deployment, [])
        except (docker.errors.DockerException, requests.exceptions.RequestException) as problem:
            print(f"\n3. Left behind: could not be checked ({problem}); look for containers and volumes labelled "
                  f"sandbox-service.deployment={deployment}", file=sys.stderr)
        else:
            figures["leftovers"] = found
            print_leftovers(found, deployment)
    if failure:
        raise SystemExit(f"\nstopped: {failure}")
    if arguments.json:
        print(json.dumps(figures, default=str))


if __name__ == "__main__":
    main()
