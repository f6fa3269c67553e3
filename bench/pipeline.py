"""The setup pipeline under a burst: 200 setups on the local backends with 2 workers.

    .venv/bin/python bench/pipeline.py               # 200 setups, 2 workers
    .venv/bin/python bench/pipeline.py --setups 50   # a quicker look

It makes a throw-away PostgreSQL database (bench_pipeline: dropped and
created), migrates it, seeds one account with a key per setup, and starts
gunicorn (2 workers) and one qcluster with QUEUE_WORKERS=2 on the Redis
broker, with the local sandbox backend and the local git host in a temporary
folder. It sends the setups over HTTP as fast as 8 client threads can, one
per account, then waits until every run has finished.

Each account has a webhook endpoint at a receiver in this process (on
127.0.0.1; the service runs with WEBHOOK_ALLOW_HTTP and WEBHOOK_ALLOW_PRIVATE).

It prints:
- webhook latency: the median and p95 time from a run's finished_at to its
  run.completed arriving at the receiver (both clocks of this machine);
- the median and p95 time from the request to COMPLETED (the client's clock
  at sending, the run's finished_at), and how much of it was spent waiting
  in the queue (created_at to started_at);
- runs per second: runs completed / (last finished_at - first request);
- the share of the workers' time spent in each step of the pipeline (the
  steps' own start and end times on the runs; "between steps" is the rest of
  started_at to finished_at).

Figures, not assertions: bench/README.md has the last ones measured.
"""

import argparse
import json
import sys
import threading
import time
import urllib.request
from collections import defaultdict
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from service import BenchService, percentile, seed_accounts

STEPS = ["create_sandbox", "ensure_repository", "provision", "snapshot", "save_snapshot", "shutdown"]


def parse_arguments(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--setups", type=int, default=200, help="setups, one account each (default 200)")
    parser.add_argument("--workers", type=int, default=2, help="QUEUE_WORKERS of the qcluster (default 2)")
    parser.add_argument("--timeout", type=int, default=900, help="longest wait for the runs, in seconds")
    parser.add_argument("--database-url", default="postgres://postgres@127.0.0.1:5432/bench_pipeline",
                        help="a THROW-AWAY database, dropped and created (its name must start with 'bench')")
    parser.add_argument("--redis-url", default="redis://127.0.0.1:6379/0")
    parser.add_argument("--keep-database", action="store_true")
    parser.add_argument("--json", action="store_true", help="also print the figures as one JSON line")
    return parser.parse_args(argv)


def request_setup(base_url: str, key: str) -> tuple[float, str]:
    """(the client's clock when it sent the request, the run id)."""
    request = urllib.request.Request(base_url + "/api/sandboxes/setup", data=b"{}", method="POST",
                                     headers={"x-api-key": key, "Content-Type": "application/json"})
    sent = time.time()
    with urllib.request.urlopen(request, timeout=60) as answer:
        return sent, json.loads(answer.read())["runId"]


class WebhookReceiver:
    """Answers 200 to every POST and keeps when each run's run.completed arrived (time.time())."""

    def __init__(self):
        self.arrived: dict[str, float] = {}
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):
                body = json.loads(self.rfile.read(int(self.headers.get("Content-Length") or 0)))
                if body["type"] == "run.completed":
                    receiver.arrived.setdefault(body["data"]["run"]["id"], time.time())
                self.send_response(200)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *args):
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/hooks"

    def register(self, accounts):
        """One endpoint per account, in bulk."""
        from webhooks.models import Endpoint
        from webhooks.signing import secret_new

        Endpoint.objects.bulk_create(Endpoint(account=account, url=self.url, secret=secret_new(),
                                              event_types=",run.completed,") for account in accounts)

    def wait_for(self, run_ids: list[str], timeout: int):
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline and len(self.arrived) < len(run_ids):
            time.sleep(0.5)


def wait_for_runs(run_ids: list[str], timeout: int):
    from sandboxes.models import SetupRun

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        active = SetupRun.objects.filter(pk__in=run_ids, status__in=SetupRun.ACTIVE_STATUSES).count()
        if not active:
            return
        print(f"  {len(run_ids) - active} of {len(run_ids)} runs finished", file=sys.stderr)
        time.sleep(2)
    raise SystemExit(f"the runs did not finish within {timeout} s")


def _seconds(start: str, end: str) -> float:
    return (datetime.fromisoformat(end) - datetime.fromisoformat(start)).total_seconds()


def figures_of(runs, sent: dict[str, float], webhooks: dict[str, float]) -> dict:
    completed = [run for run in runs if run.status == "COMPLETED"]
    webhook_latency = [webhooks[run.pk] - run.finished_at.timestamp() for run in completed if run.pk in webhooks]
    to_completed = [run.finished_at.timestamp() - sent[run.pk] for run in completed]
    queued = [(run.started_at - run.created_at).total_seconds() for run in completed]
    executing = [(run.finished_at - run.started_at).total_seconds() for run in completed]
    step_seconds = defaultdict(float)
    for run in completed:
        for step in run.steps:
            step_seconds[step["name"]] += _seconds(step["started"], step["finished"])
    working = sum(executing)
    step_seconds["between steps"] = working - sum(step_seconds.values())
    first_request = min(sent.values())
    last_finished = max(run.finished_at.timestamp() for run in completed) if completed else first_request
    return {
        "setups": len(runs),
        "completed": len(completed),
        "failed": [(run.pk, run.error) for run in runs if run.status != "COMPLETED"],
        "webhooks_delivered": len(webhook_latency),
        "webhook_latency_p50": percentile(webhook_latency, 0.5),
        "webhook_latency_p95": percentile(webhook_latency, 0.95),
        "to_completed_p50": percentile(to_completed, 0.5),
        "to_completed_p95": percentile(to_completed, 0.95),
        "queued_p50": percentile(queued, 0.5),
        "executing_p50": percentile(executing, 0.5),
        "executing_p95": percentile(executing, 0.95),
        "runs_per_second": len(completed) / (last_finished - first_request) if completed else 0.0,
        "wall_seconds": last_finished - first_request,
        "step_share": {name: seconds / working for name, seconds in step_seconds.items()} if working else {},
        "step_mean_ms": {name: seconds / len(completed) * 1000 for name, seconds in step_seconds.items()}
        if completed else {},
    }


def print_report(figures: dict, arguments):
    print()
    print(f"Pipeline: {figures['setups']} setups, one qcluster with {arguments.workers} workers, local sandbox "
          f"backend and git host, PostgreSQL, Redis broker")
    print(f"completed {figures['completed']}, failed {len(figures['failed'])} "
          f"in {figures['wall_seconds']:.1f} s: {figures['runs_per_second']:.2f} runs/s")
    print(f"request -> COMPLETED: median {figures['to_completed_p50']:.1f} s, p95 {figures['to_completed_p95']:.1f} s "
          f"(of which waiting in the queue: median {figures['queued_p50']:.1f} s)")
    print(f"run end -> run.completed webhook delivered ({figures['webhooks_delivered']} of {figures['completed']}): "
          f"median {figures['webhook_latency_p50'] * 1000:.0f} ms, p95 {figures['webhook_latency_p95'] * 1000:.0f} ms")
    print(f"one run in a worker: median {figures['executing_p50'] * 1000:.0f} ms, "
          f"p95 {figures['executing_p95'] * 1000:.0f} ms")
    print(f"{'step':20} {'share':>7} {'mean ms':>8}")
    for name in [*STEPS, "between steps"]:
        if name in figures["step_share"]:
            print(f"{name:20} {figures['step_share'][name]:>7.1%} {figures['step_mean_ms'][name]:>8.1f}")
    for run_id, error in figures["failed"][:5]:
        print(f"failed {run_id}: {error}")


def main(argv=None):
    arguments = parse_arguments(argv)
    service = BenchService(database_url=arguments.database_url, redis_url=arguments.redis_url,
                           keep_database=arguments.keep_database, QUEUE_WORKERS=str(arguments.workers),
                           THROTTLE_SETUP_RATE="off", WEBHOOK_ALLOW_HTTP="1", WEBHOOK_ALLOW_PRIVATE="1")
    receiver = WebhookReceiver()
    try:
        print(f"database {service.database_name}: creating and migrating", file=sys.stderr)
        service.create_database()
        service.open_django()
        seeded = seed_accounts(arguments.setups, prefix="pipeline")
        receiver.register(account for account, _ in seeded)
        keys = [key for _, key in seeded]
        service.start_web(workers=2)
        service.start_worker()
        time.sleep(2)  # the cluster's workers start
        print(f"sending {len(keys)} setups", file=sys.stderr)
        with ThreadPoolExecutor(max_workers=8) as pool:
            answers = list(pool.map(lambda key: request_setup(service.base_url, key), keys))
        sent = {run_id: when for when, run_id in answers}
        wait_for_runs(list(sent), arguments.timeout)
        receiver.wait_for(list(sent), timeout=60)

        from sandboxes.models import SetupRun

        figures = figures_of(list(SetupRun.objects.filter(pk__in=list(sent))), sent, receiver.arrived)
        print_report(figures, arguments)
        if arguments.json:
            print(json.dumps(figures, default=str))
    finally:
        service.close()


if __name__ == "__main__":
    main()
