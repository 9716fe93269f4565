"""Every call into scim2-models, with its refusals worded by authgate.

scim2-models refuses with pydantic's text or with its own ("1 validation
error for EnterpriseUser ... https://errors.pydantic.dev/..."), which tells a
SCIM client about a library instead of about its request, and may repeat
parts of the request. `validated` keeps the library's status and scimType
and replaces its text with authgate's: what is wrong, and at which
attribute — a name from the schema, never a value from the request.
"""

from __future__ import annotations

import re
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from typing import Any

from pydantic import ValidationError
from scim2_models import Error, SCIMException, ScimPolicy

# The tolerances Entra ID and Okta need (see `patch`), for every request read.
POLICY = ScimPolicy(
    unknown=ScimPolicy.Unknown.ignore,
    remove_value_as_filter=ScimPolicy.RemoveValue.apply,
    unmatched_path_filter=ScimPolicy.UnmatchedPathFilter.create,
)

# What each RFC 7644 §3.12 scimType means, said once for every refusal of that kind.
MEANING = {
    "invalidValue": "a value does not fit its attribute",
    "invalidSyntax": "the body does not follow the SCIM schema of the request",
    "invalidFilter": "the filter is not a SCIM filter authgate can apply (RFC 7644 §3.4.2.2)",
    "invalidPath": "a PATCH path names no attribute of the resource",
    "noTarget": "a PATCH operation has no value to act on (a remove needs a path)",
    "mutability": "the request changes an attribute that cannot be changed",
    "uniqueness": "a value that must be unique is already taken",
    "tooMany": "the request would answer too many resources",
    "sensitive": "the request carries a sensitive value where it must not",
    "invalidVers": "the SCIM version is not supported",
    "invalidCount": "count is not a number authgate accepts",
    "invalidCursor": "the cursor is not valid",
    "expiredCursor": "the cursor has expired",
}
REFUSED = "the request was refused"
_REQUIRED = frozenset({"required_error", "missing"})
_NAME = re.compile(r"(?:urn:[\w.:-]{1,200}|\$?[A-Za-z][\w-]{0,63})")


def attribute_path(loc: Sequence[str | int]) -> str:
    """An error location as a SCIM attribute path: `emails[0].value`, `urn:...:User:manager`.

    Only parts shaped like attribute names are kept; pydantic's names for the
    members of a union (`function-after[...]`) are left out.
    """
    path, after_urn = "", False
    for part in loc:
        if isinstance(part, int):
            path += f"[{part}]"
            after_urn = False
        elif _NAME.fullmatch(part):
            separator = ":" if after_urn else "." if path else ""
            after_urn = part.lower().startswith("urn:")
            path += separator + (part if after_urn else _camel(part))
    return path


def _camel(name: str) -> str:
    """The schema's name for a model field: a PATCH error names `nick_name`, SCIM `nickName`.

    RFC 7643 §2.1 allows `_` in attribute names, but none of the schemas authgate
    serves has one, so a `_` is always a model field's name standing in for one.
    """
    first, *rest = name.split("_")
    return first + "".join(word.title() for word in rest)


def _one(error: Mapping[str, Any]) -> Error:
    """One pydantic error as a SCIM Error in authgate's words."""
    scim_type = Error.from_validation_error(error).scim_type
    path = attribute_path(error.get("loc", ()))
    if error["type"] in _REQUIRED:
        field = str(error.get("ctx", {}).get("field_name", ""))
        named = attribute_path([*error.get("loc", ()), field]) if field else path
        return Error(status=400, scim_type=scim_type, detail=f"{named or 'a value'} is required")
    meaning = MEANING.get(scim_type or "", REFUSED)
    return Error(status=400, scim_type=scim_type, detail=f"{meaning}: {path}" if path else meaning)


def worded(exc: ValidationError | SCIMException) -> SCIMException:
    """The library's refusal with its status and scimType, in authgate's words.

    A refusal the library made of a pydantic error (PATCH does) names the
    attribute that error names.
    """
    if isinstance(exc, ValidationError):
        return SCIMException.from_error(_one(exc.errors()[0]))
    if isinstance(exc.__cause__, ValidationError) and exc.scim_type == "invalidValue":
        return worded(exc.__cause__)
    scim_type = exc.scim_type or None
    detail = MEANING.get(scim_type or "", REFUSED)
    return SCIMException.from_error(Error(status=exc.status, scim_type=scim_type, detail=detail))


@contextmanager
def validated() -> Iterator[None]:
    """Run scim2-models under authgate's tolerance policy; its refusals come out `worded`."""
    try:
        with POLICY:
            yield
    except (ValidationError, SCIMException) as exc:
        raise worded(exc) from None
