"""What an API endpoint takes, and the refusal of everything else.

A client's mistake must never turn into an action on the wrong account: a
misspelt field (`{"accountId": …}`) or a query parameter the endpoint does not
read (`DELETE /api/sandboxes?account_id=…`) would otherwise be ignored, and
the request would act on the key's own account. So every API endpoint refuses,
with a 400 naming them, the body fields and query parameters it does not take.

How to use it in a new endpoint:

- Its view subclasses `ApiView` (not DRF's `APIView`). A request with any
  query parameter is refused, unless the view names a serializer for the
  method in `query_serializers`, e.g. `{"GET": RunsQuerySerializer}`; then
  only that serializer's fields are taken, each at most once, and the
  validated values are in `self.query` inside the handler. Document them
  from the same serializer: `@extend_schema(parameters=[ThatSerializer])`.
- Its request body is validated by a serializer that subclasses
  `StrictSerializer`: a field the serializer does not declare is refused.

Bodies are parsed by config.parsers.JSONParser (the REST_FRAMEWORK default),
which also refuses JSON nested too deeply and an object with a key twice; a
chunked body is read, within API_MAX_BODY_BYTES, by
config.middleware.ApiBodySizeLimitMiddleware.

Every `ApiView` names, in `required_scopes`, the scope of each HTTP method it
answers (accounts/scopes.py: e.g. `{"GET": SANDBOXES_READ, "DELETE":
SANDBOXES_DELETE}`, or NO_SCOPE); `ApiView` checks it for every request,
before the view's own permissions' object checks and before the handler, so a
key without it gets a 403 naming the scope and nothing happens. A method not
named is refused.

tests/test_api_input.py checks that every view under /api/ is an `ApiView`
and declares a scope for each method it answers, so a new endpoint cannot
forget either rule.
"""

from collections.abc import Mapping
from functools import cache

from django.conf import settings
from django.utils.module_loading import import_string
from drf_spectacular.extensions import OpenApiSerializerExtension
from rest_framework import serializers
from rest_framework.exceptions import ErrorDetail, ValidationError
from rest_framework.views import APIView

UNKNOWN_CODE = "unknown"


def _taken(names) -> str:
    names = sorted(names)
    return f"it takes {', '.join(names)}" if names else "it takes none"


class StrictSerializer(serializers.Serializer):
    """A serializer that refuses the fields it does not declare (400, naming each)."""

    default_error_messages = {"invalid": "The request body must be a JSON object, not {datatype}."}
    #: What the refusal calls the input: "field" for a body, "query parameter" for a query string.
    input_name = "field"

    def to_internal_value(self, data):
        if isinstance(data, Mapping):
            declared = {name for name, field in self.fields.items() if not field.read_only}
            unknown = [name for name in data if name not in declared]
            if unknown:
                message = f"not a {self.input_name} of this request ({_taken(declared)})"
                raise ValidationError({name: [ErrorDetail(message, code=UNKNOWN_CODE)] for name in unknown})
        return super().to_internal_value(data)


class StrictSerializerSchema(OpenApiSerializerExtension):
    """The schema says it too: a StrictSerializer's object takes no other property (`additionalProperties: false`)."""

    target_class = StrictSerializer
    match_subclasses = True

    def map_serializer(self, auto_schema, direction):
        schema = auto_schema._map_serializer(self.target, direction, bypass_extensions=True)
        return {**schema, "additionalProperties": False}


class QuerySerializer(StrictSerializer):
    """The query parameters a method of an `ApiView` takes (see `ApiView.query_serializers`)."""

    input_name = "query parameter"


class ApiView(APIView):
    """The base of every API view: checks the key's scope, refuses query parameters it does not take.

    `query_serializers` maps an HTTP method to the `QuerySerializer` of the
    query parameters it takes; a method not named takes none. The check runs
    after authentication, permissions and rate limits (a request without a
    usable key is a 401 whatever its query string), before the handler.
    """

    query_serializers: dict[str, type[QuerySerializer]] = {}
    #: HTTP method -> the scope a key needs for it (accounts/scopes.py); checked by settings.API_SCOPE_PERMISSION.
    required_scopes: dict[str, str] = {}

    def get_permissions(self):
        return [*super().get_permissions(), _scope_permission()()]

    def initial(self, request, *args, **kwargs):
        super().initial(request, *args, **kwargs)
        method = "GET" if request.method == "HEAD" else request.method  # Django answers HEAD with get()
        self.query = validated_query(request, self.query_serializers.get(method))


@cache
def _scope_permission():
    # Named by settings (API_SCOPE_PERMISSION): config imports no app.
    return import_string(settings.API_SCOPE_PERMISSION)


def validated_query(request, serializer_class: type[QuerySerializer] | None) -> dict:
    """The validated query parameters; ValidationError for any parameter not taken, repeated or invalid."""
    params = request.query_params
    repeated = [name for name, values in params.lists() if len(values) > 1]
    if repeated:
        raise ValidationError({name: [ErrorDetail("given more than once", code="repeated")] for name in repeated})
    if serializer_class is None:
        if params:
            message = "not a query parameter of this request (it takes none)"
            raise ValidationError({name: [ErrorDetail(message, code=UNKNOWN_CODE)] for name in params})
        return {}
    serializer = serializer_class(data=params)
    serializer.is_valid(raise_exception=True)
    return serializer.validated_data


# The body of every error the API answers (config/errors.py), as the schema names it.
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
