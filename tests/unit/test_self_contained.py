"""A clone has nothing beside it: no test may name a path outside the repository."""

from __future__ import annotations

import re
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
# A parent-directory hop out of the tree, or the sibling folder only the developers have.
OUTSIDE = re.compile(r"""(\.\./shared|["']shared["']\s*/|parents\[\d+\]\.parent|/work/shared)""")


def test_no_test_reads_outside_the_repository() -> None:
    offenders = [
        f"{path.relative_to(REPO)}:{number}"
        for path in sorted((REPO / "tests").rglob("*.py"))
        if path.name != Path(__file__).name
        for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1)
        if OUTSIDE.search(line)
    ]
    assert offenders == []


def test_the_real_idp_documents_are_in_the_repository() -> None:
    samples = REPO / "tests" / "fixtures" / "idp-samples"
    assert (samples / "README.md").is_file()
    rows = [line for line in (samples / "README.md").read_text().splitlines() if line[:3] == "| `"]
    documented = {name for row in rows for name in re.findall(r"`([\w.-]+(?:\.xml|/))`", row)}
    present = {p.name + ("/" if p.is_dir() else "") for p in samples.iterdir()} - {"README.md"}
    assert present == documented
