"""The sandbox API: set up, see, read, renew and delete a sandbox, and follow setup runs.

Each view validates with a serializer, resolves the target account through
orgs/, calls one service or selector, and shapes the answer. Every view is a
config.api_input.ApiView and every request body a StrictSerializer: what an
endpoint does not take (a query parameter, a misspelt field) is a 400, never
ignored. Setup, delete and renew take an Idempotency-Key
(sandboxes/idempotency.py).
"""

import base64

from django.conf import settings
from drf_spectacular.utils import OpenApiParameter, OpenApiResponse, extend_schema
from rest_framework import status
from rest_framework.exceptions import APIException, NotFound, PermissionDenied
from rest_framework.response import Response

from accounts.audit import Actor
from accounts.models import Account
from accounts.scopes import SANDBOXES_DELETE, SANDBOXES_EXEC, SANDBOXES_READ, SANDBOXES_SETUP
from config.api_input import ApiView, SandboxErrorResponseSerializer
from config.errors import error_body
from orgs.access import ACCESS_DENIED_MESSAGE, reachable_accounts
from orgs.permissions import MayActOnAccount
from sandboxes import live, selectors, services
from sandboxes.idempotency import HEADER as IDEMPOTENCY_HEADER
from sandboxes.idempotency import REPLAYED_HEADER, idempotent
from sandboxes.schema import DeleteWithBodySchema
from sandboxes.serializers import (
    CommandQuerySerializer,
    CommandResponseSerializer,
    DeleteSandboxRequestSerializer,
    DeleteSandboxResponseSerializer,
    RenewSandboxRequestSerializer,
    RenewSandboxResponseSerializer,
    RunCommandRequestSerializer,
    RunSerializer,
    RunsQuerySerializer,
    RunsResponseSerializer,
    SandboxFileQuerySerializer,
    SandboxFileResponseSerializer,
    SandboxQuerySerializer,
    SandboxStateResponseSerializer,
    SetupSandboxRequestSerializer,
    SetupSandboxResponseSerializer,
    StartSandboxRequestSerializer,
    StartSandboxResponseSerializer,
    StopSandboxRequestSerializer,
    StopSandboxResponseSerializer,
    UpdateSnapshotResponseSerializer,
    UploadFilesRequestSerializer,
    UploadFilesResponseSerializer,
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
LIVE_ERRORS = {
    501: _error("Live sandboxes are off on this server: the local backend runs commands unisolated "
                "(SANDBOX_BACKEND=docker, or SANDBOX_LOCAL_EXEC=unsafe in development)"),
    502: _error("The sandbox backend, its engine or the git host failed; the error says which"),
}
RUNNING_ERRORS = {**LIVE_ERRORS, 409: _error("No sandbox is running for the account: start one (POST /api/sandboxes)")}


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

    def validated_target_and_fields(self, request, serializer_class) -> dict:
        serializer = serializer_class(data=request.data)
        serializer.is_valid(raise_exception=True)
        return serializer.validated_data

    def validated_target(self, request, serializer_class) -> Account:
        serializer = serializer_class(data=request.data)
        serializer.is_valid(raise_exception=True)
        return self.target_account(request, serializer.validated_data.get("account_id"))


def _inactive(account: Account) -> PermissionDenied:
    return PermissionDenied(f"The account {account.pk} is inactive")


class SetupSandboxView(TargetAccountView):
    throttle_scope = "setup"  # accounts/throttling.py
    required_scopes = {"POST": SANDBOXES_SETUP}

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
    required_scopes = {"GET": SANDBOXES_READ, "POST": SANDBOXES_SETUP, "PATCH": SANDBOXES_SETUP,
                       "DELETE": SANDBOXES_DELETE}

    @property
    def throttle_scope(self) -> str | None:
        """Rate limits (accounts/throttling.py) of the writes; reading the state is not limited."""
        return {"DELETE": "delete", "PATCH": "renew", "POST": "setup"}.get(self.request.method)

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
            "sandbox": live.sandbox_representation(sandbox.live_sandbox) if sandbox.live_sandbox else None,
            # Stored in the shape of the answer when the snapshot was taken: returned as it is.
            "filetree": snapshot.filetree if snapshot is not None else None,
        })

    @write_schema(
        operation_id="start_sandbox",
        summary="Start the account's live sandbox",
        description=(
            "Starts the account's sandbox from its snapshot (from the starter layout when it has none, or it has "
            "expired), ready for commands and files. One live sandbox per account: while one is live, answers "
            "with it. It stops by itself after SANDBOX_IDLE_TIMEOUT without a command (timeout says when)."
        ),
        request=StartSandboxRequestSerializer,
        responses={
            200: OpenApiResponse(StartSandboxResponseSerializer, description="The account's live sandbox"),
            400: _error("Bad request - invalid account_id, or an unknown field or query parameter"),
            **LIVE_ERRORS,
        },
    )
    @idempotent
    def post(self, request):
        account = self.validated_target(request, StartSandboxRequestSerializer)
        try:
            services.refuse_inactive(account)
            sandbox = live.live_sandbox_start(account=account, actor=Actor.from_api_request(request))
        except services.AccountInactive:
            raise _inactive(account) from None
        except live.LiveSandboxError as exc:
            raise LIVE_ERROR_ANSWERS[type(exc)](str(exc)) from None
        return Response({"status": "success", "sandboxes": [live.sandbox_representation(sandbox)]})

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
        return Response({"status": "success", "snapshot": represent(UpdateSnapshotResponseSerializer, snapshot)})

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
        deleted = represent(UpdateSnapshotResponseSerializer, snapshot) if snapshot is not None else None
        return Response({"status": "success", "deleted_snapshot": deleted})


class SandboxConflict(APIException):
    status_code = status.HTTP_409_CONFLICT


class NotImplementedHere(APIException):
    status_code = status.HTTP_501_NOT_IMPLEMENTED


class BadGateway(APIException):
    """An outside system (the sandbox backend, its engine, the git host) failed; the message says which."""

    status_code = status.HTTP_502_BAD_GATEWAY


class InvalidInput(APIException):
    status_code = status.HTTP_400_BAD_REQUEST


LIVE_ERROR_ANSWERS = {
    live.NoRunningSandbox: SandboxConflict,
    live.CommandsUnavailable: NotImplementedHere,
    live.SandboxUnreachable: BadGateway,
    live.InvalidCommand: InvalidInput,
    live.NoSuchCommand: NotFound,
}


class SnapshotGone(APIException):
    status_code = status.HTTP_410_GONE


class PayloadTooLarge(APIException):
    status_code = status.HTTP_413_REQUEST_ENTITY_TOO_LARGE


FILE_ERRORS = {
    selectors.NoSnapshot: NotFound,
    selectors.NoSuchFile: NotFound,
    selectors.SnapshotExpired: SnapshotGone,
    selectors.FileTooLarge: PayloadTooLarge,
    selectors.SnapshotUnreadable: BadGateway,
}


class SandboxFileView(TargetAccountView):
    query_serializers = {"GET": SandboxFileQuerySerializer}
    required_scopes = {"GET": SANDBOXES_READ}

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
    required_scopes = {"GET": SANDBOXES_READ}

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
        return Response({"status": "success", "runs": [represent(RunSerializer, run) for run in runs]})


class SandboxCommandsView(TargetAccountView):
    query_serializers = {"GET": CommandQuerySerializer}
    required_scopes = {"GET": SANDBOXES_READ, "POST": SANDBOXES_EXEC}

    @property
    def throttle_scope(self) -> str | None:
        return "exec" if self.request.method == "POST" else None

    @write_schema(
        operation_id="run_command",
        summary="Run a command in the account's running sandbox",
        description=(
            "Runs one process, the command with its args (no shell unless the command names one), in cwd of the "
            "workspace, with env added to its environment. Its output is capped at SANDBOX_OUTPUT_MAX_BYTES per "
            "stream (stdoutTruncated, stderrTruncated say so). Past timeout_ms it is killed, with its process "
            "group (timedOut, exitCode null). With background: true, answers 202 at once; GET reads it."
        ),
        request=RunCommandRequestSerializer,
        responses={
            200: OpenApiResponse(CommandResponseSerializer, description="The command ran"),
            202: OpenApiResponse(CommandResponseSerializer, description="The command runs in the background"),
            400: _error("Bad request - a field that is missing or not valid (cwd outside the workspace or not a "
                        "folder of it, timeout_ms above SANDBOX_COMMAND_MAX_MS, a NUL character), an unknown field"),
            **RUNNING_ERRORS,
        },
    )
    @idempotent
    def post(self, request):
        serializer = RunCommandRequestSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        given = serializer.validated_data
        account = self.target_account(request, given.get("account_id"))
        try:
            services.refuse_inactive(account)
            record = live.command_run(account=account, actor=Actor.from_api_request(request), command=given["command"],
                                      args=given["args"], cwd=given["cwd"], env=given["env"],
                                      timeout_ms=given["timeout_ms"], background=given["background"])
        except services.AccountInactive:
            raise _inactive(account) from None
        except live.LiveSandboxError as exc:
            raise LIVE_ERROR_ANSWERS[type(exc)](str(exc)) from None
        return Response({"status": "success", **live.command_representation(record)},
                        status=status.HTTP_202_ACCEPTED if given["background"] else status.HTTP_200_OK)

    @extend_schema(
        operation_id="read_command",
        summary="A command by its id: running until it ends, then its output",
        parameters=[CommandQuerySerializer],
        responses={
            200: OpenApiResponse(CommandResponseSerializer, description="The command"),
            400: _error("Bad request - commandId missing, or an unknown query parameter"),
            404: _error("No command with that id that the caller may see"),
            **COMMON_ERRORS,
        },
        tags=["sandboxes"],
    )
    def get(self, request):
        try:
            record = live.command_read(account_ids=reachable_accounts(key=request.auth),
                                       command_id=self.query["commandId"])
        except live.LiveSandboxError as exc:
            raise LIVE_ERROR_ANSWERS[type(exc)](str(exc)) from None
        return Response({"status": "success", **live.command_representation(record)})


class SandboxFilesView(TargetAccountView):
    throttle_scope = "exec"
    required_scopes = {"POST": SANDBOXES_EXEC}

    @write_schema(
        operation_id="upload_files",
        summary="Write files into the running sandbox and commit them to the account's repository",
        description=(
            "Each file's path follows the file read's rules (relative, normalized, never inside .git); its "
            "content is text (encoding utf-8, the default) or base64. The files go into the workspace and one "
            "commit to the repository's default branch."
        ),
        request=UploadFilesRequestSerializer,
        responses={
            200: OpenApiResponse(UploadFilesResponseSerializer, description="The files, with their git blob ids"),
            400: _error("Bad request - a path that is not allowed, content that is not valid base64, an unknown "
                        "field"),
            413: _error("More files than SANDBOX_UPLOAD_MAX_FILES, or more bytes than SANDBOX_UPLOAD_MAX_BYTES"),
            **RUNNING_ERRORS,
        },
    )
    @idempotent
    def post(self, request):
        files = request.data.get("files") if isinstance(request.data, dict) else None
        if isinstance(files, list) and len(files) > settings.SANDBOX_UPLOAD_MAX_FILES:
            raise PayloadTooLarge(f"At most {settings.SANDBOX_UPLOAD_MAX_FILES} files at once "
                                  "(SANDBOX_UPLOAD_MAX_FILES)")
        serializer = UploadFilesRequestSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        given = serializer.validated_data
        contents = {file["path"]: file["content"] for file in given["files"]}
        if len(contents) < len(given["files"]):
            raise InvalidInput("Each path may be given once")
        total = sum(len(content) for content in contents.values())
        if total > settings.SANDBOX_UPLOAD_MAX_BYTES:
            raise PayloadTooLarge(f"The files hold {total} bytes, more than {settings.SANDBOX_UPLOAD_MAX_BYTES} "
                                  "(SANDBOX_UPLOAD_MAX_BYTES)")
        account = self.target_account(request, given.get("account_id"))
        try:
            services.refuse_inactive(account)
            uploaded = live.files_upload(account=account, actor=Actor.from_api_request(request), files=contents,
                                         message=given["message"])
        except services.AccountInactive:
            raise _inactive(account) from None
        except live.LiveSandboxError as exc:
            raise LIVE_ERROR_ANSWERS[type(exc)](str(exc)) from None
        return Response({"status": "success", "uploaded": uploaded})


class SandboxStopView(TargetAccountView):
    throttle_scope = "exec"
    required_scopes = {"POST": SANDBOXES_EXEC}

    @write_schema(
        operation_id="stop_sandbox",
        summary="Stop the account's running sandbox, with a new snapshot",
        description=(
            "Takes a new snapshot of the workspace (a new snapshot id; the expiry renewed), pushes it to the "
            "repository as a commit, then removes the sandbox. With snapshot: false, removes it without one. "
            "If a step fails, the sandbox keeps running and the same stop can be asked again."
        ),
        request=StopSandboxRequestSerializer,
        responses={
            200: OpenApiResponse(StopSandboxResponseSerializer, description="The sandbox stopped"),
            400: _error("Bad request - invalid account_id, or an unknown field or query parameter"),
            **RUNNING_ERRORS,
        },
    )
    @idempotent
    def post(self, request):
        given = self.validated_target_and_fields(request, StopSandboxRequestSerializer)
        account = self.target_account(request, given.get("account_id"))
        actor = Actor.from_api_request(request)
        try:
            services.refuse_inactive(account)
            sandbox = live.live_sandbox_running(account=account)
            snapshot = live.live_sandbox_stop(sandbox=sandbox, actor=actor, reason="api",
                                              take_snapshot=given["snapshot"])
        except services.AccountInactive:
            raise _inactive(account) from None
        except live.LiveSandboxError as exc:
            raise LIVE_ERROR_ANSWERS[type(exc)](str(exc)) from None
        return Response({"status": "success",
                         "snapshot": represent(UpdateSnapshotResponseSerializer, snapshot) if snapshot else None})
