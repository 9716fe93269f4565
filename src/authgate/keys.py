"""SP key material for SAML: an RSA key and a self-signed certificate signed with SHA-256.

IdPs pin the certificate itself (from SP metadata), so a self-signed one is
the norm; its validity period is informational for most IdPs.
"""

from __future__ import annotations

import datetime as dt
import os
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.x509.oid import NameOID

DEFAULT_BITS = 3072
DEFAULT_DAYS = 3650


def generate(
    common_name: str, days: int = DEFAULT_DAYS, bits: int = DEFAULT_BITS
) -> tuple[bytes, bytes]:
    """(PKCS#8 private key PEM, self-signed certificate PEM)."""
    key = rsa.generate_private_key(public_exponent=65537, key_size=bits)
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])
    now = dt.datetime.now(dt.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=days))
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    key_pem = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    return key_pem, cert.public_bytes(serialization.Encoding.PEM)


def write_pair(
    key_path: Path,
    cert_path: Path,
    common_name: str,
    days: int = DEFAULT_DAYS,
    bits: int = DEFAULT_BITS,
    force: bool = False,
) -> None:
    """Write a new pair; the key is created readable by its owner only. Never overwrites
    an existing file unless `force`, so a mistyped path cannot destroy a key in use."""
    for path in (key_path, cert_path):
        if path.exists() and not force:
            raise FileExistsError(f"{path} exists (use --force to replace it)")
    key_pem, cert_pem = generate(common_name, days, bits)
    flags = os.O_WRONLY | os.O_CREAT | os.O_TRUNC
    fd = os.open(key_path, flags, 0o600)
    with os.fdopen(fd, "wb") as handle:
        handle.write(key_pem)
    os.chmod(key_path, 0o600)
    cert_path.write_bytes(cert_pem)
