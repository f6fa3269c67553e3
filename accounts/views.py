"""GET /api/ping, the smallest authenticated API call.

Ping authenticates the key exactly as every endpoint does and does nothing
else, so a client can check its key, and bench/api.py measures the cost of
the API's own work against it. GET /api/audit reads memberships and lives in
orgs (orgs/views.py).
"""

from drf_spectacular.utils import OpenApiResponse, extend_schema, inline_serializer
from rest_framework import serializers
from rest_framework.response import Response

from accounts.permissions import HasApiKey
from accounts.scopes import NO_SCOPE
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
