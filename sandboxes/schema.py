"""How drf-spectacular documents the sandbox API where its defaults fall short.

drf-spectacular documents a request body only for POST, PUT and PATCH
(https://github.com/tfranzel/drf-spectacular/issues/809), but
`DELETE /api/sandboxes` takes an optional JSON body (`account_id`), as the
published contract (spec/contract.yaml) says; OpenAPI 3.1 allows a body on
DELETE.
"""

from drf_spectacular.openapi import AutoSchema
from drf_spectacular.plumbing import build_media_type_object


class DeleteWithBodySchema(AutoSchema):
    """AutoSchema that also documents the body a DELETE declares with `@extend_schema(request=...)`."""

    def _get_request_body(self, direction="request"):
        if self.method != "DELETE":
            return super()._get_request_body(direction)
        serializer = self.get_request_serializer()
        if serializer is None:
            return None
        schema, required = self._get_request_for_media_type(serializer, direction)
        if schema is None:
            return None
        body = {"content": {media_type: build_media_type_object(schema) for media_type in self.map_parsers()}}
        if required:
            body["required"] = True
        return body
