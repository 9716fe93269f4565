"""CPU time of each server: utime + stime of its process and all its descendants, from /proc.

A server is a process tree (nginx's master and workers, authgate's supervisor
and workers, oauth2-proxy's one process), so its cost is the sum over the
tree. Each process also counts the time of the children it has already
reaped (cutime + cstime), so a worker that exits between two readings keeps
its share. Only differences of two readings mean anything.
"""

from __future__ import annotations

import os
from pathlib import Path

TICK_SECONDS = 1 / os.sysconf("SC_CLK_TCK")


def _read(stat: Path) -> tuple[int, int, int] | None:
    """(pid, parent pid, CPU ticks) of one process; None when it has gone meanwhile."""
    try:
        text = stat.read_text()
    except OSError:
        return None
    # The command name is in parentheses and may itself contain spaces and parentheses.
    pid = int(text.split(" ", 1)[0])
    fields = text.rsplit(")", 1)[1].split()
    utime, stime, cutime, cstime = (int(f) for f in fields[11:15])
    return pid, int(fields[1]), utime + stime + cutime + cstime


def seconds(roots: dict[str, int]) -> dict[str, float]:
    """CPU seconds so far of every named tree, by its root pid: one pass over /proc."""
    parents: dict[int, int] = {}
    ticks: dict[int, int] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        read = _read(stat)
        if read is not None:
            pid, parent, used = read
            parents[pid], ticks[pid] = parent, used
    children: dict[int, list[int]] = {}
    for pid, parent in parents.items():
        children.setdefault(parent, []).append(pid)
    totals: dict[str, float] = {}
    for name, root in roots.items():
        used, todo = 0, [root]
        while todo:
            pid = todo.pop()
            used += ticks.get(pid, 0)
            todo += children.get(pid, [])
        totals[name] = used * TICK_SECONDS
    return totals


def per_request_us(
    before: dict[str, float], after: dict[str, float], requests: int
) -> dict[str, float]:
    """Microseconds of CPU per request of each server between two readings."""
    return {name: (after[name] - before[name]) * 1e6 / max(requests, 1) for name in before}
