"""List requests: filter, sorting, paging and attribute selection, parsed by scim2-models.

Entra ID sometimes sends `externalId eq 5171a35d...` with the value unquoted,
which RFC 7644 does not allow. Exactly that shape (one `attribute eq bareword`
comparison) is quoted before parsing; anything else that does not parse is
refused with `invalidFilter`.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from typing import Any

from scim2_models import Context, SearchRequest
from scim2_models.path import AttrPath, CompareOperator, Comparison

from authgate.scim.validation import validated

_BARE_EQ = re.compile(r"^\s*([A-Za-z][\w.:-]*)\s+eq\s+([^\s\"()\[\]]+)\s*$", re.IGNORECASE)
_JSON_LITERAL = re.compile(r"^(true|false|null|-?\d+(\.\d+)?([eE][+-]?\d+)?)$", re.IGNORECASE)
_PARAMS = (
    "filter",
    "sortBy",
    "sortOrder",
    "startIndex",
    "count",
    "attributes",
    "excludedAttributes",
)
_CORE_URNS = {
    "urn:ietf:params:scim:schemas:core:2.0:user",
    "urn:ietf:params:scim:schemas:core:2.0:group",
}


def normalise_filter(text: str) -> str:
    """Quote the bare value of Entra ID's `attr eq value`; leave every other filter alone."""
    match = _BARE_EQ.match(text)
    if match and not _JSON_LITERAL.match(match.group(2)):
        return f"{match.group(1)} eq {json.dumps(match.group(2))}"
    return text


def search_request(model: Any, query: Mapping[str, Any], max_page_size: int) -> SearchRequest[Any]:
    """A validated SearchRequest from query parameters or a `.search` body, `count` capped."""
    params = {k: query[k] for k in _PARAMS if query.get(k) is not None}
    if isinstance(params.get("filter"), str):
        params["filter"] = normalise_filter(params["filter"])
    with validated():
        request = SearchRequest[model].model_validate(params, scim_ctx=Context.SEARCH_REQUEST)
    count = max_page_size if request.count is None else min(request.count, max_page_size)
    return request.model_copy(update={"count": count})


def equality(request: SearchRequest[Any]) -> tuple[str, str] | None:
    """(attribute, value) when the filter is one plain `attr eq "value"`, for index lookups."""
    if request.filter is None:
        return None
    node = request.filter.ast
    if not (
        isinstance(node, Comparison)
        and node.op == CompareOperator.eq
        and isinstance(node.value, str)
        and isinstance(node.attr_path, AttrPath)
        and node.attr_path.sub_attr is None
        and (node.attr_path.uri is None or node.attr_path.uri.lower() in _CORE_URNS)
    ):
        return None
    return node.attr_path.attr.lower(), node.value
