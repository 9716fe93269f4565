"""Whom the gateway lets in and with which roles, and which paths need nobody."""

from __future__ import annotations

from pydantic import Field, field_validator

from authgate.settings.base import _Model


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
