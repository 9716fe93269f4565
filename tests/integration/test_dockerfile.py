"""The Dockerfile, checked without a Docker engine (none runs here).

hadolint lints it for real; the rest reads the instructions and runs what can
run outside a container: the builder stage's `pip wheel` on exactly the build
context `.dockerignore` lets through, the HEALTHCHECK command against a live
authgate, and docs/docker.md's `docker build` and `docker run` read against
the image: the files it mounts exist, the config passes `check-config` with
the environment it passes, and listens where the port is published.
"""

from __future__ import annotations

import asyncio
import ipaddress
import json
import os
import re
import shlex
import shutil
import subprocess
import sys
import zipfile
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from yarl import URL

from authgate.app import create_app
from authgate.cli import build_parser, main
from authgate.session.memory import MemoryStore
from authgate.settings import Settings, load_settings
from tests import markdown
from tests.servers import free_port
from tests.tools import find_tool

ROOT = Path(__file__).resolve().parents[2]
DOCKERFILE = ROOT / "Dockerfile"
DOCKER_PAGE = ROOT / "docs" / "docker.md"
BUILD_TOOLS = ("gcc", "g++", "cc ", "build-essential", "make ", "clang", "-dev ", "-dev\n")


@dataclass
class Stage:
    base: str
    name: str | None
    instructions: list[tuple[str, str]] = field(default_factory=list)

    def all(self, keyword: str) -> list[str]:
        return [args for kw, args in self.instructions if kw == keyword]

    def last(self, keyword: str) -> str:
        found = self.all(keyword)
        assert found, f"no {keyword} in the stage FROM {self.base}"
        return found[-1]


def parse_dockerfile(text: str) -> list[Stage]:
    """Stages with their instructions; continuation lines joined, comments dropped."""
    logical, current = [], ""
    for raw in text.splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        if line.endswith("\\"):
            current += line[:-1].rstrip() + " "
            continue
        logical.append(current + line)
        current = ""
    stages: list[Stage] = []
    for line in logical:
        keyword, _, args = line.partition(" ")
        keyword = keyword.upper()
        if keyword == "FROM":
            parts = args.split()
            name = parts[2] if len(parts) >= 3 and parts[1].upper() == "AS" else None
            stages.append(Stage(parts[0], name))
        else:
            assert stages, f"instruction before FROM: {line}"
            stages[-1].instructions.append((keyword, args.strip()))
    return stages


def _glob_regex(pattern: str) -> re.Pattern[str]:
    """Docker's pattern syntax: `*` stays within one path segment, `**` crosses them."""
    out = ""
    i = 0
    while i < len(pattern):
        if pattern.startswith("**/", i):
            out, i = out + "(?:.*/)?", i + 3
        elif pattern.startswith("**", i):
            out, i = out + ".*", i + 2
        elif pattern[i] == "*":
            out, i = out + "[^/]*", i + 1
        elif pattern[i] == "?":
            out, i = out + "[^/]", i + 1
        else:
            out, i = out + re.escape(pattern[i]), i + 1
    return re.compile(out)


def dockerignore_excludes(patterns: list[str]) -> Callable[[str], bool]:
    """Last matching pattern wins; a pattern matching a parent directory matches the file."""
    rules = []
    for raw in patterns:
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        negate = line.startswith("!")
        rules.append((negate, _glob_regex(line.lstrip("!").strip("/"))))

    def excluded(path: str) -> bool:
        parts = path.split("/")
        prefixes = ["/".join(parts[: n + 1]) for n in range(len(parts))]
        verdict = False
        for negate, regex in rules:
            if any(regex.fullmatch(p) for p in prefixes):
                verdict = not negate
        return verdict

    return excluded


@pytest.fixture(scope="module")
def stages() -> list[Stage]:
    return parse_dockerfile(DOCKERFILE.read_text())


@pytest.fixture(scope="module")
def final(stages: list[Stage]) -> Stage:
    return stages[-1]


def context_files() -> list[str]:
    """What `docker build .` would send: the work tree less what .dockerignore excludes."""
    excluded = dockerignore_excludes((ROOT / ".dockerignore").read_text().splitlines())
    files = []
    for path in ROOT.rglob("*"):
        rel = path.relative_to(ROOT).as_posix()
        if path.is_file() and not rel.startswith((".git/", ".venv/")) and not excluded(rel):
            files.append(rel)
    return sorted(files)


def test_hadolint_finds_nothing() -> None:
    hadolint = find_tool("hadolint")
    result = subprocess.run(
        [hadolint, "--no-color", "--failure-threshold", "style", str(DOCKERFILE)],
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_hadolint_would_catch_a_regression(tmp_path: Path) -> None:
    """The linter is really consulted: a root image without --no-install-recommends fails."""
    hadolint = find_tool("hadolint")
    bad = tmp_path / "Dockerfile"
    bad.write_text("FROM python:3.11-slim\nRUN apt-get update && apt-get install -y gcc\n")
    result = subprocess.run(
        [hadolint, "--no-color", str(bad)], capture_output=True, text=True, check=False
    )
    assert result.returncode != 0
    assert "DL3015" in result.stdout and "DL3009" in result.stdout


def test_multi_stage_with_a_slim_final_image(stages: list[Stage], final: Stage) -> None:
    assert len(stages) >= 2
    builder = stages[0]
    assert builder.name == "builder"
    assert any("pip wheel" in run and "/wheels" in run for run in builder.all("RUN"))
    assert final.base == "python:3.11-slim"
    assert final.name is None


def test_final_image_installs_xmlsec1_and_no_build_tools(final: Stage) -> None:
    runs = "\n".join(final.all("RUN")) + "\n"
    assert re.search(r"apt-get install -y --no-install-recommends [^&]*\bxmlsec1\b", runs)
    assert "rm -rf /var/lib/apt/lists/*" in runs
    for tool in BUILD_TOOLS:
        assert tool not in runs, f"{tool.strip()} must not be installed in the final image"
    assert all("from=builder" in run for run in final.all("RUN") if "/wheels" in run)
    assert not [c for c in final.all("COPY") if "--from=builder" in c and "/wheels" in c]


def test_final_image_runs_as_uid_10001(final: Stage) -> None:
    user = final.last("USER")
    assert user.split(":")[0] == "10001", "a numeric uid lets Kubernetes verify runAsNonRoot"
    runs = "\n".join(final.all("RUN"))
    assert "--uid 10001" in runs
    keywords = [kw for kw, _ in final.instructions]
    assert keywords.index("USER") > max(i for i, kw in enumerate(keywords) if kw == "RUN")


def test_config_and_keys_are_mount_points(final: Stage) -> None:
    runs = "\n".join(final.all("RUN"))
    assert "/etc/authgate/keys" in runs
    command = json.loads(final.last("CMD"))
    assert command == ["run", "--config", "/etc/authgate/authgate.yaml"]
    assert json.loads(final.last("ENTRYPOINT")) == ["authgate"]
    args = build_parser().parse_args(command)
    assert (args.command, args.config) == ("run", "/etc/authgate/authgate.yaml")


def _env(final: Stage) -> dict[str, str]:
    env: dict[str, str] = {}
    for args in final.all("ENV"):
        env.update(re.findall(r"(\w+)=(\S+)", args))
    return env


def test_healthcheck_url_matches_the_default_listen_and_prefix(final: Stage) -> None:
    defaults = Settings.model_fields
    port = defaults["listen"].default.rpartition(":")[2]
    prefix = defaults["prefix"].default
    assert _env(final)["AUTHGATE_HEALTHCHECK_URL"] == f"http://127.0.0.1:{port}{prefix}/healthz"
    assert str(final.last("EXPOSE")).split()[0] == port


async def _run_healthcheck(final: Stage, url: str) -> int:
    check = final.last("HEALTHCHECK")
    assert "curl" not in check and "wget" not in check
    argv = json.loads(check[check.index("CMD") + 3 :])
    assert argv[0] == "python"
    env = {**os.environ, "AUTHGATE_HEALTHCHECK_URL": url}
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        *argv[1:],
        env=env,
        stdout=asyncio.subprocess.DEVNULL,
        stderr=asyncio.subprocess.DEVNULL,
    )
    return await proc.wait()


async def test_healthcheck_command_probes_a_live_authgate(
    final: Stage, aiohttp_server: Callable[..., Any], settings_factory: Callable[..., Settings]
) -> None:
    server = await aiohttp_server(create_app(settings_factory(), MemoryStore()))
    assert await _run_healthcheck(final, str(server.make_url("/_authgate/healthz"))) == 0
    assert await _run_healthcheck(final, str(server.make_url("/_authgate/nope"))) != 0
    assert await _run_healthcheck(final, f"http://127.0.0.1:{free_port()}/_authgate/healthz") != 0


def test_dockerignore_sends_only_what_the_build_needs() -> None:
    files = context_files()
    assert "pyproject.toml" in files and "README.md" in files
    assert "src/authgate/web/templates/admin.html" in files
    assert not [f for f in files if not f.startswith("src/") and "/" in f]
    assert not [f for f in files if "__pycache__" in f or ".egg-info" in f]
    excluded = dockerignore_excludes((ROOT / ".dockerignore").read_text().splitlines())
    for hostile in (".git/config", ".venv/bin/python", "tests/conftest.py", ".env", "helm/x"):
        assert excluded(hostile), hostile


def test_builder_stage_builds_a_wheel_with_templates_and_entry_point(
    stages: list[Stage], tmp_path: Path
) -> None:
    """Runs the builder's `pip wheel` on the build context (needs PyPI for setuptools)."""
    context = tmp_path / "context"
    for rel in context_files():
        (context / rel).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(ROOT / rel, context / rel)
    for copy in stages[0].all("COPY"):
        for source in copy.split()[:-1]:
            assert (context / source).exists(), f"COPY {source}: not in the build context"
    wheels = tmp_path / "wheels"
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "--wheel-dir", str(wheels), "."],
        cwd=context,
        check=True,
    )
    [wheel] = wheels.glob("authgate-*.whl")
    with zipfile.ZipFile(wheel) as archive:
        names = archive.namelist()
        entry_points = next(n for n in names if n.endswith("entry_points.txt"))
        assert "authgate = authgate.cli:main" in archive.read(entry_points).decode()
    for template in ("admin.html", "error.html", "login.html"):
        assert f"authgate/web/templates/{template}" in names


# ---- docs/docker.md: the commands a reader copies ------------------------------------------

RUN_OPTIONS = {"-p": "publish", "--publish": "publish", "-v": "volume", "--volume": "volume"}
RUN_OPTIONS |= {"-e": "env", "--env": "env", "--add-host": "add_host", "--network": "network"}
RUN_FLAGS = {"--rm", "-d", "--detach", "-i", "-t", "-it"}


@dataclass
class DockerRun:
    """A `docker run` command line, as far as these tests need to read one."""

    image: str = ""
    command: list[str] = field(default_factory=list)
    options: dict[str, list[str]] = field(default_factory=dict)

    def all(self, option: str) -> list[str]:
        return self.options.get(option, [])

    @property
    def env(self) -> dict[str, str | None]:
        pairs = (e.partition("=") for e in self.all("env"))
        return {name: value if eq else None for name, eq, value in pairs}

    def mounts(self) -> dict[str, tuple[Path, str]]:
        """Container path -> (host path, mode), with the reader's $PWD as the repository."""
        found = {}
        for volume in self.all("volume"):
            source, target, *mode = volume.split(":")
            found[target] = (Path(source.replace("$PWD", str(ROOT))), "".join(mode))
        return found


def parse_docker_run(words: list[str]) -> DockerRun:
    assert words[:2] == ["docker", "run"]
    run, i = DockerRun(), 2
    while i < len(words) and words[i].startswith("-"):
        name, eq, value = words[i].partition("=")
        i += 1
        if name in RUN_FLAGS:
            continue
        assert name in RUN_OPTIONS, f"docker run {name}: add it to RUN_OPTIONS or RUN_FLAGS"
        if not eq:
            value, i = words[i], i + 1
        run.options.setdefault(RUN_OPTIONS[name], []).append(value)
    run.image, run.command = words[i], words[i + 1 :]
    return run


def docs_docker_commands(verb: str) -> list[list[str]]:
    return [
        words
        for block in markdown.blocks(DOCKER_PAGE)
        if block.lang == "sh"
        for line in markdown.commands(block)
        if (words := shlex.split(line, comments=True))[:2] == ["docker", verb]
    ]


@pytest.fixture(scope="module")
def docs_run() -> DockerRun:
    [words] = docs_docker_commands("run")
    return parse_docker_run(words)


def test_the_docs_build_the_image_their_run_starts(docs_run: DockerRun) -> None:
    [build] = docs_docker_commands("build")
    assert build[build.index("-t") + 1] == docs_run.image
    assert (ROOT / build[-1] / "Dockerfile").resolve() == DOCKERFILE
    assert docs_run.command == [], "the run leaves the image's own CMD in place"


def test_the_docs_run_mounts_existing_files_where_the_image_reads_them(
    docs_run: DockerRun, final: Stage
) -> None:
    mounts = docs_run.mounts()
    config = json.loads(final.last("CMD"))[2]
    assert config in mounts, f"the image reads {config}: mount the config there"
    for target, (source, mode) in mounts.items():
        assert source.is_file() or source.is_dir(), f"{source} does not exist"
        assert target.startswith("/etc/authgate/") and mode == "ro"


def listen_problems(settings: Settings, run: DockerRun, final: Stage) -> list[str]:
    """Why the published port, the probe or the application would be unreachable."""
    problems = []
    exposed = final.last("EXPOSE").split()
    published = {p.rpartition(":")[2] for p in run.all("publish")}
    host, _, port = settings.listen.rpartition(":")
    if ipaddress.ip_address(host.strip("[]")).is_loopback:
        problems.append(f"listen {settings.listen}: -p cannot reach a loopback address")
    if port not in published or port not in exposed:
        problems.append(f"listen port {port}: published {sorted(published)}, exposed {exposed}")
    if (
        _env(final)["AUTHGATE_HEALTHCHECK_URL"]
        != f"http://127.0.0.1:{port}{settings.prefix}/healthz"
    ):
        problems.append("the HEALTHCHECK probes another port or prefix")
    metrics_host, _, metrics_port = settings.metrics.listen.rpartition(":")
    if settings.metrics.enabled and (metrics_port not in exposed or metrics_host != host):
        problems.append(f"metrics.listen {settings.metrics.listen}: not an exposed port on {host}")
    upstream = URL(settings.upstream.url).host or ""
    if upstream in ("localhost", "127.0.0.1", "::1"):
        problems.append(f"upstream {settings.upstream.url}: the container itself")
    if upstream == "host.docker.internal" and not any(
        h == "host.docker.internal:host-gateway" for h in run.all("add_host")
    ):
        problems.append("host.docker.internal needs --add-host=host.docker.internal:host-gateway")
    return problems


def _with_the_runs_environment(run: DockerRun, monkeypatch: pytest.MonkeyPatch) -> None:
    """Values the command sets are set; `-e NAME` passes the reader's, here none."""
    for name, value in run.env.items():
        if value is None:
            monkeypatch.delenv(name, raising=False)
        else:
            monkeypatch.setenv(name, value)


def test_the_docs_run_config_passes_check_config_and_listens_where_published(
    docs_run: DockerRun,
    final: Stage,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    config, _ = docs_run.mounts()[json.loads(final.last("CMD"))[2]]
    _with_the_runs_environment(docs_run, monkeypatch)
    assert main(["check-config", str(config)]) == 0, capsys.readouterr().err
    settings = load_settings(config)
    assert settings.upstream.url == docs_run.env["UPSTREAM_URL"]
    assert listen_problems(settings, docs_run, final) == []


def test_the_loopback_example_config_would_be_caught(
    docs_run: DockerRun, final: Stage, monkeypatch: pytest.MonkeyPatch
) -> None:
    """What the old README mounted: listening on 127.0.0.1, the app on the container's own."""
    monkeypatch.delenv("UPSTREAM_URL", raising=False)
    settings = load_settings(ROOT / "conf" / "authgate.example.yaml")
    problems = listen_problems(settings, docs_run, final)
    assert "listen 127.0.0.1:4180: -p cannot reach a loopback address" in problems
    assert "upstream http://127.0.0.1:8080: the container itself" in problems
