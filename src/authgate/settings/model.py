"""`Settings`, the whole config: every section, and the checks that span sections."""

from __future__ import annotations

import ipaddress
import re
from typing import Annotated

from pydantic import AfterValidator, BeforeValidator, Field, field_validator, model_validator

from authgate.settings.access import AccessSettings
from authgate.settings.base import HostPort, HttpUrl, _Model
from authgate.settings.branding import BrandingSettings
from authgate.settings.connections import Connection, OidcConnection, SamlConnection, own_paths
from authgate.settings.directory import DirectorySyncSettings, _sync_list
from authgate.settings.services import (
    AdminSettings,
    AuditSettings,
    MetricsSettings,
    ScimSettings,
    SecretsSettings,
)
from authgate.settings.store import SessionSettings
from authgate.settings.upstream import HeaderSettings, UpstreamSettings
from authgate.urls import RedirectPolicy

DEFAULT_PREFIX = "/_authgate"


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
