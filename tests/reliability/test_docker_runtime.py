"""The docker sandbox backend under the real service: gunicorn and a qcluster with SANDBOX_BACKEND=docker.

Each test runs the service's processes (tests/processes.py) with
SANDBOX_BACKEND=docker, SANDBOX_IMAGE the test image (docker/test-image.sh)
and a SANDBOX_DEPLOYMENT_ID of its own, on the test's PostgreSQL database and
the local Redis, against the machine's Docker engine. What a test looks at
is what a client sees over HTTP, what the engine lists under the deployment's
label (`sandbox-service.deployment=<id>`) and what `manage.py
reconcile_sandboxes` reports.

- 20 setups for 20 accounts complete; each run's steps name its sandbox; each
  snapshot is read over HTTP and restored into a new container by the
  backend, with the starter layout in it; afterwards no container or volume
  carries the deployment's label.
- A sandbox's container killed (SIGKILL) while its run provisions: the run
  ends FAILED with a sentence that says so (no traceback, no folder of the
  host), nothing of the run is left on the engine, and a new setup completes.
- The engine stopped (SIGTERM to dockerd) and started again while 10 setups
  are in flight: every run ends, COMPLETED or FAILED with a reason that names
  the Docker engine; each failed account's new setup completes once the
  engine is back, and after `reconcile_sandboxes --fix` nothing of the
  deployment is left. The engine is started again even when the test fails.
- Containers and volumes planted with the SDK: this deployment's, held by a
  run that is over, and one past its `expires-at`, are reported by
  `reconcile_sandboxes` and removed by `--fix`; one a queued run holds is
  left; another deployment's is reported as not ours and never removed.
"""

import json
import os
import re
import shutil
import signal
import subprocess
import tempfile
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from datetime import timedelta
from pathlib import Path

import pytest
from django.utils import timezone

from sandboxes.models import SetupRun
from sandboxes.providers import get_sandbox_backend
from sandboxes.providers.base import SandboxOwner
from sandboxes.providers.docker_sandbox import (
    ACCOUNT_LABEL,
    DEPLOYMENT_LABEL,
    EXPIRES_LABEL,
    HOLDER_LABEL,
    REMOVE_ATTEMPTS,
    REMOVE_BACKOFF_SECONDS,
    SANDBOX_LABEL,
)
from tests.conftest import docker_test_image, make_person, requires_postgres
from tests.processes import (
    REPO,
    database_url_of_the_test_database,
    manage,
    new_queue_name,
    service_environment,
)
from tests.reliability.test_worker_death import _alive, wait_for

pytestmark = [requires_postgres, pytest.mark.postgres, pytest.mark.reliability, pytest.mark.docker]

SETUPS = 20
IN_FLIGHT = 10
STARTER = REPO / "sandboxes" / "starter"
STEPS = ["create_sandbox", "ensure_repository", "provision", "snapshot", "save_snapshot", "shutdown"]
SANDBOX_ID = re.compile(r"sbx_[0-9a-f]{20}")
ENGINE_TIMEOUT = 60  # seconds for dockerd to stop, or to answer once started
# Longer than the backend tries to remove a sandbox for: what a run the outage
# hits made outlives the run, for reconcile to find.
OUTAGE_SECONDS = sum(REMOVE_BACKOFF_SECONDS * 2**attempt for attempt in range(REMOVE_ATTEMPTS - 1)) + 2


class DockerDaemon:
    """The machine's dockerd: stopped with SIGTERM, started again with the command line it had.

    Its pid comes from /var/run/docker.pid, its command line from /proc; the
    new daemon writes to the file the old one wrote to (or to a file of its
    own in the temporary folder) and runs in a session of its own, so it
    outlives the test.
    """

    PID_FILE = Path("/var/run/docker.pid")

    def __init__(self):
        try:
            self.pid = int(self.PID_FILE.read_text())
            argv = [part.decode() for part in Path(f"/proc/{self.pid}/cmdline").read_bytes().split(b"\0") if part]
        except (OSError, ValueError) as problem:
            pytest.skip(f"needs a local dockerd with a pid file ({problem})")
        if Path(argv[0]).name != "dockerd":
            pytest.skip(f"process {self.pid} of {self.PID_FILE} is not dockerd: {argv}")
        if not os.path.isabs(argv[0]):
            argv[0] = "/usr/sbin/dockerd" if os.access("/usr/sbin/dockerd", os.X_OK) else shutil.which("dockerd")
        self.argv = argv
        try:
            written = os.readlink(f"/proc/{self.pid}/fd/1")
        except OSError:
            written = ""
        self.log = Path(written if written.startswith("/") and Path(written).is_file()
                        else Path(tempfile.gettempdir()) / "dockerd-restarted.log")

    @staticmethod
    def answers() -> bool:
        try:
            answer = subprocess.run(["/usr/bin/docker", "info"], check=False, capture_output=True, timeout=10)
        except subprocess.TimeoutExpired:
            return False
        return answer.returncode == 0

    def stop(self):
        """SIGTERM, then wait until the daemon has exited (it stops its containers first)."""
        os.kill(self.pid, signal.SIGTERM)
        deadline = time.monotonic() + ENGINE_TIMEOUT
        while _alive(self.pid):
            if time.monotonic() > deadline:
                pytest.fail(f"dockerd ({self.pid}) did not exit within {ENGINE_TIMEOUT} s of SIGTERM:\n{self.tail()}")
            time.sleep(0.1)

    def start(self):
        """Start dockerd as it was started and wait until `docker info` answers."""
        with self.log.open("ab") as sink:
            subprocess.run(["setsid", "--fork", *self.argv], stdin=subprocess.DEVNULL, stdout=sink,
                           stderr=subprocess.STDOUT, check=True, timeout=10,
                           env={"PATH": "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"})
        deadline = time.monotonic() + ENGINE_TIMEOUT
        while not self.answers():
            if time.monotonic() > deadline:
                pytest.fail(f"dockerd did not answer within {ENGINE_TIMEOUT} s of its start:\n{self.tail()}")
            time.sleep(0.3)
        self.pid = int(self.PID_FILE.read_text())

    def ensure_running(self):
        """After the test: the engine answers, started again if it is down (a daemon still exiting first ends)."""
        if self.answers():
            return
        try:
            pid = int(self.PID_FILE.read_text())
        except (OSError, ValueError):
            pid = 0
        deadline = time.monotonic() + ENGINE_TIMEOUT
        while pid and _alive(pid) and time.monotonic() < deadline:
            if self.answers():
                return
            time.sleep(0.3)
        if pid and _alive(pid):
            os.kill(pid, signal.SIGKILL)
        self.start()

    def tail(self) -> str:
        try:
            return self.log.read_text(errors="replace")[-3000:]
        except OSError:
            return ""


@pytest.fixture
def docker_runtime(start_service, docker_engine, docker_settings, tmp_path):
    """The deployment of one test on the Docker engine: its id, the service's variables, and a service starter.

    The test process's own settings are the service's (docker_settings, the
    same SANDBOX_ROOT and deployment), so the backend restores its snapshots.
    Whatever still carries the deployment's label afterwards is removed.
    """
    deployment = f"dkr-{uuid.uuid4().hex[:12]}"
    docker_settings.SANDBOX_DEPLOYMENT_ID = deployment
    variables = {
        "SANDBOX_BACKEND": "docker", "SANDBOX_IMAGE": docker_test_image(), "SANDBOX_DEPLOYMENT_ID": deployment,
        "QUEUE_WORKERS": "4", "THROTTLE_SETUP_RATE": "1000/min",
    }

    class Runtime:
        def __init__(self):
            self.deployment, self.engine = deployment, docker_engine

        def start(self, **extra: str):
            return start_service(workers=2, **{**variables, **extra})

        def environment(self) -> dict:
            """The environment of a `manage.py` command of this deployment (no server started)."""
            return service_environment(database_url=database_url_of_the_test_database(),
                                       queue_name=new_queue_name(), sandbox_root=docker_settings.SANDBOX_ROOT,
                                       git_root=docker_settings.GIT_ROOT, var_dir=tmp_path / "var", **variables)

        def left(self) -> list[str]:
            return left_on_engine(docker_engine, deployment)

    yield Runtime()
    remove_marked(docker_engine, deployment)


def marked(deployment: str) -> dict:
    return {"label": f"{DEPLOYMENT_LABEL}={deployment}"}


def left_on_engine(engine, deployment: str) -> list[str]:
    """'container NAME' and 'volume NAME' of everything on the engine that carries the deployment's label."""
    containers = engine.containers.list(all=True, sparse=True, filters=marked(deployment))
    volumes = engine.volumes.list(filters=marked(deployment))
    return sorted([f"container {c.attrs['Names'][0].lstrip('/')}" for c in containers]
                  + [f"volume {v.name}" for v in volumes])


def remove_marked(engine, deployment: str):
    import docker.errors

    for container in engine.containers.list(all=True, sparse=True, filters=marked(deployment)):
        try:
            container.remove(force=True)
        except docker.errors.NotFound:
            pass
    for volume in engine.volumes.list(filters=marked(deployment)):
        try:
            volume.remove(force=True)
        except docker.errors.NotFound:
            pass


def post_setup(service, person) -> str:
    status, body = service.call("POST", "/api/sandboxes/setup", key=person.key, body={})
    assert status == 200, service.report(f"setup answered {status} {body}")
    return body["runId"]


def assert_readable(service, run: dict, *, folders: list[Path]):
    """The run's error and its steps' details: sentences, no traceback, none of the host's folders.

    Not the repository's address: the local git host's is a file:// URL.
    """
    texts = [run["error"] or "",
             *(step["detail"] for step in run["metadata"]["steps"] if step["name"] != "ensure_repository")]
    for text in texts:
        assert "Traceback" not in text and 'File "' not in text, service.report(f"a traceback in {run}")
        for folder in [*folders, REPO, Path("/var/lib/docker"), Path("/var/run"), Path("/tmp")]:
            assert str(folder) not in text, service.report(f"the host's folder {folder} in {text!r}")


def assert_completed(service, run: dict):
    assert run["status"] == SetupRun.Status.COMPLETED, service.report(f"the run ended {run}")
    steps = run["metadata"]["steps"]
    assert [step["name"] for step in steps] == STEPS and all(step["ok"] for step in steps), run
    created = steps[0]["detail"]
    assert re.fullmatch(rf"Sandbox {SANDBOX_ID.pattern}", created), created
    sandbox_id = created.split()[1]
    assert steps[-1]["detail"] == f"Sandbox {sandbox_id} stopped", steps[-1]
    assert steps[3]["detail"].startswith(f"Snapshot {run['output']['snapshot_id']} "), steps[3]


def starter_layout(destination: Path, *, extra_files: int = 0, file_size: int = 0) -> Path:
    """The starter layout, with `extra_files` random files of `file_size` bytes in bulk/ (slower to provision)."""
    shutil.copytree(STARTER, destination)
    if extra_files:
        (destination / "bulk").mkdir()
        for number in range(extra_files):
            (destination / "bulk" / f"part-{number:04d}.bin").write_bytes(os.urandom(file_size))
    return destination


def test_twenty_setups_complete_their_snapshots_restore_and_nothing_stays_on_the_engine(docker_runtime):
    service = docker_runtime.start()
    people = [make_person(f"docker{number}") for number in range(SETUPS)]
    run_ids = {person.account.pk: post_setup(service, person) for person in people}

    runs = {person.account.pk: service.wait_for_run(person.key, run_ids[person.account.pk], timeout=120)
            for person in people}
    for run in runs.values():
        assert_completed(service, run)
        assert_readable(service, run, folders=[service.sandbox_root])
    assert len({run["metadata"]["steps"][0]["detail"] for run in runs.values()}) == SETUPS, "a sandbox each"
    assert docker_runtime.left() == [], service.report("containers or volumes outlived their runs")

    readme = (STARTER / "README.md").read_text()
    for person in people:
        status, body = service.call("GET", "/api/sandboxes/file?path=README.md", key=person.key)
        assert status == 200 and body["content"] == readme, service.report(f"reading README.md: {status} {body}")

    def restored(account_id) -> tuple[str, str, list[str], dict]:
        backend = get_sandbox_backend()
        sandbox_id = backend.restore(runs[account_id]["output"]["snapshot_id"],
                                     owner=SandboxOwner(account_id=str(account_id), holder="run_restore"))
        try:
            container = docker_runtime.engine.containers.get(f"{docker_runtime.deployment}-{sandbox_id}")
            listing = backend.run(sandbox_id, ["ls", "-A"]).stdout.split()
            return sandbox_id, backend.run(sandbox_id, ["cat", "README.md"]).stdout, listing, container.labels
        finally:
            backend.stop(sandbox_id)

    with ThreadPoolExecutor(max_workers=5) as pool:
        restores = dict(zip(runs, pool.map(restored, runs)))
    for account_id, (sandbox_id, content, listing, labels) in restores.items():
        assert content == readme, f"the README of {account_id}'s restored snapshot: {content!r}"
        assert {".git", ".gitignore", "README.md", "workspace"} <= set(listing), listing
        assert labels[DEPLOYMENT_LABEL] == docker_runtime.deployment
        assert labels[ACCOUNT_LABEL] == str(account_id) and labels[SANDBOX_LABEL] == sandbox_id, labels
    assert docker_runtime.left() == [], "a restored sandbox outlived its stop"


def test_a_container_killed_mid_run_fails_the_run_readably_leaves_nothing_and_a_retry_completes(
    docker_runtime, tmp_path
):
    # Megabytes of starter files make the run provision for a while: the
    # container is killed the moment it runs, before its files are written.
    template = starter_layout(tmp_path / "starter", extra_files=200, file_size=64 * 1024)
    service = docker_runtime.start(SANDBOX_TEMPLATE_DIR=str(template))
    person = make_person("killed")
    run_id = post_setup(service, person)

    engine = docker_runtime.engine
    of_the_account = {"label": [f"{DEPLOYMENT_LABEL}={docker_runtime.deployment}",
                                f"{ACCOUNT_LABEL}={person.account.pk}"]}
    [container] = wait_for(service, "the sandbox's container running", 30,
                           lambda: engine.containers.list(sparse=True, filters=of_the_account))
    container.kill()
    sandbox_name = container.attrs["Names"][0].lstrip("/")

    run = service.wait_for_run(person.key, run_id, timeout=60)
    assert run["status"] == SetupRun.Status.FAILED, service.report(f"the run ended {run}")
    sandbox_id = sandbox_name.removeprefix(f"{docker_runtime.deployment}-")
    assert run["error"] == (f"Provisioning the sandbox failed: The container of sandbox {sandbox_id} stopped "
                            "unexpectedly: it was killed"), service.report(f"the run's error: {run['error']}")
    assert run["metadata"]["currentStep"] == "provision", run
    shutdown = run["metadata"]["steps"][-1]
    assert shutdown["name"] == "shutdown" and shutdown["ok"], run
    assert_readable(service, run, folders=[service.sandbox_root, template, tmp_path])
    assert docker_runtime.left() == [], service.report("the killed run left its container or volume")

    retry = service.wait_for_run(person.key, post_setup(service, person), timeout=60)
    assert_completed(service, retry)
    assert docker_runtime.left() == [], service.report("the retry left its container or volume")


@pytest.fixture
def dockerd(docker_engine):
    """The machine's dockerd (DockerDaemon); answering again after the test, whatever happened in it."""
    daemon = DockerDaemon()
    try:
        yield daemon
    finally:
        daemon.ensure_running()


def test_an_engine_restart_under_load_ends_every_run_readably_and_retries_and_reconcile_leave_nothing(
    docker_runtime, dockerd, tmp_path
):
    template = starter_layout(tmp_path / "starter", extra_files=40, file_size=64 * 1024)
    service = docker_runtime.start(SANDBOX_TEMPLATE_DIR=str(template))
    people = [make_person(f"restart{number}") for number in range(IN_FLIGHT)]
    run_ids = {person.account.pk: post_setup(service, person) for person in people}

    engine = docker_runtime.engine
    wait_for(service, "a sandbox running", 30,
             lambda: engine.containers.list(sparse=True, filters=marked(docker_runtime.deployment)))
    try:
        dockerd.stop()
        stopped = time.monotonic()
        time.sleep(OUTAGE_SECONDS)
    finally:
        dockerd.start()
    outage = time.monotonic() - stopped

    runs = [service.wait_for_run(person.key, run_ids[person.account.pk], timeout=120) for person in people]
    summary = "\n".join(f"{run['id']} {run['status']}: {run['error']}" for run in runs)
    for run in runs:
        assert run["status"] in (SetupRun.Status.COMPLETED, SetupRun.Status.FAILED), summary
        assert_readable(service, run, folders=[service.sandbox_root, template, tmp_path])
        if run["status"] == SetupRun.Status.FAILED:
            assert "the Docker engine" in run["error"], service.report(f"a reason that is not the engine: {summary}")
    failed = [person for person, run in zip(people, runs) if run["status"] == SetupRun.Status.FAILED]
    assert failed, service.report(f"the engine was down {outage:.1f} s, yet no run failed:\n{summary}")

    retries = {person.account.pk: post_setup(service, person) for person in failed}
    for person in failed:
        assert_completed(service, service.wait_for_run(person.key, retries[person.account.pk], timeout=90))

    # A run whose sandbox could not be removed while the engine was down
    # leaves it (stopped by the engine's shutdown); reconcile removes it.
    left = docker_runtime.left()
    for run in runs:
        steps = run["metadata"]["steps"]
        if steps[-1]["name"] == "shutdown" and not steps[-1]["ok"]:
            # Its container, or (removed as the engine went down) the volume that was its workspace.
            sandbox_id = steps[0]["detail"].removeprefix("Sandbox ")
            assert f"container {docker_runtime.deployment}-{sandbox_id}" in left or any(
                subject.startswith("volume ") for subject in left), (run, left)
    reconcile = manage(service.env, "reconcile_sandboxes", "--fix", "--format", "json")
    report = json.loads(reconcile.stdout)
    assert report["ok"] and not report["failed"], reconcile.stdout
    removed = {finding["subject"] for finding in report["findings"]
               if finding["kind"] == "leftover_sandbox" and finding["fixed"]}
    assert set(left) <= removed, reconcile.stdout
    assert docker_runtime.left() == [], f"left after reconcile --fix: {docker_runtime.left()}\n{reconcile.stdout}"


def plant(engine, *, deployment: str, holder: str, account_id: str = "", expires_at=None) -> str:
    """A sandbox as the backend makes one, with the SDK: a volume and a container of the test image; its name."""
    from docker.types import Mount

    sandbox_id = "sbx_" + uuid.uuid4().hex[:20]
    name = f"{deployment}-{sandbox_id}"
    labels = {DEPLOYMENT_LABEL: deployment, SANDBOX_LABEL: sandbox_id, ACCOUNT_LABEL: account_id, HOLDER_LABEL: holder}
    if expires_at is not None:
        labels[EXPIRES_LABEL] = expires_at.isoformat()
    engine.volumes.create(name=f"{name}-workspace", labels=labels)
    engine.containers.run(docker_test_image(), ["sleep", "600"], name=name, labels=labels, detach=True,
                          user="1000:1000", network_mode="none", init=True,
                          mounts=[Mount(target="/workspace", source=f"{name}-workspace", type="volume")])
    return name


def test_reconcile_removes_our_leftover_and_expired_sandboxes_and_never_another_deployments(docker_runtime):
    engine, deployment = docker_runtime.engine, docker_runtime.deployment
    other = f"other-{uuid.uuid4().hex[:12]}"
    person = make_person("planted")
    over = SetupRun.objects.create(account=person.account, status=SetupRun.Status.COMPLETED,
                                   finished_at=timezone.now())
    queued = SetupRun.objects.create(account=person.account)  # active: it holds what it names, until its time
    later, earlier = timezone.now() + timedelta(hours=1), timezone.now() - timedelta(minutes=5)
    try:
        leftover = plant(engine, deployment=deployment, holder=over.pk, account_id=str(person.account.pk),
                         expires_at=later)
        expired = plant(engine, deployment=deployment, holder=queued.pk, account_id=str(person.account.pk),
                        expires_at=earlier)
        held = plant(engine, deployment=deployment, holder=queued.pk, account_id=str(person.account.pk),
                     expires_at=later)
        foreign = plant(engine, deployment=other, holder=over.pk, expires_at=earlier)
        both = {name: [f"container {name}", f"volume {name}-workspace"] for name in (leftover, expired, held)}
        env = docker_runtime.environment()

        listed = manage(env, "reconcile_sandboxes").stdout
        assert f"  container {leftover}: setup run {over.pk}, which held it, is over\n" in listed, listed
        assert f"  volume {leftover}-workspace: setup run {over.pk}, which held it, is over\n" in listed, listed
        assert re.search(rf"  container {expired}: past its time \([^)]+\)\n", listed), listed
        assert held not in listed, listed
        assert "Sandbox containers and volumes not marked as ours (left alone)" in listed, listed
        assert (f"  container {foreign}: it carries the mark of deployment {other!r}, not this one's, "
                "so it is never removed\n") in listed, listed
        assert docker_runtime.left() == sorted(both[leftover] + both[expired] + both[held]), "a report removes nothing"

        fixed = manage(env, "reconcile_sandboxes", "--fix", "--format", "json").stdout
        findings = {finding["subject"]: finding for finding in json.loads(fixed)["findings"]}
        for subject in both[leftover] + both[expired]:
            assert findings[subject]["kind"] == "leftover_sandbox" and findings[subject]["fixed"], findings[subject]
        for subject in (f"container {foreign}", f"volume {foreign}-workspace"):
            assert findings[subject]["kind"] == "not_ours_sandbox", findings[subject]
            assert not findings[subject]["fixed"] and not findings[subject]["error"], findings[subject]
        assert not [subject for subject in findings if held in subject], fixed

        assert docker_runtime.left() == both[held], "ours that nothing holds, or past their time, are removed"
        assert engine.containers.get(foreign).status == "running", "another deployment's container is left alone"
        assert engine.volumes.get(f"{foreign}-workspace").attrs["Labels"][DEPLOYMENT_LABEL] == other
    finally:
        remove_marked(engine, other)
