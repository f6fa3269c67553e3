"""Request and response shapes of the sandbox API (names match spec/contract.yaml)."""

from functools import cache

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
        if value.startswith("/"):
            raise serializers.ValidationError("must be relative to the sandbox, not an absolute path")
        parts = value.split("/")
        if ".." in parts:
            raise serializers.ValidationError("must not contain '..'")
        if any(part in ("", ".") for part in parts):
            raise serializers.ValidationError("must be normalized (no '.' parts, no empty parts, no trailing '/')")
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


class SandboxErrorResponseSerializer(serializers.Serializer):
    status = serializers.ChoiceField(choices=["error"], required=False)
    error = serializers.CharField()
    missing_fields = serializers.ListField(
        child=serializers.CharField(), required=False, help_text="Required request fields that were not sent."
    )
    invalid_fields = serializers.ListField(
        child=serializers.CharField(),
        required=False,
        help_text="Request fields or query parameters that were sent but are not valid or not taken "
        "(`body` for a body that is not a JSON object).",
    )


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
    the next, so one instance serves every request. For the hot read paths.
    """
    return _shared(serializer_class).to_representation(instance)
