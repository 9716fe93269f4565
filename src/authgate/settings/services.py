"""The side services: admin page and API, SCIM server, secrets, audit and metrics."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Literal

from pydantic import Field, field_validator, model_validator

from authgate.settings.base import HostPort, _Model


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
