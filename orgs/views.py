"""GET /api/audit, the audit trail as the API shows it.

Who sees which events, the pages and their cursors are orgs/audit_trail.py's:
a key's reach goes through its account's memberships. The events themselves
are recorded by accounts/audit.py.
"""

from drf_spectacular.utils import OpenApiResponse, extend_schema
from rest_framework.exceptions import PermissionDenied, ValidationError
from rest_framework.response import Response

from accounts.permissions import HasApiKey
from accounts.scopes import AUDIT_READ
from config.api_input import ApiView, SandboxErrorResponseSerializer
from orgs import audit_trail
from orgs.serializers import AuditQuerySerializer, AuditResponseSerializer


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
