"""The command line: clear sentences and exit codes, never a traceback."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import threading
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
        await ConnectionStatus(kv).failure("corp", "id_token_invalid", "abc123")
        await kv.close()

    asyncio.run(fail())
    assert main(["status", "--config", str(path)]) == 0
    out = capsys.readouterr().out
    assert "store: redis reachable" in out
    assert (
        "connection corp (oidc, Corp): last success never; last failure id_token_invalid at" in out
    )
    assert "(correlation id abc123)" in out


def test_status_with_unreachable_store_exits_3(tmp_path, capsys):
    url = f"redis://127.0.0.1:{free_port()}/0"
    path = write(tmp_path, GOOD + f"session:\n  store: redis\n  redis:\n    url: {url}\n")
    assert main(["status", "--config", str(path)]) == 3
    assert "the session store is unreachable" in capsys.readouterr().err


ROOT = Path(__file__).resolve().parents[2]
EXAMPLE = "conf/authgate.example.yaml"


def example_env(**values: str) -> dict[str, str]:
    """The environment of a new user: none of the example's variables, except `values`."""
    names = ("PUBLIC_URL", "UPSTREAM_URL", "OIDC_ISSUER", "OIDC_CLIENT_ID", "OIDC_CLIENT_SECRET")
    return {**{k: v for k, v in os.environ.items() if k not in names}, **values}


def authgate(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "authgate", *args],
        capture_output=True,
        text=True,
        check=False,
        timeout=60,
        cwd=ROOT,
        env=env,
    )


def test_run_refuses_the_example_as_it_comes():
    result = authgate("run", "--config", EXAMPLE, env=example_env())
    assert result.returncode == 2
    assert result.stderr == (
        "configuration error:\n"
        f"  {EXAMPLE}: connections[0].client_secret: is the placeholder 'change-me',"
        " not a secret: set OIDC_CLIENT_SECRET to the real secret\n"
    )


def test_check_config_passes_the_example_and_prints_its_placeholders():
    result = authgate("check-config", EXAMPLE, env=example_env())
    assert result.returncode == 0
    assert result.stdout == f"{EXAMPLE}: OK (1 connection(s), store memory)\n"
    assert result.stderr == (
        f"warning: {EXAMPLE}: connections[0].issuer: uses the example value idp.example.com:"
        " set OIDC_ISSUER\n"
        f"warning: {EXAMPLE}: connections[0].client_secret: is the placeholder 'change-me',"
        " not a secret: set OIDC_CLIENT_SECRET (authgate run refuses it)\n"
    )


def test_check_config_with_real_values_says_nothing_more():
    env = example_env(
        OIDC_ISSUER="https://login.acme.test", OIDC_CLIENT_SECRET="e3b0c44298fc1c149afbf4c8"
    )
    result = authgate("check-config", EXAMPLE, env=env)
    assert (result.returncode, result.stderr) == (0, "")


def test_run_starts_with_a_real_secret_and_warns_of_the_example_issuer(tmp_path):
    """The warning is logged before authgate listens; the process is stopped once it does."""
    path = write(
        tmp_path,
        f"listen: 127.0.0.1:{free_port()}\n"
        "public_url: http://localhost:4180\n"
        "upstream: {url: 'http://127.0.0.1:8080'}\n"
        f"metrics: {{listen: '127.0.0.1:{free_port()}'}}\n"
        "connections:\n"
        "  - {id: corp, name: Corp, type: oidc, issuer: '${OIDC_ISSUER:-https://idp.example.com}',"
        " client_id: authgate, client_secret: '${OIDC_CLIENT_SECRET:-change-me}'}\n",
    )
    env = example_env(OIDC_CLIENT_SECRET="e3b0c44298fc1c149afbf4c8")
    proc = subprocess.Popen(
        [sys.executable, "-m", "authgate", "run", "--config", str(path)],
        stderr=subprocess.PIPE,
        text=True,
        env=env,
    )
    lines: list[str] = []
    guard = threading.Timer(60, proc.kill)
    guard.start()
    try:
        assert proc.stderr is not None
        for line in proc.stderr:
            lines.append(line)
            if "listening on" in line:
                break
    finally:
        guard.cancel()
        proc.terminate()
        proc.wait(timeout=20)
    warnings = [line for line in lines if " WARNING authgate[" in line and str(path) in line]
    assert len(warnings) == 1, lines
    assert warnings[0].endswith(
        f": {path}: connections[0].issuer: uses the example value idp.example.com:"
        " set OIDC_ISSUER\n"
    )
    assert "listening on" in lines[-1]


@pytest.mark.parametrize("command", [["check-config"], ["status"], ["run"]])
def test_without_config_the_error_says_how_to_give_one(command):
    env = {k: v for k, v in os.environ.items() if k != "AUTHGATE_CONFIG"}
    result = authgate(*command, env=env)
    assert result.returncode == 2
    assert "Traceback" not in result.stderr
    assert (
        "/etc/authgate/authgate.yaml: no such config file: pass --config FILE or set"
        " AUTHGATE_CONFIG (examples to start from are in conf/)"
    ) in result.stderr


def test_authgate_config_names_the_default_file():
    result = authgate("check-config", env={**os.environ, "AUTHGATE_CONFIG": str(EXAMPLE)})
    assert result.returncode == 0
    assert result.stdout.startswith(f"{EXAMPLE}: OK")
