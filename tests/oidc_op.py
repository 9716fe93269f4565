"""A hostile OpenID Provider for tests: correct by default, every answer tamperable.

It runs on a real loopback port (aiohttp), signs with joserfc, enforces PKCE,
client authentication and single-use codes like a real provider, and lets a
test change exactly one thing — a claim, a header, the signing key, the
discovery document, the token or UserInfo answer — to prove that authgate
refuses it. It also imitates the two Microsoft Graph calls authgate makes for
Entra ID groups overage (client-credentials token, paged `transitiveMemberOf`),
in the JSON shapes Graph documents.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import json
import secrets
import time
from collections.abc import Callable
from typing import Any
from urllib.parse import unquote_plus, urlencode

import aiohttp
from aiohttp import web
from aiohttp.test_utils import TestClient
from joserfc.jwk import ECKey, Key, RSAKey
from joserfc.jws import JWSRegistry
from yarl import URL

from authgate.settings import Settings, parse_settings
from tests.servers import free_port

Claims = dict[str, Any]


def b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def compact(header: dict[str, Any], claims: Claims, signature: bytes = b"") -> str:
    """A compact JWS assembled by hand, for tokens no library would produce."""
    head = b64url(json.dumps(header).encode())
    body = b64url(json.dumps(claims).encode())
    return f"{head}.{body}.{b64url(signature)}"


def hmac_signed(header: dict[str, Any], claims: Claims, secret: bytes) -> str:
    unsigned = compact(header, claims).rsplit(".", 1)[0]
    return unsigned + "." + b64url(hmac.new(secret, unsigned.encode(), hashlib.sha256).digest())


def signed(header: dict[str, Any], claims: Claims, key: Key) -> str:
    """Signed with joserfc's algorithm directly, so no header check stands in a test's way."""
    unsigned = compact(header, claims).rsplit(".", 1)[0]
    signature = JWSRegistry.algorithms[header["alg"]].sign(unsigned.encode(), key)
    return unsigned + "." + b64url(signature)


class TestOP:
    """One provider with one registered client (authgate) and one user."""

    __test__ = False

    def __init__(
        self, client_id: str = "authgate", client_secret: str = "s3cret:%+ &=x", path: str = ""
    ) -> None:
        self.port = free_port()
        self.path = path
        self.client_id = client_id
        self.client_secret = client_secret
        self.rsa = RSAKey.generate_key(2048, parameters={"kid": "rsa-1", "use": "sig"})
        self.ec = ECKey.generate_key("P-256", parameters={"kid": "ec-1", "use": "sig"})
        self.published: list[Key] = [self.rsa, self.ec]
        self.signing_key: Key = self.rsa
        self.alg = "RS256"
        self.auth_methods = ("client_secret_basic", "client_secret_post")
        self.user: Claims = {
            "sub": "user-1",
            "email": "alice@example.com",
            "email_verified": True,
            "name": "Alice Example",
            "groups": ["Engineering"],
        }
        self.id_token_claims: Callable[[Claims], Claims] = lambda c: c
        self.id_token_header: Callable[[dict[str, Any]], dict[str, Any]] = lambda h: h
        self.encode: Callable[[dict[str, Any], Claims], str] | None = None
        self.token_answer: Callable[[Claims], tuple[int, Claims]] = lambda a: (200, a)
        self.userinfo_answer: Callable[[Claims], Claims] = lambda c: c
        self.authorize_answer: Callable[[dict[str, str]], dict[str, str]] = lambda p: p
        self.discovery_overrides: dict[str, Any] = {}
        self.send_iss = True
        self.token_delay = 0.0
        self.graph_groups: list[dict[str, str]] = []
        self.graph_page_size = 2
        self.graph_throttled = 0
        self.graph_next_link: Callable[[str], str] = lambda url: url
        self.codes: dict[str, dict[str, Any]] = {}
        self.refresh_tokens: set[str] = set()
        self.token_requests: list[dict[str, Any]] = []
        self.graph_requests: list[str] = []
        self.jwks_fetches = 0
        self.discovery_fetches = 0
        self.end_session_requests: list[dict[str, str]] = []
        self.access_tokens: dict[str, Claims] = {}
        self.graph_tokens: set[str] = set()
        self._runner: web.AppRunner | None = None

    @property
    def origin(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def issuer(self) -> str:
        return self.origin + self.path

    def url(self, path: str) -> str:
        return self.origin + path

    def discovery_document(self) -> dict[str, Any]:
        doc: dict[str, Any] = {
            "issuer": self.issuer,
            "authorization_endpoint": self.url("/authorize"),
            "token_endpoint": self.url("/token"),
            "jwks_uri": self.url("/jwks"),
            "userinfo_endpoint": self.url("/userinfo"),
            "end_session_endpoint": self.url("/logout"),
            "response_types_supported": ["code"],
            "subject_types_supported": ["public"],
            "id_token_signing_alg_values_supported": ["RS256", "ES256"],
            "code_challenge_methods_supported": ["S256"],
            "token_endpoint_auth_methods_supported": list(self.auth_methods),
            "authorization_response_iss_parameter_supported": self.send_iss,
        }
        doc.update(self.discovery_overrides)
        return {k: v for k, v in doc.items() if v is not None}

    def use_key(self, key: Key, alg: str) -> None:
        self.signing_key, self.alg = key, alg

    def id_token(self, nonce: str | None, extra: Claims | None = None) -> str:
        now = int(time.time())
        claims: Claims = {
            "iss": self.issuer,
            "aud": self.client_id,
            "iat": now,
            "exp": now + 300,
            **self.user,
            **(extra or {}),
        }
        if nonce is not None:
            claims["nonce"] = nonce
        claims = self.id_token_claims(claims)
        header = self.id_token_header({"alg": self.alg, "kid": self.signing_key.kid, "typ": "JWT"})
        if self.encode is not None:
            return self.encode(header, claims)
        return signed(header, claims, self.signing_key)

    async def well_known(self, request: web.Request) -> web.Response:
        self.discovery_fetches += 1
        return web.json_response(self.discovery_document())

    async def jwks(self, request: web.Request) -> web.Response:
        self.jwks_fetches += 1
        return web.json_response({"keys": [k.as_dict(private=False) for k in self.published]})

    async def authorize(self, request: web.Request) -> web.Response:
        q = request.query
        if q.get("client_id") != self.client_id or q.get("response_type") != "code":
            return web.json_response({"error": "invalid_request"}, status=400)
        if q.get("code_challenge_method") != "S256" or not q.get("code_challenge"):
            return web.json_response({"error": "invalid_request", "d": "PKCE S256"}, status=400)
        code = secrets.token_urlsafe(16)
        self.codes[code] = {
            "nonce": q.get("nonce"),
            "challenge": q["code_challenge"],
            "redirect_uri": q["redirect_uri"],
            "scope": q.get("scope", ""),
        }
        params = {"code": code, "state": q.get("state", "")}
        if self.send_iss:
            params["iss"] = self.issuer
        params = self.authorize_answer(params)
        raise web.HTTPFound(q["redirect_uri"] + "?" + urlencode(params))

    def _client_ok(self, request: web.Request, form: dict[str, str]) -> bool:
        """The client secret, sent by one of the methods in `auth_methods` (as discovery says)."""
        auth = request.headers.get("Authorization", "")
        if auth.startswith("Basic "):
            if "client_secret_basic" not in self.auth_methods:
                return False
            pair = base64.b64decode(auth[6:]).decode()
            cid, _, secret = pair.partition(":")
            return unquote_plus(cid) == self.client_id and unquote_plus(secret) == (
                self.client_secret
            )
        return (
            "client_secret_post" in self.auth_methods
            and form.get("client_id") == self.client_id
            and form.get("client_secret") == self.client_secret
        )

    def _tokens(self, nonce: str | None) -> Claims:
        """Fresh tokens describing the user as the provider knows them now."""
        access = secrets.token_urlsafe(24)
        refresh = secrets.token_urlsafe(24)
        self.refresh_tokens.add(refresh)
        self.access_tokens[access] = dict(self.user)
        return {
            "access_token": access,
            "token_type": "Bearer",
            "expires_in": 300,
            "id_token": self.id_token(nonce),
            "refresh_token": refresh,
        }

    async def token(self, request: web.Request) -> web.Response:
        form = dict(await request.post())
        self.token_requests.append({"headers": dict(request.headers), "form": form})
        await asyncio.sleep(self.token_delay)
        if not self._client_ok(request, form):
            return web.json_response({"error": "invalid_client"}, status=401)
        if form.get("grant_type") == "refresh_token":
            if form.get("refresh_token") not in self.refresh_tokens:
                return web.json_response({"error": "invalid_grant"}, status=400)
            self.refresh_tokens.discard(form["refresh_token"])
            status, answer = self.token_answer(self._tokens(None))
            return web.json_response(answer, status=status)
        grant = self.codes.pop(form.get("code", ""), None)
        if grant is None or form.get("grant_type") != "authorization_code":
            return web.json_response({"error": "invalid_grant"}, status=400)
        verifier = form.get("code_verifier", "")
        if b64url(hashlib.sha256(verifier.encode()).digest()) != grant["challenge"]:
            return web.json_response({"error": "invalid_grant", "d": "PKCE"}, status=400)
        if form.get("redirect_uri") != grant["redirect_uri"]:
            return web.json_response({"error": "invalid_grant", "d": "redirect_uri"}, status=400)
        status, answer = self.token_answer(self._tokens(grant["nonce"]))
        return web.json_response(answer, status=status)

    async def userinfo(self, request: web.Request) -> web.Response:
        auth = request.headers.get("Authorization", "")
        user = self.access_tokens.get(auth.removeprefix("Bearer "))
        if not auth.startswith("Bearer ") or user is None:
            return web.json_response({"error": "invalid_token"}, status=401)
        return web.json_response(self.userinfo_answer(dict(user)))

    async def logout(self, request: web.Request) -> web.Response:
        self.end_session_requests.append(dict(request.query))
        target = request.query.get("post_logout_redirect_uri")
        if target:
            state = request.query.get("state")
            raise web.HTTPFound(str(URL(target).update_query(state=state)) if state else target)
        return web.Response(text="signed out")

    async def graph_token(self, request: web.Request) -> web.Response:
        form = dict(await request.post())
        self.graph_requests.append(f"token {request.match_info['tenant']} {form.get('scope')}")
        if form.get("grant_type") != "client_credentials" or not self._client_ok(request, form):
            return web.json_response(
                {"error": "invalid_client", "error_description": "AADSTS7000215"}, status=401
            )
        token = "graph-" + secrets.token_urlsafe(8)
        self.graph_tokens.add(token)
        return web.json_response(
            {"token_type": "Bearer", "expires_in": 3599, "access_token": token}
        )

    async def graph_member_of(self, request: web.Request) -> web.Response:
        """`GET /v1.0/users/{id}/transitiveMemberOf/microsoft.graph.group`, paged by $skiptoken."""
        self.graph_requests.append(f"memberOf {request.match_info['oid']} {request.query_string}")
        if self.graph_throttled > 0:
            self.graph_throttled -= 1
            # Graph's throttling answer: 429, Retry-After in seconds, an error code.
            return web.json_response(
                {"error": {"code": "TooManyRequests", "message": "Too many requests."}},
                status=429,
                headers={"Retry-After": "1"},
            )
        if (
            request.headers.get("Authorization", "").removeprefix("Bearer ")
            not in self.graph_tokens
        ):
            return web.json_response(
                {"error": {"code": "InvalidAuthenticationToken", "message": "Access token empty."}},
                status=401,
            )
        start = int(request.query.get("$skiptoken", "0"))
        page = self.graph_groups[start : start + self.graph_page_size]
        body: dict[str, Any] = {
            "@odata.context": "https://graph.microsoft.com/v1.0/$metadata#groups(id,displayName)",
            "value": [{"@odata.type": "#microsoft.graph.group", **g} for g in page],
        }
        if start + self.graph_page_size < len(self.graph_groups):
            body["@odata.nextLink"] = self.graph_next_link(
                str(request.url.update_query({"$skiptoken": str(start + self.graph_page_size)}))
            )
        return web.json_response(body)

    def app(self) -> web.Application:
        app = web.Application()
        app.router.add_get(self.path + "/.well-known/openid-configuration", self.well_known)
        app.router.add_get("/jwks", self.jwks)
        app.router.add_get("/authorize", self.authorize)
        app.router.add_post("/token", self.token)
        app.router.add_get("/userinfo", self.userinfo)
        app.router.add_get("/logout", self.logout)
        app.router.add_post("/login/{tenant}/oauth2/v2.0/token", self.graph_token)
        app.router.add_get(
            "/graph/v1.0/users/{oid}/transitiveMemberOf/microsoft.graph.group",
            self.graph_member_of,
        )
        return app

    async def start(self) -> TestOP:
        self._runner = web.AppRunner(self.app(), access_log=None)
        await self._runner.setup()
        await web.TCPSite(self._runner, "127.0.0.1", self.port).start()
        return self

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()


def gate_settings(
    op: TestOP,
    upstream_url: str,
    redis_url: str | None = None,
    top: dict[str, Any] | None = None,
    **conn: Any,
) -> Settings:
    """authgate with one OIDC connection `corp` to `op`; `conn` overrides connection keys."""
    connection: dict[str, Any] = {
        "id": "corp",
        "name": "Corp",
        "type": "oidc",
        "issuer": op.issuer,
        "client_id": op.client_id,
        "client_secret": op.client_secret,
    }
    connection.update(conn)
    store: dict[str, Any] = {"store": "memory"}
    if redis_url is not None:
        store = {"store": "redis", "redis": {"url": redis_url}}
    raw = {
        "public_url": "http://authgate.test",
        "upstream": {"url": upstream_url},
        "session": store,
        "audit": {"output": "stdout"},
        "connections": [connection],
        **(top or {}),
    }
    return parse_settings(raw, "oidc-test.yaml")


class Browser:
    """Follows redirects between authgate (a TestClient) and a provider like a browser would."""

    def __init__(self, gate: TestClient) -> None:
        self.gate = gate
        self.idp = aiohttp.ClientSession(cookie_jar=aiohttp.CookieJar(unsafe=True))

    async def close(self) -> None:
        await self.idp.close()

    async def start(self, conn: str = "corp", rd: str = "/app/page") -> str:
        """Authorization request URL of a new login in this browser."""
        resp = await self.gate.get(
            f"/_authgate/oidc/{conn}/login", params={"rd": rd}, allow_redirects=False
        )
        assert resp.status == 302, await resp.text()
        return resp.headers["Location"]

    async def authorize(self, url: str) -> str:
        """The provider's redirect back to authgate (the callback URL with code and state)."""
        resp = await self.idp.get(url, allow_redirects=False)
        assert resp.status == 302, await resp.text()
        return resp.headers["Location"]

    async def callback(self, url: str) -> aiohttp.ClientResponse:
        path = URL(url).raw_path_qs
        return await self.gate.get(
            path, allow_redirects=False, headers={"Accept": "application/json"}
        )

    async def login(self, conn: str = "corp", rd: str = "/app/page") -> aiohttp.ClientResponse:
        return await self.callback(await self.authorize(await self.start(conn, rd)))
