"""What GET /api/audit takes and answers (the schema documents it from here)."""

from rest_framework import serializers

from accounts.models import AuditEvent
from config.api_input import QuerySerializer
from orgs.audit_trail import DEFAULT_LIMIT, MAX_LIMIT


class AuditQuerySerializer(QuerySerializer):
    """The query parameters of GET /api/audit."""

    account_id = serializers.UUIDField(required=False, help_text="Only this account's events.")
    organization_id = serializers.UUIDField(required=False,
                                            help_text="Only the events of this organization's members.")
    action = serializers.ChoiceField(choices=AuditEvent.Action.values, required=False,
                                     help_text="Only events of this action, e.g. sandbox.deleted.")
    since = serializers.DateTimeField(required=False, help_text="Events at or after this moment (ISO 8601).")
    until = serializers.DateTimeField(required=False, help_text="Events before this moment (ISO 8601).")
    cursor = serializers.CharField(required=False, max_length=1000,
                                   help_text="The next of the previous answer, with the same filters.")
    limit = serializers.IntegerField(required=False, min_value=1, max_value=MAX_LIMIT, default=DEFAULT_LIMIT,
                                     help_text=f"Events per page, 1 to {MAX_LIMIT} (default {DEFAULT_LIMIT}).")

    def validate(self, data):
        since, until = data.get("since"), data.get("until")
        if since is not None and until is not None and since >= until:
            raise serializers.ValidationError({"until": "must be later than since"})
        return data


class AuditActorSerializer(serializers.Serializer):
    kind = serializers.ChoiceField(choices=["key", "staff", "schedule", "worker", "command"])
    name = serializers.CharField(help_text="A key's visible prefix (sbx_…), a staff user's name, or the "
                                           "command's or schedule's name.")


class AuditEventSerializer(serializers.Serializer):
    id = serializers.IntegerField()
    at = serializers.DateTimeField(help_text="When, to the second, with the time zone.")
    action = serializers.ChoiceField(choices=AuditEvent.Action.values)
    outcome = serializers.ChoiceField(choices=AuditEvent.Outcome.values)
    actor = AuditActorSerializer()
    account_id = serializers.UUIDField(allow_null=True)
    target = serializers.CharField(allow_null=True, help_text="The setup run the event is about (run_…), if any.")
    detail = serializers.CharField(help_text="What happened, in words; never a secret or a path of the server.")


class AuditResponseSerializer(serializers.Serializer):
    status = serializers.ChoiceField(choices=["success"])
    events = AuditEventSerializer(many=True)
    next = serializers.CharField(allow_null=True, help_text="The cursor of the next page; null on the last one.")
