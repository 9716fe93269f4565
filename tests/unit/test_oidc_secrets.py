"""Client secrets at rest: AES-256-GCM under the master key, and every way it can fail."""

from __future__ import annotations

import pytest

from authgate.errors import LoginFailed
from authgate.secrets import (
    MASTER_KEY_ENV,
    SecretBox,
    decrypt,
    encrypt,
    generate_key,
    load_master_key,
    parse_key,
)
from authgate.settings import SecretsSettings

KEY = parse_key(generate_key())


def test_round_trip_and_fresh_nonce_each_time():
    first, second = encrypt("s3cret", KEY), encrypt("s3cret", KEY)
    assert first.startswith("v1:") and first != second
    assert decrypt(first, KEY) == decrypt(second, KEY) == "s3cret"
    assert "s3cret" not in first


def test_a_flipped_byte_is_refused():
    token = encrypt("s3cret", KEY)
    body = token[3:]
    flipped = body[:10] + ("A" if body[10] != "A" else "B") + body[11:]
    with pytest.raises(ValueError, match="does not decrypt"):
        decrypt("v1:" + flipped, KEY)


def test_another_key_is_refused():
    with pytest.raises(ValueError, match="does not decrypt"):
        decrypt(encrypt("s3cret", KEY), parse_key(generate_key()))


def test_a_value_sealed_for_another_use_is_refused():
    with pytest.raises(ValueError):
        decrypt(encrypt("token", KEY, "refresh_token"), KEY)


@pytest.mark.parametrize("junk", ["s3cret", "v1:", "v1:***", "v2:abc"])
def test_junk_is_refused(junk):
    with pytest.raises(ValueError):
        decrypt(junk, KEY)


@pytest.mark.parametrize("text", ["", "short", "!!!!", generate_key()[:-4]])
def test_master_keys_must_be_32_bytes(text):
    with pytest.raises(ValueError, match="32 bytes"):
        parse_key(text)


def test_master_key_from_env_wins_over_the_file(tmp_path):
    path = tmp_path / "master.key"
    from_file = generate_key()
    path.write_text(from_file + "\n")
    settings = SecretsSettings(master_key_file=path)
    assert load_master_key(settings, {}) == parse_key(from_file)
    from_env = generate_key()
    assert load_master_key(settings, {MASTER_KEY_ENV: from_env}) == parse_key(from_env)


def test_missing_master_key_is_explained(tmp_path):
    with pytest.raises(ValueError, match=MASTER_KEY_ENV):
        load_master_key(SecretsSettings(), {})
    with pytest.raises(ValueError, match="cannot read master key file"):
        load_master_key(SecretsSettings(master_key_file=tmp_path / "absent"), {})


def test_secret_box_reveals_or_fails_with_decrypt_failed():
    key = generate_key()
    box = SecretBox(SecretsSettings(), {MASTER_KEY_ENV: key})
    assert box.reveal("plain", None) == "plain"
    assert box.reveal(None, encrypt("hidden", parse_key(key))) == "hidden"
    wrong = SecretBox(SecretsSettings(), {MASTER_KEY_ENV: generate_key()})
    with pytest.raises(LoginFailed) as exc:
        wrong.reveal(None, encrypt("hidden", parse_key(key)))
    assert exc.value.reason == "decrypt_failed"
    with pytest.raises(LoginFailed) as exc:
        SecretBox(SecretsSettings(), {}).reveal(None, encrypt("hidden", parse_key(key)))
    assert exc.value.reason == "decrypt_failed"
    assert not SecretBox(SecretsSettings(), {}).available()
