"""The factory that hands services the configured outside systems."""

from django.conf import settings

from sandboxes.providers.base import GitHost, SandboxBackend


def get_sandbox_backend() -> SandboxBackend:
    from sandboxes.providers.local_sandbox import LocalSandboxBackend

    return LocalSandboxBackend(root=settings.SANDBOX_ROOT, command_timeout=settings.SANDBOX_COMMAND_TIMEOUT)


def get_git_host() -> GitHost:
    if settings.GIT_HOST == "github":
        from sandboxes.providers.github import GitHubConfig, GitHubHost

        return GitHubHost(config=GitHubConfig(**settings.GITHUB, deployment_id=settings.SANDBOX_DEPLOYMENT_ID))
    from sandboxes.providers.local_git import LocalGitHost

    return LocalGitHost(root=settings.GIT_ROOT, command_timeout=settings.SANDBOX_COMMAND_TIMEOUT,
                        deployment_id=settings.SANDBOX_DEPLOYMENT_ID)
