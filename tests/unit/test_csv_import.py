"""CSV import: file-level problems change nothing; row-level problems fail only their row."""

from __future__ import annotations

import codecs
import json
from pathlib import Path

import pytest

from authgate.audit import AuditLog
from authgate.cli import main
from authgate.csv_import import CsvFileError, import_users
from authgate.identity import Identity
from authgate.session.memory import MemoryStore
from authgate.users import UserStore


@pytest.fixture
def users() -> UserStore:
    return UserStore(MemoryStore())


@pytest.fixture
def audit_path(tmp_path: Path) -> Path:
    return tmp_path / "audit.jsonl"


async def run(users: UserStore, audit_path: Path, text: str | bytes, connection: str = "corp"):
    data = text.encode() if isinstance(text, str) else text
    return await import_users(data, connection, users, AuditLog(str(audit_path)))


def audit_events(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []


async def test_good_file_adds_every_user_with_an_audit_entry(users, audit_path):
    report = await run(
        users,
        audit_path,
        "ExternalId,Email,DisplayName,Roles\n"
        "s-1,alice@example.com,Alice,editor;reviewer\n"
        'S-2,bob@example.com,"Bob, Jr.",\n'
        "s-3,,,\n",
    )
    assert report.summary() == "3 row(s): 3 added, 0 skipped (already present), 0 failed"
    alice = await users.by_link("corp", "s-1")
    assert alice.email == "alice@example.com" and alice.roles == ("editor", "reviewer")
    assert alice.source == "csv" and not alice.linked
    assert (await users.by_link("corp", "S-2")).display_name == "Bob, Jr."
    assert (await users.by_link("corp", "s-3")).email is None
    provisioned = [e for e in audit_events(audit_path) if e["event"] == "user.provisioned"]
    assert [(e["line"], e["subject"], e["via"]) for e in provisioned] == [
        (2, "s-1", "csv"),
        (3, "S-2", "csv"),
        (4, "s-3", "csv"),
    ]
    linked = await users.admit(
        Identity(connection="corp", subject="s-1", email="alice@example.com"), "preprovisioned"
    )
    assert linked.id == alice.id and linked.linked


async def test_duplicates_are_skipped_or_failed_with_their_line(users, audit_path):
    await users.create("corp", "s-1", "alice@example.com", source="scim")
    await users.create("partner", "p-1", "taken@example.com")
    report = await run(
        users,
        audit_path,
        "ExternalId,Email\n"
        "s-1,alice@example.com\n"
        "s-2,bob@example.com\n"
        "s-2,bob2@example.com\n"
        "s-4,Taken@Example.com\n",
    )
    assert report.skipped == [(2, "s-1")]
    assert report.added == [(3, "s-2")]
    assert report.failed == [
        (4, "ExternalId 's-2' repeats an earlier row"),
        (5, "email 'taken@example.com' belongs to another user"),
    ]
    assert await users.by_link("corp", "s-4") is None
    assert len(await users.all_ids()) == 3


@pytest.mark.parametrize(
    ("row", "reason"),
    [
        (",x@example.com,X,", "ExternalId is empty"),
        ("s-9,not-an-email,X,", "'not-an-email' is not a valid email address"),
        ("s-9,x@example.com,X,admin root", "role 'admin root' may only hold letters"),
        ("s-9,x@example.com", "expected 4 cells, found 2"),
        ("s-9,x@example.com,X,viewer,extra", "expected 4 cells, found 5"),
        ("s-9,x@example.com," + "y" * 1025 + ",", "a cell is longer than 1024 characters"),
    ],
)
async def test_a_bad_row_fails_alone(users, audit_path, row, reason):
    report = await run(
        users,
        audit_path,
        f"ExternalId,Email,DisplayName,Roles\ns-1,ok@example.com,Ok,\n{row}\ns-3,,,\n",
    )
    [(line, why)] = report.failed
    assert line == 3 and why.startswith(reason)
    assert [a[1] for a in report.added] == ["s-1", "s-3"]
    assert await users.by_link("corp", "s-9") is None


async def test_more_than_a_thousand_rows_warns(users, audit_path):
    body = "".join(f"s-{n}\n" for n in range(1001))
    report = await run(users, audit_path, "ExternalId\n" + body)
    assert len(report.added) == 1001
    assert report.warnings == ["1001 rows: imports above 1000 users are better done by SCIM"]
    quiet = await run(
        UserStore(MemoryStore()), audit_path, "ExternalId\n" + body[: -len("s-1000\n")]
    )
    assert quiet.warnings == []


@pytest.mark.parametrize(
    ("data", "message"),
    [
        ("ExternalId,Email\ns-1,andré@exämple.com\n".encode("latin-1"), "line 2: byte 0xe9"),
        (b"Email,DisplayName\nx@example.com,X\n", "line 1: the ExternalId column is required"),
        (b"ExternalId,Password\ns-1,hunter2\n", "line 1: unknown column 'Password'"),
        (
            b"ExternalId,Email,email\ns-1,a@example.com,b@example.com\n",
            "column Email appears twice",
        ),
        (b'ExternalId,DisplayName\ns-1,"unterminated\n', "not a valid CSV file"),
        (b"", "the file is empty"),
        (b"ExternalId\ns-1\x00\n", "NUL characters"),
    ],
)
async def test_a_malformed_file_changes_nothing(users, audit_path, data, message):
    with pytest.raises(CsvFileError) as refused:
        await run(users, audit_path, data)
    assert message in str(refused.value)
    assert await users.all_ids() == set()
    assert audit_events(audit_path) == []


@pytest.mark.parametrize(
    "data",
    [
        codecs.BOM_UTF8 + "ExternalId,DisplayName\ns-1,Zoë\n".encode(),
        "ExternalId,DisplayName\r\ns-1,Zoë\r\n".encode("utf-16"),
        "External Id;Display_Name\ns-1;Zoë\n".encode(),
    ],
    ids=["utf8-bom", "utf16-excel", "semicolons"],
)
async def test_excel_encodings_and_separators(users, audit_path, data):
    report = await run(users, audit_path, data)
    assert report.added == [(2, "s-1")]
    assert (await users.by_link("corp", "s-1")).display_name == "Zoë"


async def test_formula_cells_are_stored_as_plain_text(users, audit_path):
    cells = ["=cmd|' /C calc'!A0", "+SUM(1+1)", "-2+3", '@HYPERLINK("http://x")']
    rows = "".join(f's-{n},"{c.replace(chr(34), chr(34) * 2)}"\n' for n, c in enumerate(cells))
    report = await run(users, audit_path, "ExternalId,DisplayName\n" + rows)
    assert len(report.added) == len(cells)
    stored = [(await users.by_link("corp", f"s-{n}")).display_name for n in range(len(cells))]
    assert stored == cells


def test_cli_import_reports_and_exits(tmp_path, redis_url, capsys):
    config = tmp_path / "authgate.yaml"
    config.write_text(
        "public_url: https://app.example.com\nupstream: {url: 'http://127.0.0.1:9'}\n"
        f"session: {{store: redis, redis: {{url: '{redis_url}'}}}}\n"
        f"audit: {{output: '{tmp_path / 'audit.jsonl'}'}}\n"
        "connections:\n  - {id: corp, name: Corp, type: oidc,"
        " issuer: 'https://idp.example.com', client_id: authgate, client_secret: s}\n"
    )
    good = tmp_path / "users.csv"
    good.write_text("ExternalId,Email\ns-1,a@example.com\ns-2,bad\n")
    assert (
        main(["users", "import", "--connection", "corp", str(good), "--config", str(config)]) == 1
    )
    out = capsys.readouterr().out
    assert "line 3: failed, 'bad' is not a valid email address" in out
    assert "2 row(s): 1 added, 0 skipped (already present), 1 failed" in out
    assert (
        main(["users", "import", "--connection", "corp", str(good), "--config", str(config)]) == 1
    )
    assert "line 2: skipped, s-1 is already present" in capsys.readouterr().out
    broken = tmp_path / "broken.csv"
    broken.write_bytes(b"Email\nx@example.com\n")
    args = ["users", "import", "--connection", "corp", str(broken), "--config", str(config)]
    assert main(args) == 2
    assert "the ExternalId column is required (nothing was imported)" in capsys.readouterr().err
    args = ["users", "import", "--connection", "nope", str(good), "--config", str(config)]
    assert main(args) == 2
    assert "no connection has id 'nope'" in capsys.readouterr().err
    assert main(["users", "list", "--connection", "corp", "--config", str(config)]) == 0
    listed = capsys.readouterr().out.splitlines()
    assert len(listed) == 1 and "\tcorp\ts-1\ta@example.com\tactive\t-\tcsv" in listed[0]
