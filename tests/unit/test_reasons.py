"""Every reason code authgate raises or explains is a `Reason`: a typo fails here, not as a 500.

Raise sites are read from the source (`SomeError("code", ...)`, also across
lines), so a code written as a plain string is held to the enum too.
"""

from __future__ import annotations

import re
from pathlib import Path

from authgate.errors import LOGIN_REASONS, Reason
from authgate.web.pages import HINTS

SRC = Path(__file__).resolve().parents[2] / "src" / "authgate"
ERRORS = (
    "LoginFailed|ProtocolError|PolicyDenied|LoginStateError|BadRequest|Forbidden"
    "|Unauthenticated|StoreUnavailable|UpstreamError|UpstreamTimeout"
)
RAISED = re.compile(rf"\b(?:{ERRORS})\(\s*\"([a-z_]+)\"")
CODES = {r.value for r in Reason}


def raised() -> dict[str, set[str]]:
    found: dict[str, set[str]] = {}
    for path in SRC.rglob("*.py"):
        for code in RAISED.findall(path.read_text()):
            found.setdefault(code, set()).add(str(path.relative_to(SRC)))
    return found


def test_every_reason_raised_in_the_source_is_a_reason():
    found = raised()
    assert len(found) > 20, "the pattern stopped matching the raise sites"
    assert {c: sorted(w) for c, w in found.items() if c not in CODES} == {}


def test_every_page_hint_and_login_reason_is_a_reason():
    assert set(HINTS) - CODES == set()
    assert set(LOGIN_REASONS) - CODES == set()


def test_every_login_reason_has_a_hint_for_the_error_page():
    assert sorted(set(LOGIN_REASONS) - set(HINTS)) == []
