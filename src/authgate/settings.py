"""Typed, frozen settings: the only code that reads the config file and the environment.

The YAML is interpolated (`${VAR}`, `${VAR:-default}`), then validated in full
by pydantic with unknown keys forbidden, so a typo can never silently turn a
security setting off. Every problem is reported as `file: key.path: what is
wrong (expected ...)`.
"""

from __future__ import annotations

import ipaddress
import os
import re
from pathlib import Path
from typing import Annotated, Any, Literal
from urllib.parse import urlsplit

import yaml
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

_ENV_REF = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)(?::-([^}]*))?\}")
_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(ms|s|m|h|d)?\s*$")
_UNITS = {"ms": 0.001, "s": 1, "m": 60, "h": 3600, "d": 86400, None: 1}
_CONN_ID = re.compile(r"^[a-z0-9][a-z0-9_-]{0,62}$")


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
        if self.url and urlsplit(self.url).scheme not in ("redis", "rediss", "unix"):
            raise ValueError("url must start with redis://, rediss:// or unix://")
        return self


class SessionSettings(_Model):
    store: Literal["redis", "memory"] = "redis"
    redis: RedisSettings | None = None
    cookie_name: str | None = None
    lifetime: Duration = 8 * 3600.0
    idle_timeout: Duration = 3600.0
    login_state_ttl: Duration = 600.0

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
    assertion: AssertionSettings = AssertionSettings()
    oauth2_proxy_compat: bool = False
    extra_strip: list[Annotated[str, AfterValidator(_header_name)]] = []


class RoleMapping(_Model):
    group: str
    roles: list[str] = Field(min_length=1)
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


class ConnectionBase(_Model):
    id: str
    name: str
    organization: str | None = None
    domains: list[str] = []
    allowed_domains: list[str] = []
    provisioning: Literal["jit", "preprovisioned"] = "jit"
    require_email_verified: bool = True
    enabled: bool = True

    @field_validator("id")
    @classmethod
    def _slug(cls, value: str) -> str:
        if not _CONN_ID.match(value):
            raise ValueError("expected a short lower-case id: letters, digits, '-' and '_'")
        return value

    @field_validator("domains", "allowed_domains")
    @classmethod
    def _lower(cls, domains: list[str]) -> list[str]:
        return [d.lower().lstrip("@") for d in domains]


class OidcConnection(ConnectionBase):
    type: Literal["oidc"]
    issuer: HttpUrl
    client_id: str
    client_secret: str | None = None
    scopes: list[str] = ["openid", "email", "profile"]


class SamlConnection(ConnectionBase):
    type: Literal["saml"]
    idp_metadata_file: Path | None = None
    idp_metadata_url: HttpUrl | None = None


Connection = Annotated[OidcConnection | SamlConnection, Field(discriminator="type")]


class AuditSettings(_Model):
    output: str = "stdout"


class MetricsSettings(_Model):
    enabled: bool = True
    listen: HostPort = "127.0.0.1:9090"


def _network(value: str) -> str:
    try:
        ipaddress.ip_network(value, strict=False)
    except ValueError as exc:
        raise ValueError("expected an IP address or CIDR such as 10.0.0.0/8") from exc
    return value


class Settings(_Model):
    listen: HostPort = "0.0.0.0:4180"
    public_url: HttpUrl
    prefix: str = "/_authgate"
    upstream: UpstreamSettings
    trusted_proxies: list[Annotated[str, AfterValidator(_network)]] = ["127.0.0.1/32", "::1/128"]
    session: SessionSettings = SessionSettings(store="memory")
    headers: HeaderSettings = HeaderSettings()
    access: AccessSettings = AccessSettings()
    connections: list[Connection] = []
    audit: AuditSettings = AuditSettings()
    metrics: MetricsSettings = MetricsSettings()

    @field_validator("prefix")
    @classmethod
    def _prefix(cls, value: str) -> str:
        if not re.fullmatch(r"/[A-Za-z0-9_.-]+(/[A-Za-z0-9_.-]+)*", value):
            raise ValueError("expected a path such as /_authgate (no trailing slash)")
        return value

    @model_validator(mode="after")
    def _unique_connections(self) -> Settings:
        seen: set[str] = set()
        for conn in self.connections:
            if conn.id in seen:
                raise ValueError(f"connection id {conn.id!r} is used twice")
            seen.add(conn.id)
        return self

    @property
    def https(self) -> bool:
        return self.public_url.startswith("https://")

    def connection(self, conn_id: str) -> OidcConnection | SamlConnection | None:
        return next((c for c in self.connections if c.id == conn_id), None)


def _interpolate(node: Any, path: str, missing: list[str]) -> Any:
    if isinstance(node, dict):
        return {
            k: _interpolate(v, f"{path}.{k}" if path else str(k), missing) for k, v in node.items()
        }
    if isinstance(node, list):
        return [_interpolate(v, f"{path}[{i}]", missing) for i, v in enumerate(node)]
    if isinstance(node, str):

        def repl(match: re.Match[str]) -> str:
            name, default = match.group(1), match.group(2)
            if name in os.environ:
                return os.environ[name]
            if default is not None:
                return default
            missing.append(
                f"{path}: environment variable {name} is not set"
                f" (export it, or write ${{{name}:-default}})"
            )
            return ""

        return _ENV_REF.sub(repl, node)
    return node


def _location(loc: tuple[int | str, ...]) -> str:
    out = ""
    for part in loc:
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


def parse_settings(raw: Any, source: str = "<config>") -> Settings:
    """Validate an already-loaded mapping; every problem found is reported at once."""
    if not isinstance(raw, dict):
        raise ConfigError([f"{source}: the file must hold a YAML mapping of settings"])
    missing: list[str] = []
    data = _interpolate(raw, "", missing)
    if missing:
        raise ConfigError([f"{source}: {m}" for m in missing])
    try:
        return Settings.model_validate(data)
    except ValidationError as exc:
        raise ConfigError(
            [f"{source}: {_location(e['loc'])}: {_describe(e)}" for e in exc.errors()]
        ) from None


def load_settings(path: str | Path) -> Settings:
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError([f"{path}: cannot read the config file ({exc.strerror})"]) from None
    try:
        raw = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        problem = getattr(exc, "problem", None) or str(exc)
        raise ConfigError([f"{path}: invalid YAML{where}: {problem}"]) from None
    return parse_settings(raw, str(path))
