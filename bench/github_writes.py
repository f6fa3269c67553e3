"""Benchmark of the pace of writes to GitHub: a bulk cleanup against the project's GitHub emulator.

    .venv/bin/python bench/github_writes.py                     # 300 repositories, 100 ms between writes
    .venv/bin/python bench/github_writes.py --n 120 --ms 1000   # GitHub's own advice: a second apart

GitHub asks integrations to make their writes (POST, PATCH, PUT, DELETE)
serially, a second apart. The service sends every write of a process through
one gate (sandboxes/providers/github.py), whatever the number of threads. This
seeds N expired sandboxes whose repositories are in the emulator
(tests/github_emulator.py, on 127.0.0.1, marked as this deployment's), runs
the real cleanup service with --concurrency 1 and then 4, and prints what the
emulator received: the writes, their rate, and the shortest, median and
longest gap between two of them, next to GITHUB_MS_BETWEEN_WRITES.

It runs in one process with a throw-away SQLite database in a temporary
folder; the emulator's own work (a few milliseconds per request) is part of
each gap.
"""

import argparse
import os
import statistics
import sys
import tempfile
import time
import uuid
from pathlib import Path

from service import one_process_settings

ROOT = Path(__file__).resolve().parent.parent
DEPLOYMENT = "bench"


def parse_arguments():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--n", type=int, default=300, help="repositories to delete per run (default 300)")
    parser.add_argument("--ms", type=int, default=100, help="GITHUB_MS_BETWEEN_WRITES (default 100)")
    parser.add_argument("--concurrency", type=int, nargs="+", default=[1, 4])
    return parser.parse_args()


def configure(var_dir: str, emulator) -> None:
    os.environ.update({
        **one_process_settings(var_dir),
        "GIT_HOST": "github",
        "SANDBOX_DEPLOYMENT_ID": DEPLOYMENT,
        "GITHUB_ORG": emulator.organization,
        "GITHUB_TOKEN": emulator.token,
        "GITHUB_API_URL": emulator.url,
        "GITHUB_RETRIES": "0",
    })
    os.environ.pop("DATABASE_URL", None)
    os.environ.pop("REDIS_URL", None)
    import django
    from django.core.management import call_command

    django.setup()
    call_command("migrate", verbosity=0)


def seed(n: int, emulator) -> None:
    from django.utils import timezone

    from accounts.models import Account
    from sandboxes.models import Snapshot
    from sandboxes.providers.base import deployment_mark, repository_name_for

    accounts = [Account(name=f"Bench {number}", email=f"bench-{uuid.uuid4().hex[:8]}@example.com")
                for number in range(n)]
    Account.objects.bulk_create(accounts)
    rows = []
    for account in accounts:
        name = repository_name_for(account_name=account.name, account_id=account.pk)
        repository = emulator.add_repository(name, topics=[deployment_mark(DEPLOYMENT)])
        rows.append(Snapshot(account=account, snapshot_id="snap_" + uuid.uuid4().hex[:24],
                             expires_at=timezone.now() - timezone.timedelta(days=1),
                             github_repo=repository["html_url"], github_repo_id=repository["id"]))
    Snapshot.objects.bulk_create(rows)


def measure(n: int, concurrency: int, emulator) -> dict:
    from accounts.audit import Actor
    from sandboxes.cleanup import CleanupRule, sandboxes_cleanup

    seed(n, emulator)
    emulator.requests.clear()
    started = time.monotonic()
    report = sandboxes_cleanup(rule=CleanupRule(expired=True), actor=Actor.command("bench"), concurrency=concurrency)
    seconds = time.monotonic() - started
    if not report.ok or report.deleted != n or emulator.repository_names():
        raise SystemExit(f"the cleanup did not finish: {report.summary}")
    writes = sorted(call.at for call in emulator.requests if call.method in ("POST", "PATCH", "PUT", "DELETE"))
    gaps = [(later - earlier) * 1000 for earlier, later in zip(writes, writes[1:])]
    return {
        "concurrency": concurrency,
        "writes": len(writes),
        "seconds": seconds,
        "writes_per_second": (len(writes) - 1) / (writes[-1] - writes[0]),
        "min_gap_ms": min(gaps),
        "median_gap_ms": statistics.median(gaps),
        "max_gap_ms": max(gaps),
        "below_setting": sum(1 for gap in gaps if gap < float(os.environ["GITHUB_MS_BETWEEN_WRITES"])),
    }


def main():
    arguments = parse_arguments()
    sys.path.insert(0, str(ROOT))
    os.chdir(ROOT)
    from tests.github_emulator import GitHubEmulator

    with tempfile.TemporaryDirectory(prefix="bench-github-writes-") as var_dir:
        emulator = GitHubEmulator(Path(var_dir) / "github").start()
        try:
            os.environ["GITHUB_MS_BETWEEN_WRITES"] = str(arguments.ms)
            configure(var_dir, emulator)
            print(f"GITHUB_MS_BETWEEN_WRITES={arguments.ms}: at most {1000 / arguments.ms:.1f} writes/s allowed")
            for concurrency in arguments.concurrency:
                result = measure(arguments.n, concurrency, emulator)
                print(
                    f"--concurrency {result['concurrency']}: {result['writes']} writes in {result['seconds']:.1f} s, "
                    f"{result['writes_per_second']:.2f} writes/s; gap between writes min "
                    f"{result['min_gap_ms']:.0f} ms, median {result['median_gap_ms']:.0f} ms, "
                    f"max {result['max_gap_ms']:.0f} ms; gaps under the setting: {result['below_setting']}"
                )
        finally:
            emulator.stop()


if __name__ == "__main__":
    main()
