"""The API's body parser (REST_FRAMEWORK's DEFAULT_PARSER_CLASSES).

A module of its own: DRF imports it while it sets itself up, so it must not
import DRF's views.
"""

from rest_framework import parsers
from rest_framework.exceptions import ParseError


class JSONParser(parsers.JSONParser):
    """DRF's JSON parser, with JSON nested too deeply (`[` × 5000) a 400 instead of a RecursionError."""

    def parse(self, stream, media_type=None, parser_context=None):
        try:
            return super().parse(stream, media_type, parser_context)
        except RecursionError:
            raise ParseError("JSON parse error - the body is nested too deeply") from None
