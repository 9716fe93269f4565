"""Secrets at rest: client secrets (and refresh tokens) sealed with AES-256-GCM.

The config file may then be committed or put in a ConfigMap: only the master
key, given in the `AUTHGATE_MASTER_KEY` environment variable or a mounted file
named by `secrets.master_key_file`, opens it. GCM authenticates as well as
encrypts, so a tampered or wrongly keyed value fails loudly (`decrypt_failed`)
instead of producing a wrong secret. The key is read here rather than in
settings so it never sits in the settings object that gets logged or printed.
"""

from __future__ import annotations

import base64
import binascii
import os
import secrets
from collections.abc import Mapping
from pathlib import Path

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from authgate.errors import LoginFailed
from authgate.settings import SecretsSettings

MASTER_KEY_ENV = "AUTHGATE_MASTER_KEY"
PREFIX = "v1:"
NONCE_BYTES = 12
KEY_BYTES = 32


def _b64decode(text: str) -> bytes:
    text = text.strip()
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def _b64encode(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def generate_key() -> str:
    """A new master key, printable and safe for an environment variable."""
    return _b64encode(secrets.token_bytes(KEY_BYTES))


def parse_key(text: str) -> bytes:
    try:
        key = _b64decode(text)
    except (binascii.Error, ValueError):
        key = b""
    if len(key) != KEY_BYTES:
        raise ValueError("the master key must be 32 bytes in base64url (authgate secrets keygen)")
    return key


def load_master_key(settings: SecretsSettings, environ: Mapping[str, str] = os.environ) -> bytes:
    """The master key from the environment, else from the configured file; ValueError if none."""
    if environ.get(MASTER_KEY_ENV):
        return parse_key(environ[MASTER_KEY_ENV])
    if settings.master_key_file is not None:
        try:
            return parse_key(Path(settings.master_key_file).read_text(encoding="utf-8"))
        except OSError as exc:
            raise ValueError(
                f"cannot read master key file {settings.master_key_file} ({exc.strerror})"
            ) from None
    raise ValueError(f"no master key: set {MASTER_KEY_ENV} or secrets.master_key_file")


def encrypt(plaintext: str, key: bytes, context: str = "secret") -> str:
    """Seal `plaintext`; `context` binds it to one use so values cannot be swapped around."""
    nonce = secrets.token_bytes(NONCE_BYTES)
    sealed = AESGCM(key).encrypt(nonce, plaintext.encode(), context.encode())
    return PREFIX + _b64encode(nonce + sealed)


def decrypt(token: str, key: bytes, context: str = "secret") -> str:
    """Open a sealed value; ValueError for anything malformed, tampered or wrongly keyed."""
    if not token.startswith(PREFIX):
        raise ValueError(f"not an authgate encrypted value (expected the {PREFIX} prefix)")
    try:
        raw = _b64decode(token[len(PREFIX) :])
        plain = AESGCM(key).decrypt(raw[:NONCE_BYTES], raw[NONCE_BYTES:], context.encode())
        return plain.decode()
    except (binascii.Error, InvalidTag, UnicodeDecodeError, ValueError):
        raise ValueError("the value does not decrypt with this master key") from None


class SecretBox:
    """Opens configured secrets on demand, so a bad key fails one login, not start-up."""

    def __init__(self, settings: SecretsSettings, environ: Mapping[str, str] = os.environ) -> None:
        self._settings = settings
        self._environ = environ
        self._key: bytes | None = None

    def key(self) -> bytes:
        """The master key, read once it loads (a rotated key needs a restart, as secrets do)."""
        if self._key is None:
            try:
                self._key = load_master_key(self._settings, self._environ)
            except ValueError as exc:
                raise LoginFailed("decrypt_failed", str(exc)) from None
        return self._key

    def available(self) -> bool:
        try:
            self.key()
        except LoginFailed:
            return False
        return True

    def reveal(self, plain: str | None, encrypted: str | None) -> str | None:
        """The plain secret, decrypting `encrypted` if that is what was configured."""
        if encrypted is None:
            return plain
        try:
            return decrypt(encrypted, self.key())
        except ValueError as exc:
            raise LoginFailed("decrypt_failed", f"client secret: {exc}") from None

    def seal(self, value: str, context: str) -> str:
        return encrypt(value, self.key(), context)

    def open(self, value: str, context: str) -> str:
        try:
            return decrypt(value, self.key(), context)
        except ValueError as exc:
            raise LoginFailed("decrypt_failed", str(exc)) from None
