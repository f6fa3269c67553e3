"""The sandbox API: set up, see, read, renew and delete a sandbox, and follow setup runs.

Each view validates with a serializer, resolves the target account through
orgs/, calls one service or selector, and shapes the answer. Every view is a
config.api_input.ApiView and every request body a StrictSerializer: what an
endpoint does not take (a query parameter, a misspelt field) is a 400, never
ignored. Setup, delete and renew take an Idempotency-Key
(sandboxes/idempotency.py).
"""

import base64

from drf_spectacular.utils import OpenApiParameter, OpenApiResponse, extend_schema
from rest_framework import status
from rest_framework.exceptions import APIException, NotFound, PermissionDenied
from rest_framework.response import Response

from accounts.audit import Actor
from accounts.models import Account
from config.api_input import ApiView
from config.errors import error_body
from orgs.access import ACCESS_DENIED_MESSAGE
from orgs.permissions import MayActOnAccount
from sandboxes import selectors, services
from sandboxes.idempotency import HEADER as IDEMPOTENCY_HEADER
from sandboxes.idempotency import REPLAYED_HEADER, idempotent
from sandboxes.schema import DeleteWithBodySchema
from sandboxes.serializers import (
    DeleteSandboxRequestSerializer,
    DeleteSandboxResponseSerializer,
    RenewSandboxRequestSerializer,
    RenewSandboxResponseSerializer,
    RunSerializer,
    RunsQuerySerializer,
    RunsResponseSerializer,
    SandboxErrorResponseSerializer,
    SandboxFileQuerySerializer,
    SandboxFileResponseSerializer,
    SandboxQuerySerializer,
    SandboxStateResponseSerializer,
    SetupSandboxRequestSerializer,
    SetupSandboxResponseSerializer,
    UpdateSnapshotResponseSerializer,
    represent,
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

IDEMPOTENCY_PARAMETER = OpenApiParameter(
    IDEMPOTENCY_HEADER,
    str,
    OpenApiParameter.HEADER,
    description=(
        "Optional: 1 to 255 printable ASCII characters, new for each new request. The first request with a key "
        "is processed and its answer kept for 24 hours; a repeat with the same key, method, path and body is "
        f"answered the same again (with {REPLAYED_HEADER}: true) and does nothing."
    ),
)
IDEMPOTENCY_ERRORS = {
    409: _error("A request with this Idempotency-Key is still being processed; try again after Retry-After"),
    422: _error("This Idempotency-Key was sent before with another method, path or body"),
}
# What the three writes (setup, delete, renew) may answer beside their own 200, 400 and 404.
WRITE_ERRORS = {**TARGET_ERRORS, **THROTTLED, **IDEMPOTENCY_ERRORS}


def write_schema(*, responses: dict, **documented):
    """extend_schema of a write that takes an Idempotency-Key: its own answers, and WRITE_ERRORS."""
    return extend_schema(
        responses={**responses, **WRITE_ERRORS}, parameters=[IDEMPOTENCY_PARAMETER], tags=["sandboxes"], **documented
    )


class TargetAccountView(ApiView):
    """A view that acts on one account: the key's own, or the account_id of the body or the query."""

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

    @write_schema(
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
        },
    )
    @idempotent
    def post(self, request):
        account = self.validated_target(request, SetupSandboxRequestSerializer)
        try:
            run = services.setup_run_start(account=account, actor=Actor.from_api_request(request))
        except services.AccountInactive:
            raise _inactive(account) from None
        return Response({"status": "success", "runId": run.pk})


class SandboxView(TargetAccountView):
    schema = DeleteWithBodySchema()
    query_serializers = {"GET": SandboxQuerySerializer}

    @property
    def throttle_scope(self) -> str | None:
        """Rate limits (accounts/throttling.py) of the writes; reading the state is not limited."""
        return {"DELETE": "delete", "PATCH": "renew"}.get(self.request.method)

    @extend_schema(
        operation_id="get_sandbox",
        summary="The account's sandbox: state, snapshot, expiry, repository, last run, file tree",
        description=(
            "state is none (never set up, or deleted), provisioning (a setup run is queued or executing), ready, "
            "expired (past expires_at, not removed yet: PATCH renews it) or failed (the last run failed and "
            "there is no snapshot). The snapshot's fields and filetree are null without a snapshot."
        ),
        parameters=[SandboxQuerySerializer],
        responses={
            200: OpenApiResponse(SandboxStateResponseSerializer, description="The sandbox"),
            400: _error("Bad request - invalid account_id, or an unknown query parameter"),
            **TARGET_ERRORS,
        },
        tags=["sandboxes"],
    )
    def get(self, request):
        account = self.target_account(request, self.query.get("account_id"))
        sandbox = selectors.sandbox_state(account=account)
        snapshot = sandbox.snapshot
        return Response({
            "status": "success",
            "account_id": str(account.pk),
            "state": sandbox.state,
            **(represent(UpdateSnapshotResponseSerializer, snapshot) if snapshot is not None else dict.fromkeys(
                ("snapshot_id", "github_repo", "expires_at", "created_at"))),
            "last_run": represent(RunSerializer, sandbox.last_run) if sandbox.last_run is not None else None,
            # Stored in the shape of the answer when the snapshot was taken: returned as it is.
            "filetree": snapshot.filetree if snapshot is not None else None,
        })

    @write_schema(
        operation_id="renew_sandbox",
        summary="Renew the account's snapshot: its expiry becomes now + SNAPSHOT_TTL",
        description=(
            "Also renews a snapshot that has expired but is still there (state expired). Recorded in the audit "
            "trail."
        ),
        request=RenewSandboxRequestSerializer,
        responses={
            200: OpenApiResponse(RenewSandboxResponseSerializer, description="Snapshot renewed"),
            400: _error("Bad request - invalid account_id, or an unknown field or query parameter"),
            404: _error("The account has no snapshot"),
        },
    )
    @idempotent
    def patch(self, request):
        account = self.validated_target(request, RenewSandboxRequestSerializer)
        try:
            snapshot = services.snapshot_renew(account=account, actor=Actor.from_api_request(request))
        except services.AccountInactive:
            raise _inactive(account) from None
        if snapshot is None:
            raise NotFound("The account has no snapshot to renew; set the sandbox up (POST /api/sandboxes/setup)")
        return Response({"status": "success", "snapshot": UpdateSnapshotResponseSerializer(snapshot).data})

    @write_schema(
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
        },
    )
    @idempotent
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


class SnapshotGone(APIException):
    status_code = status.HTTP_410_GONE


class SnapshotUnreadable(APIException):
    status_code = status.HTTP_502_BAD_GATEWAY


class PayloadTooLarge(APIException):
    status_code = status.HTTP_413_REQUEST_ENTITY_TOO_LARGE


FILE_ERRORS = {
    selectors.NoSnapshot: NotFound,
    selectors.NoSuchFile: NotFound,
    selectors.SnapshotExpired: SnapshotGone,
    selectors.FileTooLarge: PayloadTooLarge,
    selectors.SnapshotUnreadable: SnapshotUnreadable,
}


class SandboxFileView(TargetAccountView):
    query_serializers = {"GET": SandboxFileQuerySerializer}

    @extend_schema(
        operation_id="read_sandbox_file",
        summary="Read one file of the account's snapshot",
        description=(
            "Read from the snapshot through the sandbox backend. Text that is valid UTF-8 comes as it is "
            "(encoding utf-8); any other file comes base64-encoded (encoding base64)."
        ),
        parameters=[SandboxFileQuerySerializer],
        responses={
            200: OpenApiResponse(SandboxFileResponseSerializer, description="The file"),
            400: _error("Bad request - a path that is absolute, has '..' or is not normalized; an invalid "
                        "account_id; an unknown query parameter"),
            404: _error("The account has no snapshot, or the snapshot has no such file"),
            410: _error("The snapshot has expired: PATCH /api/sandboxes or a new setup brings it back"),
            413: _error("The file is larger than SANDBOX_FILE_MAX_BYTES"),
            502: _error("The sandbox backend could not read the snapshot"),
            **{code: answer for code, answer in TARGET_ERRORS.items() if code != 413},
        },
        tags=["sandboxes"],
    )
    def get(self, request):
        account = self.target_account(request, self.query.get("account_id"))
        try:
            found = selectors.sandbox_file_read(account=account, path=self.query["path"])
        except selectors.SandboxFileError as exc:
            raise FILE_ERRORS[type(exc)](str(exc)) from None
        try:
            encoding, content = "utf-8", found.content.decode("utf-8")
        except UnicodeDecodeError:
            encoding, content = "base64", base64.b64encode(found.content).decode("ascii")
        return Response({"status": "success", "path": found.path, "size": len(found.content), "encoding": encoding,
                         "content": content})


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
