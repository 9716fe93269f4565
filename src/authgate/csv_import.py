"""Bulk-loading pre-provisioned users from a CSV file.

Columns: `ExternalId` (required: what the IdP will send as NameID / `sub`),
optional `Email`, `DisplayName`, `Roles` (separated by `;` or `|`). Header
names are matched without regard to case, spaces or underscores.

Two levels of failure, on purpose:
- the file as a whole (not UTF-8 / UTF-16 text, no header, no `ExternalId`
  column, an unknown or repeated column, broken CSV quoting) is refused
  before anything is written: nothing changes;
- a row (empty ExternalId, invalid email, bad role name, wrong number of
  cells, a duplicate of an earlier row) fails on its own, with its line
  number and reason, and the other rows are still imported.

A row whose ExternalId is already linked on the connection is skipped, not
updated. Cells are stored verbatim as plain text: a cell such as `=cmd|...`
is a display name like any other, never evaluated or stripped.
"""

from __future__ import annotations

import codecs
import csv
import io
import re
from dataclasses import dataclass, field

from pydantic import TypeAdapter, ValidationError
from pydantic.networks import EmailStr

from authgate.audit import AuditLog
from authgate.errors import PolicyDenied
from authgate.users import UserStore

LARGE_IMPORT = 1000
MAX_CELL = 1024
COLUMNS = {
    "externalid": "ExternalId",
    "email": "Email",
    "displayname": "DisplayName",
    "roles": "Roles",
}
_ROLE = re.compile(r"^[A-Za-z0-9_.:-]{1,64}$")
_EMAIL: TypeAdapter[str] = TypeAdapter(EmailStr)


class CsvFileError(ValueError):
    """The file as a whole cannot be imported; nothing was written."""


@dataclass(frozen=True, slots=True)
class Row:
    line: int
    external_id: str
    email: str | None
    display_name: str | None
    roles: tuple[str, ...]


@dataclass
class ImportReport:
    rows: int = 0
    added: list[tuple[int, str]] = field(default_factory=list)
    skipped: list[tuple[int, str]] = field(default_factory=list)
    failed: list[tuple[int, str]] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)

    def summary(self) -> str:
        return (
            f"{self.rows} row(s): {len(self.added)} added, {len(self.skipped)} skipped"
            f" (already present), {len(self.failed)} failed"
        )


def decode(data: bytes) -> str:
    """Text of the file: UTF-8 (with or without BOM) or UTF-16 with a BOM, as Excel saves."""
    if data.startswith((codecs.BOM_UTF16_LE, codecs.BOM_UTF16_BE)):
        encoding = "utf-16"
    else:
        encoding = "utf-8-sig"
    try:
        text = data.decode(encoding)
    except UnicodeDecodeError as exc:
        line = data[: exc.start].count(b"\n") + 1
        raise CsvFileError(
            f"line {line}: byte 0x{data[exc.start]:02x} is not {encoding.upper()} text;"
            " save the file as 'CSV UTF-8'"
        ) from None
    if "\x00" in text:
        raise CsvFileError("the file contains NUL characters; it is not a CSV text file")
    return text


def _header(cells: list[str]) -> list[str]:
    names = []
    for cell in cells:
        key = re.sub(r"[\s_-]", "", cell).lower()
        if key not in COLUMNS:
            raise CsvFileError(
                f"line 1: unknown column {cell!r} (expected {', '.join(COLUMNS.values())})"
            )
        if COLUMNS[key] in names:
            raise CsvFileError(f"line 1: column {COLUMNS[key]} appears twice")
        names.append(COLUMNS[key])
    if "ExternalId" not in names:
        raise CsvFileError("line 1: the ExternalId column is required")
    return names


def _row(line: int, names: list[str], cells: list[str]) -> Row:
    """One validated row; ValueError carries the reason it fails."""
    if len(cells) != len(names):
        raise ValueError(f"expected {len(names)} cells, found {len(cells)}")
    values = {n: c.strip() for n, c in zip(names, cells, strict=True)}
    if any(len(v) > MAX_CELL for v in values.values()):
        raise ValueError(f"a cell is longer than {MAX_CELL} characters")
    external_id = values["ExternalId"]
    if not external_id:
        raise ValueError("ExternalId is empty")
    email = values.get("Email") or None
    if email is not None:
        try:
            _EMAIL.validate_python(email)
        except ValidationError:
            raise ValueError(f"{email!r} is not a valid email address") from None
    roles = tuple(r.strip() for r in re.split(r"[;|]", values.get("Roles", "")) if r.strip())
    for role in roles:
        if not _ROLE.match(role):
            raise ValueError(f"role {role!r} may only hold letters, digits and _.:-")
    return Row(line, external_id, email, values.get("DisplayName") or None, roles)


def parse(data: bytes, report: ImportReport) -> list[Row]:
    """Rows that passed validation; file-level problems raise before anything is written."""
    text = decode(data)
    first = text.split("\n", 1)[0]
    delimiter = ";" if first.count(";") > first.count(",") else ","
    try:
        records = list(csv.reader(io.StringIO(text, newline=""), delimiter=delimiter, strict=True))
    except csv.Error as exc:
        raise CsvFileError(f"not a valid CSV file: {exc}") from None
    if not records or not any(c.strip() for c in records[0]):
        raise CsvFileError("the file is empty: a header line with ExternalId is required")
    names = _header(records[0])
    rows, seen = [], set()
    for line, cells in enumerate(records[1:], start=2):
        if not any(c.strip() for c in cells):
            continue
        report.rows += 1
        try:
            row = _row(line, names, cells)
        except ValueError as exc:
            report.failed.append((line, str(exc)))
            continue
        if row.external_id in seen:
            report.failed.append((line, f"ExternalId {row.external_id!r} repeats an earlier row"))
            continue
        seen.add(row.external_id)
        rows.append(row)
    if report.rows > LARGE_IMPORT:
        report.warnings.append(
            f"{report.rows} rows: imports above {LARGE_IMPORT} users are better done by SCIM"
        )
    return rows


async def import_users(
    data: bytes, connection: str, users: UserStore, audit: AuditLog, actor: str = "cli"
) -> ImportReport:
    """Import a CSV file into `connection`; raises CsvFileError if the file is unusable."""
    report = ImportReport()
    for row in parse(data, report):
        if await users.by_link(connection, row.external_id) is not None:
            report.skipped.append((row.line, row.external_id))
            continue
        try:
            user = await users.create(
                connection,
                row.external_id,
                row.email,
                row.display_name,
                roles=row.roles,
                source="csv",
            )
        except PolicyDenied as exc:
            report.failed.append((row.line, exc.detail))
            continue
        report.added.append((row.line, row.external_id))
        audit.emit(
            "user.provisioned",
            connection=connection,
            user_id=user.id,
            subject=row.external_id,
            email=row.email,
            via="csv",
            actor=actor,
            line=row.line,
        )
    return report
