"""The command line: clear sentences and exit codes, never a traceback."""

from __future__ import annotations

import asyncio
import subprocess
import sys
from pathlib import Path

import pytest

from authgate.cli import main
from authgate.session.redis import RedisStore, connect
from authgate.settings import RedisSettings
from authgate.status import ConnectionStatus
from tests.servers import free_port

GOOD = """
public_url: https://app.example.com
upstream:
  url: http://127.0.0.1:8080
connections:
  - id: corp
    name: Corp
    type: oidc
    issuer: https://idp.example.com
    client_id: authgate
"""


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "authgate.yaml"
    path.write_text(text)
    return path


def test_check_config_ok(tmp_path, capsys):
    path = write(tmp_path, GOOD)
    assert main(["check-config", str(path)]) == 0
    assert capsys.readouterr().out == f"{path}: OK (1 connection(s), store memory)\n"


def test_check_config_reports_every_problem_and_exits_2(tmp_path, capsys):
    path = write(tmp_path, GOOD.replace("client_id", "clientid") + "sesion: {}\n")
    assert main(["check-config", str(path)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("configuration error:\n")
    assert f"{path}: connections[0].client_id: required key is missing" in err
    assert f"{path}: connections[0].clientid: unknown key" in err
    assert f"{path}: sesion: unknown key" in err


def test_console_script_never_prints_a_traceback(tmp_path):
    path = write(tmp_path, "public_url: [\n")
    result = subprocess.run(
        [sys.executable, "-m", "authgate", "check-config", str(path)],
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 2
    assert "invalid YAML at line" in result.stderr
    assert "Traceback" not in result.stderr + result.stdout


def test_run_refuses_an_invalid_config(tmp_path, capsys):
    path = write(tmp_path, GOOD.replace("https://app.example.com", "not-a-url"))
    assert main(["run", "--config", str(path)]) == 2
    assert "public_url: expected an absolute http:// or https:// URL" in capsys.readouterr().err


@pytest.mark.parametrize(
    ("url", "problem"),
    [
        ("redis://127.0.0.1:notaport/0", "the port is not a number from 1 to 65535"),
        ("redis://127.0.0.1:99999", "the port is not a number from 1 to 65535"),
        ("redis://127.0.0.1:0", "the port is not a number from 1 to 65535"),
        ("redis://:6379/0", "the host is missing"),
        ("rediss://redis.internal:6380/cache", "the database after the host must be a number"),
        ("unix://", "a unix:// url needs the socket path"),
        ("http://127.0.0.1:6379", "url must start with redis://, rediss:// or unix://"),
    ],
)
@pytest.mark.parametrize("command", [["check-config"], ["run", "--config"]])
def test_a_redis_url_redis_py_cannot_use_is_a_config_error(tmp_path, url, problem, command):
    """Before, `check-config` passed these and `run` died with a traceback at the first connect."""
    path = write(tmp_path, GOOD + f"session:\n  store: redis\n  redis:\n    url: '{url}'\n")
    result = subprocess.run(
        [sys.executable, "-m", "authgate", *command, str(path)],
        capture_output=True,
        text=True,
        check=False,
        timeout=60,
    )
    assert result.returncode == 2
    assert f"{path}: session.redis.url: {problem}" in result.stderr
    assert "Traceback" not in result.stderr + result.stdout


@pytest.mark.parametrize("command", ["run", "check-config", "status"])
def test_every_command_has_help(command, capsys):
    with pytest.raises(SystemExit) as exc:
        main([command, "--help"])
    assert exc.value.code == 0
    assert "usage: authgate" in capsys.readouterr().out


def test_status_shows_last_failure(tmp_path, capsys, redis_url):
    path = write(tmp_path, GOOD + f"session:\n  store: redis\n  redis:\n    url: {redis_url}\n")

    async def fail() -> None:
        kv = RedisStore(connect(RedisSettings(url=redis_url)))
        await ConnectionStatus(kv).failure("corp", "signature_invalid", "abc123")
        await kv.close()

    asyncio.run(fail())
    assert main(["status", "--config", str(path)]) == 0
    out = capsys.readouterr().out
    assert "store: redis reachable" in out
    assert (
        "connection corp (oidc, Corp): last success never; last failure signature_invalid at" in out
    )
    assert "(correlation id abc123)" in out


def test_status_with_unreachable_store_exits_3(tmp_path, capsys):
    url = f"redis://127.0.0.1:{free_port()}/0"
    path = write(tmp_path, GOOD + f"session:\n  store: redis\n  redis:\n    url: {url}\n")
    assert main(["status", "--config", str(path)]) == 3
    assert "the session store is unreachable" in capsys.readouterr().err
