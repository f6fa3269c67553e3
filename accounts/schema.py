"""How drf-spectacular documents the API key authentication: two schemes, either one."""

from drf_spectacular.extensions import OpenApiAuthenticationExtension


class ApiKeyAuthenticationScheme(OpenApiAuthenticationExtension):
    target_class = "accounts.authentication.ApiKeyAuthentication"
    name = ["ApiKeyAuth", "BearerAuth"]

    def get_security_definition(self, auto_schema):
        return [
            {"type": "apiKey", "in": "header", "name": "x-api-key", "description": "An API key (sbx_…)."},
            {"type": "http", "scheme": "bearer", "description": "The same API key as a bearer token."},
        ]

    def get_security_requirement(self, auto_schema):
        # A list means "any one of": send the key one way, not both.
        return [{"ApiKeyAuth": []}, {"BearerAuth": []}]
