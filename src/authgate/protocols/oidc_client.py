"""Back-channel calls of the relying party: token endpoint (client authentication), UserInfo.

Client authentication follows RFC 6749 §2.3.1 for `client_secret_basic`: the id
and the secret are each form-encoded before they are joined with ':' and
base64-encoded, so a secret containing ':' or '%' or '+' still authenticates.
`private_key_jwt` signs a short-lived assertion (RFC 7523) with a key that
never leaves authgate; the provider holds only its public half.

With a client secret and no `token_endpoint_auth_method` configured, the
method is the provider's: `client_secret_basic` when its discovery document
lists it or lists nothing (RFC 8414 §2), else `client_secret_post`; a
provider that accepts neither is named with what it does accept.
"""

from __future__ import annotations

import base64
import json
import secrets
import time
from pathlib import Path
from typing import Any
from urllib.parse import quote_plus

import aiohttp
from joserfc import jwt
from joserfc.errors import JoseError
from joserfc.jwk import ECKey, Key, RSAKey

from authgate.errors import ProtocolError
from authgate.protocols.oidc_discovery import shown
from authgate.protocols.oidc_http import FetchError, get_object, request_json
from authgate.settings import ClientAuthMethod, OidcConnection

ASSERTION_TYPE = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer"
ASSERTION_LIFETIME = 60


def basic_credentials(client_id: str, secret: str) -> str:
    """The `Authorization` value of RFC 6749 §2.3.1 (form-encode, then base64)."""
    pair = f"{quote_plus(client_id)}:{quote_plus(secret)}"
    return "Basic " + base64.b64encode(pair.encode()).decode()


def load_signing_key(path: Path) -> Key:
    """The private key for `private_key_jwt`, PEM or JWK JSON; kid = RFC 7638 thumbprint."""
    raw = path.read_bytes()
    data: Any = json.loads(raw) if raw.lstrip().startswith(b"{") else raw
    key: Key | None = None
    for cls in (RSAKey, ECKey):
        try:
            key = cls.import_key(data)
            break
        except (JoseError, ValueError, TypeError):
            continue
    if key is None or not key.is_private:
        raise ValueError(f"{path}: expected an RSA or EC private key (PEM or JWK)")
    key.ensure_kid()
    return key


SECRET_METHODS: tuple[ClientAuthMethod, ...] = ("client_secret_basic", "client_secret_post")


def choose_auth_method(conn: OidcConnection, supported: tuple[str, ...] | None) -> ClientAuthMethod:
    """The configured method, else the first of SECRET_METHODS that the provider lists."""
    if conn.token_endpoint_auth_method or not conn.has_secret:
        return conn.auth_method
    if supported is None:
        return "client_secret_basic"
    for method in SECRET_METHODS:
        if method in supported:
            return method
    listed = ", ".join(shown(m) for m in supported[:10]) or "none"
    raise ProtocolError(
        "idp_error",
        f"the provider's token endpoint accepts {listed} (token_endpoint_auth_methods_supported),"
        " neither client_secret_basic nor client_secret_post: set token_endpoint_auth_method"
        " (private_key_jwt with private_key_file) to one it accepts",
    )


class TokenEndpointError(ProtocolError):
    """The provider refused a grant or could not be asked; `definitive` tells which."""

    def __init__(self, detail: str, status: int | None) -> None:
        super().__init__("idp_error", detail)
        self.definitive = status is not None and 400 <= status < 500 and status != 429


def idp_error(where: str, exc: FetchError) -> TokenEndpointError:
    """The provider's own error code if it sent one (RFC 6749 §5.2), else the transport problem."""
    body = exc.body if isinstance(exc.body, dict) else {}
    if isinstance(body.get("error"), str):
        description = str(body.get("error_description", ""))[:200]
        return TokenEndpointError(
            f"{where}: {body['error']} {description}".rstrip(), exc.http_status
        )
    return TokenEndpointError(f"{where}: {exc}", exc.http_status)


class TokenClient:
    """Calls the token endpoint as one configured client."""

    def __init__(
        self,
        http: aiohttp.ClientSession,
        conn: OidcConnection,
        secret: str | None,
        signing_key: Key | None,
    ) -> None:
        self._http = http
        self._conn = conn
        self._secret = secret
        self._signing_key = signing_key

    def _authenticate(
        self, form: dict[str, str], endpoint: str, method: ClientAuthMethod
    ) -> dict[str, str]:
        client_id = self._conn.client_id
        headers: dict[str, str] = {}
        if method == "client_secret_basic":
            headers["Authorization"] = basic_credentials(client_id, self._secret or "")
        elif method == "client_secret_post":
            form.update(client_id=client_id, client_secret=self._secret or "")
        elif method == "private_key_jwt":
            form.update(
                client_id=client_id,
                client_assertion_type=ASSERTION_TYPE,
                client_assertion=self._assertion(endpoint),
            )
        else:
            form["client_id"] = client_id
        return headers

    def _assertion(self, endpoint: str) -> str:
        assert self._signing_key is not None
        now = int(time.time())
        claims = {
            "iss": self._conn.client_id,
            "sub": self._conn.client_id,
            "aud": endpoint,
            "jti": secrets.token_urlsafe(24),
            "iat": now,
            "exp": now + ASSERTION_LIFETIME,
        }
        alg = self._conn.private_key_alg
        header = {"alg": alg, "typ": "JWT", "kid": self._signing_key.kid}
        return jwt.encode(header, claims, self._signing_key, algorithms=[alg])

    async def grant(
        self, endpoint: str, form: dict[str, str], method: ClientAuthMethod
    ) -> dict[str, Any]:
        """POST one grant; the provider's error is reported with its own `error` code."""
        headers = self._authenticate(form, endpoint, method)
        try:
            tokens = await request_json(
                self._http, "POST", endpoint, self._conn.http_timeout, headers=headers, data=form
            )
        except FetchError as exc:
            raise idp_error("token endpoint", exc) from exc
        if not isinstance(tokens, dict):
            raise ProtocolError("idp_error", "token endpoint: the answer is not a JSON object")
        token_type = tokens.get("token_type")
        if "access_token" in tokens and str(token_type).lower() != "bearer":
            raise ProtocolError(
                "idp_error", f"token endpoint: unexpected token_type {token_type!r}"
            )
        return tokens

    async def userinfo(self, endpoint: str, access_token: str) -> dict[str, Any]:
        try:
            return await get_object(
                self._http,
                endpoint,
                self._conn.http_timeout,
                headers={"Authorization": f"Bearer {access_token}"},
            )
        except FetchError as exc:
            raise idp_error("userinfo endpoint", exc) from exc
