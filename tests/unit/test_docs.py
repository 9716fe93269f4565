"""The README and docs/, read the way a reader copies them: links, configs and commands.

- every relative link reaches a file, and a heading of it for `#anchor`;
- every `yaml` block is an authgate config (or the part of one it shows) that
  passes `authgate check-config`, with the files it names under /etc/authgate made;
- every `nginx` block is a shipped site verbatim, every `csv` block imports cleanly;
- every command is one this test knows how to check: each `authgate` command is
  parsed by the real CLI against the config it names, and those that need no
  network (a Redis at most) are run, page by page, in the order a reader would;
- the README stays short: the pages hold the detail.

`docker` commands are checked in tests/integration/test_dockerfile.py. A block
the tests must leave alone says why right above its fence: `<!-- not-run: reason -->`.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import re
import shlex
import shutil
import tomllib
import xml.etree.ElementTree as ET
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import yaml

from authgate.cli import build_parser, main
from authgate.csv_import import ImportReport, parse
from authgate.keys import write_pair
from authgate.settings import Settings, load_settings
from authgate.web.pages import HINTS
from tests import markdown

ROOT = Path(__file__).resolve().parents[2]
README = ROOT / "README.md"
PAGES = sorted((ROOT / "docs").glob("*.md"))
DOCS = [README, *PAGES]
CHART_README = ROOT / "helm" / "authgate" / "README.md"
DOCKER_PAGE = ROOT / "docs" / "docker.md"
README_MAX_LINES = 150
LANGUAGES = {"yaml", "sh", "console", "text", "nginx", "csv"}
SHIPPED_SITES = sorted((ROOT / "conf" / "nginx").glob("*.conf"))
EXAMPLE_METADATA = ROOT / "conf" / "saml" / "google-idp-metadata.example.xml"
# A config names its mounted files under here; the tests make stand-ins in a temporary folder.
MOUNTS = "/etc/authgate/"
# `${NAME}` with no default: start-up needs it, so the config tests give it a value.
REQUIRED_ENV = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)\}")
REPO_PATH = re.compile(r"^(?:conf|docs|src|tests|helm|bench|\.ci)/\S*$")
DOC_REFERENCE = re.compile(r"(?<![\w/.-])(?:\.\./)*(docs/[\w.-]+\.md)(?:#([\w-]+))?")
# What a base config adds to a block that shows only a part of the file.
BASE_CONFIG = {
    "public_url": "https://app.example.com",
    "upstream": {"url": "http://127.0.0.1:8080"},
}


def rel(path: Path) -> str:
    return str(path.relative_to(ROOT))


def doc_blocks(*languages: str) -> list[markdown.Block]:
    return [
        block
        for doc in DOCS
        for block in markdown.blocks(doc)
        if block.lang in languages and block.not_run is None
    ]


def where(block: markdown.Block) -> str:
    return f"{rel(block.path)}:{block.line}"


# ---- the reader itself --------------------------------------------------------------------


def test_anchors_are_githubs_and_fenced_lines_are_no_headings(tmp_path: Path) -> None:
    page = tmp_path / "page.md"
    page.write_text(
        "# Okta\n## SAML 2.0\n## Standalone (`auth-url` / `auth-signin`)\n## Okta\n"
        "```sh\n# not a heading\n```\n[x](#saml-20)\n`[y](nowhere.md)`\n"
    )
    assert markdown.anchors(page) == {
        "okta",
        "saml-20",
        "standalone-auth-url--auth-signin",
        "okta-1",
    }
    assert markdown.links(page) == ["#saml-20"]


def test_a_not_run_comment_marks_the_block_below_it(tmp_path: Path) -> None:
    page = tmp_path / "page.md"
    page.write_text(
        "<!-- not-run: needs a real tenant -->\n```sh\nauthgate x\n```\n\n```sh\ny\n```\n"
    )
    assert [b.not_run for b in markdown.blocks(page)] == ["needs a real tenant", None]


# ---- links and names -----------------------------------------------------------------------


@pytest.mark.parametrize("doc", [*DOCS, CHART_README], ids=rel)
def test_every_relative_link_reaches_a_file_and_its_heading(doc: Path) -> None:
    broken = []
    for target in markdown.links(doc):
        if re.match(r"[a-z][a-z0-9+.-]*:", target):
            continue
        path, _, anchor = target.partition("#")
        dest = (doc.parent / path).resolve() if path else doc
        if not dest.exists() or not dest.is_relative_to(ROOT):
            broken.append(f"{target}: no such file in the repository")
        elif anchor and (dest.suffix != ".md" or anchor not in markdown.anchors(dest)):
            broken.append(f"{target}: {rel(dest)} has no heading #{anchor}")
    assert broken == []


def test_every_page_is_linked_from_the_readme() -> None:
    linked = {(README.parent / t.partition("#")[0]).resolve() for t in markdown.links(README)}
    assert [rel(p) for p in PAGES if p not in linked] == []


def test_the_readme_stays_short() -> None:
    lines = README.read_text().count("\n")
    assert lines < README_MAX_LINES, f"README.md has {lines} lines: move the detail to docs/"


@pytest.mark.parametrize("doc", DOCS, ids=rel)
def test_repository_paths_named_in_the_prose_exist(doc: Path) -> None:
    named = [s.split("::")[0] for s in markdown.inline_code(doc) if REPO_PATH.match(s)]
    assert [p for p in named if not any(ROOT.glob(p.rstrip("/")))] == []


TEXT_SUFFIXES = {"", ".yaml", ".conf", ".md", ".py", ".tpl", ".txt"}


def _texts_pointing_at_the_docs() -> Iterator[Path]:
    """Where an operator meets a `docs/...` reference outside the docs: configs, chart, code."""
    for folder in ("conf", "helm", "src", ".ci"):
        for path in (ROOT / folder).rglob("*"):
            if path.is_file() and path.suffix in TEXT_SUFFIXES:
                yield path
    yield ROOT / "Dockerfile"


def test_the_code_and_configs_point_at_pages_and_headings_that_exist() -> None:
    broken = []
    for path in _texts_pointing_at_the_docs():
        for page, anchor in DOC_REFERENCE.findall(path.read_text(errors="replace")):
            target = ROOT / page
            if not target.is_file():
                broken.append(f"{rel(path)}: {page} does not exist")
            elif anchor and anchor not in markdown.anchors(target):
                broken.append(f"{rel(path)}: {page} has no heading #{anchor}")
    assert broken == []


def test_the_pages_the_example_configs_promised_exist() -> None:
    pointed = {
        page
        for path in (ROOT / "conf").glob("*.yaml")
        for page, _ in DOC_REFERENCE.findall(path.read_text())
    }
    assert {"docs/saml.md", "docs/provisioning.md"} <= pointed
    assert {p for p in pointed if not (ROOT / p).is_file()} == set()


@pytest.mark.parametrize("doc", DOCS, ids=rel)
def test_every_block_says_what_it_is(doc: Path) -> None:
    unnamed = [
        f"{b.where} ({b.lang or 'no language'})"
        for b in markdown.blocks(doc)
        if b.lang not in LANGUAGES
    ]
    assert unnamed == [], f"give each block one of {sorted(LANGUAGES)}"


# ---- configs, sites, CSV files -------------------------------------------------------------


class StandIns:
    """The files a config names under /etc/authgate/, made in a folder of the test's own."""

    def __init__(self, root: Path) -> None:
        self.root = root

    def redirect(self, text: str) -> str:
        return text.replace(MOUNTS, f"{self.root}/")

    def place(self, text: str) -> str:
        """`text` with its mounted files made, and pointing at them."""
        for name in re.findall(re.escape(MOUNTS) + r"[\w./-]+", text):
            self._make(self.root / name.removeprefix(MOUNTS))
        return self.redirect(text)

    def _make(self, target: Path) -> None:
        if target.exists():
            return
        target.parent.mkdir(parents=True, exist_ok=True)
        if target.suffix in (".key", ".crt"):
            write_pair(
                target.with_suffix(".key"), target.with_suffix(".crt"), "docs.example", 30, 2048
            )
        elif target.name.endswith("metadata.xml"):
            shutil.copyfile(EXAMPLE_METADATA, target)
        else:
            pytest.fail(
                f"{MOUNTS}{target.relative_to(self.root)}: no stand-in; add one to StandIns"
            )


@pytest.fixture
def stand_ins(tmp_path: Path) -> StandIns:
    return StandIns(tmp_path / "etc-authgate")


def complete_config(text: str) -> str:
    """A block that shows part of the file, completed by the keys every config needs."""
    data = yaml.safe_load(text)
    assert isinstance(data, dict), "a yaml block must be an authgate config (a mapping)"
    unknown = set(data) - set(Settings.model_fields)
    assert not unknown, f"not authgate config keys: {sorted(unknown)}"
    missing = {key: value for key, value in BASE_CONFIG.items() if key not in data}
    return text + (yaml.safe_dump(missing, sort_keys=False) if missing else "")


def write_config(
    text: str, stand_ins: StandIns, folder: Path, monkeypatch: pytest.MonkeyPatch
) -> Path:
    """The block as a reader would save it: completed, its files made, its variables set."""
    text = stand_ins.place(complete_config(text))
    for name in REQUIRED_ENV.findall(text):
        monkeypatch.setenv(name, f"{name.lower()}-from-the-environment-0123456789abcdef")
    path = folder / "authgate.yaml"
    path.write_text(text)
    return path


@pytest.mark.parametrize("block", doc_blocks("yaml"), ids=where)
def test_every_yaml_block_passes_check_config(
    block: markdown.Block,
    stand_ins: StandIns,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    path = write_config(block.text, stand_ins, tmp_path, monkeypatch)
    assert main(["check-config", str(path)]) == 0, capsys.readouterr().err


def test_a_broken_yaml_block_would_be_refused(
    stand_ins: StandIns,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """The check is real: the same block with a misspelt key fails."""
    [block] = [b for b in doc_blocks("yaml") if "directory_sync:" in b.text]
    broken = block.text.replace("interval:", "intervall:")
    path = write_config(broken, stand_ins, tmp_path, monkeypatch)
    assert main(["check-config", str(path)]) == 2
    assert "directory_sync[0].intervall: unknown key" in capsys.readouterr().err


@pytest.mark.parametrize("block", doc_blocks("nginx"), ids=where)
def test_every_nginx_block_is_a_shipped_site(block: markdown.Block) -> None:
    shipped = {rel(p): p.read_text() for p in SHIPPED_SITES}
    assert block.text in shipped.values(), f"copy one of {sorted(shipped)} verbatim"


@pytest.mark.parametrize("block", doc_blocks("csv"), ids=where)
def test_every_csv_block_imports_without_a_failed_row(block: markdown.Block) -> None:
    report = ImportReport()
    rows = parse(block.text.encode(), report)
    assert report.failed == [] and report.warnings == []
    assert len(rows) == report.rows > 0


# ---- commands ------------------------------------------------------------------------------

OPERATORS = {"&&", "||", "|", ";"}
ASSIGNMENT = re.compile(r"[A-Za-z_][A-Za-z0-9_]*=.*")


@dataclass(frozen=True)
class Command:
    """One simple command of a shell line: its environment, words and stdout redirect."""

    block: markdown.Block
    env: dict[str, str]
    words: list[str]
    stdout_to: str | None
    output: tuple[str, ...] = ()

    @property
    def program(self) -> str:
        return self.words[0]

    @property
    def is_authgate(self) -> bool:
        return self.program in ("authgate", ".venv/bin/authgate")


def _split(line: str) -> list[list[str]]:
    lexer = shlex.shlex(line, posix=True, punctuation_chars=True)
    lexer.whitespace_split = True
    parts: list[list[str]] = [[]]
    for word in lexer:
        if word in OPERATORS:
            parts.append([])
        else:
            parts[-1].append(word)
    return [p for p in parts if p]


def _console_outputs(block: markdown.Block) -> dict[str, tuple[str, ...]]:
    """What a console block shows each `$ ` line printing."""
    outputs: dict[str, list[str]] = {}
    current: list[str] | None = None
    for line in block.text.splitlines():
        if line.startswith("$ "):
            current = outputs.setdefault(line[2:].strip(), [])
        elif current is not None:
            current.append(line)
    return {k: tuple(v) for k, v in outputs.items()}


def commands(block: markdown.Block) -> list[Command]:
    outputs = _console_outputs(block) if block.lang == "console" else {}
    found = []
    for line in markdown.commands(block):
        for words in _split(line):
            env = {}
            while ASSIGNMENT.fullmatch(words[0]):
                name, _, value = words.pop(0).partition("=")
                env[name] = value
            stdout_to = None
            if ">" in words:
                at = words.index(">")
                stdout_to, words = words[at + 1], words[:at] + words[at + 2 :]
            found.append(Command(block, env, words, stdout_to, outputs.get(line.strip(), ())))
    return found


def page_commands(doc: Path) -> list[Command]:
    return [
        c
        for b in markdown.blocks(doc)
        if b.lang in ("sh", "console") and b.not_run is None
        for c in commands(b)
    ]


ALL_COMMANDS = [c for doc in DOCS for c in page_commands(doc)]


def command_id(command: Command) -> str:
    return f"{where(command.block)}:{' '.join(command.words[:4])}"


def parse_cli(argv: list[str]) -> argparse.Namespace:
    stderr = io.StringIO()
    try:
        with contextlib.redirect_stderr(stderr):
            return build_parser().parse_args(argv)
    except SystemExit:
        pytest.fail(f"authgate {' '.join(argv)}: the CLI refuses it: {stderr.getvalue().strip()}")


def _config_of(args: argparse.Namespace) -> Path | None:
    name = (
        getattr(args, "file", None)
        if args.command == "check-config"
        else getattr(args, "config", None)
    )
    if name is None or name.startswith(MOUNTS):
        return None
    return ROOT / name


def check_authgate(command: Command) -> None:
    """The CLI accepts it, and the config, connection and files it names exist."""
    args = parse_cli(command.words[1:])
    config = _config_of(args)
    if config is None:
        return
    assert config.is_file(), f"{rel(config)} does not exist"
    settings = load_settings(config)
    enabled = {c.id for c in settings.connections if c.enabled}
    named = getattr(args, "connection", None)
    assert named is None or named in {c.id for c in settings.connections}, (
        f"{named}: not in {rel(config)}"
    )
    if args.command == "connections":
        assert args.force or args.id not in enabled, f"{args.id} is enabled: retire refuses it"
    if command.words[1:3] == ["users", "import"]:
        csv_blocks = [b for b in markdown.blocks(command.block.path) if b.lang == "csv"]
        assert csv_blocks, "an import names a CSV file: show its columns in a csv block on the page"


def _extras() -> set[str]:
    return set(
        tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["optional-dependencies"]
    )


def check_other(command: Command) -> None:
    program, args = command.program, command.words[1:]
    if program == "python3.11":
        assert args == ["-m", "venv", ".venv"]
    elif program == ".venv/bin/pip":
        options = [a for a in args if a.startswith("-")]
        assert args[0] == "install" and set(options) <= {"-q", "-e"}
        [spec] = [a for a in args[1:] if not a.startswith("-")]
        match = re.fullmatch(r"\.(?:\[([\w,]+)\])?", spec)
        assert match, spec
        assert set(filter(None, (match.group(1) or "").split(","))) <= _extras()
    elif program in (".venv/bin/pytest", ".venv/bin/ruff"):
        if program == ".venv/bin/ruff":
            assert args[0] in ("check", "format")
            args = args[1:]
        paths = [a.split("::")[0] for a in args if not a.startswith("-")]
        assert all((ROOT / p).exists() for p in paths), paths
    elif program == "bash":
        assert (ROOT / args[0]).is_file(), args[0]
    elif program == "mkdir":
        assert args[0] == "-p" and all(a.startswith(MOUNTS) for a in args[1:]), args
    elif program == "printf":
        assert command.block.lang in ("sh", "console")
    elif program == "docker":
        assert command.block.path == DOCKER_PAGE, "docker commands belong on docs/docker.md"
    elif "/" in program:
        script = ROOT / program
        assert script.is_file() and script.stat().st_mode & 0o111, f"{program}: not an executable"
    else:
        pytest.fail(f"{program}: no check for this program; add one to tests/unit/test_docs.py")


@pytest.mark.parametrize("command", ALL_COMMANDS, ids=command_id)
def test_every_command_is_one_that_works_as_shown(command: Command) -> None:
    if command.is_authgate:
        check_authgate(command)
    else:
        check_other(command)


PLACEHOLDER = re.compile(r"<[^>]*>|\b[A-Z][A-Z_]+\b")


@pytest.mark.parametrize("doc", DOCS, ids=rel)
def test_authgate_commands_named_in_the_prose_exist(doc: Path) -> None:
    """`authgate test <id> --config FILE`: the command and its options are the CLI's own."""
    for span in markdown.inline_code(doc):
        if not span.startswith(("authgate ", ".venv/bin/authgate ")):
            continue
        argv = shlex.split(PLACEHOLDER.sub("x", span.replace("[", "").replace("]", "")))[1:]
        stderr = io.StringIO()
        try:
            with contextlib.redirect_stderr(stderr):
                build_parser().parse_args(argv)
        except SystemExit:
            assert "the following arguments are required" in stderr.getvalue(), (
                f"{span}: {stderr.getvalue()}"
            )


# Commands that need nothing but the files they name and, at most, a Redis: run for real.
def runs_offline(command: Command) -> bool:
    if command.program == "mkdir":
        return True
    words = command.words[1:]
    if not command.is_authgate or command.env:
        return False
    return words[0] in (
        "check-config",
        "metadata",
        "status",
        "scim",
        "users",
        "connections",
    ) or words[:2] in (["keys", "generate"], ["secrets", "keygen"])


RUN_PAGES = [doc for doc in DOCS if any(runs_offline(c) for c in page_commands(doc))]


def test_the_offline_commands_of_the_provisioning_page_are_run() -> None:
    """A guard on runs_offline: the SCIM and CSV commands are among the ones run."""
    run = [
        c.words[1:3] for c in page_commands(ROOT / "docs" / "provisioning.md") if runs_offline(c)
    ]
    assert (
        ["scim", "token"] in run and ["users", "import"] in run and ["connections", "retire"] in run
    )


def reader_argv(command: Command, stand_ins: StandIns, folder: Path) -> list[str]:
    """The words as on the reader's machine: mounted files in the stand-in folder, and the
    CSV file saved from the page's csv block."""
    argv = [stand_ins.redirect(w) for w in command.words[1:]]
    if argv[:2] == ["users", "import"]:
        [csv_block] = [b for b in markdown.blocks(command.block.path) if b.lang == "csv"]
        saved = folder / argv[-1]
        saved.write_text(csv_block.text)
        argv[-1] = str(saved)
    return argv


def check_what_it_printed(command: Command, argv: list[str], out: str, folder: Path) -> None:
    printed = [line for line in out.splitlines() if not line.startswith('{"time"')]
    if command.output and "..." not in command.output[0]:
        assert printed[:1] == [command.output[0]], f"{command_id(command)} printed {printed}"
    if command.stdout_to:
        saved = folder / command.stdout_to
        saved.write_text(out)
        if argv[0] == "metadata":
            assert ET.parse(saved).getroot().tag.endswith("EntityDescriptor")
    if argv[:2] == ["keys", "generate"]:
        assert Path(argv[argv.index("--key-out") + 1]).is_file()


@pytest.mark.parametrize("doc", RUN_PAGES, ids=rel)
def test_the_commands_of_the_page_run_in_order(
    doc: Path,
    redis_url: str,
    stand_ins: StandIns,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    monkeypatch.chdir(ROOT)
    monkeypatch.setenv("REDIS_URL", redis_url)
    for command in filter(runs_offline, page_commands(doc)):
        argv = reader_argv(command, stand_ins, tmp_path)
        if command.program == "mkdir":
            for folder in argv[1:]:
                Path(folder).mkdir(parents=True, exist_ok=True)
            continue
        code = main(argv)
        out, err = capsys.readouterr()
        assert code == 0, f"{command_id(command)}: exit {code}: {err}"
        check_what_it_printed(command, argv, out, tmp_path)


def test_the_oidc_failure_table_names_every_reason_the_oidc_code_gives() -> None:
    """docs/oidc.md "When a login fails" and the error pages cover each OIDC refusal.

    `signature_invalid` is SAML's: an ID token whose signature does not verify is
    `id_token_invalid` (detail `signature: ...`), so neither the code nor the table has it.
    """
    raising = re.compile(r"(?:ProtocolError|LoginFailed|LoginStateError)\(\s*\"([a-z_]+)\"")
    sources = (ROOT / "src" / "authgate" / "protocols").glob("oidc*.py")
    raised = {m for path in sources for m in raising.findall(path.read_text())}
    page = (ROOT / "docs" / "oidc.md").read_text().split("## When a login fails", 1)[1]
    first_cells = re.findall(r"^\|([^|]+)\|", page, re.M)
    table = {code for cell in first_cells for code in re.findall(r"`([a-z_]+)`", cell)}
    assert "id_token_invalid" in raised
    assert raised <= table, sorted(raised - table)
    assert raised <= HINTS.keys(), sorted(raised - HINTS.keys())
    assert "signature_invalid" not in raised | table
