"""The docker sandbox backend against a real Docker engine (the `docker` marker; skipped without one).

What a sandbox is: a container of the image with the workspace on a named
volume, every label, and the limits, each proven from inside the running
container (a write to /, memory past its limit, a fork bomb, the network,
the capabilities and the user). What it keeps: snapshots in the local
backend's format, which each backend restores from the other. What it leaves:
nothing, also when a step fails (a missing image, a killed container, an
engine that does not answer, a full disk).
"""

import hashlib
import os
import subprocess
import tarfile
import time
import uuid
from datetime import timedelta
from pathlib import Path

import pytest
from django.utils import timezone

from sandboxes.providers import get_sandbox_backend
from sandboxes.providers.base import SandboxBackendError, SandboxOwner
from sandboxes.providers.local_sandbox import LocalSandboxBackend

pytestmark = pytest.mark.docker


@pytest.fixture
def deployment(docker_settings, docker_engine):
    """A deployment id of the test's own; whatever carries it is removed afterwards."""
    docker_settings.SANDBOX_DEPLOYMENT_ID = "test-" + uuid.uuid4().hex[:12]
    yield docker_settings.SANDBOX_DEPLOYMENT_ID
    for container in ours(docker_engine, docker_settings.SANDBOX_DEPLOYMENT_ID, "containers"):
        container.remove(force=True)
    for volume in ours(docker_engine, docker_settings.SANDBOX_DEPLOYMENT_ID, "volumes"):
        volume.remove(force=True)


def ours(client, deployment_id: str, kind: str) -> list:
    marked = {"label": f"sandbox-service.deployment={deployment_id}"}
    if kind == "containers":
        return client.containers.list(all=True, filters=marked)
    return client.volumes.list(filters=marked)


@pytest.fixture
def backend(deployment):
    return get_sandbox_backend()


def container_of(client, deployment_id: str, sandbox_id: str):
    return client.containers.get(f"{deployment_id}-{sandbox_id}")


def inside(container, *command: str) -> tuple[int, str]:
    """Run a command in the container as its own user; its exit code and output."""
    exit_code, output = container.exec_run(list(command))
    return exit_code, output.decode("utf-8", "replace")


# --- what a sandbox is -------------------------------------------------------------


def test_a_sandbox_is_a_running_container_with_its_workspace_on_a_labelled_volume(
        backend, deployment, docker_engine, docker_settings):
    expires_at = timezone.now() + timedelta(minutes=5)
    sandbox_id = backend.create(owner=SandboxOwner(account_id="acc-1", holder="run_1", expires_at=expires_at))

    container = container_of(docker_engine, deployment, sandbox_id)
    assert container.status == "running"
    assert container.image.tags == [docker_settings.SANDBOX_DOCKER["image"]]
    labels = {
        "sandbox-service.deployment": deployment,
        "sandbox-service.sandbox": sandbox_id,
        "sandbox-service.account": "acc-1",
        "sandbox-service.holder": "run_1",
        "sandbox-service.expires-at": expires_at.isoformat(),
    }
    assert container.labels == labels
    [mount] = container.attrs["Mounts"]
    assert (mount["Type"], mount["Destination"]) == ("volume", "/workspace")
    assert docker_engine.volumes.get(mount["Name"]).attrs["Labels"] == labels


def test_the_container_is_locked_down_by_its_settings(backend, deployment, docker_engine):
    container = container_of(docker_engine, deployment, backend.create())

    host = container.attrs["HostConfig"]
    assert container.attrs["Config"]["User"] == "1000:1000"
    assert host["ReadonlyRootfs"] is True
    assert host["CapDrop"] == ["ALL"] and not host["CapAdd"]
    assert host["SecurityOpt"] == ["no-new-privileges"]
    assert host["Privileged"] is False
    assert host["NetworkMode"] == "none" and container.attrs["Config"]["NetworkDisabled"] is True
    assert host["Memory"] == host["MemorySwap"] == 512 * 1024**2
    assert host["NanoCpus"] == 1_000_000_000
    assert host["PidsLimit"] == 256
    assert host["Init"] is True
    assert host["Tmpfs"] == {"/tmp": f"rw,noexec,nosuid,nodev,size={64 * 1024**2}"}
    # Nothing of the host is mounted: no Docker socket, no folder.
    assert not host["Binds"]
    assert [mount["Type"] for mount in container.attrs["Mounts"]] == ["volume"]


def test_the_root_file_system_cannot_be_written(backend, deployment, docker_engine):
    container = container_of(docker_engine, deployment, backend.create())

    exit_code, output = inside(container, "touch", "/written")
    assert exit_code != 0 and "Read-only file system" in output
    assert inside(container, "touch", "/workspace/written")[0] == 0


def test_the_user_is_not_root_and_holds_no_capability(backend, deployment, docker_engine):
    container = container_of(docker_engine, deployment, backend.create())

    assert inside(container, "id", "-u") == (0, "1000\n")
    _, status = inside(container, "cat", "/proc/self/status")
    capabilities = dict(line.split(":\t") for line in status.splitlines() if line.startswith("Cap"))
    assert capabilities["CapEff"] == capabilities["CapPrm"] == capabilities["CapBnd"] == "0000000000000000"
    assert "NoNewPrivs:\t1" in status


def test_there_is_no_network_interface_but_loopback(backend, deployment, docker_engine):
    container = container_of(docker_engine, deployment, backend.create())

    assert inside(container, "ls", "/sys/class/net") == (0, "lo\n")


def test_tmp_is_a_small_tmpfs_where_nothing_runs(backend, deployment, docker_engine):
    container = container_of(docker_engine, deployment, backend.create())

    assert inside(container, "cp", "/bin/busybox", "/tmp/program")[0] == 0
    exit_code, output = inside(container, "sh", "-c", "/tmp/program true")
    assert exit_code == 126 and "Permission denied" in output


def test_a_process_that_allocates_past_the_memory_limit_is_killed(deployment, docker_settings, docker_engine):
    docker_settings.SANDBOX_DOCKER = {**docker_settings.SANDBOX_DOCKER, "memory_bytes": 32 * 1024**2}
    container = container_of(docker_engine, deployment, get_sandbox_backend().create())

    # 100 MB held in one shell variable, with 32 MiB and no swap.
    exit_code, _ = inside(container, "sh", "-c", "x=$(head -c 100000000 /dev/zero | tr '\\0' a); echo ${#x}")

    assert exit_code == 137


def test_a_fork_bomb_is_held_by_the_pids_limit_and_the_host_stays_responsive(
        deployment, docker_settings, docker_engine):
    docker_settings.SANDBOX_DOCKER = {**docker_settings.SANDBOX_DOCKER, "pids": 32}
    backend = get_sandbox_backend()
    sandbox_id = backend.create()
    container = container_of(docker_engine, deployment, sandbox_id)

    container.exec_run(["sh", "-c", "bomb() { bomb | bomb & }; bomb"], detach=True)
    time.sleep(2)
    started = time.monotonic()
    subprocess.run(["true"], check=True)
    host_answered_in = time.monotonic() - started

    assert int(Path(f"/sys/fs/cgroup/pids/docker/{container.id}/pids.current").read_text()
               if Path(f"/sys/fs/cgroup/pids/docker/{container.id}").is_dir()
               else container.stats(stream=False)["pids_stats"]["current"]) <= 32
    assert host_answered_in < 1
    backend.stop(sandbox_id)  # the bomb and its container are gone
    assert ours(docker_engine, deployment, "containers") == []


# --- files and snapshots ------------------------------------------------------------


def test_files_written_into_a_sandbox_belong_to_its_user(backend, deployment, docker_engine):
    sandbox_id = backend.create()
    backend.write_files(sandbox_id, {"src/app.py": b"print('hi')\n"})

    container = container_of(docker_engine, deployment, sandbox_id)
    assert inside(container, "cat", "/workspace/src/app.py") == (0, "print('hi')\n")
    assert inside(container, "stat", "-c", "%u:%g", "/workspace/src", "/workspace/src/app.py") == (0, "1000:1000\n" * 2)


def test_a_file_outside_the_workspace_is_refused(backend):
    sandbox_id = backend.create()

    with pytest.raises(SandboxBackendError, match="outside the sandbox"):
        backend.write_files(sandbox_id, {"../escape": b"x"})


def test_a_folder_of_the_worker_is_written_into_the_workspace_with_its_links(backend, deployment, docker_engine,
                                                                              tmp_path):
    (tmp_path / "tree" / "sub").mkdir(parents=True)
    (tmp_path / "tree" / "sub" / "file.txt").write_text("content")
    (tmp_path / "tree" / "link").symlink_to("sub/file.txt")
    sandbox_id = backend.create()

    backend.write_tree(sandbox_id, tmp_path / "tree")

    container = container_of(docker_engine, deployment, sandbox_id)
    assert inside(container, "cat", "/workspace/link") == (0, "content")


def test_a_snapshot_has_the_local_backends_format_and_checksum(backend, docker_settings):
    sandbox_id = backend.create()
    backend.write_files(sandbox_id, {"README.md": b"# hello\n", "src/app.py": b"print(1)\n"})

    info = backend.snapshot(sandbox_id)

    archive = Path(docker_settings.SANDBOX_ROOT) / "snapshots" / f"{info.snapshot_id}.tar.gz"
    assert hashlib.sha256(archive.read_bytes()).hexdigest() == info.checksum
    with tarfile.open(archive, "r:gz") as tar:
        assert sorted(tar.getnames()) == [".", "./README.md", "./src", "./src/app.py"]
    assert [(entry.path, entry.type, entry.size) for entry in info.files] == [
        ("README.md", "blob", 8), ("src", "tree", None), ("src/app.py", "blob", 9),
    ]
    assert backend.read_file(info.snapshot_id, "src/app.py", max_bytes=100) == b"print(1)\n"


def test_a_snapshot_restores_in_a_new_container_and_on_the_local_backend(backend, deployment, docker_engine,
                                                                         docker_settings):
    sandbox_id = backend.create()
    backend.write_files(sandbox_id, {"notes/todo.txt": b"ship it\n"})
    info = backend.snapshot(sandbox_id)
    backend.stop(sandbox_id)

    restored = backend.restore(info.snapshot_id)
    container = container_of(docker_engine, deployment, restored)
    assert inside(container, "cat", "/workspace/notes/todo.txt") == (0, "ship it\n")
    assert inside(container, "stat", "-c", "%u", "/workspace/notes/todo.txt") == (0, "1000\n")

    local = LocalSandboxBackend(root=docker_settings.SANDBOX_ROOT, command_timeout=10, store=backend.store)
    on_local = local.restore(info.snapshot_id)
    assert (Path(docker_settings.SANDBOX_ROOT) / "sandboxes" / on_local / "workspace" / "notes" / "todo.txt"
            ).read_text() == "ship it\n"


def test_a_local_backends_snapshot_restores_owned_by_the_sandboxes_user(backend, deployment, docker_engine,
                                                                        docker_settings):
    local = LocalSandboxBackend(root=docker_settings.SANDBOX_ROOT, command_timeout=10, store=backend.store)
    made = local.create()
    local.write_files(made, {"data.txt": b"from the worker\n"})
    info = local.snapshot(made)

    container = container_of(docker_engine, deployment, backend.restore(info.snapshot_id))

    assert inside(container, "stat", "-c", "%u:%g", "/workspace/data.txt") == (0, "1000:1000\n")
    assert inside(container, "sh", "-c", "echo more >> /workspace/data.txt")[0] == 0


# --- leaving nothing behind ---------------------------------------------------------------


def test_stop_removes_the_container_and_its_volume_and_a_second_stop_is_a_no_op(backend, deployment, docker_engine):
    sandbox_id = backend.create()

    backend.stop(sandbox_id)
    backend.stop(sandbox_id)

    assert ours(docker_engine, deployment, "containers") == []
    assert ours(docker_engine, deployment, "volumes") == []


def test_a_missing_image_is_named_and_leaves_nothing(deployment, docker_settings, docker_engine):
    docker_settings.SANDBOX_DOCKER = {**docker_settings.SANDBOX_DOCKER, "image": "no-such-image:1"}

    with pytest.raises(SandboxBackendError, match=r"'no-such-image:1' \(SANDBOX_IMAGE\) is not on the Docker engine"):
        get_sandbox_backend().create()

    assert ours(docker_engine, deployment, "containers") == []
    assert ours(docker_engine, deployment, "volumes") == []


def test_an_engine_that_does_not_answer_is_said_in_words(deployment, monkeypatch, tmp_path):
    monkeypatch.setenv("DOCKER_HOST", f"unix://{tmp_path}/no-engine.sock")

    with pytest.raises(SandboxBackendError, match=r"the Docker engine does not answer \(DOCKER_HOST"):
        get_sandbox_backend().create()


def test_a_container_killed_mid_step_is_said_in_words(backend, deployment, docker_engine):
    sandbox_id = backend.create()
    container_of(docker_engine, deployment, sandbox_id).kill()

    with pytest.raises(SandboxBackendError, match=f"The container of sandbox {sandbox_id} stopped unexpectedly: "
                                                  "it was killed"):
        backend.snapshot(sandbox_id)
    backend.stop(sandbox_id)
    assert ours(docker_engine, deployment, "containers") == []


def test_a_full_disk_on_the_worker_fails_the_snapshot_in_words(backend, docker_settings, tmp_path):
    full = tmp_path / "full"
    full.mkdir()
    if subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", str(full)],
                      capture_output=True).returncode != 0:
        pytest.skip("a small tmpfs cannot be mounted here (the test needs root)")
    try:
        backend.scratch = full
        sandbox_id = backend.create()
        backend.write_files(sandbox_id, {"big.bin": os.urandom(4 * 1024**2)})  # gzip cannot shrink it

        with pytest.raises(SandboxBackendError, match="No space left on device"):
            backend.snapshot(sandbox_id)
        assert list(full.iterdir()) == []
    finally:
        subprocess.run(["umount", str(full)], check=False)


def test_a_command_in_a_killed_container_is_said_in_words(backend, deployment, docker_engine):
    from sandboxes.providers.base import CommandSpec

    sandbox_id = backend.create()
    container_of(docker_engine, deployment, sandbox_id).kill()

    with pytest.raises(SandboxBackendError, match=f"The container of sandbox {sandbox_id} stopped unexpectedly: "
                                                  "it was killed"):
        backend.execute(sandbox_id, CommandSpec(command_id="cmd_1", argv=("true",)), output_cap=100)
