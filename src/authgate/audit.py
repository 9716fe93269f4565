"""Audit trail: one JSON object per line, to stdout or an append-only file."""

from __future__ import annotations

import json
import sys
import time
from typing import Any, TextIO


class AuditLog:
    """Writes events synchronously: a line is small and losing one on a crash is worse."""

    def __init__(self, output: str) -> None:
        self._owned = output != "stdout"
        self._stream: TextIO = (
            sys.stdout if output == "stdout" else open(output, "a", encoding="utf-8")  # noqa: SIM115
        )

    def emit(self, event: str, **fields: Any) -> None:
        record = {"time": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), "event": event}
        record.update({k: v for k, v in fields.items() if v is not None})
        self._stream.write(json.dumps(record, separators=(",", ":"), default=str) + "\n")
        self._stream.flush()

    def close(self) -> None:
        if self._owned:
            self._stream.close()
