"""Command-line tools the tests run that live outside PATH: in the venv, or in Go's bin folder.

`.ci/run` installs them (hadolint with the dev extras, helm and kubeconform with
`go install`); under CI=true, as everywhere, a missing tool fails the test.
"""

from __future__ import annotations

import os
import shutil
import sys
from pathlib import Path


def go_bin() -> Path:
    """Where `go install` puts binaries: $GOBIN, else $GOPATH/bin, else ~/go/bin."""
    if os.environ.get("GOBIN"):
        return Path(os.environ["GOBIN"])
    gopath = os.environ.get("GOPATH", "").split(os.pathsep)[0]
    return Path(gopath or Path.home() / "go") / "bin"


def find_tool(name: str) -> str:
    search = os.pathsep.join(
        [str(Path(sys.executable).parent), str(go_bin()), os.environ.get("PATH", "")]
    )
    path = shutil.which(name, path=search)
    if path is None:
        raise RuntimeError(f"{name} is not installed: run `bash .ci/run` (it installs {name})")
    return path
