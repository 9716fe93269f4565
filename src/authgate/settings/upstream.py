"""The protected application and the identity headers (and assertion) sent to it."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Annotated

from pydantic import AfterValidator, Field

from authgate.settings.base import Duration, HttpUrl, _Model


class UpstreamSettings(_Model):
    url: HttpUrl
    connect_timeout: Duration = 5.0
    read_timeout: Duration = 60.0
    pass_host_header: bool = True
    max_connections: int = Field(default=256, ge=1)


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
