"""Identity headers: what is stripped from the client, what is injected upstream.

Both sets are computed once at start-up. Stripping compares a normalised
name (lower case, `_` read as `-`), because some upstream frameworks (CGI,
WSGI, PHP) fold `X_User` and `X-User` into the same variable.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass, field

from multidict import MultiMapping

from authgate.session.sessions import Session
from authgate.settings import HeaderSettings
from authgate.upstream_pool import header_lines

HOP_BY_HOP = frozenset(
    {
        "connection",
        "keep-alive",
        "proxy-authenticate",
        "proxy-authorization",
        "proxy-connection",
        "te",
        "trailer",
        "trailers",
        "transfer-encoding",
        "upgrade",
    }
)

_ALWAYS_STRIPPED = (
    "X-User",
    "X-Email",
    "X-User-Name",
    "X-User-Id",
    "X-Groups",
    "X-Roles",
    "X-Auth-Connection",
    "X-Organization",
    "X-Authgate-Assertion",
    "X-Forwarded-User",
    "X-Forwarded-Email",
    "X-Forwarded-Groups",
    "X-Forwarded-Preferred-Username",
    "Remote-User",
    # Apache's and nginx's conventions for a proxy-authenticated user: apps trust them too.
    "X-Remote-User",
)

# oauth2-proxy's whole namespace: apps written for it trust any header under it.
_STRIPPED_PREFIXES = ("x-auth-request-",)
# Sessions whose identity headers are kept rendered; more than this and they are made afresh.
RENDERED_SESSIONS = 4096


@functools.lru_cache(maxsize=4096)
def normalise(name: str) -> str:
    """Header names repeat on every request; the cache saves three string copies per name."""
    return name.strip().lower().replace("_", "-")


def connection_tokens(headers: MultiMapping[str]) -> set[str]:
    """Header names a client listed in `Connection`, which are hop-by-hop by definition."""
    named: set[str] = set()
    for value in headers.getall("Connection", ()):
        named.update(normalise(token) for token in value.split(",") if token.strip())
    return named


@dataclass(frozen=True, slots=True)
class SessionHeaders:
    """The identity headers of one session and one signed assertion, as pairs and as lines.

    Nothing of any request is in here (no request id, no forwarding headers,
    no client header), so one rendering serves every request of the session.
    """

    session: Session
    assertion: str | None
    pairs: tuple[tuple[str, str], ...]
    lines: bytes


@dataclass(frozen=True, slots=True)
class IdentityHeaders:
    protected: frozenset[str]
    mapping: tuple[tuple[str, str], ...]
    compat: bool
    assertion_header: str | None
    _rendered: dict[str, SessionHeaders] = field(default_factory=dict, compare=False, repr=False)

    @classmethod
    def from_settings(cls, settings: HeaderSettings) -> IdentityHeaders:
        fields = (
            "user", "email", "name", "user_id", "groups", "roles", "connection", "organization",
        )  # fmt: skip
        mapping = tuple(
            (field, name) for field in fields if (name := getattr(settings, field)) is not None
        )
        names: list[str] = [*_ALWAYS_STRIPPED, *settings.extra_strip, *(n for _, n in mapping)]
        if settings.assertion.header:
            names.append(settings.assertion.header)
        return cls(
            protected=frozenset(normalise(n) for n in names),
            mapping=mapping,
            compat=settings.oauth2_proxy_compat,
            assertion_header=settings.assertion.header,
        )

    def _protected_key(self, key: str) -> bool:
        return key in self.protected or key.startswith(_STRIPPED_PREFIXES)

    def kept(
        self, incoming: MultiMapping[str], extra_drop: frozenset[str] = frozenset()
    ) -> list[tuple[str, str]]:
        """The client's header lines, in order, without hop-by-hop, identity and `extra_drop`.

        `extra_drop` holds normalised names (see `normalise`).
        """
        named = connection_tokens(incoming) if "Connection" in incoming else set()
        return [
            (name, value)
            for name, value in incoming.items()
            if not (
                (key := normalise(name)) in HOP_BY_HOP
                or key in named
                or key in extra_drop
                or self._protected_key(key)
            )
        ]

    def identity(self, session: Session, assertion: str | None) -> list[tuple[str, str]]:
        """Headers that carry the signed-in identity (upstream and in the /auth answer)."""
        values = {
            "user": session.username,
            "email": session.email or "",
            "name": session.name or "",
            "user_id": session.user_id,
            "groups": ",".join(session.groups),
            "roles": ",".join(session.roles),
            "connection": session.connection,
            "organization": session.organization,
        }
        out = [
            (name, _header_safe(value))
            for field, name in self.mapping
            if (value := values[field]) is not None
        ]
        if self.compat:
            out += [
                ("X-Auth-Request-User", _header_safe(session.username)),
                ("X-Auth-Request-Email", _header_safe(session.email or "")),
                ("X-Auth-Request-Groups", _header_safe(",".join(session.groups))),
                ("X-Auth-Request-Preferred-Username", _header_safe(session.username)),
            ]
        if assertion and self.assertion_header:
            out.append((self.assertion_header, assertion))
        return out

    def rendered(self, session: Session, assertion: str | None) -> SessionHeaders:
        """`identity`, rendered once per session rather than once per request.

        Kept by session id, and used only for the very same `Session` object
        and assertion string it was made from: a touch, a refresh or a renewal
        on another replica (each a new `Session`) and a re-signed assertion
        all render anew, so a kept rendering can never be another's identity.
        """
        kept = self._rendered.get(session.id)
        if kept is not None and kept.session is session and kept.assertion is assertion:
            return kept
        pairs = tuple(self.identity(session, assertion))
        kept = SessionHeaders(session, assertion, pairs, header_lines(pairs))
        if len(self._rendered) >= RENDERED_SESSIONS:
            self._rendered.clear()
        self._rendered[session.id] = kept
        return kept


def _header_safe(value: str) -> str:
    """IdP-supplied text must not be able to break out of its header line."""
    if value.isprintable():
        return value
    return "".join(ch if ch.isprintable() else " " for ch in value)
