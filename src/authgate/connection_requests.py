"""An admin's connection request (API body or UI form) checked and turned into a document.

A request is a connection mapping as the config file would hold it, plus
what only an admin request can carry: pasted or uploaded IdP metadata, the
client secret in plain text (sealed here, never stored open), the SP
certificate to generate, a claims preset, and the connection's default role
and role mappings. What names a file on the server is refused: an admin
request must not make authgate read its disk. Every refusal names the field
and says what to send instead, in authgate's words (no parser's message, no
request bytes).
"""

from __future__ import annotations

import base64
import binascii
import datetime as dt
import re
import secrets
from dataclasses import dataclass
from typing import Any

from cryptography import x509
from pydantic import ValidationError

from authgate import keys
from authgate.connection_store import ConnectionDocument, seal_context
from authgate.protocols.saml_metadata import MetadataError, parse_idp_metadata
from authgate.secrets import SecretBox

MAX_METADATA_CHARS = 1024 * 1024
# Path words of the admin pages, which a connection id would shadow.
RESERVED_IDS = frozenset({"new"})
CONN_ID = re.compile(r"^[a-z0-9][a-z0-9_-]{0,62}$")
# Admin-only fields; the rest of a request is connection settings.
REQUEST_FIELDS = frozenset(
    {
        "type",
        "id",
        "idp_metadata_xml",
        "client_secret",
        "certificate",
        "preset",
        "access",
        "version",
    }
)
# Settings that name files on the server, or are set by other calls.
REFUSED = {
    "idp_metadata_file": "send the metadata itself as idp_metadata_xml, or its idp_metadata_url",
    "sp_keys": "authgate generates the SP key pair (certificate: {subject, valid_days})",
    "private_key_file": "private_key_jwt needs a key file: configure it in the config file",
    "client_secret_encrypted": "send client_secret; authgate seals it with its master key",
    "enabled": "use POST …/activate and …/deactivate",
    "graph": "Graph access is configured in the config file",
}
PRESETS: dict[str, dict[str, str]] = {
    "entra": {
        "email": "http://schemas.xmlsoap.org/ws/2005/05/identity/claims/emailaddress",
        "name": "http://schemas.microsoft.com/identity/claims/displayname",
        "groups": "http://schemas.microsoft.com/ws/2008/06/identity/claims/groups",
    },
    "okta": {"email": "email", "name": "displayName", "groups": "groups"},
    "google": {"email": "email", "name": "displayName", "groups": "groups"},
}
ROLE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._:-]{0,63}$")


class RequestRefused(Exception):
    """The request cannot be used as it is: `field` and a sentence saying what to send."""

    def __init__(self, field: str, message: str, error: str = "invalid_request") -> None:
        super().__init__(f"{field}: {message}")
        self.field = field
        self.message = message
        self.error = error


def new_id(name: str) -> str:
    """An id from the name and a random suffix, so SP URLs never collide or get guessed."""
    slug = re.sub(r"[^a-z0-9]+", "-", name.lower()).strip("-")[:40] or "connection"
    return f"{slug}-{secrets.token_hex(3)}"


def _text(body: dict[str, Any], name: str, limit: int = 200) -> str | None:
    value = body.get(name)
    if value is None:
        return None
    if not isinstance(value, str) or not value.strip() or len(value) > limit:
        raise RequestRefused(name, f"expected text of 1 to {limit} characters")
    return value


def check_metadata(xml: str) -> None:
    """Hostile or unusable metadata is refused before anything is stored."""
    if len(xml) > MAX_METADATA_CHARS:
        raise RequestRefused("idp_metadata_xml", f"larger than {MAX_METADATA_CHARS} characters")
    try:
        parse_idp_metadata(xml.encode())
    except MetadataError as exc:
        raise RequestRefused("idp_metadata_xml", str(exc)) from None


def check_certificate(field: str, value: Any) -> None:
    """An IdP signing certificate by hand: a parseable, current, end-entity certificate."""
    if not isinstance(value, str):
        raise RequestRefused(field, "expected a certificate in PEM or base64 form")
    body = re.sub(r"-----(BEGIN|END) CERTIFICATE-----|\s+", "", value)
    try:
        cert = x509.load_der_x509_certificate(base64.b64decode(body, validate=True))
    except (ValueError, binascii.Error):
        raise RequestRefused(field, "expected an X.509 certificate in PEM or base64 form") from None
    if cert.not_valid_after_utc <= dt.datetime.now(dt.UTC):
        expired = cert.not_valid_after_utc.date().isoformat()
        raise RequestRefused(
            field, f"the certificate expired on {expired}: ask the IdP for its current one"
        )
    try:
        constraints = cert.extensions.get_extension_for_class(x509.BasicConstraints).value
    except x509.ExtensionNotFound:
        return
    if constraints.ca:
        raise RequestRefused(
            field, "this is a CA certificate: give the IdP's own signing certificate"
        )


def _access(value: Any) -> dict[str, Any]:
    if value is None:
        return {}
    if not isinstance(value, dict) or set(value) - {"default_role", "role_mappings"}:
        raise RequestRefused("access", "expected {default_role, role_mappings}")
    role = value.get("default_role")
    if role is not None and (not isinstance(role, str) or not ROLE.match(role)):
        raise RequestRefused(
            "access.default_role", "a role is 1-64 letters, digits, '.', '_', ':' or '-'"
        )
    mappings = value.get("role_mappings", [])
    if not isinstance(mappings, list):
        raise RequestRefused(
            "access.role_mappings", 'expected a list of {"group": …, "roles": […]}'
        )
    for i, m in enumerate(mappings):
        where = f"access.role_mappings[{i}]"
        if not isinstance(m, dict) or set(m) != {"group", "roles"}:
            raise RequestRefused(where, 'expected {"group": …, "roles": […]}')
        if not isinstance(m["group"], str) or not m["group"] or len(m["group"]) > 256:
            raise RequestRefused(where + ".group", "expected a group name or id")
        roles = m["roles"]
        if (
            not isinstance(roles, list)
            or not roles
            or not all(isinstance(r, str) and ROLE.match(r) for r in roles)
        ):
            raise RequestRefused(where + ".roles", "expected a non-empty list of role names")
    return {k: v for k, v in value.items() if v is not None}


def _with_access(settings: dict[str, Any], access: dict[str, Any]) -> dict[str, Any]:
    """The API's `access` object as the connection's own settings (they replace the global)."""
    out = {k: v for k, v in settings.items() if k not in ("default_role", "role_mappings")}
    return {**out, **access}


@dataclass(frozen=True, slots=True)
class Certificate:
    subject: str
    valid_days: int


def _certificate(value: Any, name: str) -> Certificate:
    if value is None:
        return Certificate(name, keys.DEFAULT_DAYS)
    if not isinstance(value, dict) or set(value) - {"subject", "valid_days"}:
        raise RequestRefused("certificate", "expected {subject, valid_days}")
    subject = value.get("subject", name)
    days = value.get("valid_days", keys.DEFAULT_DAYS)
    if not isinstance(subject, str) or not 1 <= len(subject) <= 64:
        raise RequestRefused("certificate.subject", "expected a common name of 1 to 64 characters")
    if not isinstance(days, int) or isinstance(days, bool) or not 1 <= days <= 36500:
        raise RequestRefused("certificate.valid_days", "expected a number of days from 1 to 36500")
    return Certificate(subject, days)


def settings_part(body: dict[str, Any]) -> dict[str, Any]:
    """The connection settings in a request, with what may not be set this way refused."""
    for name, why in REFUSED.items():
        if name in body:
            raise RequestRefused(name, f"not settable here: {why}")
    idp = body.get("idp")
    if isinstance(idp, dict):
        if "certificate_files" in idp:
            raise RequestRefused("idp.certificate_files", "not settable here: send certificates")
        for i, cert in enumerate(idp.get("certificates") or []):
            check_certificate(f"idp.certificates[{i}]", cert)
    return {k: v for k, v in body.items() if k not in REQUEST_FIELDS}


def _apply_preset(settings: dict[str, Any], preset: Any, kind: str) -> None:
    if preset is None:
        return
    if preset not in PRESETS:
        raise RequestRefused("preset", f"expected one of {', '.join(PRESETS)}")
    if kind == "saml":
        settings["attributes"] = {**PRESETS[preset], **(settings.get("attributes") or {})}


def new_document(body: dict[str, Any], box: SecretBox, actor: str) -> ConnectionDocument:
    """A create request as the document to store (not yet validated as settings)."""
    kind = body.get("type")
    if kind not in ("saml", "oidc"):
        raise RequestRefused("type", 'expected "saml" or "oidc"')
    name = _text(body, "name")
    if name is None:
        raise RequestRefused("name", "required: the name people see on the sign-in button")
    conn_id = body.get("id") or new_id(name)
    if not isinstance(conn_id, str) or not CONN_ID.match(conn_id):
        raise RequestRefused("id", "expected a short lower-case id: letters, digits, '-' and '_'")
    if conn_id in RESERVED_IDS:
        raise RequestRefused("id", f"{conn_id!r} is a word the admin pages use: choose another id")
    settings = _with_access(settings_part(body), _access(body.get("access")))
    _apply_preset(settings, body.get("preset"), kind)
    sealed: dict[str, Any] = {}
    xml = None
    if kind == "saml":
        # The connection has its own signing key from the start, so it signs its requests.
        settings.setdefault("sign_requests", True)
        xml = _metadata_xml(body)
        cert = _certificate(body.get("certificate"), name)
        key_pem, cert_pem = keys.generate(cert.subject, cert.valid_days)
        sealed["sp_keys"] = [
            {
                "key": box.seal(key_pem.decode(), seal_context(conn_id, "sp_key")),
                "cert": cert_pem.decode(),
            }
        ]
    elif body.get("client_secret") is not None:
        sealed["client_secret"] = _sealed_secret(body, box, conn_id)
    now = dt.datetime.now(dt.UTC).timestamp()
    return ConnectionDocument(
        id=conn_id,
        type=kind,
        settings=settings,
        sealed=sealed,
        idp_metadata_xml=xml,
        created_at=now,
        updated_at=now,
        updated_by=actor,
    )


def new_key_pair(box: SecretBox, conn_id: str, body: dict[str, Any], name: str) -> dict[str, str]:
    """A fresh SP key pair for the connection, the key sealed; `certificate` as asked."""
    cert = _certificate(body.get("certificate"), name)
    key_pem, cert_pem = keys.generate(cert.subject, cert.valid_days)
    sealed_key = box.seal(key_pem.decode(), seal_context(conn_id, "sp_key"))
    return {"key": sealed_key, "cert": cert_pem.decode()}


def _metadata_xml(body: dict[str, Any]) -> str | None:
    xml = body.get("idp_metadata_xml")
    if xml is None:
        return None
    if not isinstance(xml, str):
        raise RequestRefused("idp_metadata_xml", "expected the metadata document as text")
    check_metadata(xml)
    return xml


def _sealed_secret(body: dict[str, Any], box: SecretBox, conn_id: str) -> str:
    secret = _text(body, "client_secret", 1024)
    assert secret is not None
    return box.seal(secret, seal_context(conn_id, "client_secret"))


def changed_document(
    doc: ConnectionDocument, body: dict[str, Any], box: SecretBox, actor: str
) -> ConnectionDocument:
    """An edit: the fields sent replace the stored ones, and one sent as null goes back to
    its default (JSON merge patch, RFC 7396); the IdP side is replaced whole."""
    for fixed in ("type", "id", "certificate"):
        if fixed in body:
            raise RequestRefused(fixed, "cannot be changed: it is part of the URLs the IdP has")
    merged = {**doc.settings, **settings_part(body)}
    settings = {k: v for k, v in merged.items() if v is not None}
    sources = {"idp_metadata_xml", "idp_metadata_url", "idp"}
    xml = doc.idp_metadata_xml
    if sources & set(body):
        for other in (sources | {"idp_metadata_public_only"}) - set(body):
            settings.pop(other, None)
        xml = _metadata_xml(body)
    _apply_preset(settings, body.get("preset"), doc.type)
    sealed = dict(doc.sealed)
    if doc.type == "oidc" and body.get("client_secret") is not None:
        sealed["client_secret"] = _sealed_secret(body, box, doc.id)
    if "access" in body:
        settings = _with_access(settings, _access(body["access"]))
    return doc.next(actor, settings=settings, idp_metadata_xml=xml, sealed=sealed)


def settings_problem(exc: ValidationError) -> RequestRefused:
    """The first settings problem, in our words: our own validators' sentences are kept."""
    error = exc.errors()[0]
    where = ".".join(str(p) for p in error["loc"] if p not in ("oidc", "saml")) or "body"
    kind = error["type"]
    if kind == "extra_forbidden":
        return RequestRefused(where, "not a connection setting (check the spelling)")
    if kind == "missing":
        return RequestRefused(where, "required")
    if kind == "value_error":
        message = str(error.get("ctx", {}).get("error", "")) or "not a usable value"
        return RequestRefused(where, message)
    return RequestRefused(where, f"not a usable value ({kind.replace('_', ' ')})")


def diff(old: ConnectionDocument | None, new: ConnectionDocument | None) -> dict[str, Any]:
    """What changed, for the audit log: settings values, and only whether a secret changed."""
    before = old.settings if old else {}
    after = new.settings if new else {}
    out: dict[str, Any] = {
        k: {"from": before.get(k), "to": after.get(k)}
        for k in sorted(set(before) | set(after))
        if before.get(k) != after.get(k)
    }
    if (old.idp_metadata_xml if old else None) != (new.idp_metadata_xml if new else None):
        out["idp_metadata_xml"] = "changed"
    for name in sorted(set(old.sealed if old else {}) | set(new.sealed if new else {})):
        if (old.sealed.get(name) if old else None) != (new.sealed.get(name) if new else None):
            out[name] = "changed"
    if (old.active if old else None) != (new.active if new else None):
        out["active"] = {"from": old.active if old else None, "to": new.active if new else None}
    return out
