"""The factory that hands services the configured outside systems."""

from pathlib import Path

from django.conf import settings

from sandboxes.providers.base import GitHost, SandboxBackend
from sandboxes.providers.snapshot_store import SnapshotStore


def get_snapshot_store() -> SnapshotStore:
    if settings.SNAPSHOT_STORE == "s3":
        from sandboxes.providers.snapshot_store import S3Settings, S3SnapshotStore

        return S3SnapshotStore(settings=S3Settings(**settings.SNAPSHOT_S3), deployment_id=settings.SANDBOX_DEPLOYMENT_ID)
    from sandboxes.providers.snapshot_store import LocalSnapshotStore

    return LocalSnapshotStore(folder=Path(settings.SANDBOX_ROOT) / "snapshots",
                              deployment_id=settings.SANDBOX_DEPLOYMENT_ID)


def get_sandbox_backend(*, engine: str = "") -> SandboxBackend:
    """The configured backend; `engine`: the engine a live sandbox's row names, where not DOCKER_HOST's."""
    if settings.SANDBOX_BACKEND == "docker":
        from sandboxes.providers.docker_sandbox import DockerSandboxBackend, DockerSandboxSettings

        return DockerSandboxBackend(settings=DockerSandboxSettings(**settings.SANDBOX_DOCKER),
                                    store=get_snapshot_store(), scratch=Path(settings.SANDBOX_ROOT) / "scratch",
                                    deployment_id=settings.SANDBOX_DEPLOYMENT_ID,
                                    command_timeout=settings.SANDBOX_COMMAND_TIMEOUT, engine=engine)
    from sandboxes.providers.local_sandbox import LocalSandboxBackend

    return LocalSandboxBackend(root=settings.SANDBOX_ROOT, command_timeout=settings.SANDBOX_COMMAND_TIMEOUT,
                               store=get_snapshot_store())


def get_git_host() -> GitHost:
    if settings.GIT_HOST == "github":
        from sandboxes.providers.github import GitHubConfig, GitHubHost

        return GitHubHost(config=GitHubConfig(**settings.GITHUB, deployment_id=settings.SANDBOX_DEPLOYMENT_ID))
    from sandboxes.providers.local_git import LocalGitHost

    return LocalGitHost(root=settings.GIT_ROOT, command_timeout=settings.SANDBOX_COMMAND_TIMEOUT,
                        deployment_id=settings.SANDBOX_DEPLOYMENT_ID)
