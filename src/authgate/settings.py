"""Typed, frozen settings: the only code that reads the config file and the environment.

The YAML is interpolated (`${VAR}`, `${VAR:-default}`), then validated in full
by pydantic with unknown keys forbidden, so a typo can never silently turn a
security setting off. Every problem is reported as `file: key.path: what is
wrong (expected ...)`. A valid config is also searched for the placeholders
of the example configs (placeholders.py); the commands decide what to do
about them.
"""

from __future__ import annotations

import base64
import binascii
import ipaddress
import os
import re
from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, ClassVar, Literal
from urllib.parse import urlsplit

import yaml
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    ValidationError,
    field_validator,
    model_validator,
)

from authgate import placeholders
from authgate.line_template import LineTemplate
from authgate.placeholders import Placeholder
from authgate.urls import RedirectPolicy

_ENV_REF = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)(?::-([^}]*))?\}")
_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(ms|s|m|h|d)?\s*$")
_UNITS = {"ms": 0.001, "s": 1, "m": 60, "h": 3600, "d": 86400, None: 1}
_CONN_ID = re.compile(r"^[a-z0-9][a-z0-9_-]{0,62}$")
# Where the container image mounts the config; `--config` and $AUTHGATE_CONFIG override it.
DEFAULT_CONFIG_PATH = "/etc/authgate/authgate.yaml"
DEFAULT_PREFIX = "/_authgate"


class ConfigError(Exception):
    """A config problem worded for the operator: file, key path, problem, fix."""

    def __init__(self, problems: list[str]) -> None:
        self.problems = problems
        super().__init__("\n".join(problems))


def _duration(value: Any) -> float:
    if isinstance(value, bool):
        raise ValueError("expected a duration such as 30s, 15m, 8h or 7d")
    if isinstance(value, int | float):
        seconds = float(value)
    else:
        match = _DURATION.match(str(value))
        if not match:
            raise ValueError("expected a duration such as 30s, 15m, 8h or 7d")
        seconds = float(match.group(1)) * _UNITS[match.group(2)]
    if seconds <= 0:
        raise ValueError("expected a positive duration")
    return seconds


Duration = Annotated[float, BeforeValidator(_duration)]


def _host_port(value: str) -> str:
    host, sep, port = value.rpartition(":")
    if not sep or not port.isdigit() or not 0 <= int(port) <= 65535 or not host:
        raise ValueError("expected HOST:PORT, for example 0.0.0.0:4180 or 127.0.0.1:9090")
    return value


HostPort = Annotated[str, AfterValidator(_host_port)]


def _http_url(value: str) -> str:
    parts = urlsplit(value)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ValueError("expected an absolute http:// or https:// URL")
    return value.rstrip("/")


HttpUrl = Annotated[str, AfterValidator(_http_url)]


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class UpstreamSettings(_Model):
    url: HttpUrl
    connect_timeout: Duration = 5.0
    read_timeout: Duration = 60.0
    pass_host_header: bool = True
    max_connections: int = Field(default=256, ge=1)


class SentinelSettings(_Model):
    master: str
    nodes: list[HostPort] = Field(min_length=1)
    password: str | None = None
    sentinel_password: str | None = None


class RedisSettings(_Model):
    url: str | None = None
    sentinel: SentinelSettings | None = None
    cluster_nodes: list[HostPort] = []
    key_prefix: str = "authgate:"
    timeout: Duration = 2.0
    # How many replicas must have a revocation before it answers (Redis WAIT); default
    # 1 under Sentinel, where a failover drops what only the old master took, else 0.
    wait_replicas: int | None = Field(default=None, ge=0, le=10)

    @property
    def revocation_replicas(self) -> int:
        if self.wait_replicas is not None:
            return self.wait_replicas
        return 1 if self.sentinel is not None else 0

    @field_validator("url")
    @classmethod
    def _usable_url(cls, url: str | None) -> str | None:
        """Checked here: redis-py reads a bad port or database only when it first connects."""
        if url is None:
            return None
        parts = urlsplit(url)
        if parts.scheme not in ("redis", "rediss", "unix"):
            raise ValueError("url must start with redis://, rediss:// or unix://")
        if parts.scheme == "unix":
            if not parts.path:
                raise ValueError("a unix:// url needs the socket path (unix:///run/redis.sock)")
            return url
        expected = f"expected {parts.scheme}://host:6379/0"
        try:
            port = parts.port
        except ValueError:
            raise ValueError(f"the port is not a number from 1 to 65535 ({expected})") from None
        if not parts.hostname:
            raise ValueError(f"the host is missing ({expected})")
        if port == 0:
            raise ValueError(f"the port is not a number from 1 to 65535 ({expected})")
        database = parts.path.strip("/")
        if database and not database.isdigit():
            raise ValueError(f"the database after the host must be a number ({expected})")
        return url

    @model_validator(mode="after")
    def _one_topology(self) -> RedisSettings:
        chosen = [
            n
            for n, v in (
                ("url", self.url),
                ("sentinel", self.sentinel),
                ("cluster_nodes", self.cluster_nodes),
            )
            if v
        ]
        if len(chosen) != 1:
            raise ValueError(
                "set exactly one of url (standalone), sentinel or cluster_nodes"
                f" (found {', '.join(chosen) or 'none'})"
            )
        return self


class SessionSettings(_Model):
    store: Literal["redis", "memory"]
    redis: RedisSettings | None = None
    cookie_name: str | None = None
    lifetime: Duration = 8 * 3600.0
    idle_timeout: Duration = 3600.0
    login_state_ttl: Duration = 600.0
    # Each process caches sessions it read, invalidated over Redis pub/sub (session/cache.py).
    cache: bool = True

    @model_validator(mode="after")
    def _redis_needed(self) -> SessionSettings:
        if self.store == "redis" and self.redis is None:
            raise ValueError("store is redis but the redis section is missing (add redis.url)")
        if self.idle_timeout > self.lifetime:
            raise ValueError("idle_timeout must not be longer than lifetime")
        return self


def _header_name(value: str | None) -> str | None:
    if value is not None and not re.fullmatch(r"[A-Za-z0-9-]+", value):
        raise ValueError("expected an HTTP header name made of letters, digits and '-'")
    return value


HeaderName = Annotated[str | None, AfterValidator(_header_name)]


class AssertionSettings(_Model):
    header: HeaderName = "X-Authgate-Assertion"
    lifetime: Duration = 60.0
    key_file: Path | None = None
    rotate_after: Duration = 30 * 86400.0
    audience: str | None = None


class HeaderSettings(_Model):
    """Names of the identity headers sent upstream; `null` disables one."""

    user: HeaderName = "X-User"
    email: HeaderName = "X-Email"
    name: HeaderName = "X-User-Name"
    user_id: HeaderName = "X-User-Id"
    groups: HeaderName = "X-Groups"
    roles: HeaderName = "X-Roles"
    connection: HeaderName = "X-Auth-Connection"
    organization: HeaderName = "X-Organization"
    assertion: AssertionSettings = AssertionSettings()
    oauth2_proxy_compat: bool = False
    extra_strip: list[Annotated[str, AfterValidator(_header_name)]] = []


class ConnectionRoleMapping(_Model):
    """IdP group (name or id) -> authgate roles, inside one connection's settings."""

    group: str
    roles: list[str] = Field(min_length=1)


class RoleMapping(ConnectionRoleMapping):
    connection: str | None = None


class AccessSettings(_Model):
    allowed_domains: list[str] = []
    default_role: str = "viewer"
    role_mappings: list[RoleMapping] = []
    public_paths: list[str] = []
    allowed_redirect_hosts: list[str] = []

    @field_validator("public_paths")
    @classmethod
    def _absolute(cls, paths: list[str]) -> list[str]:
        for path in paths:
            if not path.startswith("/"):
                raise ValueError(f"public path {path!r} must start with '/'")
        return paths

    @field_validator("allowed_domains")
    @classmethod
    def _lower(cls, domains: list[str]) -> list[str]:
        return [d.lower().lstrip("@") for d in domains]


def _slug(kind: str) -> Callable[[str], str]:
    """A check for a short lower-case identifier, worded for what it names (`id`, `name`)."""

    def check(value: str) -> str:
        if not _CONN_ID.match(value):
            raise ValueError(f"expected a short lower-case {kind}: letters, digits, '-' and '_'")
        return value

    return check


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


def _readable_file(path: Path) -> Path:
    if not path.is_file():
        raise ValueError(f"file {path} does not exist or is not a regular file")
    return path


ReadableFile = Annotated[Path, AfterValidator(_readable_file)]


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
        if self.sign_requests and not self.signing_keys:
            raise ValueError("sign_requests needs an sp_keys entry with use signing or both")
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


class SecretsSettings(_Model):
    """Where the master key for `*_encrypted` secrets comes from when not in the environment."""

    master_key_file: Path | None = None


class ScimSettings(_Model):
    """The SCIM 2.0 server; tokens (made with `authgate scim token create`) gate every call.

    `link_attribute` names the SCIM attribute that holds what the IdP later
    sends as NameID / `sub`, so a provisioned user is linked on first login.
    """

    enabled: bool = True
    # Where the IdP's "Tenant URL" points, when a guide fixes it (`/api/scim`, `/scim`);
    # default `{prefix}/scim/v2`.
    path: str | None = None
    link_attribute: Literal["externalId", "userName"] = "externalId"
    max_page_size: int = Field(default=100, ge=1, le=1000)
    max_body_size: int = Field(default=1024 * 1024, ge=4096, le=16 * 1024 * 1024)

    @field_validator("path")
    @classmethod
    def _path(cls, value: str | None) -> str | None:
        if value is not None and not re.fullmatch(r"(/[A-Za-z0-9_.-]+)+", value):
            raise ValueError("expected a path such as /api/scim (no trailing slash)")
        return value


def _template(value: str) -> str:
    LineTemplate.parse(value)
    return value


class DirectoryExport(_Model):
    """One line per member from `template`; `path` makes the server write it after each sync."""

    path: Path | None = None
    template: Annotated[str, AfterValidator(_template)] = "{mail|userPrincipalName}\t{mobilePhone}"
    # Properties that must not be empty for a member to get a line; default the first field.
    key: list[str] | None = None

    @property
    def line_template(self) -> LineTemplate:
        return LineTemplate.parse(self.template)


# Always read: members are matched on them, whatever `select` says.
DIRECTORY_KEY_PROPERTIES = ("id", "userPrincipalName")
LEGACY_SYNC_NAME = "default"


class DirectorySyncSettings(_Model):
    """Members of one Entra ID group (read from Microsoft Graph): an allowlist, an export, or both.

    The URLs exist for national clouds and tests.
    """

    name: Annotated[str, AfterValidator(_slug("name"))] = LEGACY_SYNC_NAME
    tenant_id: str = Field(min_length=1)
    client_id: str = Field(min_length=1)
    client_secret: str = Field(min_length=1)
    group_id: str = Field(min_length=1)
    # Sign-ins through these connections must be members; none: the sync only exports.
    connections: list[str] = []
    select: list[str] = ["mail", "userPrincipalName", "mobilePhone", "displayName"]
    export: DirectoryExport | None = None
    interval: Duration = 900.0
    login_url: HttpUrl = "https://login.microsoftonline.com"
    graph_url: HttpUrl = "https://graph.microsoft.com"
    timeout: Duration = 30.0
    max_retries: int = Field(default=5, ge=0, le=20)
    backoff: Duration = 2.0
    max_retry_after: Duration = 300.0

    @field_validator("select")
    @classmethod
    def _properties(cls, names: list[str]) -> list[str]:
        for name in names:
            if not re.fullmatch(r"[A-Za-z][A-Za-z0-9]*", name):
                raise ValueError(f"{name!r} is not a Graph user property name such as mail")
        return names

    @model_validator(mode="after")
    def _export_reads_what_is_selected(self) -> DirectorySyncSettings:
        if self.export is None:
            return self
        template = self.export.line_template
        missing = sorted(template.properties - set(self.properties))
        if missing:
            raise ValueError(
                f"export.template uses {', '.join(missing)}, which select does not read"
                f" (add {', '.join(missing)} to select)"
            )
        unknown = sorted(set(self.export.key or ()) - template.properties)
        if unknown:
            raise ValueError(f"export.key names {', '.join(unknown)}, which the template lacks")
        return self

    @property
    def export_settings(self) -> DirectoryExport:
        """The configured export, else `mail` (or the UPN) and `mobilePhone`, tab-separated."""
        return self.export or DirectoryExport()

    @property
    def properties(self) -> list[str]:
        """The `$select` sent: `id` and `userPrincipalName` first, then `select`."""
        return list(dict.fromkeys([*DIRECTORY_KEY_PROPERTIES, *self.select]))


def _sync_list(value: Any) -> Any:
    """The single-mapping form of older configs is one configuration named `default`."""
    if value is None:
        return []
    return [value] if isinstance(value, dict) else value


class AuditSettings(_Model):
    output: str = "stdout"


class MetricsSettings(_Model):
    enabled: bool = True
    listen: HostPort = "127.0.0.1:9090"


ADMIN_TOKEN_MIN_LENGTH = 32


class AdminSettings(_Model):
    """Who may use the admin page and API: a session holding `role`, or the bearer token.

    The token is given either in clear (normally as `${AUTHGATE_ADMIN_TOKEN}`) or as
    the hex SHA-256 of it, so the config file itself need not hold a usable secret.
    """

    enabled: bool = True
    role: str = Field(default="admin", min_length=1)
    # A session with this role administers only its own organization's connections and users.
    organization_role: str = Field(default="org-admin", min_length=1)
    token: str | None = None
    token_sha256: str | None = None

    @field_validator("token")
    @classmethod
    def _long_enough(cls, value: str | None) -> str | None:
        if value is not None and len(value) < ADMIN_TOKEN_MIN_LENGTH:
            raise ValueError(
                f"the admin token must be at least {ADMIN_TOKEN_MIN_LENGTH} characters"
                " (generate one with: openssl rand -hex 32)"
            )
        return value

    @field_validator("token_sha256")
    @classmethod
    def _hex_digest(cls, value: str | None) -> str | None:
        if value is not None and not re.fullmatch(r"[0-9a-fA-F]{64}", value):
            raise ValueError("expected 64 hex digits (sha256sum of the token)")
        return value.lower() if value else value

    @model_validator(mode="after")
    def _one_token(self) -> AdminSettings:
        if self.token is not None and self.token_sha256 is not None:
            raise ValueError("set token or token_sha256, not both")
        return self


_HEX_COLOUR = re.compile(r"^#[0-9a-fA-F]{6}$")
_LOGO_TYPES = {
    ".svg": "image/svg+xml",
    ".png": "image/png",
    ".jpg": "image/jpeg",
    ".jpeg": "image/jpeg",
    ".gif": "image/gif",
    ".webp": "image/webp",
}
_DATA_URI = re.compile(
    r"^data:(image/(?:svg\+xml|png|jpeg|gif|webp));base64,([A-Za-z0-9+/]+={0,2})$"
)
MAX_LOGO_BYTES = 64 * 1024
MIN_CONTRAST = 4.5
PAGE_TEXT_COLOUR = "#1b1f24"


def _luminance(colour: str) -> float:
    """WCAG 2 relative luminance of a #rrggbb colour."""
    channels = [int(colour[i : i + 2], 16) / 255 for i in (1, 3, 5)]
    r, g, b = (c / 12.92 if c <= 0.03928 else ((c + 0.055) / 1.055) ** 2.4 for c in channels)
    return 0.2126 * r + 0.7152 * g + 0.0722 * b


def contrast_ratio(first: str, second: str) -> float:
    high, low = sorted((_luminance(first), _luminance(second)), reverse=True)
    return (high + 0.05) / (low + 0.05)


def _colour(value: str) -> str:
    if not _HEX_COLOUR.match(value):
        raise ValueError("expected a colour as #rrggbb, for example #1f5fbf")
    return value.lower()


Colour = Annotated[str, AfterValidator(_colour)]


def _logo_uri(value: str | None) -> str | None:
    if value is None:
        return None
    match = _DATA_URI.match(value.strip())
    if not match:
        raise ValueError(
            "expected a data: URI such as data:image/svg+xml;base64,... (pages load nothing"
            " from other sites; for a file use logo_file)"
        )
    if len(base64.b64decode(match.group(2))) > MAX_LOGO_BYTES:
        raise ValueError(f"the logo is larger than {MAX_LOGO_BYTES // 1024} KiB")
    return value.strip()


class BrandingSettings(_Model):
    """Title, logo and colours of the sign-in, error and signed-out pages.

    The pages load nothing from elsewhere (their CSP forbids it), so a logo is a
    data: URI or a small image file read at start-up. White button text sits on
    the accent colour and page text on the background, so both must keep the
    WCAG AA contrast of 4.5:1.
    """

    title: str = Field(default="authgate", min_length=1, max_length=80)
    logo: Annotated[str | None, AfterValidator(_logo_uri)] = None
    logo_file: ReadableFile | None = None
    accent_color: Colour = "#1f5fbf"
    background_color: Colour = "#f6f8fa"
    support: str | None = Field(default=None, max_length=200)

    @model_validator(mode="after")
    def _consistent(self) -> BrandingSettings:
        if self.logo and self.logo_file:
            raise ValueError("set logo or logo_file, not both")
        if self.logo_file is not None:
            if self.logo_file.suffix.lower() not in _LOGO_TYPES:
                raise ValueError(f"logo_file must be one of {', '.join(sorted(_LOGO_TYPES))}")
            if self.logo_file.stat().st_size > MAX_LOGO_BYTES:
                raise ValueError(f"logo_file is larger than {MAX_LOGO_BYTES // 1024} KiB")
        for name, colour, against in (
            ("accent_color", self.accent_color, "#ffffff"),
            ("background_color", self.background_color, PAGE_TEXT_COLOUR),
        ):
            ratio = contrast_ratio(colour, against)
            if ratio < MIN_CONTRAST:
                what = "white button text" if against == "#ffffff" else "the page text"
                raise ValueError(
                    f"{name} {colour} gives {ratio:.1f}:1 contrast with {what};"
                    f" at least {MIN_CONTRAST}:1 is needed to stay readable (WCAG AA)"
                )
        return self

    @property
    def logo_uri(self) -> str | None:
        """The logo as a data: URI, whichever way it was given."""
        if self.logo_file is None:
            return self.logo
        data = base64.b64encode(self.logo_file.read_bytes()).decode()
        return f"data:{_LOGO_TYPES[self.logo_file.suffix.lower()]};base64,{data}"


def _network(value: str) -> str:
    try:
        ipaddress.ip_network(value, strict=False)
    except ValueError as exc:
        raise ValueError("expected an IP address or CIDR such as 10.0.0.0/8") from exc
    return value


class Settings(_Model):
    listen: HostPort = "0.0.0.0:4180"
    public_url: HttpUrl
    prefix: str = DEFAULT_PREFIX
    upstream: UpstreamSettings
    trusted_proxies: list[Annotated[str, AfterValidator(_network)]] = ["127.0.0.1/32", "::1/128"]
    session: SessionSettings = SessionSettings(store="memory")
    headers: HeaderSettings = HeaderSettings()
    access: AccessSettings = AccessSettings()
    connections: list[Connection] = []
    audit: AuditSettings = AuditSettings()
    metrics: MetricsSettings = MetricsSettings()
    admin: AdminSettings = AdminSettings()
    secrets: SecretsSettings = SecretsSettings()
    scim: ScimSettings = ScimSettings()
    directory_sync: Annotated[list[DirectorySyncSettings], BeforeValidator(_sync_list)] = []
    workers: int = Field(default=1, ge=1, le=256)
    branding: BrandingSettings = BrandingSettings()

    @field_validator("prefix")
    @classmethod
    def _prefix(cls, value: str) -> str:
        if not re.fullmatch(r"/[A-Za-z0-9_.-]+(/[A-Za-z0-9_.-]+)*", value):
            raise ValueError("expected a path such as /_authgate (no trailing slash)")
        return value

    @model_validator(mode="after")
    def _unique_connections(self) -> Settings:
        seen: set[str] = set()
        paths: dict[str, str] = {}
        for conn in self.connections:
            if conn.id in seen:
                raise ValueError(f"connection id {conn.id!r} is used twice")
            seen.add(conn.id)
            for path in own_paths(conn):
                if path in paths or path == self.prefix or path.startswith(self.prefix + "/auth"):
                    other = paths.get(path, "authgate itself")
                    raise ValueError(f"connection {conn.id}: path {path} is taken by {other}")
                paths[path] = conn.id
        return self

    @model_validator(mode="after")
    def _post_logout_urls_allowed(self) -> Settings:
        """Sign-out may only lead where sign-in may: no open redirect from a config typo."""
        policy = RedirectPolicy.build(self.public_url, self.access.allowed_redirect_hosts)
        for conn in self.connections:
            url = conn.post_logout_url
            if url is not None and policy.safe(url, "") != url:
                raise ValueError(
                    f"connection {conn.id!r}: post_logout_url is on a host that is neither"
                    " public_url's nor in access.allowed_redirect_hosts (add it there)"
                )
        return self

    @model_validator(mode="after")
    def _directory_syncs(self) -> Settings:
        known = {c.id for c in self.connections}
        names: set[str] = set()
        single = len(self.directory_sync) == 1
        for index, cfg in enumerate(self.directory_sync):
            where = "directory_sync" if single else f"directory_sync[{index}]"
            if cfg.name in names:
                raise ValueError(
                    f"{where}.name: {cfg.name!r} is used twice (give each configuration its own)"
                )
            names.add(cfg.name)
            for conn_id in cfg.connections:
                if conn_id not in known:
                    raise ValueError(f"{where}.connections: no connection has id {conn_id!r}")
        return self

    @model_validator(mode="after")
    def _shared_store_for_workers(self) -> Settings:
        if self.workers > 1 and self.session.store == "memory":
            raise ValueError(
                f"workers is {self.workers} but session.store is memory, which lives inside one"
                " process: each worker would keep its own sessions (set workers: 1, or use"
                " session.store: redis)"
            )
        return self

    @property
    def https(self) -> bool:
        return self.public_url.startswith("https://")

    @property
    def prefix_shared(self) -> bool:
        """A prefix the application may use too (`/api`): authgate claims only its own routes
        there; under its own prefix (the default) an unknown path gets authgate's 404."""
        return self.prefix != DEFAULT_PREFIX

    @property
    def scim_path(self) -> str:
        return self.scim.path or self.prefix + "/scim/v2"

    @property
    def scim_url(self) -> str:
        """The SCIM base URL an IdP is given (Entra's and Okta's "Tenant URL")."""
        return self.public_url + self.scim_path

    def connection(self, conn_id: str) -> OidcConnection | SamlConnection | None:
        return next((c for c in self.connections if c.id == conn_id), None)


def _interpolate(
    node: Any, path: str, missing: list[str], given: dict[str, list[tuple[str, str]]]
) -> Any:
    """`node` with `${...}` replaced; `given` records, per key path, each variable and its value."""
    if isinstance(node, dict):
        return {
            k: _interpolate(v, f"{path}.{k}" if path else str(k), missing, given)
            for k, v in node.items()
        }
    if isinstance(node, list):
        return [_interpolate(v, f"{path}[{i}]", missing, given) for i, v in enumerate(node)]
    if isinstance(node, str):

        def repl(match: re.Match[str]) -> str:
            name, default = match.group(1), match.group(2)
            if name in os.environ:
                given[path].append((name, os.environ[name]))
                return os.environ[name]
            if default is not None:
                given[path].append((name, default))
                return default
            missing.append(
                f"{path}: environment variable {name} is not set"
                f" (export it, or write ${{{name}:-default}})"
            )
            return ""

        return _ENV_REF.sub(repl, node)
    return node


def _location(loc: tuple[int | str, ...], single_sync: bool = False) -> str:
    """`a.b[0].c`; the single-mapping `directory_sync` is named as written, without `[0]`."""
    out = ""
    for part in loc:
        if isinstance(part, int) and single_sync and out == "directory_sync":
            continue
        if isinstance(part, int):
            out += f"[{part}]"
        elif part in ("oidc", "saml") and out.endswith("]"):
            continue
        else:
            out += f".{part}" if out else str(part)
    return out or "(top level)"


def _describe(err: dict[str, Any]) -> str:
    kind, msg = err["type"], err["msg"]
    if kind == "extra_forbidden":
        return "unknown key (check the spelling; unknown keys are refused)"
    if kind == "missing":
        return "required key is missing"
    if kind == "union_tag_invalid":
        return "unknown type (expected 'oidc' or 'saml')"
    if kind == "union_tag_not_found":
        return "type is missing (expected 'oidc' or 'saml')"
    return msg.removeprefix("Value error, ")


@dataclass(frozen=True, slots=True)
class LoadedConfig:
    """Valid settings, and the example placeholders still in them (see placeholders.py)."""

    settings: Settings
    source: str
    placeholders: tuple[Placeholder, ...]

    def placeholder_secrets(self) -> list[str]:
        """Why `authgate run` refuses this config; empty when it does not."""
        return [p.refusal(self.source) for p in self.placeholders if p.secret]

    def warnings(self) -> list[str]:
        return [p.warning(self.source) for p in self.placeholders]


def parse_config(raw: Any, source: str = "<config>") -> LoadedConfig:
    """Validate an already-loaded mapping; every problem found is reported at once."""
    if not isinstance(raw, dict):
        raise ConfigError([f"{source}: the file must hold a YAML mapping of settings"])
    missing: list[str] = []
    given: dict[str, list[tuple[str, str]]] = defaultdict(list)
    data = _interpolate(raw, "", missing, given)
    if missing:
        raise ConfigError([f"{source}: {m}" for m in missing])
    single_sync = isinstance(data.get("directory_sync"), dict)
    try:
        settings = Settings.model_validate(data)
    except ValidationError as exc:
        raise ConfigError(
            [f"{source}: {_location(e['loc'], single_sync)}: {_describe(e)}" for e in exc.errors()]
        ) from None
    return LoadedConfig(settings, source, tuple(placeholders.find(data, given)))


def parse_settings(raw: Any, source: str = "<config>") -> Settings:
    return parse_config(raw, source).settings


def load_settings(path: str | Path) -> Settings:
    return load_config(path).settings


def default_config_path() -> str:
    """`--config` when none is given: $AUTHGATE_CONFIG, else where the image mounts it."""
    return os.environ.get("AUTHGATE_CONFIG", DEFAULT_CONFIG_PATH)


def load_config(path: str | Path) -> LoadedConfig:
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError(
            [
                f"{path}: no such config file: pass --config FILE or set AUTHGATE_CONFIG"
                " (examples to start from are in conf/)"
            ]
        ) from None
    except OSError as exc:
        raise ConfigError([f"{path}: cannot read the config file ({exc.strerror})"]) from None
    try:
        raw = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        problem = getattr(exc, "problem", None) or str(exc)
        raise ConfigError([f"{path}: invalid YAML{where}: {problem}"]) from None
    return parse_config(raw, str(path))
