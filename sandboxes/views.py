"""The sandbox API: set up, delete, and follow setup runs.

Each view validates with a serializer, resolves the target account through
orgs/, calls one service or selector, and shapes the answer. Every view is a
config.api_input.ApiView and every request body a StrictSerializer: what an
endpoint does not take (a query parameter, a misspelt field) is a 400, never
ignored.
"""

from drf_spectacular.utils import OpenApiResponse, extend_schema
from rest_framework import status
from rest_framework.exceptions import NotFound, PermissionDenied
from rest_framework.response import Response

from accounts.audit import Actor
from accounts.models import Account
from config.api_input import ApiView
from config.errors import error_body
from orgs.access import ACCESS_DENIED_MESSAGE
from orgs.permissions import MayActOnAccount
from sandboxes import selectors, services
from sandboxes.schema import DeleteWithBodySchema
from sandboxes.serializers import (
    DeleteSandboxRequestSerializer,
    DeleteSandboxResponseSerializer,
    RunSerializer,
    RunsQuerySerializer,
    RunsResponseSerializer,
    SandboxErrorResponseSerializer,
    SetupSandboxRequestSerializer,
    SetupSandboxResponseSerializer,
    UpdateSnapshotResponseSerializer,
)


def _error(description: str) -> OpenApiResponse:
    return OpenApiResponse(SandboxErrorResponseSerializer, description=description)


COMMON_ERRORS = {
    401: _error("Unauthorized - invalid or missing API key"),
    411: _error("Length required - a chunked body the server cannot read; send Content-Length"),
    413: _error("Request body too large"),
    415: _error("Unsupported media type - send application/json"),
    503: _error("The database is not answering; try again shortly (see Retry-After)"),
}
TARGET_ERRORS = {
    **COMMON_ERRORS,
    403: _error("Forbidden - account_id is not reachable by the caller (or does not exist), or is inactive"),
}
THROTTLED = {
    429: _error("Too many requests with this API key; Retry-After says when to try again"),
    503: _error("The database, or Redis where the rate limits count, is not answering; try again shortly "
                "(see Retry-After)"),
}


class TargetAccountView(ApiView):
    """A view that acts on one account: the key's own, or the body's account_id."""

    permission_classes = [MayActOnAccount]

    def target_account(self, request, account_id) -> Account:
        key = request.auth
        if account_id is None or account_id == key.account_id:
            return key.account
        account = Account.objects.filter(pk=account_id).first()
        if account is None:
            raise PermissionDenied(ACCESS_DENIED_MESSAGE)
        self.check_object_permissions(request, account)
        return account

    def validated_target(self, request, serializer_class) -> Account:
        serializer = serializer_class(data=request.data)
        serializer.is_valid(raise_exception=True)
        return self.target_account(request, serializer.validated_data.get("account_id"))


def _inactive(account: Account) -> PermissionDenied:
    return PermissionDenied(f"The account {account.pk} is inactive")


class SetupSandboxView(TargetAccountView):
    throttle_scope = "setup"  # accounts/throttling.py

    @extend_schema(
        operation_id="setup_sandbox",
        summary="Set up the account's sandbox",
        description=(
            "Queues a setup run that creates a sandbox, provisions the account's repository, takes a snapshot "
            "that expires, and shuts the sandbox down. While a run for the account is queued or executing, "
            "answers with that run's id instead of starting another."
        ),
        request=SetupSandboxRequestSerializer,
        responses={
            200: OpenApiResponse(SetupSandboxResponseSerializer, description="Setup task triggered successfully"),
            400: _error("Bad request - invalid account_id format, a field or query parameter the endpoint does not "
                         "take, or a body that cannot be read"),
            **TARGET_ERRORS,
            **THROTTLED,
        },
        tags=["sandboxes"],
    )
    def post(self, request):
        account = self.validated_target(request, SetupSandboxRequestSerializer)
        try:
            run = services.setup_run_start(account=account, actor=Actor.from_api_request(request))
        except services.AccountInactive:
            raise _inactive(account) from None
        return Response({"status": "success", "runId": run.pk})


class SandboxView(TargetAccountView):
    schema = DeleteWithBodySchema()
    throttle_scope = "delete"  # accounts/throttling.py

    @extend_schema(
        operation_id="delete_sandbox",
        summary="Delete the account's sandbox",
        description=(
            "Permanently deletes the account's repositories and snapshot, removes its snapshot record and "
            "cancels a queued setup. If the git host or the sandbox backend fails, nothing is removed from "
            "the record and repeating the request finishes the job."
        ),
        request=DeleteSandboxRequestSerializer,
        responses={
            200: OpenApiResponse(DeleteSandboxResponseSerializer, description="Sandbox deleted successfully"),
            400: _error("Bad request - failed to delete sandbox, invalid account_id, a field or query parameter the "
                         "endpoint does not take, or a body that cannot be read"),
            **TARGET_ERRORS,
            **THROTTLED,
        },
        tags=["sandboxes"],
    )
    def delete(self, request):
        account = self.validated_target(request, DeleteSandboxRequestSerializer)
        try:
            snapshot = services.sandbox_delete(account=account, actor=Actor.from_api_request(request))
        except services.SandboxDeleteError as exc:
            return Response(error_body(str(exc)), status=status.HTTP_400_BAD_REQUEST)
        except services.AccountInactive:
            raise _inactive(account) from None
        deleted = UpdateSnapshotResponseSerializer(snapshot).data if snapshot is not None else None
        return Response({"status": "success", "deleted_snapshot": deleted})


class RunsView(TargetAccountView):
    query_serializers = {"GET": RunsQuerySerializer}

    @extend_schema(
        operation_id="list_runs",
        summary="Setup runs: one by id, or the most recent",
        description=(
            "With runId, that run alone (404 if the caller may not act on its account, as for a run that does "
            "not exist). Without it, the most recent runs of the key's own account, or of account_id."
        ),
        parameters=[RunsQuerySerializer],  # the parameters it takes are the ones it documents
        responses={
            200: OpenApiResponse(RunsResponseSerializer, description="The runs"),
            400: _error("Bad request - invalid query parameter"),
            404: _error("No run with that id that the caller may see"),
            **TARGET_ERRORS,
        },
        tags=["runs"],
    )
    def get(self, request):
        run_id = self.query.get("runId")
        if run_id:
            run = selectors.setup_run_visible_to(key=request.auth, run_id=run_id)
            if run is None:
                raise NotFound(f"No run {run_id}")
            runs = [run]
        else:
            account = self.target_account(request, self.query.get("account_id"))
            runs = selectors.setup_runs_recent(account=account, limit=self.query["limit"])
        return Response({"status": "success", "runs": RunSerializer(runs, many=True).data})
