"""The setup pipeline on the docker backend and a real Docker engine (the `docker` marker).

The run completes with git on the worker (the test image has no git at all),
its snapshot holds the repository's content and history and restores in a new
container, and nothing of the run is left on the engine; a step the engine
fails is a sentence on the run, with nothing left either.
"""

import tarfile
import threading
import uuid
from pathlib import Path

import pytest
from django.conf import settings

from sandboxes.models import SetupRun, Snapshot
from sandboxes.providers import get_sandbox_backend

pytestmark = [pytest.mark.docker, pytest.mark.django_db]


@pytest.fixture
def deployment(docker_settings, docker_engine):
    docker_settings.SANDBOX_DEPLOYMENT_ID = "test-" + uuid.uuid4().hex[:12]
    yield docker_settings.SANDBOX_DEPLOYMENT_ID
    for container in left_on_the_engine(docker_engine, docker_settings.SANDBOX_DEPLOYMENT_ID):
        container.remove(force=True)


def left_on_the_engine(client, deployment_id: str) -> list:
    marked = {"label": f"sandbox-service.deployment={deployment_id}"}
    return client.containers.list(all=True, filters=marked) + client.volumes.list(filters=marked)


def set_up(api, person, run_queued_setups) -> SetupRun:
    response = api.setup(person.key)
    assert response.status_code == 200, response.json()
    run_queued_setups()
    return SetupRun.objects.get(pk=response.json()["runId"])


def test_a_setup_on_the_docker_backend_completes_and_leaves_nothing_on_the_engine(
        people, api, run_queued_setups, deployment, docker_engine):
    run = set_up(api, people.alice, run_queued_setups)

    assert run.status == SetupRun.Status.COMPLETED, run.error
    assert [entry["name"] for entry in run.steps if entry["ok"]] == [
        "create_sandbox", "ensure_repository", "provision", "snapshot", "save_snapshot", "shutdown",
    ]
    assert Snapshot.objects.get(account=people.alice.account).snapshot_id == run.output["snapshot_id"]
    assert left_on_the_engine(docker_engine, deployment) == []


def test_the_snapshot_holds_the_starter_files_and_the_history_without_credentials(
        people, api, run_queued_setups, deployment):
    run = set_up(api, people.alice, run_queued_setups)

    archive = Path(settings.SANDBOX_ROOT) / "snapshots" / f"{run.output['snapshot_id']}.tar.gz"
    with tarfile.open(archive, "r:gz") as tar:
        names = set(tar.getnames())
        git_config = tar.extractfile("./.git/config").read().decode()
    starter = Path(settings.SANDBOX_TEMPLATE_DIR)
    assert {f"./{path.relative_to(starter)}" for path in starter.rglob("*") if path.is_file()} <= names
    assert "./.git/HEAD" in names
    # The push went to an address given on the worker's command line: no remote is recorded.
    assert "url" not in git_config and "remote" not in git_config


def test_the_snapshot_of_a_setup_restores_in_a_new_container(people, api, run_queued_setups, deployment,
                                                             docker_engine):
    run = set_up(api, people.alice, run_queued_setups)
    backend = get_sandbox_backend()

    sandbox_id = backend.restore(run.output["snapshot_id"])

    container = docker_engine.containers.get(f"{deployment}-{sandbox_id}")
    exit_code, output = container.exec_run(["cat", "/workspace/README.md"])
    assert exit_code == 0 and output == (Path(settings.SANDBOX_TEMPLATE_DIR) / "README.md").read_bytes()
    backend.stop(sandbox_id)


def test_a_second_setup_starts_from_the_repository_it_pushed(people, api, run_queued_setups, deployment,
                                                             docker_engine):
    set_up(api, people.alice, run_queued_setups)

    run = set_up(api, people.alice, run_queued_setups)

    assert run.status == SetupRun.Status.COMPLETED, run.error
    [provision] = [entry for entry in run.steps if entry["name"] == "provision"]
    assert provision["detail"] == "Checked out the repository's existing content (branch main)"
    assert left_on_the_engine(docker_engine, deployment) == []


def test_a_missing_image_fails_the_run_naming_sandbox_image(people, api, run_queued_setups, deployment,
                                                            docker_settings, docker_engine):
    docker_settings.SANDBOX_DOCKER = {**docker_settings.SANDBOX_DOCKER, "image": "no-such-image:1"}

    run = set_up(api, people.alice, run_queued_setups)

    assert run.status == SetupRun.Status.FAILED
    assert run.error == (
        "Creating the sandbox failed: The sandbox image 'no-such-image:1' (SANDBOX_IMAGE) is not on the Docker "
        "engine; build it (docker/sandbox.Dockerfile) or set SANDBOX_IMAGE to an image the engine has"
    )
    assert left_on_the_engine(docker_engine, deployment) == []
    assert not Snapshot.objects.filter(account=people.alice.account).exists()


def test_an_engine_that_does_not_answer_fails_the_run_in_words(people, api, run_queued_setups, deployment,
                                                               monkeypatch, tmp_path):
    monkeypatch.setenv("DOCKER_HOST", f"unix://{tmp_path}/no-engine.sock")

    run = set_up(api, people.alice, run_queued_setups)

    assert run.status == SetupRun.Status.FAILED
    assert run.error.startswith("Creating the sandbox failed: Could not start a sandbox: the Docker engine does "
                                "not answer (DOCKER_HOST, or the local socket)"), run.error
    assert str(tmp_path) not in run.error


def kill_on_start(client, deployment_id: str) -> threading.Thread:
    """Kill the first container of the deployment the moment the engine reports it started."""
    events = client.events(decode=True, filters={"type": "container", "event": "start",
                                                 "label": f"sandbox-service.deployment={deployment_id}"})

    def watch():
        for event in events:
            client.api.kill(event["id"])
            events.close()
            return

    watcher = threading.Thread(target=watch, daemon=True)
    watcher.start()
    return watcher


def test_a_container_killed_during_the_run_fails_it_and_takes_away_what_it_made(
        people, api, run_queued_setups, deployment, docker_engine, docker_settings, tmp_path):
    # A starter layout large enough that the kill lands while the run works.
    for number in range(300):
        (tmp_path / "starter" / f"module-{number % 10}").mkdir(parents=True, exist_ok=True)
        (tmp_path / "starter" / f"module-{number % 10}" / f"file-{number}.py").write_text(f"n = {number}\n" * 50)
    docker_settings.SANDBOX_TEMPLATE_DIR = tmp_path / "starter"
    watcher = kill_on_start(docker_engine, deployment)

    run = set_up(api, people.alice, run_queued_setups)
    watcher.join(timeout=10)

    assert run.status == SetupRun.Status.FAILED
    assert f"The container of sandbox {run.sandbox_id} stopped unexpectedly: it was killed" in run.error, run.error
    assert left_on_the_engine(docker_engine, deployment) == []
    assert not Snapshot.objects.filter(account=people.alice.account).exists()
    # The repository the run created is deleted with it: a retry creates it anew and completes.
    assert "could not be deleted" not in run.error
    assert set_up(api, people.alice, run_queued_setups).status == SetupRun.Status.COMPLETED
