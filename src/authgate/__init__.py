"""authgate: a reverse-proxy authentication sidecar for SAML 2.0 and OpenID Connect."""

__version__ = "0.1.0"
