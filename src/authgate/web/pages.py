"""HTML pages from Jinja2 templates with autoescaping; no external assets."""

from __future__ import annotations

from typing import Any

import jinja2
from aiohttp import web

HINTS: dict[str, str] = {
    "weak_alg": "The identity provider signs with an algorithm authgate does not accept"
    " (SHA-1, or an ID token algorithm outside allowed_algorithms). Use SHA-256 / RS256.",
    "replayed": "This sign-in response was already used. Start the sign-in again.",
    "protocol_mismatch": "A SAML message reached an OpenID Connect endpoint or the reverse."
    " Check the reply URL configured at the identity provider.",
    "id_token_invalid": "The ID token failed validation. Check the client id and the issuer.",
    "decrypt_failed": "authgate could not decrypt a secret or an assertion. Check the keys.",
    "signature_invalid": "The signature does not verify with the identity provider's keys."
    " Refresh the IdP metadata or certificates.",
    "audience_mismatch": "The response was issued for another application."
    " Check the entity ID / client id at the identity provider.",
    "issuer_mismatch": "The response came from an unexpected issuer.",
    "expired": "The response has expired. Check the clocks of both servers.",
    "not_yet_valid": "The response is not valid yet. Check the clocks of both servers.",
    "state_mismatch": "The sign-in was started in another browser or tab set.",
    "state_expired": "The sign-in took too long or was already completed.",
    "nonce_mismatch": "The ID token does not belong to this sign-in.",
    "email_unverified": "Your email address is not verified by the identity provider.",
    "domain_not_allowed": "Your email domain is not allowed to use this application.",
    "user_not_provisioned": "Your account has not been provisioned for this application.",
    "user_disabled": "Your account is deactivated.",
    "email_conflict": "This email address is already linked to another account.",
    "groups_overage": "You are in too many groups for the token to list them."
    " Configure Microsoft Graph credentials or group filtering.",
    "idp_error": "The identity provider reported an error.",
    "metadata_unavailable": "The identity provider's metadata could not be loaded.",
    "invalid_request": "The request was malformed.",
    "not_a_member": "Your account is not in the directory group that may use this application."
    " Ask your administrator to add you to it.",
    "store_unavailable": "The session store is unreachable. Try again in a moment.",
    "upstream_unavailable": "The application behind authgate cannot be reached.",
    "upstream_timeout": "The application behind authgate did not answer in time.",
    "internal_error": "Something went wrong inside authgate.",
}


class Pages:
    def __init__(self, title: str = "authgate") -> None:
        self._env = jinja2.Environment(
            loader=jinja2.PackageLoader("authgate.web", "templates"),
            autoescape=True,
            undefined=jinja2.StrictUndefined,
        )
        self.title = title

    def render(self, template: str, status: int = 200, **context: Any) -> web.Response:
        html = self._env.get_template(template).render(title=self.title, **context)
        response = web.Response(text=html, status=status, content_type="text/html")
        response.headers["Cache-Control"] = "no-store"
        response.headers["Content-Security-Policy"] = (
            "default-src 'none'; style-src 'unsafe-inline'; img-src data:;"
            " form-action 'self' https: http:"
        )
        response.headers["X-Frame-Options"] = "DENY"
        return response

    def error(
        self, status: int, reason: str, correlation_id: str, retry_url: str | None = None
    ) -> web.Response:
        return self.render(
            "error.html",
            status=status,
            reason=reason,
            correlation_id=correlation_id,
            hint=HINTS.get(reason, ""),
            retry_url=retry_url,
        )
