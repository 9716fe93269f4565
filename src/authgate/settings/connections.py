"""Identity provider connections: the OIDC and SAML models and the paths they claim."""

from __future__ import annotations

import base64
import binascii
import re
from pathlib import Path
from typing import Annotated, ClassVar, Literal
from urllib.parse import urlsplit

from cryptography import x509
from cryptography.hazmat.primitives import serialization
from pydantic import AfterValidator, Field, field_validator, model_validator

from authgate.public_addresses import url_problem
from authgate.settings.access import ConnectionRoleMapping
from authgate.settings.base import Duration, HttpUrl, ReadableFile, _Model, _slug


def _return_url(value: str | None) -> str | None:
    """A local path (`/login`) or an absolute http(s) URL; the allowlist is checked in Settings."""
    if value is None or (value.startswith("/") and not value.startswith("//")):
        return value
    parts = urlsplit(value)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ValueError("expected a local path such as /login or an https:// URL")
    return value


ReturnUrl = Annotated[str | None, AfterValidator(_return_url)]


class ConnectionBase(_Model):
    id: Annotated[str, AfterValidator(_slug("id"))]
    name: str
    organization: str | None = None
    domains: list[str] = []
    allowed_domains: list[str] = []
    provisioning: Literal["jit", "preprovisioned"] = "jit"
    require_email_verified: bool = True
    enabled: bool = True
    # Where the browser lands after signing out (OIDC: the post_logout_redirect_uri).
    post_logout_url: ReturnUrl = None
    # Which value links a sign-in to its user: the subject (NameID / sub, the default),
    # email, or attribute:<name> (a SAML attribute or an OIDC claim).
    match_key: str | None = None
    subject_key: ClassVar[str] = "subject"
    # Override access.default_role / access.role_mappings for this connection's users.
    default_role: str | None = Field(default=None, min_length=1)
    role_mappings: list[ConnectionRoleMapping] = []

    @field_validator("match_key")
    @classmethod
    def _match_key(cls, value: str | None) -> str | None:
        if value is None or value in (cls.subject_key, "email"):
            return value
        if value.startswith("attribute:") and value.removeprefix("attribute:").strip():
            return value
        raise ValueError(
            f"expected {cls.subject_key}, email or attribute:<name>"
            " (for example attribute:eduPersonPrincipalName)"
        )

    @property
    def link_key(self) -> str:
        """The match key in force: the one configured, else the protocol's subject."""
        return self.match_key or self.subject_key

    @field_validator("domains", "allowed_domains")
    @classmethod
    def _lower(cls, domains: list[str]) -> list[str]:
        return [d.lower().lstrip("@") for d in domains]


def _endpoint_url(value: str) -> str:
    """An endpoint a vendor document fixes: a path on public_url, or a whole http(s) URL."""
    if value.startswith("/"):
        if value.startswith("//") or "?" in value or "#" in value or "\\" in value:
            raise ValueError("expected a plain path such as /saml/acs")
        return value
    parts = urlsplit(value)
    if parts.scheme not in ("http", "https") or not parts.hostname or not parts.path:
        raise ValueError("expected a path such as /saml/acs or a URL such as https://host/saml/acs")
    if parts.query or parts.fragment:
        raise ValueError("an endpoint URL has no query or fragment")
    return value


EndpointUrl = Annotated[str, AfterValidator(_endpoint_url)]


def _issuer(value: str) -> str:
    """Kept byte-exact (a trailing slash matters: discovery must echo it exactly)."""
    parts = urlsplit(value)
    loopback = parts.hostname in ("localhost", "127.0.0.1", "::1")
    if not parts.hostname or not (parts.scheme == "https" or (parts.scheme == "http" and loopback)):
        raise ValueError("expected an https:// issuer URL (http:// only on a loopback address)")
    if parts.query or parts.fragment:
        raise ValueError("an issuer URL has no query or fragment")
    return value


Issuer = Annotated[str, AfterValidator(_issuer)]
SigningAlg = Literal[
    "RS256", "RS384", "RS512", "PS256", "PS384", "PS512", "ES256", "ES384", "ES512", "EdDSA",
    "HS256", "HS384", "HS512",
]  # fmt: skip
ClientAuthMethod = Literal["client_secret_basic", "client_secret_post", "private_key_jwt", "none"]
ENTRA_TENANT_SEGMENTS = ("common", "organizations")
# Where Entra ID issues tokens (global, US Government, China; `sts.windows.net` for v1.0).
ENTRA_LOGIN_HOSTS = (
    "login.microsoftonline.com",
    "login.microsoftonline.us",
    "login.partner.microsoftonline.cn",
    "sts.windows.net",
)


def entra_issuer(issuer: str) -> bool:
    """Whether `issuer` is Entra ID's: its claims (`xms_edov`) mean what Microsoft documents.

    The whole authority (host and port) must match, so a look-alike host or a path
    naming Microsoft never qualifies.
    """
    return urlsplit(issuer).netloc.lower() in ENTRA_LOGIN_HOSTS


class OidcClaims(_Model):
    """Which ID token / UserInfo claim fills each identity field."""

    username: str | None = None
    email: str = "email"
    name: str = "name"
    groups: str = "groups"


class OidcRefresh(_Model):
    """Renew the session's claims with the refresh token this long after each renewal."""

    enabled: bool = False
    every: Duration = 900.0


class GraphSettings(_Model):
    """App-only Microsoft Graph access to resolve Entra ID groups overage.

    Unset credentials default to the connection's own client; the tenant
    defaults to the ID token's `tid`. The URLs exist for tests and national clouds.
    """

    tenant_id: str | None = None
    client_id: str | None = None
    client_secret: str | None = None
    client_secret_encrypted: str | None = None
    group_field: Literal["id", "displayName"] = "id"
    base_url: HttpUrl = "https://graph.microsoft.com"
    login_url: HttpUrl = "https://login.microsoftonline.com"

    @model_validator(mode="after")
    def _one_secret(self) -> GraphSettings:
        if self.client_secret and self.client_secret_encrypted:
            raise ValueError("set client_secret or client_secret_encrypted, not both")
        return self


class OidcConnection(ConnectionBase):
    type: Literal["oidc"]
    subject_key: ClassVar[str] = "sub"
    issuer: Issuer
    # The redirect URI's path (or whole URL) when a vendor document fixes it, e.g. /redirect_uri.
    redirect_path: EndpointUrl | None = None
    client_id: str = Field(min_length=1)
    client_secret: str | None = None
    client_secret_encrypted: str | None = None
    token_endpoint_auth_method: ClientAuthMethod | None = None
    private_key_file: Path | None = None
    private_key_alg: Literal["RS256", "PS256", "ES256"] = "RS256"
    scopes: list[str] = ["openid", "email", "profile"]
    extra_auth_params: dict[str, str] = {}
    claims: OidcClaims = OidcClaims()
    allowed_algorithms: list[SigningAlg] = Field(["RS256", "PS256", "ES256"], min_length=1)
    allowed_tenants: list[str] = []
    clock_skew: Duration = 120.0
    discovery_ttl: Duration = 3600.0
    jwks_ttl: Duration = 3600.0
    jwks_refetch_interval: Duration = 60.0
    http_timeout: Duration = 10.0
    userinfo: bool = True
    end_session: bool = True
    refresh: OidcRefresh = OidcRefresh()
    graph: GraphSettings | None = None

    @property
    def auth_method(self) -> ClientAuthMethod:
        """The configured method, else the one the given credentials imply."""
        if self.token_endpoint_auth_method:
            return self.token_endpoint_auth_method
        if self.has_secret:
            return "client_secret_basic"
        return "private_key_jwt" if self.private_key_file else "none"

    @property
    def has_secret(self) -> bool:
        return bool(self.client_secret or self.client_secret_encrypted)

    @field_validator("scopes")
    @classmethod
    def _openid(cls, scopes: list[str]) -> list[str]:
        if "openid" not in scopes:
            raise ValueError("scopes must include 'openid'")
        return scopes

    @model_validator(mode="after")
    def _consistent(self) -> OidcConnection:
        if self.client_secret and self.client_secret_encrypted:
            raise ValueError("set client_secret or client_secret_encrypted, not both")
        method = self.auth_method
        if method.startswith("client_secret") and not self.has_secret:
            raise ValueError(f"token_endpoint_auth_method {method} needs client_secret")
        if method == "private_key_jwt" and self.private_key_file is None:
            raise ValueError("token_endpoint_auth_method private_key_jwt needs private_key_file")
        if any(a.startswith("HS") for a in self.allowed_algorithms) and not self.has_secret:
            raise ValueError("HS* algorithms are keyed with the client secret: set client_secret")
        if self.allowed_tenants and not any(
            f"/{s}/" in self.issuer + "/" for s in ENTRA_TENANT_SEGMENTS
        ):
            raise ValueError(
                "allowed_tenants is for an Entra ID multi-tenant issuer such as"
                " https://login.microsoftonline.com/organizations/v2.0"
            )
        return self


SamlNameIdFormat = Literal["unspecified", "emailAddress", "persistent"]
SamlBinding = Literal["redirect", "post"]
_PEM_BODY = re.compile(r"-----BEGIN CERTIFICATE-----(.+?)-----END CERTIFICATE-----", re.S)


def _certificate(value: str) -> str:
    """A certificate as PEM or bare base64 DER, normalised to bare base64 (as in metadata)."""
    match = _PEM_BODY.search(value)
    body = re.sub(r"\s+", "", match.group(1) if match else value)
    try:
        x509.load_der_x509_certificate(base64.b64decode(body, validate=True))
    except (ValueError, binascii.Error) as exc:
        raise ValueError("expected an X.509 certificate in PEM or base64 form") from exc
    return body


SamlCertificate = Annotated[str, AfterValidator(_certificate)]


class SamlKeyPair(_Model):
    """One SP key pair. Rollover: add the new pair second (published, accepted for
    decryption), let the IdP pick it up, move it first (it now signs), drop the old one."""

    key_file: ReadableFile
    cert_file: ReadableFile
    use: Literal["signing", "encryption", "both"] = "both"

    @model_validator(mode="after")
    def _parses(self) -> SamlKeyPair:
        try:
            serialization.load_pem_private_key(self.key_file.read_bytes(), password=None)
            x509.load_pem_x509_certificate(self.cert_file.read_bytes())
        except (ValueError, TypeError) as exc:
            raise ValueError(
                f"{self.key_file} / {self.cert_file}: expected an unencrypted PEM private key"
                f" and a PEM certificate ({exc})"
            ) from None
        return self


class SamlIdp(_Model):
    """IdP details given by hand, for IdPs without usable metadata."""

    entity_id: str = Field(min_length=1)
    sso_url: HttpUrl
    sso_binding: SamlBinding = "redirect"
    slo_url: HttpUrl | None = None
    slo_binding: SamlBinding = "redirect"
    # The IdP's ArtifactResolutionService (SOAP), endpoint index 0: for response_binding artifact.
    artifact_resolution_url: HttpUrl | None = None
    certificates: list[SamlCertificate] = []
    certificate_files: list[ReadableFile] = []

    @model_validator(mode="after")
    def _has_certificate(self) -> SamlIdp:
        if not self.certificates and not self.certificate_files:
            raise ValueError(
                "give at least one IdP signing certificate (certificates or certificate_files)"
            )
        for path in self.certificate_files:
            _certificate(path.read_text(encoding="ascii", errors="replace"))
        return self

    @property
    def all_certificates(self) -> list[str]:
        """Inline and file certificates, as bare base64 DER."""
        files = [_certificate(p.read_text(encoding="ascii")) for p in self.certificate_files]
        return [*self.certificates, *files]


class SamlAttributes(_Model):
    """Per-connection attribute names overriding the built-in mapping."""

    email: str | None = None
    name: str | None = None
    username: str | None = None
    groups: str | None = None
    given_name: str | None = None
    family_name: str | None = None


class SamlConnection(ConnectionBase):
    """SAML 2.0 SP settings. IdP metadata from exactly one of a file, a URL or `idp`."""

    type: Literal["saml"]
    subject_key: ClassVar[str] = "name_id"
    idp_metadata_file: ReadableFile | None = None
    idp_metadata_url: HttpUrl | None = None
    idp: SamlIdp | None = None
    # Set when a setup-link holder gave the IdP side: its metadata URL, and the artifact
    # resolution service its metadata names, are reached at public addresses only
    # (public_addresses.py).
    idp_metadata_public_only: bool = False
    idp_entity_id: str | None = None
    # Paths (or whole URLs) a vendor document fixes, e.g. /saml/acs or
    # /Shibboleth.sso/SAML2/POST; several ACS URLs for an internal and an external host.
    acs_urls: list[EndpointUrl] = []
    slo_path: EndpointUrl | None = None
    metadata_path: EndpointUrl | None = None
    idp_metadata_signing_certificate: SamlCertificate | None = None
    # A rollover set: the federation's current and next metadata signing certificates.
    idp_metadata_signing_certificates: list[SamlCertificate] = []
    metadata_refresh: Duration = 3600.0
    metadata_max_age: Duration = 7 * 86400.0
    sp_entity_id: str | None = None
    sp_keys: list[SamlKeyPair] = []
    sign_requests: bool = False
    want_assertions_signed: bool = True
    want_response_signed: bool = False
    allow_idp_initiated: bool = False
    clock_skew: Duration = 180.0
    name_id_format: SamlNameIdFormat = "unspecified"
    slo: bool = True
    # How the IdP answers: the Response POSTed by the browser, or an artifact the SP resolves
    # at the IdP's ArtifactResolutionService with a signed ArtifactResolve (needs sp_keys).
    response_binding: Literal["post", "artifact"] = "post"
    attributes: SamlAttributes = SamlAttributes()
    max_response_size: int = Field(default=256 * 1024, ge=4096, le=4 * 1024 * 1024)

    @model_validator(mode="after")
    def _consistent(self) -> SamlConnection:
        sources = [
            name
            for name, value in (
                ("idp_metadata_file", self.idp_metadata_file),
                ("idp_metadata_url", self.idp_metadata_url),
                ("idp", self.idp),
            )
            if value is not None
        ]
        if len(sources) != 1:
            raise ValueError(
                "set exactly one of idp_metadata_file, idp_metadata_url or idp"
                f" (found {', '.join(sources) or 'none'})"
            )
        url = self.idp_metadata_url
        if self.idp_metadata_public_only and url and (problem := url_problem(str(url))):
            raise ValueError(f"idp_metadata_url: {problem}")
        if self.sign_requests and not self.signing_keys:
            raise ValueError("sign_requests needs an sp_keys entry with use signing or both")
        if self.response_binding == "artifact" and not self.signing_keys:
            raise ValueError(
                "response_binding artifact needs an sp_keys entry with use signing or both"
                " (the ArtifactResolve is signed)"
            )
        if not self.want_assertions_signed and not self.want_response_signed:
            raise ValueError(
                "want_assertions_signed and want_response_signed are both false:"
                " at least one signature must be required"
            )
        return self

    @property
    def metadata_signing_certificates(self) -> list[str]:
        """Every certificate the IdP metadata signature may verify with."""
        single = self.idp_metadata_signing_certificate
        return [*([single] if single else []), *self.idp_metadata_signing_certificates]

    @property
    def signing_keys(self) -> list[SamlKeyPair]:
        return [k for k in self.sp_keys if k.use in ("signing", "both")]

    @property
    def encryption_keys(self) -> list[SamlKeyPair]:
        return [k for k in self.sp_keys if k.use in ("encryption", "both")]


Connection = Annotated[OidcConnection | SamlConnection, Field(discriminator="type")]


def own_paths(conn: OidcConnection | SamlConnection) -> dict[str, str]:
    """The paths a connection's settings fix outside the default routes, and what each is."""
    if isinstance(conn, OidcConnection):
        return {urlsplit(conn.redirect_path).path: "callback"} if conn.redirect_path else {}
    paths = {urlsplit(url).path: "acs" for url in conn.acs_urls}
    if conn.slo_path:
        paths[urlsplit(conn.slo_path).path] = "slo"
    if conn.metadata_path:
        paths[urlsplit(conn.metadata_path).path] = "metadata"
    return paths
