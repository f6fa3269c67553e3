"""The API's body parser (REST_FRAMEWORK's DEFAULT_PARSER_CLASSES).

A module of its own: DRF imports it while it sets itself up, so it must not
import DRF's views.
"""

import codecs

from rest_framework import parsers
from rest_framework.exceptions import ParseError
from rest_framework.utils import json


def _refuse_duplicate_keys(pairs: list) -> dict:
    seen = {}
    for key, value in pairs:
        if key in seen:
            raise ValueError(f"the key {key!r} appears twice in one object")
        seen[key] = value
    return seen


class JSONParser(parsers.JSONParser):
    """DRF's JSON parser, refusing (400) what it would read one way and a proxy another, or not at all.

    - JSON nested too deeply (`[` × 5000) is a 400 instead of a RecursionError.
    - An object with the same key twice (`{"account_id": A, "account_id": B}`)
      is a 400: Python keeps the last, a proxy or firewall in front may read
      the first, and the request must not act on an account nobody checked.
    """

    def parse(self, stream, media_type=None, parser_context=None):
        encoding = parsers.get_encoding(parser_context or {})
        try:
            decoded_stream = codecs.getreader(encoding)(stream)
            parse_constant = json.strict_constant if self.strict else None
            return json.load(decoded_stream, parse_constant=parse_constant, object_pairs_hook=_refuse_duplicate_keys)
        except ValueError as exc:
            raise ParseError(f"JSON parse error - {exc}") from None
        except RecursionError:
            raise ParseError("JSON parse error - the body is nested too deeply") from None
