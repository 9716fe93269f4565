"""OpenID Connect relying party: Authorization Code + PKCE, producing one `Identity`.

The web layer stores what `begin_login` returns behind the browser's
pre-login cookie and hands it back, consumed once, to `finish_login` together
with the callback parameters. Everything in between — discovery, keys, client
authentication, ID token and UserInfo checks, groups overage — happens here,
and joserfc objects never leave this package.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import hashlib
import logging
import secrets
import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlencode

from authgate.errors import LoginFailed, PolicyDenied, ProtocolError
from authgate.identity import Identity
from authgate.protocols.base import Protocol, ProtocolContext, RefreshDeferred, Refreshed
from authgate.protocols.freshness import retry_delay
from authgate.protocols.oidc_client import (
    TokenClient,
    TokenEndpointError,
    choose_auth_method,
    load_signing_key,
)
from authgate.protocols.oidc_discovery import Discovery, ProviderInfo, shown
from authgate.protocols.oidc_graph import GraphGroups, has_overage
from authgate.protocols.oidc_keys import KeyCache
from authgate.protocols.oidc_logout import LOGOUT_JTI_TTL, LogoutToken, read_logout_token
from authgate.protocols.oidc_tokens import (
    Expected,
    check_at_hash,
    check_claims,
    check_header,
    hmac_key,
    read_header,
    verify_signature,
)
from authgate.protocols.saml_config import absolute
from authgate.secrets import SecretBox
from authgate.session.sessions import Session
from authgate.settings import ENTRA_TENANT_SEGMENTS, OidcConnection, Settings, entra_issuer

log = logging.getLogger("authgate.oidc")
CODE_REPLAY_TTL = 600.0
# The background refresh never spins faster than this, however short the TTLs.
MIN_RECHECK = 1.0
REFRESH_RETRY = 60.0
REFRESH_CONTEXT = "refresh_token"
ATTRIBUTE_CLAIMS = ("iss", "tid", "oid", "preferred_username", "given_name", "family_name")
RESERVED_AUTH_PARAMS = frozenset(
    {
        "response_type",
        "client_id",
        "redirect_uri",
        "scope",
        "state",
        "nonce",
        "code_challenge",
        "code_challenge_method",
    }
)


@dataclass(frozen=True, slots=True)
class LoginStart:
    """Where to send the browser, and what to keep server-side until it comes back."""

    url: str
    state: str
    pending: dict[str, Any]


def redirect_uri(conn: OidcConnection, settings: Settings) -> str:
    """The default callback under the prefix, or the path or URL a vendor document fixes."""
    default = settings.public_url + settings.prefix + f"/oidc/{conn.id}/callback"
    return absolute(settings.public_url, conn.redirect_path) if conn.redirect_path else default


def expected_discovery_issuer(conn: OidcConnection) -> str:
    """The configured issuer, or for Entra multi-tenant its `{tenantid}` template."""
    if not conn.allowed_tenants:
        return conn.issuer
    for segment in ENTRA_TENANT_SEGMENTS:
        if f"/{segment}/" in conn.issuer + "/":
            return conn.issuer.replace(f"/{segment}", "/{tenantid}", 1)
    return conn.issuer


def pkce_challenge(verifier: str) -> str:
    digest = hashlib.sha256(verifier.encode()).digest()
    return base64.urlsafe_b64encode(digest).rstrip(b"=").decode()


def _with_query(url: str, params: dict[str, str]) -> str:
    return url + ("&" if "?" in url else "?") + urlencode(params)


def _truthy(value: Any) -> bool:
    """`email_verified` as providers send it: a boolean, or (some) the string "true"."""
    return value is True or (isinstance(value, str) and value.lower() == "true")


def _domain_owner_verified(value: Any) -> bool:
    """Entra's `xms_edov`: a JSON boolean, or the string "1" or "true"."""
    if isinstance(value, bool):
        return value
    return isinstance(value, str) and value.strip().lower() in ("1", "true")


def email_verified(claims: Mapping[str, Any], entra: bool) -> bool:
    """`email_verified`, or for Entra ID (which never sends it) the `xms_edov` optional claim.

    `xms_edov` says the tenant owns the email's domain and has verified it; only
    Entra defines it, so from any other issuer it counts for nothing.
    """
    if _truthy(claims.get("email_verified")):
        return True
    return entra and _domain_owner_verified(claims.get("xms_edov"))


class OidcProtocol(Protocol):
    conn: OidcConnection

    def __init__(self, conn: OidcConnection, ctx: ProtocolContext) -> None:
        super().__init__(conn, ctx)
        self.redirect_uri = redirect_uri(conn, ctx.settings)
        self.entra = entra_issuer(conn.issuer)
        self.discovery = Discovery(
            ctx.http,
            conn.issuer,
            expected_discovery_issuer(conn),
            conn.discovery_ttl,
            conn.http_timeout,
        )
        self.keys = KeyCache(ctx.http, conn.jwks_ttl, conn.jwks_refetch_interval, conn.http_timeout)
        self.box = SecretBox(ctx.settings.secrets)
        self._setup_problem: str | None = None
        self._client: TokenClient | None = None
        self._refresher: asyncio.Task[None] | None = None

    async def start(self) -> None:
        """Checks what is local (secrets, key file) now; asks the provider in the background."""
        try:
            self._token_client()
        except LoginFailed as exc:
            self._setup_problem = f"{exc.reason}: {exc.detail}"
        self._refresher = asyncio.create_task(
            self._keep_fresh(), name=f"oidc-metadata-{self.conn.id}"
        )

    async def stop(self) -> None:
        if self._refresher is not None:
            self._refresher.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._refresher
            self._refresher = None

    async def _keep_fresh(self) -> None:
        """Discovery and JWKS loaded from start-up on, then again whenever their TTL runs out.

        Until both were loaded once, failed tries are repeated after 1 s, 2 s,
        4 s ... 30 s; afterwards a failed refresh keeps the last good copy and
        is retried 30 s later (see Discovery.get and KeyCache).
        """
        while True:
            try:
                info = await self.discovery.get()
                await self.keys.refresh_if_due(info.jwks_uri)
                wait = max(MIN_RECHECK, min(self.discovery.due_in(), self.keys.due_in()))
            except LoginFailed as exc:
                log.warning("connection %s: %s: %s", self.conn.id, exc.reason, exc.detail)
                failures = max(self.discovery.freshness.failures, self.keys.freshness.failures)
                wait = retry_delay(failures)
            await asyncio.sleep(wait)

    def readiness_problem(self) -> str | None:
        return (
            self._setup_problem
            or self.discovery.freshness.problem()
            or self.keys.freshness.problem()
        )

    def _token_client(self) -> TokenClient:
        if self._client is None:
            secret = self.box.reveal(self.conn.client_secret, self.conn.client_secret_encrypted)
            key = None
            if self.conn.auth_method == "private_key_jwt":
                assert self.conn.private_key_file is not None
                try:
                    key = load_signing_key(self.conn.private_key_file)
                except (OSError, ValueError) as exc:
                    raise LoginFailed("decrypt_failed", f"private_key_file: {exc}") from None
            self._client = TokenClient(self.ctx.http, self.conn, secret, key)
            self._setup_problem = None
        return self._client

    async def begin_login(self, return_to: str) -> LoginStart:
        info = await self.discovery.get()
        self._token_client()
        choose_auth_method(self.conn, info.auth_methods)
        state, nonce = secrets.token_urlsafe(32), secrets.token_urlsafe(32)
        verifier = secrets.token_urlsafe(64)
        params = {
            k: v for k, v in self.conn.extra_auth_params.items() if k not in RESERVED_AUTH_PARAMS
        }
        params.update(
            response_type="code",
            client_id=self.conn.client_id,
            redirect_uri=self.redirect_uri,
            scope=" ".join(self.conn.scopes),
            state=state,
            nonce=nonce,
            code_challenge=pkce_challenge(verifier),
            code_challenge_method="S256",
        )
        pending = {"conn": self.conn.id, "nonce": nonce, "verifier": verifier, "rd": return_to}
        return LoginStart(_with_query(info.authorization_endpoint, params), state, pending)

    def _check_iss_parameter(self, params: Mapping[str, str], info: ProviderInfo) -> None:
        """RFC 9207: a mix-up attack shows as another issuer in the authorization response."""
        iss = params.get("iss")
        if iss is None:
            if info.iss_parameter_supported:
                raise ProtocolError("issuer_mismatch", "the authorization response has no iss")
            return
        if "{tenantid}" in info.issuer:
            prefix, _, suffix = info.issuer.partition("{tenantid}")
            tid = iss[len(prefix) : len(iss) - len(suffix)] if iss.startswith(prefix) else ""
            allowed = "*" in self.conn.allowed_tenants or tid in self.conn.allowed_tenants
            if iss.endswith(suffix) and tid and allowed and "/" not in tid:
                return
        elif iss == info.issuer:
            return
        raise ProtocolError("issuer_mismatch", f"the authorization response iss is {iss!r}")

    async def finish_login(self, params: Mapping[str, str], pending: dict[str, Any]) -> Identity:
        """Validate the callback of the login `pending` describes and return who signed in."""
        if pending.get("conn") != self.conn.id:
            raise ProtocolError("state_mismatch", "the state belongs to another connection")
        info = await self.discovery.get()
        self._check_iss_parameter(params, info)
        if "error" in params:
            detail = f"{params['error']} {params.get('error_description', '')[:200]}".rstrip()
            raise ProtocolError("idp_error", f"authorization response: {detail}")
        code = params.get("code")
        if not code:
            raise ProtocolError("invalid_request", "the callback has neither code nor error")
        if not await self.ctx.replay.first_use(
            "oidc-code", f"{self.conn.id}:{code}", CODE_REPLAY_TTL
        ):
            raise ProtocolError("replayed", "this authorization code was already used")
        form = {
            "grant_type": "authorization_code",
            "code": code,
            "redirect_uri": self.redirect_uri,
            "code_verifier": pending["verifier"],
        }
        method = choose_auth_method(self.conn, info.auth_methods)
        tokens = await self._token_client().grant(info.token_endpoint, form, method)
        return await self._identity(info, tokens, nonce=pending["nonce"])

    async def _verified(
        self, info: ProviderInfo, token: Any
    ) -> tuple[dict[str, Any], str, dict[str, Any]]:
        """A JWS from the provider (ID or logout token): header, algorithm and the claims its
        signature covers, with the provider's keys or, for HS*, the client secret."""
        header = read_header(token)
        alg = check_header(header, self.conn.allowed_algorithms)
        if alg.startswith("HS"):
            secret = self.box.reveal(self.conn.client_secret, self.conn.client_secret_encrypted)
            key = hmac_key(secret or "")
        else:
            key = await self.keys.resolve(info.jwks_uri, header)
        return header, alg, verify_signature(token, key, alg)

    async def _validate_id_token(
        self, info: ProviderInfo, token: Any, nonce: str | None, access_token: str | None
    ) -> dict[str, Any]:
        _, alg, claims = await self._verified(info, token)
        expect = Expected(
            issuer=info.issuer,
            client_id=self.conn.client_id,
            now=time.time(),
            skew=self.conn.clock_skew,
            nonce=nonce,
            allowed_tenants=tuple(self.conn.allowed_tenants),
        )
        check_claims(claims, expect)
        check_at_hash(claims, alg, access_token)
        return claims

    async def _identity(
        self, info: ProviderInfo, tokens: dict[str, Any], nonce: str | None
    ) -> Identity:
        id_token = tokens.get("id_token")
        if not id_token:
            raise ProtocolError("id_token_invalid", "the token endpoint returned no id_token")
        access_token = tokens.get("access_token")
        if not isinstance(access_token, str):
            access_token = None
        claims = await self._validate_id_token(info, id_token, nonce, access_token)
        claims = await self._with_userinfo(info, claims, access_token)
        groups = await self._groups(claims)
        return self._build_identity(
            claims, groups, self._protocol_data(info, id_token, claims, tokens)
        )

    async def _with_userinfo(
        self, info: ProviderInfo, claims: dict[str, Any], access_token: str | None
    ) -> dict[str, Any]:
        """UserInfo claims over the ID token's; its `sub` must be the same person (Core §5.3.4)."""
        if not (self.conn.userinfo and info.userinfo_endpoint and access_token):
            return claims
        extra = await self._token_client().userinfo(info.userinfo_endpoint, access_token)
        if extra.get("sub") != claims["sub"]:
            raise ProtocolError(
                "id_token_invalid", "the UserInfo sub differs from the ID token's sub"
            )
        protected = {"iss", "aud", "azp", "exp", "iat", "nbf", "nonce", "tid"}
        merged = dict(claims)
        merged.update({k: v for k, v in extra.items() if k not in protected})
        return merged

    async def _groups(self, claims: dict[str, Any]) -> tuple[str, ...]:
        name = self.conn.claims.groups
        if has_overage(claims, name):
            graph = self.conn.graph
            if graph is None:
                raise ProtocolError(
                    "groups_overage",
                    "the token lists no groups (overage) and no Graph credentials are configured",
                )
            fallback = self.box.reveal(self.conn.client_secret, self.conn.client_secret_encrypted)
            secret = self.box.reveal(graph.client_secret, graph.client_secret_encrypted)
            client = GraphGroups(
                self.ctx.http,
                graph,
                graph.client_id or self.conn.client_id,
                secret or fallback or "",
                self.conn.http_timeout,
            )
            return await client.groups_of(claims)
        value = claims.get(name)
        if isinstance(value, str):
            return (value,)
        if isinstance(value, list):
            return tuple(str(v) for v in value if isinstance(v, str | int))
        return ()

    def _protocol_data(
        self, info: ProviderInfo, id_token: str, claims: dict[str, Any], tokens: dict[str, Any]
    ) -> dict[str, Any]:
        """What logout and refresh need later; a refresh token is sealed when a key exists."""
        data: dict[str, Any] = {"id_token": id_token, "iss": claims["iss"], "sub": claims["sub"]}
        refresh_token = tokens.get("refresh_token")
        if self.conn.refresh.enabled and isinstance(refresh_token, str):
            sealed = self.box.available()
            data["refresh_token"] = (
                self.box.seal(refresh_token, REFRESH_CONTEXT) if sealed else refresh_token
            )
            data["refresh_sealed"] = sealed
        return data

    def _build_identity(
        self, claims: dict[str, Any], groups: tuple[str, ...], data: dict[str, Any]
    ) -> Identity:
        mapping = self.conn.claims

        def text(name: str | None) -> str | None:
            value = claims.get(name) if name else None
            return value if isinstance(value, str) and value else None

        key = self.conn.link_key
        claim = {"sub": "sub", "email": mapping.email}.get(key) or key.removeprefix("attribute:")
        match_value = text(claim)
        if match_value is None:
            raise PolicyDenied(
                "user_not_provisioned", f"the ID token has no {claim}, the connection's match key"
            )
        return Identity(
            connection=self.conn.id,
            subject=claims["sub"],
            match_value=match_value,
            email=text(mapping.email),
            email_verified=email_verified(claims, self.entra),
            name=text(mapping.name),
            username=text(mapping.username),
            groups=groups,
            attributes={k: claims[k] for k in ATTRIBUTE_CLAIMS if k in claims},
            idp_session=text("sid"),
            protocol_data=data,
            refresh_at=self._next_refresh() if "refresh_token" in data else None,
        )

    def _next_refresh(self) -> float:
        return time.time() + self.conn.refresh.every

    async def backchannel_logout(self, token: str) -> LogoutToken:
        """A Back-Channel Logout token checked like an ID token, then by its own rules; its
        `jti` is accepted once across replicas."""
        info = await self.discovery.get()
        header, _, claims = await self._verified(info, token)
        now = time.time()
        expect = Expected(
            issuer=info.issuer,
            client_id=self.conn.client_id,
            now=now,
            skew=self.conn.clock_skew,
            allowed_tenants=tuple(self.conn.allowed_tenants),
        )
        logout = read_logout_token(header, claims, expect)
        scope = f"{self.conn.id}:{claims['iss']}:{logout.jti}"
        if not await self.ctx.replay.first_use("oidc-logout", scope, LOGOUT_JTI_TTL):
            raise ProtocolError("replayed", "this logout token was already used")
        return logout

    async def refresh(self, data: dict[str, Any]) -> Refreshed:
        """Use the refresh token; a new ID token must name the same issuer and subject."""
        sealed = data.get("refresh_token")
        if not isinstance(sealed, str):
            raise ProtocolError("idp_error", "the session has no refresh token")
        token = self.box.open(sealed, REFRESH_CONTEXT) if data.get("refresh_sealed") else sealed
        try:
            info = await self.discovery.get()
        except LoginFailed as exc:
            raise RefreshDeferred(exc.detail) from exc
        form = {"grant_type": "refresh_token", "refresh_token": token}
        method = choose_auth_method(self.conn, info.auth_methods)
        try:
            tokens = await self._token_client().grant(info.token_endpoint, form, method)
        except TokenEndpointError as exc:
            if exc.definitive:
                raise
            raise RefreshDeferred(exc.detail) from exc
        new_data = dict(data)
        if isinstance(tokens.get("refresh_token"), str):
            new_data["refresh_token"] = (
                self.box.seal(tokens["refresh_token"], REFRESH_CONTEXT)
                if data.get("refresh_sealed")
                else tokens["refresh_token"]
            )
        if not tokens.get("id_token"):
            return Refreshed(None, new_data, self._next_refresh())
        identity = await self._identity(info, tokens, nonce=None)
        claims_iss, claims_sub = identity.protocol_data["iss"], identity.protocol_data["sub"]
        if claims_iss != data.get("iss"):
            raise ProtocolError("issuer_mismatch", "the refreshed ID token has another issuer")
        if claims_sub != data.get("sub"):
            raise ProtocolError("id_token_invalid", "the refreshed ID token has another subject")
        new_data.update(id_token=identity.protocol_data["id_token"])
        return Refreshed(identity, new_data, self._next_refresh())

    async def logout_url(self, session: Session, return_to: str | None) -> str | None:
        """RP-initiated logout at the provider's end_session_endpoint, when it has one.

        The provider returns the browser to the connection's `post_logout_url` (which
        must be registered there), else to authgate's own sign-out page, carrying
        `return_to` in `state` for that page to follow.
        """
        if not self.conn.end_session:
            return None
        try:
            info = await self.discovery.get()
        except LoginFailed:
            return None
        if not info.end_session_endpoint:
            return None
        params = {"client_id": self.conn.client_id}
        if self.conn.post_logout_url is not None:
            params["post_logout_redirect_uri"] = self.ctx.absolute(self.conn.post_logout_url)
        else:
            params["post_logout_redirect_uri"] = self.ctx.endpoint("/logout")
            if return_to:
                params["state"] = return_to
        id_token = session.protocol_data.get("id_token")
        if isinstance(id_token, str):
            params["id_token_hint"] = id_token
        return _with_query(info.end_session_endpoint, params)

    def _auth_method_line(self, info: ProviderInfo) -> tuple[bool, str]:
        """Which client authentication a sign-in will use, and why."""
        try:
            method = choose_auth_method(self.conn, info.auth_methods)
        except LoginFailed as exc:
            return False, f"client authentication: {exc.reason}: {exc.detail}"
        listed = ", ".join(shown(m) for m in (info.auth_methods or ())[:10])
        if self.conn.token_endpoint_auth_method:
            why = "configured"
            if info.auth_methods is not None and method not in info.auth_methods:
                why += f"; the provider lists only {listed or 'none'}"
        elif not self.conn.has_secret:
            why = "from the credentials"
        elif info.auth_methods is None:
            why = "the provider lists no methods: RFC 8414 default"
        else:
            why = f"chosen from the provider's {listed}"
        return True, f"client authentication: {method} ({why})"

    async def probe(self) -> list[tuple[bool, str]]:
        """`authgate test`: discovery, keys and credentials checked now, as readable lines."""
        lines: list[tuple[bool, str]] = [(True, f"redirect URI to register: {self.redirect_uri}")]
        try:
            self._token_client()
        except LoginFailed as exc:
            lines.append((False, f"client credentials: {exc.reason}: {exc.detail}"))
        try:
            info = await self.discovery.get()
        except LoginFailed as exc:
            return [*lines, (False, f"discovery {self.discovery.url}: {exc.reason}: {exc.detail}")]
        lines.append((True, f"discovery {self.discovery.url}: issuer {info.issuer} matches"))
        lines.append(self._auth_method_line(info))
        for name in ("authorization_endpoint", "token_endpoint", "userinfo_endpoint"):
            lines.append((True, f"  {name}: {getattr(info, name) or 'none'}"))
        lines.append((True, f"  end_session_endpoint: {info.end_session_endpoint or 'none'}"))
        lines.append((True, f"  RFC 9207 iss parameter: {info.iss_parameter_supported}"))
        try:
            usable = await self.keys.usable(info.jwks_uri, self.conn.allowed_algorithms)
        except LoginFailed as exc:
            return [*lines, (False, f"JWKS {info.jwks_uri}: {exc.reason}: {exc.detail}")]
        lines.append(
            (
                bool(usable),
                f"JWKS {info.jwks_uri}: {len(usable)} key(s) usable with"
                f" {', '.join(self.conn.allowed_algorithms)}: {', '.join(usable) or 'none'}",
            )
        )
        return lines
