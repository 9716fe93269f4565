"""Typed, frozen settings: the only code that reads the config file and the environment.

The YAML is interpolated (`${VAR}`, `${VAR:-default}`), then validated in full
by pydantic with unknown keys forbidden, so a typo can never silently turn a
security setting off. Every problem is reported as `file: key.path: what is
wrong (expected ...)`. A valid config is also searched for the placeholders
of the example configs (placeholders.py); the commands decide what to do
about them.

One module per area; this package re-exports their public names, so callers
import from `authgate.settings` and never need to know which module holds a model::

    base           _Model, ConfigError, durations, host:port, URLs, readable files
    store          session store and Redis topologies
    upstream       the protected app, identity headers, the signed assertion
    access         allowed domains, role mappings, public paths
    connections    OIDC and SAML connections and the paths they claim
    directory      directory sync from Microsoft Graph
    services       admin, SCIM, secrets, audit, metrics
    branding       page branding and its WCAG contrast check
    model          Settings: every section and the checks across them
    interpolation  `${VAR}` replacement from the environment
    loading        parse_config / load_config and the operator-facing problem list
"""

from authgate.settings.access import AccessSettings, ConnectionRoleMapping, RoleMapping
from authgate.settings.base import (
    ConfigError,
    Duration,
    HostPort,
    HttpUrl,
    ReadableFile,
)
from authgate.settings.branding import (
    MAX_LOGO_BYTES,
    MIN_CONTRAST,
    PAGE_TEXT_COLOUR,
    BrandingSettings,
    Colour,
    contrast_ratio,
)
from authgate.settings.connections import (
    ENTRA_LOGIN_HOSTS,
    ENTRA_TENANT_SEGMENTS,
    ClientAuthMethod,
    Connection,
    ConnectionBase,
    EndpointUrl,
    GraphSettings,
    Issuer,
    OidcClaims,
    OidcConnection,
    OidcRefresh,
    ReturnUrl,
    SamlAttributes,
    SamlBinding,
    SamlCertificate,
    SamlConnection,
    SamlIdp,
    SamlKeyPair,
    SamlNameIdFormat,
    SigningAlg,
    entra_issuer,
    own_paths,
)
from authgate.settings.directory import (
    DIRECTORY_KEY_PROPERTIES,
    LEGACY_SYNC_NAME,
    DirectoryExport,
    DirectorySyncSettings,
)
from authgate.settings.loading import (
    DEFAULT_CONFIG_PATH,
    LoadedConfig,
    default_config_path,
    load_config,
    load_settings,
    parse_config,
    parse_settings,
)
from authgate.settings.model import DEFAULT_PREFIX, Settings
from authgate.settings.services import (
    ADMIN_TOKEN_MIN_LENGTH,
    AdminSettings,
    AuditSettings,
    MetricsSettings,
    ScimSettings,
    SecretsSettings,
)
from authgate.settings.store import RedisSettings, SentinelSettings, SessionSettings
from authgate.settings.upstream import (
    AssertionSettings,
    HeaderName,
    HeaderSettings,
    UpstreamSettings,
)

__all__ = [
    "ADMIN_TOKEN_MIN_LENGTH",
    "DEFAULT_CONFIG_PATH",
    "DEFAULT_PREFIX",
    "DIRECTORY_KEY_PROPERTIES",
    "ENTRA_LOGIN_HOSTS",
    "ENTRA_TENANT_SEGMENTS",
    "LEGACY_SYNC_NAME",
    "MAX_LOGO_BYTES",
    "MIN_CONTRAST",
    "PAGE_TEXT_COLOUR",
    "AccessSettings",
    "AdminSettings",
    "AssertionSettings",
    "AuditSettings",
    "BrandingSettings",
    "ClientAuthMethod",
    "Colour",
    "ConfigError",
    "Connection",
    "ConnectionBase",
    "ConnectionRoleMapping",
    "DirectoryExport",
    "DirectorySyncSettings",
    "Duration",
    "EndpointUrl",
    "GraphSettings",
    "HeaderName",
    "HeaderSettings",
    "HostPort",
    "HttpUrl",
    "Issuer",
    "LoadedConfig",
    "MetricsSettings",
    "OidcClaims",
    "OidcConnection",
    "OidcRefresh",
    "ReadableFile",
    "RedisSettings",
    "ReturnUrl",
    "RoleMapping",
    "SamlAttributes",
    "SamlBinding",
    "SamlCertificate",
    "SamlConnection",
    "SamlIdp",
    "SamlKeyPair",
    "SamlNameIdFormat",
    "ScimSettings",
    "SecretsSettings",
    "SentinelSettings",
    "SessionSettings",
    "Settings",
    "SigningAlg",
    "UpstreamSettings",
    "contrast_ratio",
    "default_config_path",
    "entra_issuer",
    "load_config",
    "load_settings",
    "own_paths",
    "parse_config",
    "parse_settings",
]
