"""A Docker engine whose disk is full (the `docker` marker; needs root and dockerd).

The engine here is a second dockerd of the test's own, its data root on a
48 MB tmpfs, holding a copy of the test image: filling its disk harms no other
test and no other container of the machine. A sandbox written past what it
has left fails with the reason in words, a setup whose starter content does
not fit fails at its provision step saying so, and neither leaves anything
on the engine or on the git host.
"""

import os
import shutil
import signal
import subprocess
import tempfile
import time
import uuid
from pathlib import Path

import pytest

from sandboxes.models import SetupRun, Snapshot
from sandboxes.providers import get_git_host, get_sandbox_backend
from sandboxes.providers.base import SandboxBackendError
from tests.conftest import docker_test_image

pytestmark = pytest.mark.docker

DISK_SIZE = "48m"
MORE_THAN_THE_DISK = 60 * 1024**2  # random bytes: nothing compresses them on the way


@pytest.fixture(scope="module")
def small_engine(docker_engine, tmp_path_factory):
    """DOCKER_HOST of a dockerd whose data root is a small tmpfs, with the test image; stopped and unmounted after."""
    import docker
    import requests

    dockerd = shutil.which("dockerd")
    if dockerd is None:
        pytest.skip("needs dockerd to start an engine of the test's own")
    # A short path: a unix socket's path is limited to 107 bytes.
    root = Path(tempfile.mkdtemp(prefix="sbx-full-", dir="/tmp"))
    if subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={DISK_SIZE}", "tmpfs", str(root)],
                      capture_output=True).returncode != 0:
        root.rmdir()
        pytest.skip("a small tmpfs cannot be mounted here (the test needs root)")
    address = f"unix://{root}/docker.sock"
    log = (tmp_path_factory.mktemp("small-engine") / "dockerd.log").open("wb")
    process = subprocess.Popen(
        [dockerd, "--data-root", str(root / "data"), "--exec-root", str(root / "exec"),
         "--pidfile", str(root / "dockerd.pid"), "--host", address,
         "--iptables=false", "--bridge=none", "--storage-driver=overlay2"],
        stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
    )
    client = None
    try:
        client = docker.DockerClient(base_url=address, version="1.41", timeout=30)
        deadline = time.monotonic() + 30
        while True:
            try:
                client.ping()
                break
            except (docker.errors.DockerException, requests.exceptions.RequestException):
                if process.poll() is not None or time.monotonic() > deadline:
                    pytest.skip(f"a second dockerd did not start here (see {log.name})")
                time.sleep(0.2)
        # The image, by way of an archive (no registry): saved from the main engine, loaded here.
        name = docker_test_image()
        [image] = client.images.load(b"".join(docker_engine.images.get(name).save()))
        repository, _, tag = name.rpartition(":")
        image.tag(repository, tag)
        yield address, client
    finally:
        if client is not None:
            client.close()
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()
        log.close()
        subprocess.run(["umount", "--lazy", str(root)], check=False)
        shutil.rmtree(root, ignore_errors=True)


@pytest.fixture
def deployment(docker_settings, small_engine, monkeypatch):
    """The service pointed at the small engine (DOCKER_HOST), with a deployment id of the test's own."""
    address, client = small_engine
    monkeypatch.setenv("DOCKER_HOST", address)
    docker_settings.SANDBOX_DEPLOYMENT_ID = "test-" + uuid.uuid4().hex[:12]
    yield docker_settings.SANDBOX_DEPLOYMENT_ID
    for kind in (client.containers.list(all=True, filters=_marked(docker_settings.SANDBOX_DEPLOYMENT_ID)),
                 client.volumes.list(filters=_marked(docker_settings.SANDBOX_DEPLOYMENT_ID))):
        for thing in kind:
            thing.remove(force=True)


def _marked(deployment_id: str) -> dict:
    return {"label": f"sandbox-service.deployment={deployment_id}"}


def left_on_the_engine(client, deployment_id: str) -> list:
    return client.containers.list(all=True, filters=_marked(deployment_id)) + client.volumes.list(
        filters=_marked(deployment_id))


def test_writing_past_the_engines_free_disk_fails_in_words_and_stop_leaves_nothing(deployment, small_engine):
    _address, client = small_engine
    backend = get_sandbox_backend()
    sandbox_id = backend.create()

    with pytest.raises(SandboxBackendError, match=f"^Could not write files into sandbox {sandbox_id}: "
                                                  "the Docker engine's disk is full$"):
        backend.write_files(sandbox_id, {"big.bin": os.urandom(MORE_THAN_THE_DISK)})

    backend.stop(sandbox_id)
    assert left_on_the_engine(client, deployment) == []


@pytest.mark.django_db
def test_a_setup_whose_content_does_not_fit_fails_at_provision_saying_so_and_leaves_nothing(
        deployment, small_engine, docker_settings, people, api, run_queued_setups, tmp_path):
    _address, client = small_engine
    starter = tmp_path / "starter"
    starter.mkdir()
    (starter / "README.md").write_text("A sandbox with more data than the engine holds\n")
    (starter / "data.bin").write_bytes(os.urandom(MORE_THAN_THE_DISK))
    docker_settings.SANDBOX_TEMPLATE_DIR = str(starter)

    response = api.setup(people.alice.key)
    assert response.status_code == 200, response.json()
    run_queued_setups()

    run = SetupRun.objects.get(pk=response.json()["runId"])
    assert run.status == SetupRun.Status.FAILED
    assert run.current_step == "provision"
    assert run.error.startswith("Provisioning the sandbox failed: Could not write the workspace of sandbox ")
    assert run.error.endswith(": the Docker engine's disk is full"), run.error
    assert left_on_the_engine(client, deployment) == []
    assert not Snapshot.objects.filter(account=people.alice.account).exists()
    # The repository the run made is taken away with it.
    assert run.created_repository
    assert get_git_host().find_repository(name=run.created_repository) is None
