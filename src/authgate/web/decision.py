"""The request decision, once for both front ends: request facts and a session in, a `Decision` out.

A request reaches authgate through the fast path (`fastpath.py`, a raw
protocol) or through aiohttp's web layer (`proxy.py`, `forward_auth.py`).
Each front only parses its request into `Facts`, finds the session, calls
`decide` and serialises the `Decision` it gets back; neither decides
anything itself. As in pomerium's authorize evaluator, the answer is data:
what to do (forward, answer here, redirect to sign-in), the status and
reason code, the headers to set and the client headers to strip.

`decide` does no I/O and keeps no request's state: the session lookup (and
its refresh) happens before it, the answer's bytes after it. Its only
memory is the rendering of a session's identity headers and that session's
signed assertion, both functions of the session alone.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass
from urllib.parse import urlencode

from multidict import MultiDict, MultiMapping
from yarl import URL

from authgate.headers import SessionHeaders, normalise
from authgate.policy import permitted
from authgate.session.sessions import Session
from authgate.upstream import origin_form
from authgate.web.client_info import ClientInfo
from authgate.web.middlewares import REASON_HEADER, wants_html_from
from authgate.web.state import State

NO_STORE = (("Cache-Control", "no-store"),)
CHALLENGE = 'Cookie realm="authgate"'
LOGIN_HEADER = "X-Authgate-Login"
REDIRECT_HEADER = "X-Authgate-Redirect"
_NAVIGATIONS = frozenset({"GET", "HEAD"})

# Set by authgate from what it knows, never copied from the client.
REPLACED = frozenset(
    normalise(name)
    for name in (
        "X-Forwarded-For",
        "X-Forwarded-Proto",
        "X-Forwarded-Host",
        "X-Real-IP",
        "Forwarded",
        "X-Request-Id",
    )
)


class Endpoint(enum.Enum):
    """Which question the request asks; the value is its metrics kind."""

    AUTH = "auth"
    PROXY = "proxy"


class Action(enum.Enum):
    FORWARD = "forward"
    ANSWER = "answer"
    REDIRECT = "redirect"


@dataclass(frozen=True, slots=True)
class Facts:
    """What a decision reads of a request, parsed by either front the same way.

    `original_uri` is the original request a trusted front proxy names to
    `/auth` (None from anyone else); `public` is whether the path asked about
    needs no session, so a front asks the store only when it does.
    """

    endpoint: Endpoint
    method: str
    target: str
    query: str
    headers: MultiMapping[str]
    client: ClientInfo
    cid: str
    original_uri: str | None
    public: bool


@dataclass(frozen=True, slots=True)
class Decision:
    """What to do with one request, for a front to serialise.

    FORWARD: send it upstream with the client's headers minus `strip` (and
    minus hop-by-hop and identity headers, always), then `headers`, then
    `identity`; the application's answer is relayed. ANSWER: reply here with
    `status` and `headers` (and `identity` for the /auth yes); a refusal's
    body is the usual page or JSON for `reason`. REDIRECT: a 302 to sign in.
    `reason` is the reason code and the metrics outcome; `login_url` is the
    sign-in page an unauthenticated answer points to.
    """

    action: Action
    status: int
    reason: str
    headers: tuple[tuple[str, str], ...] = ()
    identity: SessionHeaders | None = None
    strip: frozenset[str] = frozenset()
    login_url: str | None = None


PUBLIC_ANSWER = Decision(Action.ANSWER, 200, "public", NO_STORE)
FORBIDDEN = Decision(Action.ANSWER, 403, "forbidden", NO_STORE)


def original_from(client: ClientInfo, headers: MultiMapping[str], *names: str) -> str | None:
    """A header naming the original request, believed only from a trusted proxy."""
    if not client.via_trusted_proxy:
        return None
    return next((value for name in names if (value := headers.get(name))), None)


def facts(
    st: State,
    endpoint: Endpoint,
    method: str,
    target: str,
    headers: MultiMapping[str],
    client: ClientInfo,
    cid: str,
) -> Facts:
    """The facts of a request; a proxied target that could be read two ways is refused here.

    The public-path check reads the raw target and the upstream receives it,
    so a target the way out would change (`origin_form`) is refused first.
    """
    _, _, query = target.partition("?")
    if endpoint is Endpoint.AUTH:
        original = original_from(client, headers, "X-Original-URI", "X-Forwarded-Uri")
        public = original is not None and st.public_paths.match(original)
    else:
        original = None
        public = st.public_paths.match(origin_form(target))
    return Facts(endpoint, method, target, query, headers, client, cid, original, public)


def decide(st: State, request: Facts, session: Session | None) -> Decision:
    """The one decision: public, unauthenticated, forbidden, or allowed with the identity.

    `session` is the valid session behind the cookie (refreshed if it was
    due), or None; it is not read for a public request.
    """
    if request.public:
        if request.endpoint is Endpoint.AUTH:
            return PUBLIC_ANSWER
        return Decision(Action.FORWARD, 200, "forwarded", forwarding(request), strip=REPLACED)
    if session is None:
        return unauthenticated(st, request)
    identity = st.headers.rendered(session, st.signer.sign(session) if st.signer else None)
    if request.endpoint is Endpoint.AUTH:
        if not permitted(_query(request.query), session):
            return FORBIDDEN
        return Decision(Action.ANSWER, 200, "allowed", NO_STORE, identity)
    return Decision(Action.FORWARD, 200, "forwarded", forwarding(request), identity, REPLACED)


def unauthenticated(st: State, request: Facts) -> Decision:
    """No session. Behind `auth_request`, a 401 naming the sign-in URL (rd escaped here,
    not by the proxy's config language), and `X-Authgate-Redirect` only when the
    original request was a browser navigation, so nginx can redirect browsers and
    answer APIs with 401.
    """
    if request.endpoint is Endpoint.PROXY:
        return sign_in_required(st, request.method, request.headers, request.target)
    target = login_url(st, request.original_uri)
    names = ("X-Original-Method", "X-Forwarded-Method")
    method = (original_from(request.client, request.headers, *names) or "GET").upper()
    if _navigation(method, request.headers):
        return not_signed_in(target, (LOGIN_HEADER, target), (REDIRECT_HEADER, target))
    return not_signed_in(target, (LOGIN_HEADER, target))


def sign_in_required(
    st: State, method: str, headers: MultiMapping[str], return_to: str
) -> Decision:
    """Browsers are sent to sign in and come back to `return_to`; API clients get a 401."""
    target = login_url(st, return_to)
    if _navigation(method, headers):
        found = (("Location", target), *NO_STORE)
        return Decision(Action.REDIRECT, 302, "unauthenticated", found, login_url=target)
    return not_signed_in(target)


def not_signed_in(target: str, *headers: tuple[str, str]) -> Decision:
    """The 401 a caller can act on: the challenge, and where to sign in."""
    challenge = (("WWW-Authenticate", CHALLENGE), *NO_STORE, (REASON_HEADER, "unauthenticated"))
    return Decision(Action.ANSWER, 401, "unauthenticated", (*challenge, *headers), login_url=target)


def _navigation(method: str, headers: MultiMapping[str]) -> bool:
    """Only a top-level navigation can follow a redirect to a sign-in page and come back."""
    return method in _NAVIGATIONS and wants_html_from(headers)


def forwarding(request: Facts) -> tuple[tuple[str, str], ...]:
    """Who asked, as the upstream is told: from the trusted client info, never the client."""
    client = request.client
    return (
        ("X-Forwarded-For", client.forwarded_for),
        ("X-Forwarded-Proto", client.proto),
        ("X-Forwarded-Host", client.host),
        ("X-Real-IP", client.ip),
        ("X-Request-Id", request.cid),
    )


def login_url(st: State, return_to: str | None) -> str:
    """The sign-in page; the return path is validated here so no caller can forget to."""
    return st.url("/login") + "?" + urlencode({"rd": st.redirects.safe(return_to)})


def _query(raw: str) -> MultiMapping[str]:
    """The query as aiohttp's `request.query` reads it."""
    if not raw:
        return MultiDict()
    return URL.build(path="/", query_string=raw, encoded=True).query
