"""Request and response shapes of the sandbox API (names match spec/contract.yaml)."""

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
