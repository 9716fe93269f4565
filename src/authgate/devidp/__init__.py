"""A development identity provider (OpenID Connect and SAML 2.0) for `authgate demo` and tests.

Its users and password are public and its keys live in memory, so it only
ever listens on loopback unless forced. Never use it in production.
"""

from authgate.devidp.listen import NotLoopback, require_loopback
from authgate.devidp.oidc import OidcClient
from authgate.devidp.state import DevIdp, DevIdpConfig
from authgate.devidp.users import PASSWORD, USERS, DevUser
from authgate.devidp.web import create_app

__all__ = [
    "PASSWORD",
    "USERS",
    "DevIdp",
    "DevIdpConfig",
    "DevUser",
    "NotLoopback",
    "OidcClient",
    "create_app",
    "require_loopback",
]
