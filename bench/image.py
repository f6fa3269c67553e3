"""The service's image (Dockerfile): its size, and the time from `docker run` to the first 200 from /healthz.

    .venv/bin/python bench/image.py                          # sandbox-service:ci, 5 starts
    .venv/bin/python bench/image.py --image sandbox-service:latest --starts 9

The image is not built here (build it first: docs/container-image.md). Its
size is `docker image inspect`'s Size (all its layers, the base's included).
Then a throw-away database (`bench_image`, dropped and created, dropped at
the end) is migrated by a one-off container of the image (not timed), and
the web container is started `--starts` times, one at a time, with `docker
run -d --network host` and the production settings (DEBUG off) less HTTPS,
on PostgreSQL and Redis at 127.0.0.1 as CI has them. Each time is from the
start of `docker run` to the first 200 from GET /healthz on the container's
port, polled every 20 ms from outside; the container is removed before the
next start. Printed: each start, the median and the range.
"""

import argparse
import json
import statistics
import subprocess
import sys
import time
import urllib.error
import urllib.request
import uuid
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from bench.service import free_port

DOCKER = "/usr/bin/docker"
POSTGRES_SERVER = "postgres://postgres@127.0.0.1:5432"
REDIS_URL = "redis://127.0.0.1:6379/0"
DATABASE = "bench_image"
TIMEOUT = 120


def docker(*args: str) -> str:
    completed = subprocess.run([DOCKER, *args], check=False, capture_output=True, text=True)
    if completed.returncode != 0:
        raise SystemExit(f"docker {' '.join(args[:2])} failed: {completed.stderr.strip()[-2000:]}")
    return completed.stdout


def admin(sql: str):
    import psycopg

    with psycopg.connect(f"{POSTGRES_SERVER}/postgres", autocommit=True) as connection:
        connection.execute(sql)


def environment(queue_name: str, port: int) -> list[str]:
    variables = {
        "DEBUG": "0", "SECRET_KEY": "bench-secret-key-" + "x" * 40, "API_KEY_PEPPER": "bench-api-key-pepper",
        "ALLOWED_HOSTS": "127.0.0.1", "SECURE_SSL_REDIRECT": "0",
        "DATABASE_URL": f"{POSTGRES_SERVER}/{DATABASE}", "REDIS_URL": REDIS_URL, "QUEUE_NAME": queue_name,
        "PORT": str(port),
    }
    return [argument for name, value in variables.items() for argument in ("-e", f"{name}={value}")]


def healthy(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=2) as response:
            return response.status == 200
    except (urllib.error.URLError, OSError):
        return False


def start_to_healthy(image: str, queue_name: str) -> float:
    port = free_port()
    name = f"{queue_name}-web-{port}"
    url = f"http://127.0.0.1:{port}/healthz"
    started = time.perf_counter()
    docker("run", "-d", "--name", name, "--network", "host", *environment(queue_name, port), image)
    try:
        while time.perf_counter() - started < TIMEOUT:
            if healthy(url):
                return time.perf_counter() - started
            time.sleep(0.02)
        logs = subprocess.run([DOCKER, "logs", name], check=False, capture_output=True, text=True).stdout
        raise SystemExit(f"/healthz did not answer 200 within {TIMEOUT} s; the container's log:\n{logs[-3000:]}")
    finally:
        subprocess.run([DOCKER, "rm", "-f", name], check=False, capture_output=True)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--image", default="sandbox-service:ci")
    parser.add_argument("--starts", type=int, default=5)
    options = parser.parse_args()

    [details] = json.loads(docker("image", "inspect", options.image))
    size = details["Size"]
    print(f"image {options.image} ({details['Id'][7:19]}): {size / 1e6:.0f} MB ({size / 2**20:.0f} MiB), "
          f"{len(details['RootFS']['Layers'])} layers")

    queue_name = f"bench-image-{uuid.uuid4().hex[:8]}"
    admin(f"DROP DATABASE IF EXISTS {DATABASE} WITH (FORCE)")
    admin(f"CREATE DATABASE {DATABASE}")
    try:
        docker("run", "--rm", "--network", "host", *environment(queue_name, 0), options.image,
               "python", "manage.py", "migrate", "--noinput")
        times = []
        for number in range(1, options.starts + 1):
            seconds = start_to_healthy(options.image, queue_name)
            times.append(seconds)
            print(f"start {number}: {seconds * 1000:.0f} ms")
        print(f"docker run -> first 200 from /healthz: median {statistics.median(times) * 1000:.0f} ms "
              f"(min {min(times) * 1000:.0f}, max {max(times) * 1000:.0f}) over {len(times)} starts")
    finally:
        admin(f"DROP DATABASE IF EXISTS {DATABASE} WITH (FORCE)")
        import redis

        client = redis.Redis.from_url(REDIS_URL)
        keys = [*client.scan_iter(match=f"django_q:{queue_name}:*"), *client.scan_iter(match=f"{queue_name}:*")]
        if keys:
            client.delete(*keys)
        client.close()


if __name__ == "__main__":
    main()
