"""SCIM 2.0 (RFC 7643/7644) server for Entra ID and Okta provisioning, its own sub-application.

Payloads are parsed, validated, filtered and patched with `scim2-models`; this
package adds the bearer tokens, the tolerance for what Entra ID and Okta
actually send, and the mapping onto authgate's user store.
"""
