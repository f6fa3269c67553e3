"""Request and response shapes of the sandbox API (names match spec/contract.yaml)."""

import base64
import binascii
import re
from functools import cache

from django.conf import settings
from rest_framework import serializers

from config.api_input import QuerySerializer, StrictSerializer
from sandboxes.models import SetupRun


class UUIDStringField(serializers.UUIDField):
    """A UUID sent as a JSON string (contract: `type: string, format: uuid`).

    DRF's UUIDField also reads a JSON number as a UUID (`12` becomes
    00000000-…-00000000000c, and `true` is a number to Python), which would
    answer a client's mistake with a 403 instead of a 400.
    """

    def to_internal_value(self, data):
        if not isinstance(data, str):
            self.fail("invalid")
        return super().to_internal_value(data)


class AccountTargetSerializer(StrictSerializer):
    """Optional account targeting; no other field is taken."""

    account_id = UUIDStringField(
        required=False,
        allow_null=True,
        help_text="UUID of the account to act on; the API key's own account when left out.",
    )


class SetupSandboxRequestSerializer(AccountTargetSerializer):
    pass


class DeleteSandboxRequestSerializer(AccountTargetSerializer):
    pass


class RenewSandboxRequestSerializer(AccountTargetSerializer):
    pass


class SandboxQuerySerializer(QuerySerializer):
    account_id = serializers.UUIDField(
        required=False, help_text="UUID of the account to look at; the API key's own account when left out."
    )


class SandboxFileQuerySerializer(SandboxQuerySerializer):
    path = serializers.CharField(
        max_length=4096,
        trim_whitespace=False,
        help_text="The file's path in the snapshot: relative and normalized (no leading /, no . or .., no //).",
    )

    def validate_path(self, value: str) -> str:
        error = workspace_path_error(value, git_allowed=True)
        if error:
            raise serializers.ValidationError(error)
        return value


class SetupSandboxResponseSerializer(serializers.Serializer):
    status = serializers.ChoiceField(choices=["success"])
    runId = serializers.CharField(help_text="Poll GET /api/tasks/runs?runId=… for the run's progress.")


class UpdateSnapshotResponseSerializer(serializers.Serializer):
    account_id = serializers.UUIDField()
    snapshot_id = serializers.CharField()
    expires_at = serializers.DateTimeField()
    github_repo = serializers.CharField(allow_null=True)
    created_at = serializers.DateTimeField(allow_null=True)


class DeleteSandboxResponseSerializer(serializers.Serializer):
    status = serializers.ChoiceField(choices=["success", "error"])
    deleted_snapshot = UpdateSnapshotResponseSerializer(
        allow_null=True, help_text="The snapshot record that was deleted; null if the account had none."
    )
    error = serializers.CharField(required=False)


class RunsQuerySerializer(QuerySerializer):
    """The query parameters of GET /api/tasks/runs (the schema documents them from here)."""

    runId = serializers.CharField(required=False, max_length=40,
                                  help_text="A run id (run_…); answers that run alone.")
    account_id = serializers.UUIDField(required=False,
                                       help_text="Recent runs of this account (default: the key's own).")
    limit = serializers.IntegerField(required=False, min_value=1, max_value=100, default=20,
                                     help_text="How many recent runs, 1 to 100 (default 20).")


class RunStepSerializer(serializers.Serializer):
    name = serializers.CharField()
    started = serializers.DateTimeField()
    finished = serializers.DateTimeField(allow_null=True)
    ok = serializers.BooleanField(allow_null=True)
    detail = serializers.CharField(allow_blank=True)


class RunMetadataSerializer(serializers.Serializer):
    currentStep = serializers.CharField(source="current_step", allow_blank=True)
    steps = RunStepSerializer(many=True)


class RunOutputSerializer(serializers.Serializer):
    snapshot_id = serializers.CharField()
    github_repo = serializers.CharField(allow_null=True)
    expires_at = serializers.DateTimeField()


class RunSerializer(serializers.ModelSerializer):
    taskIdentifier = serializers.SerializerMethodField()
    account_id = serializers.UUIDField()
    createdAt = serializers.DateTimeField(source="created_at")
    startedAt = serializers.DateTimeField(source="started_at", allow_null=True)
    finishedAt = serializers.DateTimeField(source="finished_at", allow_null=True)
    output = RunOutputSerializer(allow_null=True)
    error = serializers.SerializerMethodField()
    metadata = RunMetadataSerializer(source="*")

    class Meta:
        model = SetupRun
        fields = ["id", "taskIdentifier", "status", "account_id", "createdAt", "startedAt", "finishedAt",
                  "output", "error", "metadata"]

    def get_taskIdentifier(self, run) -> str:
        return SetupRun.TASK_IDENTIFIER

    def get_error(self, run) -> str | None:
        return run.error or None


class RunsResponseSerializer(serializers.Serializer):
    status = serializers.ChoiceField(choices=["success"])
    runs = RunSerializer(many=True)


class FileEntrySerializer(serializers.Serializer):
    path = serializers.CharField(help_text="Relative to the sandbox, with '/' between folders.")
    type = serializers.ChoiceField(choices=["blob", "tree"], help_text="blob: a file; tree: a folder.")
    size = serializers.IntegerField(allow_null=True, help_text="Bytes, for blobs; null for trees.")


class LiveSandboxSerializer(serializers.Serializer):
    sandboxId = serializers.CharField(help_text="sbx_…")
    sandboxStatus = serializers.ChoiceField(choices=["pending", "running", "stopping", "stopped", "failed"])
    timeout = serializers.IntegerField(allow_null=True,
                                       help_text="Milliseconds until it stops by itself (idle), while running.")
    createdAt = serializers.DateTimeField()


class SandboxStateResponseSerializer(serializers.Serializer):
    status = serializers.ChoiceField(choices=["success"])
    account_id = serializers.UUIDField()
    state = serializers.ChoiceField(
        choices=["none", "provisioning", "ready", "expired", "failed"],
        help_text=(
            "none: never set up, or deleted; provisioning: a setup run is queued or executing; ready: the "
            "snapshot is there; expired: past expires_at, not removed yet (PATCH renews it); failed: the last "
            "run failed and there is no snapshot."
        ),
    )
    snapshot_id = serializers.CharField(allow_null=True)
    github_repo = serializers.CharField(allow_null=True)
    expires_at = serializers.DateTimeField(allow_null=True)
    created_at = serializers.DateTimeField(allow_null=True)
    last_run = RunSerializer(allow_null=True, help_text="The account's most recent setup run, as in /api/tasks/runs.")
    sandbox = LiveSandboxSerializer(allow_null=True, help_text="The live sandbox (pending, running or stopping); "
                                                               "null when none is live.")
    filetree = FileEntrySerializer(many=True, allow_null=True, help_text="The snapshot's files and folders.")


class SandboxFileResponseSerializer(serializers.Serializer):
    status = serializers.ChoiceField(choices=["success"])
    path = serializers.CharField()
    size = serializers.IntegerField(help_text="Bytes.")
    encoding = serializers.ChoiceField(
        choices=["utf-8", "base64"], help_text="utf-8: content is the text; base64: the file is not valid UTF-8."
    )
    content = serializers.CharField(allow_blank=True)


class RenewSandboxResponseSerializer(serializers.Serializer):
    status = serializers.ChoiceField(choices=["success"])
    snapshot = UpdateSnapshotResponseSerializer(help_text="The snapshot record with its new expiry.")


@cache
def _shared(serializer_class: type[serializers.Serializer]) -> serializers.Serializer:
    return serializer_class()


def represent(serializer_class: type[serializers.Serializer], instance) -> dict:
    """What `serializer_class(instance).data` answers, from one serializer per process.

    Building a serializer's fields is most of its cost (a ModelSerializer reads
    its model's fields every time); the fields keep nothing from one value to
    the next, so one instance serves every request: the answer of a delete
    costs 22 µs instead of 124 (bench/README.md, "DELETE /api/sandboxes").
    """
    return _shared(serializer_class).to_representation(instance)


# --- live sandboxes ---------------------------------------------------------------------

_ENV_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")  # fullmatch: `$` would let a trailing newline through
COMMAND_MAX_ARGS = 1000
COMMAND_MAX_ENV = 100
COMMAND_MAX_ARGUMENT_BYTES = 32 * 1024


def workspace_path_error(value: str, *, allow_empty: bool = False, git_allowed: bool = False) -> str:
    """Why a path is not a normalized path of the workspace (outside .git unless `git_allowed`); "" when it is one."""
    if value == "" and allow_empty:
        return ""
    if value.startswith("/"):
        return "must be relative to the sandbox, not an absolute path"
    parts = value.split("/")
    if ".." in parts:
        return "must not contain '..'"
    if any(part in ("", ".") for part in parts):
        return "must be normalized (no '.' parts, no empty parts, no trailing '/')"
    if ".git" in parts and not git_allowed:
        return "must not be inside .git"
    return ""


def _no_nul(value: str, what: str) -> str:
    if "\x00" in value:
        raise serializers.ValidationError(f"{what} must not hold a NUL character")
    return value


class StartSandboxRequestSerializer(AccountTargetSerializer):
    pass


class StartSandboxResponseSerializer(serializers.Serializer):
    status = serializers.ChoiceField(choices=["success"])
    sandboxes = LiveSandboxSerializer(many=True)


class RunCommandRequestSerializer(AccountTargetSerializer):
    command = serializers.CharField(max_length=4096, trim_whitespace=False,
                                    help_text="The program to run (no shell unless you name one: sh, bash).")
    args = serializers.ListField(child=serializers.CharField(allow_blank=True, trim_whitespace=False,
                                                             max_length=COMMAND_MAX_ARGUMENT_BYTES),
                                 required=False, default=list, max_length=COMMAND_MAX_ARGS)
    cwd = serializers.CharField(required=False, default="", allow_blank=True, trim_whitespace=False, max_length=4096,
                                help_text="A folder of the workspace, relative and normalized; the workspace itself "
                                          "when left out.")
    env = serializers.DictField(child=serializers.CharField(allow_blank=True, trim_whitespace=False,
                                                            max_length=COMMAND_MAX_ARGUMENT_BYTES),
                                required=False, default=dict,
                                help_text=f"Environment variables of the command (at most {COMMAND_MAX_ENV}); "
                                          "their values are never recorded.")
    timeout_ms = serializers.IntegerField(required=False, default=60_000, min_value=1,
                                          help_text="Its time limit; at most SANDBOX_COMMAND_MAX_MS.")
    background = serializers.BooleanField(required=False, default=False,
                                          help_text="Answer 202 at once; read it with GET /api/sandboxes/commands.")

    def validate_command(self, value: str) -> str:
        if not value:
            raise serializers.ValidationError("must name a program")
        return _no_nul(value, "command")

    def validate_args(self, value: list) -> list:
        return [_no_nul(argument, "an argument") for argument in value]

    def validate_cwd(self, value: str) -> str:
        error = workspace_path_error(value, allow_empty=True)
        if error:
            raise serializers.ValidationError(error)
        return _no_nul(value, "cwd")

    def validate_env(self, value: dict) -> dict:
        if len(value) > COMMAND_MAX_ENV:
            raise serializers.ValidationError(f"at most {COMMAND_MAX_ENV} variables")
        for name, text in value.items():
            if not _ENV_NAME.fullmatch(name):
                raise serializers.ValidationError(f"{name[:40]!r} is not a variable name (letters, digits, _)")
            _no_nul(text, "a value")
        return value

    def validate_timeout_ms(self, value: int) -> int:
        if value > settings.SANDBOX_COMMAND_MAX_MS:
            raise serializers.ValidationError(f"must be at most {settings.SANDBOX_COMMAND_MAX_MS} "
                                              "(SANDBOX_COMMAND_MAX_MS)")
        return value


class CommandQuerySerializer(QuerySerializer):
    commandId = serializers.CharField(max_length=40, help_text="The command's id (cmd_…).")


class CommandResponseSerializer(serializers.Serializer):
    status = serializers.ChoiceField(choices=["success"])
    commandId = serializers.CharField()
    commandStatus = serializers.ChoiceField(choices=["running", "finished", "timed_out", "killed", "failed"])
    exitCode = serializers.IntegerField(allow_null=True, help_text="null while running, and when killed.")
    stdout = serializers.CharField(allow_blank=True, help_text="At most SANDBOX_OUTPUT_MAX_BYTES, as UTF-8.")
    stderr = serializers.CharField(allow_blank=True)
    stdoutTruncated = serializers.BooleanField()
    stderrTruncated = serializers.BooleanField()
    timedOut = serializers.BooleanField()
    durationMs = serializers.IntegerField(allow_null=True)


class UploadFileSerializer(StrictSerializer):
    path = serializers.CharField(max_length=4096, trim_whitespace=False)
    content = serializers.CharField(allow_blank=True, trim_whitespace=False)
    encoding = serializers.ChoiceField(choices=["utf-8", "base64"], required=False, default="utf-8")

    def validate_path(self, value: str) -> str:
        error = workspace_path_error(value)
        if error:
            raise serializers.ValidationError(error)
        return _no_nul(value, "path")

    def validate(self, data: dict) -> dict:
        if data["encoding"] == "base64":
            try:
                data["content"] = base64.b64decode(data["content"], validate=True)
            except (binascii.Error, ValueError):
                raise serializers.ValidationError({"content": "is not valid base64"}) from None
        else:
            data["content"] = data["content"].encode("utf-8")
        return data


class UploadFilesRequestSerializer(AccountTargetSerializer):
    files = UploadFileSerializer(many=True, allow_empty=False)
    message = serializers.CharField(required=False, default="", allow_blank=True, max_length=1000,
                                    help_text='The commit message; "Upload files via API" when left out.')

    def validate_message(self, value: str) -> str:
        return _no_nul(value, "message")


class UploadedFileSerializer(serializers.Serializer):
    path = serializers.CharField()
    sha = serializers.CharField(help_text="The file's git blob id in the repository.")


class UploadFilesResponseSerializer(serializers.Serializer):
    status = serializers.ChoiceField(choices=["success"])
    uploaded = UploadedFileSerializer(many=True)


class StopSandboxRequestSerializer(AccountTargetSerializer):
    snapshot = serializers.BooleanField(required=False, default=True,
                                        help_text="Take a snapshot and push it to the repository first (default).")


class StopSandboxResponseSerializer(serializers.Serializer):
    status = serializers.ChoiceField(choices=["success"])
    snapshot = UpdateSnapshotResponseSerializer(allow_null=True, help_text="The new snapshot; null without one.")
