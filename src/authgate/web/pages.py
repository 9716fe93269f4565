"""HTML pages from Jinja2 templates with autoescaping; no external assets.

Title, logo and colours come from the `branding` settings. Every error page
says what happened in plain words for the person, what to change for the
operator, and carries the reason code and correlation id that tie it to the
audit log. In a hint, text between backticks (a command, a setting) is shown
as code.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

import jinja2
from aiohttp import web
from markupsafe import Markup, escape

from authgate.settings import BrandingSettings


@dataclass(frozen=True, slots=True)
class Hint:
    """What a refusal means to the person, and what the operator should check."""

    person: str
    operator: str


_CLOCKS = "Check that the clocks of the identity provider and of authgate are synchronised (NTP)."
HINTS: dict[str, Hint] = {
    "weak_alg": Hint(
        "Your organisation's sign-in service uses an outdated signature algorithm.",
        "Set the identity provider's signing algorithm to SHA-256 (RSA-SHA256); for OpenID"
        " Connect use an ID token algorithm listed in `allowed_algorithms`, such as RS256.",
    ),
    "replayed": Hint(
        "This sign-in response was already used.",
        "A response can be used once. Usually a double submit or the back button; repeated"
        " events from other clients may be an attack.",
    ),
    "protocol_mismatch": Hint(
        "The sign-in answer arrived at the wrong address.",
        "A SAML message reached an OpenID Connect endpoint or the reverse: check the reply /"
        " redirect URL registered at the identity provider.",
    ),
    "id_token_invalid": Hint(
        "Your sign-in could not be verified.",
        "The ID token failed validation (the audit log's detail names the check; `signature:`"
        " when it does not verify with the provider's JWKS): check client_id, the issuer and"
        " the provider's keys.",
    ),
    "decrypt_failed": Hint(
        "Your sign-in could not be read.",
        "authgate could not decrypt a secret or an assertion: check the SP keys and the master"
        " key of encrypted client secrets.",
    ),
    "signature_invalid": Hint(
        "Your sign-in could not be verified.",
        "The SAML signature does not verify with the identity provider's certificates: refresh"
        " the IdP metadata or the configured certificates (the IdP may have rolled its key).",
    ),
    "audience_mismatch": Hint(
        "The sign-in answer was meant for another application.",
        "Check the SP entity ID (SAML) or client_id (OIDC) configured at the identity provider.",
    ),
    "issuer_mismatch": Hint(
        "The sign-in answer came from an unexpected sign-in service.",
        "Check the issuer / IdP entity ID in the connection against the provider's metadata.",
    ),
    "expired": Hint("The sign-in answer arrived too late.", _CLOCKS),
    "not_yet_valid": Hint("The sign-in answer is not valid yet.", _CLOCKS),
    "state_mismatch": Hint(
        "This sign-in was started in another browser or tab.",
        "The answer does not belong to a sign-in this browser started; if it keeps happening,"
        " check that cookies reach authgate (SameSite, domain) and that `allow_idp_initiated`"
        " matches how the IdP starts sign-ins.",
    ),
    "state_expired": Hint(
        "This sign-in took too long or was already completed.",
        "Pending sign-ins last `session.login_state_ttl`.",
    ),
    "nonce_mismatch": Hint(
        "Your sign-in could not be verified.",
        "The ID token's nonce does not belong to this sign-in.",
    ),
    "email_unverified": Hint(
        "Your email address is not verified by your sign-in service.",
        "The identity provider sent no verified email for this account. Verify the address"
        " there, or set `require_email_verified: false` for IdPs that omit the claim.",
    ),
    "domain_not_allowed": Hint(
        "Your email domain is not allowed to use this application.",
        "Add the domain to `access.allowed_domains` (or the connection's `allowed_domains`) if"
        " these users should get in.",
    ),
    "user_not_provisioned": Hint(
        "Your account has not been set up for this application yet.",
        "The connection uses pre-provisioned users: create the user with SCIM or"
        " `authgate users import`.",
    ),
    "user_disabled": Hint(
        "Your account is deactivated.",
        "The user was retired or deactivated (SCIM, admin page or directory sync).",
    ),
    "email_conflict": Hint(
        "This email address already belongs to another account.",
        "Another IdP subject is linked to this email; authgate never merges accounts silently."
        " Retire the old user if it is the same person.",
    ),
    "groups_overage": Hint(
        "You are in too many groups for the sign-in token to list.",
        "Configure Microsoft Graph credentials for the connection, or emit only the groups"
        " assigned to the application.",
    ),
    "idp_error": Hint(
        "Your sign-in service reported an error or the sign-in was cancelled.",
        "The identity provider answered with an error status; its detail is in the audit log.",
    ),
    "metadata_unavailable": Hint(
        "The sign-in service cannot be reached right now.",
        "The identity provider's metadata or discovery document could not be loaded: check"
        " the URL and network access; `authgate test CONNECTION` shows the details.",
    ),
    "invalid_request": Hint(
        "The request was malformed.",
        "A sign-in endpoint received something it does not accept; see the audit log.",
    ),
    "header_too_large": Hint(
        "Your browser sent more cookies than this site accepts: clear its cookies and retry.",
        "A request head line was over 8190 bytes; large application cookies are the usual cause.",
    ),
    "last_admin": Hint(
        "This would leave no one able to administer the sign-in.",
        "Give another user the admin role, or map an IdP group to it, before retiring this one.",
    ),
    "not_a_member": Hint(
        "Your account is not in the group that may use this application.",
        "Add the user to a directory group that guards this connection"
        " (`directory_sync[].group_id`).",
    ),
    "admin_role_required": Hint(
        "This page is for administrators.",
        "Map a group to the admin role (`access.role_mappings`, `admin.role`) or use the admin"
        " bearer token.",
    ),
    "cross_origin_request": Hint(
        "The request came from another site and was refused.",
        "State-changing admin requests must come from authgate's own pages (same origin).",
    ),
    "forbidden": Hint(
        "You do not have access to this page.",
        "The session is valid, but the user is in none of the `allowed_groups` /"
        " `allowed_roles` the front proxy asks /auth for at this location.",
    ),
    "unauthenticated": Hint(
        "You need to sign in first.",
        "No valid session came with this request.",
    ),
    "store_unavailable": Hint(
        "The service is briefly unavailable. Try again in a moment.",
        "The session store is unreachable; authgate refuses requests until it is back.",
    ),
    "upstream_unavailable": Hint(
        "The application cannot be reached right now.",
        "authgate cannot connect to `upstream.url`.",
    ),
    "upstream_timeout": Hint(
        "The application did not answer in time.",
        "The upstream took longer than `upstream.read_timeout`.",
    ),
    "not_found": Hint(
        "There is no page at this address.",
        "Nothing under authgate's prefix answers this path; check the link that led here.",
    ),
    "method_not_allowed": Hint(
        "This page cannot be used that way.",
        "The endpoint exists but does not accept this HTTP method.",
    ),
    "request_too_large": Hint(
        "What was sent is too large.",
        "The request body is over the limit of the endpoint it was sent to.",
    ),
    "internal_error": Hint(
        "Something went wrong.",
        "An unexpected error: the log line with this correlation id has the details.",
    ),
}
GENERIC = Hint("We could not complete your request.", "See the audit log for this correlation id.")
CSP = (
    "default-src 'none'; style-src 'unsafe-inline'; img-src data:;"
    " form-action 'self' https: http:; frame-ancestors 'none'; base-uri 'none'"
)


_CODE = re.compile(r"`([^`]+)`")


def with_code(text: str) -> Markup:
    """A hint as HTML: escaped, with each `backticked` span in <code>."""
    return Markup(_CODE.sub(r"<code>\1</code>", str(escape(text))))  # noqa: S704 - escaped above


def _darker(colour: str, factor: float = 0.82) -> str:
    """A hover shade: darker keeps white text at least as readable as the base colour."""
    channels = (round(int(colour[i : i + 2], 16) * factor) for i in (1, 3, 5))
    return "#" + "".join(f"{c:02x}" for c in channels)


class Pages:
    def __init__(self, branding: BrandingSettings | None = None, login_url: str = "") -> None:
        brand = branding or BrandingSettings()
        self._env = jinja2.Environment(
            loader=jinja2.PackageLoader("authgate.web", "templates"),
            autoescape=True,
            undefined=jinja2.StrictUndefined,
        )
        self._env.filters["code"] = with_code
        self.title = brand.title
        self.login_url = login_url
        self._brand = {
            "logo": brand.logo_uri,
            "accent": brand.accent_color,
            "accent_dark": _darker(brand.accent_color),
            "background": brand.background_color,
            "support": brand.support,
        }

    def render(self, template: str, status: int = 200, **context: Any) -> web.Response:
        html = self._env.get_template(template).render(
            title=self.title, brand=self._brand, **context
        )
        response = web.Response(text=html, status=status, content_type="text/html")
        response.headers["Cache-Control"] = "no-store"
        response.headers["Content-Security-Policy"] = CSP
        response.headers["X-Frame-Options"] = "DENY"
        response.headers["Referrer-Policy"] = "same-origin"
        return response

    def error(
        self, status: int, reason: str, correlation_id: str, retry_url: str | None = None
    ) -> web.Response:
        hint = HINTS.get(reason, GENERIC)
        server_side = status >= 500
        return self.render(
            "error.html",
            status=status,
            reason=reason,
            correlation_id=correlation_id,
            hint=hint,
            code=status,
            server_side=server_side,
            retry_label="Sign in" if status == 401 else "Start again",
            retry_url=retry_url or (None if server_side else self.login_url or None),
        )
