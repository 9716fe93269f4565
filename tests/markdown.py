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
NOT_RUN = re.compile(r"^\s*<!--\s*not-run:\s*(?P<reason>.*?)\s*-->\s*$")
HEADING = re.compile(r"^(#{1,6})\s+(?P<text>.+?)\s*#*\s*$")
INLINE_CODE = re.compile(r"`([^`\n]+)`")


@dataclass(frozen=True)
class Block:
    """One fenced code block: where it is, its language and its text.

    `not_run` is the reason given by a `<!-- not-run: reason -->` comment on the
    line above the fence: the docs tests leave such a block alone.
    """

    path: Path
    line: int
    lang: str
    text: str
    end: int = 0
    not_run: str | None = None

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
        mark = NOT_RUN.match(lines[i - 1]) if i > 0 else None
        reason = mark.group("reason") if mark else None
        found.append(Block(path, i + 1, lang, "\n".join(body) + "\n", j + 1, reason))
        i = j + 1
    return found


def prose(path: Path) -> list[tuple[int, str]]:
    """The lines outside fenced blocks, numbered from 1."""
    inside: set[int] = set()
    for block in blocks(path):
        inside.update(range(block.line, block.end + 1))
    lines = path.read_text(encoding="utf-8").splitlines()
    return [(n, line) for n, line in enumerate(lines, start=1) if n not in inside]


def anchors(path: Path) -> set[str]:
    """The heading anchors GitHub makes: lower case, punctuation dropped, spaces to `-`.

    A repeated heading gets `-1`, `-2`, ... appended, as on GitHub.
    """
    seen: dict[str, int] = {}
    found: set[str] = set()
    for _, line in prose(path):
        match = HEADING.match(line)
        if not match:
            continue
        text = re.sub(r"\[([^\]]*)\]\([^)]*\)", r"\1", match.group("text"))
        slug = re.sub(r"[^\w\- ]", "", text.lower()).replace(" ", "-")
        count = seen.get(slug, 0)
        seen[slug] = count + 1
        found.add(slug if count == 0 else f"{slug}-{count}")
    return found


def inline_code(path: Path) -> list[str]:
    """The `code spans` of the prose, in order."""
    return [span for _, line in prose(path) for span in INLINE_CODE.findall(line)]


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
    """Link targets outside code blocks and code spans (a link shown there is an example)."""
    text = "\n".join(line for _, line in prose(path))
    return LINK.findall(INLINE_CODE.sub("", text))
