"""GET /api/ping, the smallest authenticated API call, and GET /api/audit, the audit trail.

Ping authenticates the key exactly as every endpoint does and does nothing
else, so a client can check its key, and bench/api.py measures the cost of
the API's own work against it. The audit trail's rules are in
accounts/audit_trail.py.
"""

from drf_spectacular.utils import OpenApiResponse, extend_schema, inline_serializer
from rest_framework import serializers
from rest_framework.exceptions import PermissionDenied, ValidationError
from rest_framework.response import Response

from accounts import audit_trail
from accounts.permissions import HasApiKey
from accounts.scopes import AUDIT_READ, NO_SCOPE
from accounts.serializers import AuditQuerySerializer, AuditResponseSerializer
from config.api_input import ApiView, SandboxErrorResponseSerializer


class PingView(ApiView):
    permission_classes = [HasApiKey]
    required_scopes = {"GET": NO_SCOPE}  # any usable key, whatever its scopes

    @extend_schema(
        operation_id="ping",
        summary="Check an API key",
        description="Answers success to any usable API key, and does nothing else.",
        responses={
            200: OpenApiResponse(
                inline_serializer("PingResponse", {"status": serializers.ChoiceField(choices=["success"])}),
                description="The key is usable",
            ),
            401: OpenApiResponse(SandboxErrorResponseSerializer,
                                 description="Unauthorized - invalid or missing API key"),
            503: OpenApiResponse(SandboxErrorResponseSerializer, description="The database is not answering"),
        },
        tags=["keys"],
    )
    def get(self, request):
        return Response({"status": "success"})


class AuditView(ApiView):
    permission_classes = [HasApiKey]
    query_serializers = {"GET": AuditQuerySerializer}
    required_scopes = {"GET": AUDIT_READ}

    @extend_schema(
        operation_id="list_audit_events",
        summary="The audit trail: what happened to the accounts the key may see, newest first",
        description=(
            "A personal key reads its own account's events, and those of every member of the organizations in "
            "which its account is an owner or an admin; an organization key those of its organization's members; "
            "a key of a staff organization's member every event. Pages of limit events; next is the cursor of "
            "the following page (send it with the same filters), null on the last. Events recorded while a "
            "client walks the pages are on none of them (a new walk starts with them); none is shown twice."
        ),
        parameters=[AuditQuerySerializer],
        responses={
            200: OpenApiResponse(AuditResponseSerializer, description="A page of events"),
            400: OpenApiResponse(SandboxErrorResponseSerializer,
                                 description="Bad request - an invalid filter, or a cursor this service did not make "
                                             "for these filters"),
            401: OpenApiResponse(SandboxErrorResponseSerializer,
                                 description="Unauthorized - invalid or missing API key"),
            403: OpenApiResponse(SandboxErrorResponseSerializer,
                                 description="The key lacks the scope audit:read, or account_id or organization_id "
                                             "is out of its reach (or does not exist)"),
            503: OpenApiResponse(SandboxErrorResponseSerializer, description="The database is not answering"),
        },
        tags=["audit"],
    )
    def get(self, request):
        filters = {name: self.query.get(name) for name in audit_trail.FILTERS}
        try:
            page = audit_trail.audit_page(key=request.auth, filters=filters, cursor=self.query.get("cursor"),
                                          limit=self.query["limit"])
        except audit_trail.AuditAccessDenied as exc:
            raise PermissionDenied(str(exc)) from None
        except audit_trail.BadCursor as exc:
            raise ValidationError({"cursor": [str(exc)]}) from None
        return Response({"status": "success", "events": [audit_trail.event_representation(event)
                                                         for event in page.events], "next": page.next})
