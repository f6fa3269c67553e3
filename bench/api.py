"""Throughput and latency of the API, each next to a bare authenticated endpoint; queries per request.

    .venv/bin/python bench/api.py                   # 10 s per endpoint, 8 connections
    .venv/bin/python bench/api.py --duration 30 --connections 16
    .venv/bin/python bench/api.py --load python     # without wrk (apt-get install wrk)

It makes a throw-away PostgreSQL database (bench_api: dropped and created),
migrates it, seeds 1,000 accounts with a key each, and starts gunicorn with
two workers on 127.0.0.1 with the production settings (DEBUG off), Redis as
django-q2's broker and as the rate limits' cache (the limits are set high
enough never to refuse, so their cost is in the figures). No worker runs:
setups stay queued, which is what the API answers either way.

A second process drives it for a fixed time per endpoint, the keys taken in
turn: wrk (Debian's package) when installed, else a Python load generator.
It measures GET /api/ping (authenticates the key, does nothing else) before
and after the others, and prints for POST /api/sandboxes/setup,
GET /api/sandboxes, GET /api/sandboxes/file, DELETE /api/sandboxes and
GET /api/tasks/runs: requests per second and p50/p99 latency, and their
ratios to ping's (the mean of its two runs). Every account has a snapshot
with a 50-entry file tree (a real archive of the local backend, one made and
linked under each account's snapshot id) until the delete run removes them.
Targets: setup's throughput at least 0.5 of ping's, its p99 at most 3 times
ping's; GET /api/sandboxes's and GET /api/tasks/runs's throughput at least
0.6 of ping's, DELETE /api/sandboxes's at least 0.5. On Linux it also prints
the CPU each request cost gunicorn, PostgreSQL and Redis, read from /proc
around each run (bench/cpu.py).

Then, in this process, Django's query capture counts the queries of one
request per endpoint (after a first request, which also records when the key
was last used) and the calls to the git host. Targets: setup at most 5,
delete at most 7 (6, and the lookup of webhook endpoints) plus the git host's
calls, runs at most 3, the sandbox's state at most 3, a file read at most 3
plus the backend's read, a renewal at most 4.

GET /api/audit (a page of 50 of the key's own account's events, newest
first) is measured next to ping too; its target is at least 0.5 of ping's
throughput, and at most 3 queries a page. With --audit-events N (1,000,000
for the check of issue 22) it first seeds N audit events over the accounts
and an organization (one owner, 50 members), then prints PostgreSQL's plan
and time of a page, the first and one further down by its cursor, for a
personal key, the owner's key and a staff key: each must walk an index
(audit_account_recent, audit_walk), not sort the table.

Figures, not assertions: bench/README.md has the last ones measured.
"""

import argparse
import json
import multiprocessing
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from cpu import CpuMeter, cpu_per_request
from service import BenchService, percentile, seed_accounts

READ_PATH = "module-0/file-0.py"
ENDPOINTS = {
    "ping": ("GET", "/api/ping", ""),
    "setup": ("POST", "/api/sandboxes/setup", "{}"),
    "sandbox": ("GET", "/api/sandboxes", ""),
    "file": ("GET", f"/api/sandboxes/file?path={READ_PATH}", ""),
    "delete": ("DELETE", "/api/sandboxes", "{}"),
    "runs": ("GET", "/api/tasks/runs", ""),
    "audit": ("GET", "/api/audit", ""),
}
LABELS = {"ping": "GET /api/ping (bare)", "setup": "POST /api/sandboxes/setup", "delete": "DELETE /api/sandboxes",
          "runs": "GET /api/tasks/runs", "sandbox": "GET /api/sandboxes", "file": "GET /api/sandboxes/file",
          "audit": "GET /api/audit"}
MEASURED = ("ping", "setup", "sandbox", "file", "delete", "runs", "audit", "ping (after)")
# Of ping's throughput, at least (setup's and GET /api/sandboxes's are printed with their other figures).
THROUGHPUT_TARGETS = {"delete": 0.5, "runs": 0.6}
# delete: 6, and the webhook endpoints' lookup
QUERY_TARGETS = {"setup": 5, "delete": 7, "runs": 3, "ping": 1, "sandbox": 3, "file": 3, "renew": 4, "audit": 3}
# A sandbox of 50 entries: 10 folders of 4 files each.
FILE_TREE = {f"module-{folder}/file-{number}.py": f"# module {folder}, file {number}\n".encode() * 20
             for folder in range(10) for number in range(4)}
# Django's query capture records these too (since Django 4.2); each is a round trip to the database.
TRANSACTION_CONTROL = {"BEGIN", "COMMIT", "ROLLBACK"}


def parse_arguments(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--duration", type=int, default=10, help="seconds per endpoint (default 10)")
    parser.add_argument("--warmup", type=int, default=2, help="seconds of warm-up per endpoint (default 2)")
    parser.add_argument("--connections", type=int, default=8, help="concurrent connections (default 8)")
    parser.add_argument("--accounts", type=int, default=1000, help="accounts, one key each (default 1,000)")
    parser.add_argument("--workers", type=int, default=2, help="gunicorn workers (default 2)")
    parser.add_argument("--threads", type=int, default=1,
                        help="threads per gunicorn worker (default 1: gunicorn's sync workers)")
    parser.add_argument("--load", choices=["auto", "wrk", "python"], default="auto")
    parser.add_argument("--database-url", default="postgres://postgres@127.0.0.1:5432/bench_api",
                        help="a THROW-AWAY database, dropped and created (its name must start with 'bench')")
    parser.add_argument("--redis-url", default="redis://127.0.0.1:6379/0")
    parser.add_argument("--keep-database", action="store_true")
    parser.add_argument("--json", action="store_true", help="also print the figures as one JSON line")
    parser.add_argument("--audit-events", type=int, default=0,
                        help="seed this many audit events first (1000000 for the query-plan check of GET /api/audit)")
    parser.add_argument("--only", default="", help="measure only these endpoints (comma separated, e.g. sandbox,file) "
                        f"between the two runs of ping; of {', '.join(name for name in ENDPOINTS if name != 'ping')}")
    return parser.parse_args(argv)


# --- load: wrk ------------------------------------------------------------------


def wrk_script(folder: Path, method: str, path: str, body: str, keys: list[str]) -> Path:
    script = folder / f"{method.lower()}.lua"
    key_list = ",\n".join(f'  "{key}"' for key in keys)
    script.write_text(f"""
local keys = {{
{key_list}
}}
-- Each of wrk's threads starts at its own place in the list, so that two
-- threads do not send the same key at the same moment (as the Python load
-- generator's connections do not).
local counter = 0
local threads = 0
function setup(thread)
  thread:set("first", threads * 7919)
  threads = threads + 1
end
function init(args)
  counter = first or 0
end
request = function()
  counter = counter + 1
  local headers = {{["x-api-key"] = keys[(counter % #keys) + 1], ["Content-Type"] = "application/json"}}
  return wrk.format("{method}", "{path}", headers, {json.dumps(body) if body else "nil"})
end
""")
    return script


_LATENCY = re.compile(r"^\s*(50|99)%\s+([\d.]+)(us|ms|s)\s*$")
_UNITS = {"us": 1e-3, "ms": 1.0, "s": 1e3}


def run_wrk(base_url: str, endpoint: str, keys: list[str], seconds: int, connections: int, folder: Path) -> dict:
    method, path, body = ENDPOINTS[endpoint]
    script = wrk_script(folder, method, path, body, keys)
    threads = max(1, min(2, connections))
    completed = subprocess.run(
        ["wrk", f"-t{threads}", f"-c{connections}", f"-d{seconds}s", "--latency", "--timeout", "10s",
         "-s", str(script), base_url + path],
        capture_output=True, text=True, check=True,
    )
    figures = {"errors": 0}
    for line in completed.stdout.splitlines():
        if match := _LATENCY.match(line):
            figures[f"p{match.group(1)}_ms"] = float(match.group(2)) * _UNITS[match.group(3)]
        elif line.startswith("Requests/sec:"):
            figures["rps"] = float(line.split()[1])
        elif "Non-2xx or 3xx responses:" in line:
            figures["errors"] += int(line.split(":")[1])
        elif line.strip().startswith("Socket errors:"):
            figures["errors"] += sum(int(number) for number in re.findall(r"\d+", line))
    return figures


# --- load: Python (when wrk is missing) -------------------------------------------


def _python_client(arguments) -> tuple[list[float], int]:
    """One keep-alive connection in a loop until the deadline; (latencies in ms, errors)."""
    import http.client

    host, port, method, path, body, keys, deadline, offset = arguments
    connection = http.client.HTTPConnection(host, port, timeout=10)
    latencies, errors, number = [], 0, offset
    while time.time() < deadline:
        number += 1
        headers = {"x-api-key": keys[number % len(keys)], "Content-Type": "application/json"}
        started = time.perf_counter()
        try:
            connection.request(method, path, body=body or None, headers=headers)
            answer = connection.getresponse()
            answer.read()
            if answer.status >= 300:
                errors += 1
        except OSError:
            errors += 1
            connection.close()
            connection = http.client.HTTPConnection(host, port, timeout=10)
            continue
        latencies.append((time.perf_counter() - started) * 1000)
    connection.close()
    return latencies, errors


def run_python(base_url: str, endpoint: str, keys: list[str], seconds: int, connections: int, folder: Path) -> dict:
    method, path, body = ENDPOINTS[endpoint]
    host, port = base_url.removeprefix("http://").split(":")
    deadline = time.time() + seconds
    jobs = [(host, int(port), method, path, body, keys, deadline, number * 7919) for number in range(connections)]
    with multiprocessing.get_context("spawn").Pool(connections) as pool:
        results = pool.map(_python_client, jobs)
    latencies = [latency for result, _ in results for latency in result]
    return {"rps": len(latencies) / seconds, "p50_ms": percentile(latencies, 0.50),
            "p99_ms": percentile(latencies, 0.99), "errors": sum(errors for _, errors in results)}


# --- snapshots ----------------------------------------------------------------------


def sandboxes_left() -> int:
    from sandboxes.models import Snapshot

    return Snapshot.objects.count()


def seed_snapshots(accounts) -> None:
    """A snapshot with FILE_TREE for each account: one archive made by the backend, hard-linked per account."""
    from datetime import timedelta

    from django.utils import timezone

    from sandboxes.models import Snapshot
    from sandboxes.providers import get_sandbox_backend

    backend = get_sandbox_backend()
    sandbox_id = backend.create()
    backend.write_files(sandbox_id, FILE_TREE)
    made = backend.snapshot(sandbox_id)
    backend.stop(sandbox_id)
    assert len(made.files) == 50, len(made.files)
    folder = backend.root / "snapshots"
    rows = []
    for account in accounts:
        snapshot_id = f"snap_{account.pk.hex}"
        for suffix in (".tar.gz", ".sha256"):
            os.link(folder / f"{made.snapshot_id}{suffix}", folder / f"{snapshot_id}{suffix}")
        rows.append(Snapshot(account=account, snapshot_id=snapshot_id, expires_at=timezone.now() + timedelta(days=7),
                             filetree=[entry.as_json() for entry in made.files]))
    Snapshot.objects.bulk_create(rows)


# --- the audit trail ----------------------------------------------------------------


def every_scope(accounts) -> None:
    """The bench's keys may call every endpoint (a key made without scopes only reads and sets up)."""
    from accounts.models import ApiKey
    from accounts.scopes import ALL_SCOPES

    ApiKey.objects.filter(account__in=accounts).update(scopes=list(ALL_SCOPES))


OWNED_MEMBERS = 50


def seed_audit_events(accounts, count: int) -> dict:
    """`count` events over the accounts (and a tenth of no account), in PostgreSQL, in one statement; an
    organization owned by the first account with OWNED_MEMBERS members, and a staff organization of the
    second. Returns the plans of GET /api/audit's page queries (print_audit_plans)."""
    import time as clock

    from django.db import connection

    from accounts.models import ApiKey, AuditEvent
    from orgs.models import Membership, Organization

    started = clock.perf_counter()
    ids = [str(account.pk) for account in accounts[:-1]]  # the last account is the query count's
    with connection.cursor() as cursor:
        cursor.execute(f"""
            INSERT INTO {AuditEvent._meta.db_table}
                (created_at, action, outcome, actor, account_ref, account_id, run_id, request_id, detail)
            SELECT now() - (n * interval '1 second'), (ARRAY['setup.requested', 'sandbox.deleted',
                    'sandbox.renewed', 'run.completed'])[1 + n %% 4], 'success', 'API key sbx_bench0000… of bench',
                   account, account, '', '', 'Seeded for bench/api.py'
            FROM (SELECT n, CASE WHEN n %% 10 = 0 THEN NULL
                                 ELSE (%s::uuid[])[1 + n %% %s] END AS account
                  FROM generate_series(1, %s) AS n) AS seeded
        """, [ids, len(ids), count])
        cursor.execute(f"ANALYZE {AuditEvent._meta.db_table}")
    print(f"seeded {count} audit events in {clock.perf_counter() - started:.0f} s", file=sys.stderr)
    owned = Organization.objects.create(name="Bench owners", slug="bench-owners")
    staff = Organization.objects.create(name="Bench staff", slug="bench-staff", is_staff=True)
    Membership.objects.bulk_create(
        [Membership(account=accounts[0], organization=owned, role=Membership.Role.OWNER)]
        + [Membership(account=account, organization=owned) for account in accounts[2:2 + OWNED_MEMBERS]]
        + [Membership(account=accounts[1], organization=staff)])
    keys = {"personal key, own events": ApiKey.objects.get(account=accounts[2]),
            f"owner's key, {OWNED_MEMBERS + 1} accounts": ApiKey.objects.get(account=accounts[0]),
            "staff key, every event": ApiKey.objects.get(account=accounts[1])}
    return {name: audit_plans(key) for name, key in keys.items()}


def audit_plans(key) -> dict:
    """EXPLAIN ANALYZE of the events query of a first page and of page 101 (or the last), by its cursor."""
    from django.db import connection

    from orgs.audit_trail import audit_page, cursor_position, events_after, visible_events

    plans = {}
    first = visible_events(key=key, filters={})
    page, cursor, pages = first[:51], None, 1
    while pages <= 100:  # down to page 101, or the last page of a key with fewer events
        following = audit_page(key=key, filters={}, cursor=cursor, limit=50).next
        if following is None:
            break
        cursor, pages = following, pages + 1
    later = events_after(first, *cursor_position(cursor, {}))[:51] if cursor else page
    for name, queryset in (("first page", page), (f"page {pages}", later)):
        sql, params = queryset.query.sql_with_params()
        with connection.cursor() as cursor_:
            cursor_.execute("EXPLAIN (ANALYZE, BUFFERS) " + sql, params)
            plans[name] = [row[0] for row in cursor_.fetchall()]
    return plans


def print_audit_plans(plans: dict):
    print()
    print("GET /api/audit's page query in PostgreSQL (EXPLAIN ANALYZE): each must walk an index, not sort the table")
    for who, pages in plans.items():
        for page, lines in pages.items():
            uses = sorted({name for name in ("audit_walk", "audit_account_recent") if any(name in line for line in lines)})
            sorts = any("Sort" in line for line in lines)
            timing = next((line for line in lines if line.startswith("Execution Time")), "")
            print(f"  {who}, {page}: {', '.join(uses) or 'NO INDEX'}{', sorted' if sorts else ''}; {timing}")
            for line in lines:
                print(f"      {line}")


# --- queries per request ----------------------------------------------------------


class GitHostCalls:
    """Counts the local git host's calls (instrumentation of the benchmark, not of the service)."""

    METHODS = ("ensure_repository", "list_repositories", "list_all_repositories", "delete_repository")

    def __init__(self):
        from sandboxes.providers.local_git import LocalGitHost

        self.count = 0
        for name in self.METHODS:
            setattr(LocalGitHost, name, self._counted(getattr(LocalGitHost, name)))

    def _counted(self, method):
        def counted(host, *args, **kwargs):
            self.count += 1
            return method(host, *args, **kwargs)

        return counted


def queries_per_request(keys: list[str], accounts) -> dict:
    from datetime import timedelta

    from django.db import connection
    from django.test import Client
    from django.test.utils import CaptureQueriesContext
    from django.utils import timezone

    from sandboxes.models import SetupRun, Snapshot
    from sandboxes.providers import get_git_host
    from sandboxes.providers.base import repository_name_for

    git_calls = GitHostCalls()
    client = Client()
    counts = {}

    def measure(name: str, method: str, path: str, key: str, body: str = ""):
        extra = {"content_type": "application/json", "data": body} if body else {}
        git_calls.count = 0
        with CaptureQueriesContext(connection) as captured:
            answer = getattr(client, method)(path, headers={"x-api-key": key}, **extra)
        assert answer.status_code == 200, (name, answer.status_code, answer.content[:300])
        statements = [query["sql"] for query in captured.captured_queries]
        control = [sql for sql in statements if sql.strip().upper() in TRANSACTION_CONTROL]
        counts[name] = {"queries": len(statements), "transaction_control": len(control),
                        "git_host_calls": git_calls.count, "sql": [" ".join(sql.split())[:110] for sql in statements]}

    # The last account is kept for this: no run, no snapshot; its key used once (last_used_at written).
    account, key = accounts[-1], keys[-1]
    client.get("/api/ping", headers={"x-api-key": key})
    measure("ping", "get", "/api/ping", key)
    measure("setup", "post", "/api/sandboxes/setup", key, "{}")  # a new run, queued on Redis
    measure("setup (run already queued)", "post", "/api/sandboxes/setup", key, "{}")
    measure("runs", "get", "/api/tasks/runs", key)
    # A sandbox to look at, read, renew and delete: its repository on the git host, its snapshot (and the queued run).
    repository = get_git_host().ensure_repository(
        name=repository_name_for(account_name=account.name, account_id=account.pk), description="bench"
    ).repository
    seed_snapshots([account])
    Snapshot.objects.filter(account=account).update(github_repo=repository.html_url,
                                                    expires_at=timezone.now() + timedelta(days=7))
    measure("sandbox", "get", "/api/sandboxes", key)
    measure("file", "get", ENDPOINTS["file"][1], key)
    measure("renew", "patch", "/api/sandboxes", key, "{}")
    measure("delete", "delete", "/api/sandboxes", key, "{}")
    measure("delete (nothing left)", "delete", "/api/sandboxes", key, "{}")
    measure("audit", "get", "/api/audit", key)
    cursor = client.get("/api/audit?limit=2", headers={"x-api-key": key}).json()["next"]
    measure("audit (a later page)", "get", f"/api/audit?limit=2&cursor={cursor}", key)
    assert not Snapshot.objects.filter(account=account).exists()
    assert SetupRun.objects.filter(account=account, status=SetupRun.Status.CANCELED).exists()
    return counts


# --- the report -------------------------------------------------------------------


def print_report(figures: dict, counts: dict, arguments, tool: str):
    ping = {name: (figures["ping"][name] + figures["ping (after)"][name]) / 2 for name in ("rps", "p50_ms", "p99_ms")}
    print()
    print(f"API load: {arguments.duration} s per endpoint, {arguments.connections} connections, "
          f"gunicorn {arguments.workers} workers x {arguments.threads} thread(s), {tool}; "
          "PostgreSQL, Redis broker and cache")
    print(f"{'endpoint':32} {'req/s':>8} {'p50 ms':>8} {'p99 ms':>8} {'errors':>7}   "
          f"{'req/s vs ping':>13} {'p99 vs ping':>11}")
    for name in MEASURED:
        if name not in figures:
            continue
        row = figures[name]
        label = LABELS.get(name, "GET /api/ping (bare, again)")
        ratios = ""
        if not name.startswith("ping"):
            ratios = f"{row['rps'] / ping['rps']:>13.2f} {row['p99_ms'] / ping['p99_ms']:>11.2f}"
        print(f"{label:32} {row['rps']:>8.0f} {row['p50_ms']:>8.1f} {row['p99_ms']:>8.1f} {row['errors']:>7}"
              f"   {ratios}")
    if "setup" in figures:
        setup_rps, setup_p99 = figures["setup"]["rps"] / ping["rps"], figures["setup"]["p99_ms"] / ping["p99_ms"]
        print(f"setup targets: throughput >= 0.5 x ping: {setup_rps:.2f} ({'met' if setup_rps >= 0.5 else 'MISSED'}); "
              f"p99 <= 3 x ping: {setup_p99:.2f} ({'met' if setup_p99 <= 3 else 'MISSED'})")
    if "audit" in figures:
        audit_rps = figures["audit"]["rps"] / ping["rps"]
        print(f"GET /api/audit target: throughput >= 0.5 x ping: {audit_rps:.2f} "
              f"({'met' if audit_rps >= 0.5 else 'MISSED'})")
    if "sandbox" in figures:
        state_rps = figures["sandbox"]["rps"] / ping["rps"]
        print(f"GET /api/sandboxes target (a 50-entry file tree): throughput >= 0.6 x ping: {state_rps:.2f} "
              f"({'met' if state_rps >= 0.6 else 'MISSED'})")
    for name, target in THROUGHPUT_TARGETS.items():
        if name in figures:
            ratio = figures[name]["rps"] / ping["rps"]
            print(f"{LABELS[name]} target: throughput >= {target} x ping: {ratio:.2f} "
                  f"({'met' if ratio >= target else 'MISSED'})")
    if "sandboxes_deleted" in figures.get("delete", {}):
        # The first delete of an account deletes its sandbox (and cancels the run the setups queued); the
        # others find nothing left. How many of each fall in the measured seconds moves the figure above.
        measured = round(figures["delete"]["rps"] * arguments.duration)
        deleted = figures["delete"]["sandboxes_deleted"]
        print(f"  of its {measured} measured deletes, {deleted} deleted a sandbox (its snapshot, and the run "
              f"queued by the setups when they ran before), {measured - deleted} found nothing left")
    print()
    print("Queries per request (Django's query capture, one request after the key's first use;")
    print("the target is checked on all of them, and on those that are not BEGIN/COMMIT/ROLLBACK):")
    for name, count in counts.items():
        target = QUERY_TARGETS.get(name.split(" ")[0])
        data = count["queries"] - count["transaction_control"]
        verdict = ""
        if target:
            verdict = (f"target <= {target}: {'met' if count['queries'] <= target else 'missed'}, "
                       f"without transaction control {'met' if data <= target else 'missed'}")
        git = f" + {count['git_host_calls']} git host call(s)" if count["git_host_calls"] else ""
        print(f"  {name:28} {count['queries']} queries ({count['transaction_control']} transaction control){git}"
              f"   {verdict}")
        for sql in count["sql"]:
            print(f"      {sql}")


def print_cpu(cpu: dict):
    if not cpu:
        return
    print()
    print("CPU per request, ms (from /proc; the load generator not counted), and the machine's idle share:")
    print(f"{'endpoint':32} {'gunicorn':>9} {'postgres':>9} {'redis':>7} {'idle':>6}")
    for name, row in cpu.items():
        label = LABELS.get(name, "GET /api/ping (bare, again)")
        print(f"{label:32} {row['gunicorn']:>9.2f} {row['postgres']:>9.2f} {row['redis']:>7.2f} "
              f"{row['idle_share']:>6.0%}")


def main(argv=None):
    arguments = parse_arguments(argv)
    tool = arguments.load
    if tool == "auto":
        tool = "wrk" if shutil.which("wrk") else "python"
    load = run_wrk if tool == "wrk" else run_python
    rate = "1000000/min"  # the throttle runs on every request and never refuses
    service = BenchService(database_url=arguments.database_url, redis_url=arguments.redis_url,
                           keep_database=arguments.keep_database, THROTTLE_SETUP_RATE=rate, THROTTLE_DELETE_RATE=rate,
                           THROTTLE_RENEW_RATE=rate)
    folder = Path(tempfile.mkdtemp(prefix="bench-api-"))
    try:
        print(f"database {service.database_name}: creating and migrating", file=sys.stderr)
        service.create_database()
        service.open_django()
        seeded = seed_accounts(arguments.accounts + 1, prefix="bench")
        accounts, keys = [account for account, _ in seeded], [key for _, key in seeded]
        load_keys = keys[:-1]  # the last one is kept for the query count
        seed_snapshots(accounts[:-1])
        every_scope(accounts)
        plans = seed_audit_events(accounts, arguments.audit_events) if arguments.audit_events else None
        service.start_web(workers=arguments.workers, threads=arguments.threads)
        meter = CpuMeter(gunicorn_pid=service.processes["gunicorn"].pid)
        figures, cpu = {}, {}
        only = {name.strip() for name in arguments.only.split(",") if name.strip()}
        unknown = only - set(ENDPOINTS)
        if unknown:
            raise SystemExit(f"--only: no endpoint {', '.join(sorted(unknown))}")
        for name in MEASURED:
            endpoint = name.split(" ")[0]
            if only and endpoint != "ping" and endpoint not in only:
                continue
            print(f"{name}: {arguments.warmup} s warm-up, {arguments.duration} s measured", file=sys.stderr)
            if arguments.warmup:
                load(service.base_url, endpoint, load_keys, arguments.warmup, arguments.connections, folder)
            before = meter.reading() if CpuMeter.available() else None
            sandboxes_before = sandboxes_left() if endpoint == "delete" else None
            figures[name] = load(service.base_url, endpoint, load_keys, arguments.duration, arguments.connections,
                                 folder)
            if sandboxes_before is not None:
                figures[name]["sandboxes_deleted"] = sandboxes_before - sandboxes_left()
            if before is not None:
                cpu[name] = cpu_per_request(before, meter.reading(), figures[name]["rps"] * arguments.duration)
        counts = queries_per_request(keys, accounts)
        print_report(figures, counts, arguments, tool)
        if plans:
            print_audit_plans(plans)
        print_cpu(cpu)
        if arguments.json:
            queries = {name: count["queries"] for name, count in counts.items()}
            print(json.dumps({"figures": figures, "queries": queries, "cpu_ms_per_request": cpu}))
    finally:
        service.close()
        shutil.rmtree(folder, ignore_errors=True)


if __name__ == "__main__":
    main()
