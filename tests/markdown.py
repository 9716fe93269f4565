"""What the docs show, read the way a reader copies it: fenced blocks, commands and links.

The docs tests (tests/unit/test_docs.py) and the chart README test
(tests/integration/test_helm_chart.py) run these blocks, so an example that
stops working fails a test instead of a reader.
"""

from __future__ import annotations

import re
import shlex
from dataclasses import dataclass
from pathlib import Path

FENCE = re.compile(r"^(?P<indent> *)(?P<fence>```+|~~~+)(?P<info>[^`]*)$")
LINK = re.compile(r"(?<!!)\[[^\]]*\]\(([^)\s]+)\)")
FILE_MARK = re.compile(r"^# file: (\S+)$")


@dataclass(frozen=True)
class Block:
    """One fenced code block: where it is, its language and its text."""

    path: Path
    line: int
    lang: str
    text: str

    @property
    def where(self) -> str:
        return f"{self.path.name}:{self.line}"

    @property
    def file_name(self) -> str | None:
        """The `# file: NAME` a block opens with, naming the file a reader saves it as."""
        first = self.text.split("\n", 1)[0]
        match = FILE_MARK.match(first)
        return match.group(1) if match else None


def blocks(path: Path) -> list[Block]:
    found: list[Block] = []
    lines = path.read_text(encoding="utf-8").splitlines()
    i = 0
    while i < len(lines):
        opening = FENCE.match(lines[i])
        if not opening:
            i += 1
            continue
        fence, indent = opening.group("fence"), len(opening.group("indent"))
        body: list[str] = []
        j = i + 1
        while j < len(lines) and not lines[j].strip().startswith(fence):
            body.append(lines[j][indent:] if lines[j][:indent].strip() == "" else lines[j])
            j += 1
        lang = opening.group("info").strip().split(" ")[0]
        found.append(Block(path, i + 1, lang, "\n".join(body) + "\n"))
        i = j + 1
    return found


def commands(block: Block) -> list[str]:
    """The commands of a shell block: `$ ` lines of a console block, else every line.

    Backslash continuations are joined and `# comments` dropped, as a shell would.
    """
    lines = block.text.splitlines()
    if block.lang == "console":
        lines = [line[2:] for line in lines if line.startswith("$ ")]
    joined: list[str] = []
    current = ""
    for line in lines:
        if line.rstrip().endswith("\\"):
            current += line.rstrip()[:-1] + " "
            continue
        current += line
        words = " ".join(shlex.split(current, comments=True))
        if words:
            joined.append(current.strip())
        current = ""
    return joined


def links(path: Path) -> list[str]:
    """Link targets outside code blocks (a link shown inside a block is an example)."""
    text = path.read_text(encoding="utf-8")
    for block in blocks(path):
        text = text.replace(block.text, "")
    text = re.sub(r"`[^`\n]*`", "", text)
    return LINK.findall(text)
