"""Directory sync: Entra ID group members read from Microsoft Graph, allowlisted or exported."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Annotated, Any

from pydantic import AfterValidator, Field, field_validator, model_validator

from authgate.line_template import LineTemplate
from authgate.settings.base import Duration, HttpUrl, _Model, _slug


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
