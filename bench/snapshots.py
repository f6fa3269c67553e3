"""Benchmark of the S3 snapshot store: writing and reading a 100 MiB snapshot, against plain boto3.

    .venv/bin/python bench/snapshots.py              # 100 MiB, best of 3
    .venv/bin/python bench/snapshots.py --mib 20 --repeat 5

It starts moto's S3 server on 127.0.0.1 (the test extra installs it), makes
a bucket and a 100 MiB workspace (100 files of 1 MiB of random bytes, so the
archive is as large as the workspace), and archives it once as the sandbox
backend does. Then, alternating, `--repeat` times each:

- write: the service's store code (`S3SnapshotStore.put`: multipart, a SHA-256
  checksum per part, the deployment's key and metadata) against a plain
  `client.upload_file` of the same file with boto3's defaults;
- read: `S3SnapshotStore.get` (a HEAD for the recorded checksum, the download,
  the SHA-256 of what arrived) against a plain `client.download_file`.

It prints MiB/s of the best run of each and the ratio store / plain (target
≥ 0.8), then, for scale, the whole snapshot of the backend (tar + gzip of the
workspace, its checksum and listing, the upload) and a whole restore.
"""

import argparse
import os
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings_test")
TARGET = 0.8
MiB = 1024 * 1024


def start_s3_server() -> tuple[subprocess.Popen, str]:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    server = subprocess.Popen([sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
            return server, f"http://127.0.0.1:{port}"
        except OSError:
            time.sleep(0.1)
    server.kill()
    raise SystemExit("moto's S3 server did not start")


def timed(action) -> float:
    started = time.perf_counter()
    action()
    return time.perf_counter() - started


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--mib", type=int, default=100, help="size of the workspace in MiB (default 100)")
    parser.add_argument("--repeat", type=int, default=3, help="runs of each transfer; the best counts (default 3)")
    args = parser.parse_args(argv)

    server, endpoint = start_s3_server()
    os.environ.update(AWS_ENDPOINT_URL=endpoint, AWS_ACCESS_KEY_ID="bench", AWS_SECRET_ACCESS_KEY="bench",
                      AWS_DEFAULT_REGION="us-east-1")
    try:
        import boto3
        import django

        django.setup()
        from sandboxes.providers.local_sandbox import LocalSandboxBackend
        from sandboxes.providers.snapshot_store import S3Settings, S3SnapshotStore, sha256_of

        client = boto3.client("s3")
        client.create_bucket(Bucket="bench-snapshots")
        store = S3SnapshotStore(settings=S3Settings(bucket="bench-snapshots", prefix="bench/"),
                                deployment_id="bench")
        folder = Path(tempfile.mkdtemp(prefix="bench-snapshots-"))
        backend = LocalSandboxBackend(root=folder / "root", command_timeout=60, store=store)
        sandbox_id = backend.create()
        backend.write_files(sandbox_id, {f"data/file-{n:03d}.bin": os.urandom(MiB) for n in range(args.mib)})
        workspace = folder / "root" / "sandboxes" / sandbox_id / "workspace"
        archive = folder / "archive.tar.gz"
        subprocess.run(["tar", "-czf", str(archive), "-C", str(workspace), "."], check=True)
        size = archive.stat().st_size
        checksum = sha256_of(archive)
        print(f"workspace {args.mib} MiB, archive {size / MiB:.1f} MiB; S3 server: moto on {endpoint}")

        times = {"store write": [], "plain write": [], "store read": [], "plain read": []}
        store.put("snap_bench0", archive, checksum=checksum)  # warm both paths once
        client.upload_file(str(archive), "bench-snapshots", "plain/archive.tar.gz")
        for run in range(args.repeat):
            times["store write"].append(timed(lambda: store.put(f"snap_bench{run}", archive, checksum=checksum)))
            times["plain write"].append(timed(
                lambda: client.upload_file(str(archive), "bench-snapshots", f"plain/archive-{run}.tar.gz")))
            copy = folder / f"read-{run}.tar.gz"
            times["store read"].append(timed(lambda: store.get(f"snap_bench{run}", copy)))
            copy.unlink()
            times["plain read"].append(timed(
                lambda: client.download_file("bench-snapshots", f"plain/archive-{run}.tar.gz", str(copy))))
            copy.unlink()

        best = {name: min(values) for name, values in times.items()}
        print("\n| transfer | best s | MiB/s | runs (s) |\n|---|---:|---:|---|")
        for name, seconds in best.items():
            runs = ", ".join(f"{value:.2f}" for value in times[name])
            print(f"| {name} | {seconds:.2f} | {size / MiB / seconds:.0f} | {runs} |")
        for kind in ("write", "read"):
            ratio = best[f"plain {kind}"] / best[f"store {kind}"]
            print(f"{kind}: store / plain throughput {ratio:.2f} (target ≥ {TARGET}: {'met' if ratio >= TARGET else 'missed'})")

        snapshot = []
        info_seconds = timed(lambda: snapshot.append(backend.snapshot(sandbox_id)))
        restored = []
        restore_seconds = timed(lambda: restored.append(backend.restore(snapshot[0].snapshot_id)))
        print(f"\nwhole snapshot (tar + gzip, checksum, listing, upload): {info_seconds:.2f} s; "
              f"whole restore (download, checksum, extract): {restore_seconds:.2f} s")
        backend.stop(sandbox_id)
        backend.stop(restored[0])
        subprocess.run(["rm", "-rf", str(folder)], check=False)
    finally:
        server.terminate()
        server.wait(timeout=10)


if __name__ == "__main__":
    main()
