"""The development IdP's OpenID Provider: Authorization Code flow with PKCE (S256 only).

It behaves like a strict real provider so that the demo exercises authgate's
relying party honestly: registered clients and exact redirect URIs, client
authentication, single-use short-lived codes bound to the client, the
redirect URI and the PKCE challenge, ID tokens signed with ES256 or RS256
(joserfc) and published in the JWKS, the RFC 9207 `iss` parameter, UserInfo
behind a bearer token, and RP-initiated logout to registered URIs only.
Everything is kept in memory; nothing here is meant for production.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import re
import secrets
import time
from dataclasses import dataclass
from typing import Any, Literal
from urllib.parse import unquote_plus, urlencode

from joserfc import jwt
from joserfc.errors import JoseError
from joserfc.jwk import ECKey, KeySet, RSAKey

from authgate.devidp.store import ExpiringMap
from authgate.devidp.users import DevUser

CODE_TTL = 60.0
TOKEN_TTL = 600.0
ID_TOKEN_TTL = 600
RSA_BITS = 2048
ALGORITHMS = ("ES256", "RS256")
CLAIMS = (
    "sub", "iss", "aud", "exp", "iat", "auth_time", "nonce", "at_hash", "email",
    "email_verified", "name", "given_name", "family_name", "preferred_username", "groups",
)  # fmt: skip
_VERIFIER = re.compile(r"^[A-Za-z0-9\-._~]{43,128}$")

IdTokenAlg = Literal["ES256", "RS256"]


class OAuthError(Exception):
    """An error the provider answers with, in RFC 6749's `error` / `error_description` shape."""

    def __init__(self, error: str, description: str, status: int = 400) -> None:
        super().__init__(f"{error}: {description}")
        self.error = error
        self.description = description
        self.status = status


class ClientError(OAuthError):
    """Unknown client or unregistered redirect URI: shown on a page, never redirected (§4.1.2.1)."""


@dataclass(frozen=True, slots=True)
class OidcClient:
    client_id: str
    client_secret: str
    redirect_uris: tuple[str, ...]
    post_logout_redirect_uris: tuple[str, ...] = ()
    id_token_alg: IdTokenAlg = "ES256"  # noqa: S105 - an algorithm name


@dataclass(frozen=True, slots=True)
class AuthorizationRequest:
    """A checked authorization request, waiting for the person to sign in."""

    client_id: str
    redirect_uri: str
    scope: tuple[str, ...]
    state: str | None
    nonce: str | None
    code_challenge: str
    prompt: str


@dataclass(frozen=True, slots=True)
class _Grant:
    request: AuthorizationRequest
    user: DevUser
    auth_time: int


def with_query(url: str, params: dict[str, str]) -> str:
    return url + ("&" if "?" in url else "?") + urlencode(params)


def s256(verifier: str) -> str:
    digest = hashlib.sha256(verifier.encode("ascii")).digest()
    return base64.urlsafe_b64encode(digest).rstrip(b"=").decode()


def _half_hash(value: str) -> str:
    """`at_hash`: the left half of the SHA-256 of the access token (both algorithms use SHA-256)."""
    digest = hashlib.sha256(value.encode("ascii")).digest()
    return base64.urlsafe_b64encode(digest[:16]).rstrip(b"=").decode()


class OidcProvider:
    """One issuer, its registered clients and freshly generated signing keys."""

    def __init__(self, issuer: str, clients: tuple[OidcClient, ...]) -> None:
        self.issuer = issuer
        self.clients = {c.client_id: c for c in clients}
        self.keys: dict[str, ECKey | RSAKey] = {
            "ES256": ECKey.generate_key("P-256", {"use": "sig", "alg": "ES256"}),
            "RS256": RSAKey.generate_key(RSA_BITS, {"use": "sig", "alg": "RS256"}),
        }
        for key in self.keys.values():
            key.ensure_kid()
        self._codes: ExpiringMap[_Grant] = ExpiringMap()
        self._tokens: ExpiringMap[_Grant] = ExpiringMap()

    def url(self, path: str) -> str:
        return self.issuer + path

    def register(self, redirect_uri: str, logout_uri: str = "") -> OidcClient:
        """A new client with generated credentials, accepted from the next request on."""
        client = OidcClient(
            client_id="dev-" + secrets.token_hex(8),
            client_secret=secrets.token_urlsafe(32),
            redirect_uris=(redirect_uri,),
            post_logout_redirect_uris=(logout_uri,) if logout_uri else (),
        )
        self.clients[client.client_id] = client
        return client

    def discovery(self) -> dict[str, Any]:
        return {
            "issuer": self.issuer,
            "authorization_endpoint": self.url("/authorize"),
            "token_endpoint": self.url("/token"),
            "userinfo_endpoint": self.url("/userinfo"),
            "jwks_uri": self.url("/jwks"),
            "end_session_endpoint": self.url("/end_session"),
            "response_types_supported": ["code"],
            "response_modes_supported": ["query"],
            "grant_types_supported": ["authorization_code"],
            "subject_types_supported": ["public"],
            "id_token_signing_alg_values_supported": list(ALGORITHMS),
            "scopes_supported": ["openid", "email", "profile", "groups"],
            "token_endpoint_auth_methods_supported": ["client_secret_basic", "client_secret_post"],
            "code_challenge_methods_supported": ["S256"],
            "claims_supported": list(CLAIMS),
            "authorization_response_iss_parameter_supported": True,
            "service_documentation": self.issuer.rsplit("/", 1)[0] + "/",
        }

    def jwks(self) -> dict[str, Any]:
        return {"keys": [k.as_dict(private=False) for k in self.keys.values()]}

    def authorization_request(self, params: dict[str, str]) -> AuthorizationRequest:
        """Check a request: client and redirect URI first (never redirect to an unknown URI)."""
        client = self.clients.get(params.get("client_id", ""))
        if client is None:
            raise ClientError("invalid_client", "unknown client_id")
        redirect_uri = params.get("redirect_uri", "")
        if redirect_uri not in client.redirect_uris:
            raise ClientError("invalid_request", "redirect_uri is not registered for this client")
        if params.get("response_type") != "code":
            raise OAuthError("unsupported_response_type", "only response_type=code is supported")
        scope = tuple(params.get("scope", "").split())
        if "openid" not in scope:
            raise OAuthError("invalid_scope", "the scope must include openid")
        challenge = params.get("code_challenge", "")
        if not challenge or params.get("code_challenge_method") != "S256":
            raise OAuthError("invalid_request", "PKCE is required: code_challenge_method=S256")
        if not re.fullmatch(r"[A-Za-z0-9_-]{43}", challenge):
            raise OAuthError("invalid_request", "code_challenge is not a base64url SHA-256 value")
        return AuthorizationRequest(
            client_id=client.client_id,
            redirect_uri=redirect_uri,
            scope=scope,
            state=params.get("state"),
            nonce=params.get("nonce"),
            code_challenge=challenge,
            prompt=params.get("prompt", ""),
        )

    def error_redirect(
        self, redirect_uri: str, state: str | None, error: str, description: str
    ) -> str:
        """An error answer to a client whose redirect URI was already checked."""
        params = {"error": error, "error_description": description, "iss": self.issuer}
        if state is not None:
            params["state"] = state
        return with_query(redirect_uri, params)

    def issue_code(self, request: AuthorizationRequest, user: DevUser, auth_time: int) -> str:
        """The redirect back to the client with a fresh single-use code."""
        code = secrets.token_urlsafe(32)
        self._codes.put(code, _Grant(request, user, auth_time), CODE_TTL)
        params = {"code": code, "iss": self.issuer}
        if request.state is not None:
            params["state"] = request.state
        return with_query(request.redirect_uri, params)

    def _client_auth(self, form: dict[str, str], authorization: str | None) -> OidcClient:
        """client_secret_basic or client_secret_post, never both (RFC 6749 §2.3)."""
        if authorization and "client_secret" in form:
            raise OAuthError("invalid_request", "use one client authentication method", 400)
        if authorization:
            scheme, _, encoded = authorization.partition(" ")
            try:
                decoded = base64.b64decode(encoded.strip(), validate=True).decode()
            except (binascii.Error, UnicodeDecodeError):
                raise OAuthError("invalid_client", "malformed Basic credentials", 401) from None
            client_id, sep, secret = decoded.partition(":")
            if scheme.lower() != "basic" or not sep:
                raise OAuthError("invalid_client", "malformed Basic credentials", 401)
            client_id, secret = unquote_plus(client_id), unquote_plus(secret)
        else:
            client_id, secret = form.get("client_id", ""), form.get("client_secret", "")
        client = self.clients.get(client_id)
        if client is None or not hmac.compare_digest(
            secret.encode(), client.client_secret.encode()
        ):
            raise OAuthError("invalid_client", "client authentication failed", 401)
        return client

    def token(self, form: dict[str, str], authorization: str | None) -> dict[str, Any]:
        """The token endpoint: exchange a code (once) for an ID token and an access token."""
        client = self._client_auth(form, authorization)
        if form.get("grant_type") != "authorization_code":
            raise OAuthError("unsupported_grant_type", "only authorization_code is supported")
        grant = self._codes.take(form.get("code", ""))
        if grant is None:
            raise OAuthError("invalid_grant", "the code is unknown, expired or already used")
        if grant.request.client_id != client.client_id:
            raise OAuthError("invalid_grant", "the code was issued to another client")
        if form.get("redirect_uri") != grant.request.redirect_uri:
            raise OAuthError("invalid_grant", "redirect_uri differs from the authorization request")
        verifier = form.get("code_verifier", "")
        if not _VERIFIER.match(verifier):
            raise OAuthError("invalid_grant", "code_verifier is missing or malformed")
        if not hmac.compare_digest(s256(verifier), grant.request.code_challenge):
            raise OAuthError("invalid_grant", "code_verifier does not match the code_challenge")
        access_token = secrets.token_urlsafe(32)
        self._tokens.put(access_token, grant, TOKEN_TTL)
        return {
            "access_token": access_token,
            "token_type": "Bearer",
            "expires_in": int(TOKEN_TTL),
            "scope": " ".join(grant.request.scope),
            "id_token": self.id_token(client, grant, access_token),
        }

    def id_token(self, client: OidcClient, grant: _Grant, access_token: str) -> str:
        now = int(time.time())
        claims: dict[str, Any] = {
            "iss": self.issuer,
            "sub": grant.user.id,
            "aud": client.client_id,
            "iat": now,
            "exp": now + ID_TOKEN_TTL,
            "auth_time": grant.auth_time,
            "at_hash": _half_hash(access_token),
            **self.claims(grant.user, grant.request.scope),
        }
        if grant.request.nonce is not None:
            claims["nonce"] = grant.request.nonce
        key = self.keys[client.id_token_alg]
        header = {"alg": client.id_token_alg, "kid": key.kid, "typ": "JWT"}
        return jwt.encode(header, claims, key, algorithms=[client.id_token_alg])

    @staticmethod
    def claims(user: DevUser, scope: tuple[str, ...]) -> dict[str, Any]:
        claims: dict[str, Any] = {}
        if "email" in scope:
            claims.update(email=user.email, email_verified=user.email_verified)
        if "profile" in scope:
            claims.update(
                name=user.name,
                given_name=user.given_name,
                family_name=user.family_name,
                preferred_username=user.email,
            )
        if "profile" in scope or "groups" in scope:
            claims["groups"] = list(user.groups)
        return claims

    def userinfo(self, authorization: str | None) -> dict[str, Any]:
        scheme, _, token = (authorization or "").partition(" ")
        grant = self._tokens.get(token.strip()) if scheme.lower() == "bearer" else None
        if grant is None:
            raise OAuthError("invalid_token", "the access token is unknown or expired", 401)
        return {"sub": grant.user.id, **self.claims(grant.user, grant.request.scope)}

    def _hinted_client(self, id_token_hint: str) -> str:
        """The audience of an ID token we issued (expired is fine: it is only a hint)."""
        keys = KeySet(list(self.keys.values()))
        try:
            token = jwt.decode(id_token_hint, keys, algorithms=list(ALGORITHMS))
        except (JoseError, ValueError) as exc:
            raise ClientError("invalid_request", f"id_token_hint does not verify ({exc})") from None
        if token.claims.get("iss") != self.issuer:
            raise ClientError("invalid_request", "id_token_hint was issued by another provider")
        return str(token.claims.get("aud", ""))

    def end_session(self, params: dict[str, str]) -> str | None:
        """RP-initiated logout: where to send the browser afterwards (None: our own page)."""
        client_id = params.get("client_id")
        if params.get("id_token_hint"):
            hinted = self._hinted_client(params["id_token_hint"])
            if client_id and client_id != hinted:
                raise ClientError("invalid_request", "client_id differs from the id_token_hint")
            client_id = hinted
        target = params.get("post_logout_redirect_uri")
        if not target:
            return None
        client = self.clients.get(client_id or "")
        if client is None or target not in client.post_logout_redirect_uris:
            raise ClientError(
                "invalid_request", "post_logout_redirect_uri is not registered for this client"
            )
        return with_query(target, {"state": params["state"]}) if "state" in params else target
