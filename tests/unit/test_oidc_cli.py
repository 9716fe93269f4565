"""`authgate secrets keygen|encrypt` and the decrypt problem in `authgate status`."""

from __future__ import annotations

import io
from pathlib import Path

import pytest

from authgate.cli import main
from authgate.secrets import MASTER_KEY_ENV, decrypt, encrypt, generate_key, parse_key


def encrypt_cli(monkeypatch, capsys, secret: str, *args: str) -> tuple[int, str, str]:
    monkeypatch.setattr("sys.stdin", io.StringIO(secret))
    code = main(["secrets", "encrypt", *args])
    captured = capsys.readouterr()
    return code, captured.out.strip(), captured.err


def test_keygen_prints_a_usable_master_key(capsys):
    assert main(["secrets", "keygen"]) == 0
    assert len(parse_key(capsys.readouterr().out.strip())) == 32


def test_encrypt_reads_stdin_and_uses_the_env_key(monkeypatch, capsys):
    key = generate_key()
    monkeypatch.setenv(MASTER_KEY_ENV, key)
    code, out, _ = encrypt_cli(monkeypatch, capsys, "pa:ss word\n")
    assert code == 0
    assert decrypt(out, parse_key(key)) == "pa:ss word"


def test_encrypt_with_a_key_file(monkeypatch, capsys, tmp_path):
    monkeypatch.delenv(MASTER_KEY_ENV, raising=False)
    key = generate_key()
    path = tmp_path / "master.key"
    path.write_text(key)
    code, out, _ = encrypt_cli(monkeypatch, capsys, "x", "--key-file", str(path))
    assert code == 0 and decrypt(out, parse_key(key)) == "x"


def test_encrypt_without_a_key_or_secret_exits_2(monkeypatch, capsys):
    monkeypatch.delenv(MASTER_KEY_ENV, raising=False)
    code, _, err = encrypt_cli(monkeypatch, capsys, "x")
    assert code == 2 and MASTER_KEY_ENV in err
    monkeypatch.setenv(MASTER_KEY_ENV, generate_key())
    code, _, err = encrypt_cli(monkeypatch, capsys, "\n")
    assert code == 2 and "empty" in err


@pytest.mark.parametrize("command", [["secrets"], ["secrets", "encrypt"], ["test"]])
def test_help(command, capsys):
    with pytest.raises(SystemExit) as exc:
        main([*command, "--help"])
    assert exc.value.code == 0
    assert "usage: authgate" in capsys.readouterr().out


def test_status_shows_a_secret_that_cannot_be_decrypted(
    tmp_path: Path, capsys, monkeypatch, redis_url
):
    sealed = encrypt("x", parse_key(generate_key()))
    monkeypatch.setenv(MASTER_KEY_ENV, generate_key())
    path = tmp_path / "authgate.yaml"
    path.write_text(
        "public_url: https://app.example.com\n"
        "upstream: {url: 'http://127.0.0.1:9'}\n"
        f"session: {{store: redis, redis: {{url: '{redis_url}'}}}}\n"
        "connections:\n"
        "  - {id: corp, name: Corp, type: oidc, issuer: 'https://idp.example.com',\n"
        f"     client_id: a, client_secret_encrypted: '{sealed}'}}\n"
    )
    assert main(["status", "--config", str(path)]) == 0
    out = capsys.readouterr().out
    assert "connection corp (oidc, Corp)" in out
    assert "  problem: client_secret_encrypted: decrypt_failed: client secret:" in out
