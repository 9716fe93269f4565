"""The benchmark starts, signs in for real, measures one short path and writes its results.

Only that it runs: the numbers of a one-second run on a shared CI machine mean
nothing, so nothing here compares them with anything (SPEC §11 targets are
checked by a full `bench/run`, not by tests).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from tests.servers import require_binary

ROOT = Path(__file__).resolve().parents[2]


def test_bench_measures_one_path_and_writes_results(tmp_path: Path):
    for tool in ("nginx", "redis-server", "wrk"):
        require_binary(tool)
    argv = [
        *("--duration", "1", "--repetitions", "1", "--connections", "10"),
        *("--paths", "authgate-proxy", "--logins", "2", "--no-storm", "--revocations", "1"),
        *("--workers", "2", "--results-dir", str(tmp_path)),
    ]
    done = subprocess.run(
        [sys.executable, "-m", "bench", *argv],
        cwd=ROOT,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
        capture_output=True,
        text=True,
        timeout=240,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    (json_path,) = tmp_path.glob("*.json")
    (md_path,) = tmp_path.glob("*.md")
    result = json.loads(json_path.read_text())
    measured = result["paths"]["authgate-proxy"]["10"]
    assert measured["rps"] > 0
    assert measured["runs"][0]["requests"] > 0
    assert result["run"]["workers"] == 2
    assert result["machine"]["cores"] == os.cpu_count()
    assert result["logins"]["OIDC callback"]["n"] == 2
    assert result["logins"]["SAML ACS"]["n"] == 2
    assert result["revocation"]["rounds"] == 1
    assert "authgate reverse proxy" in md_path.read_text()
    assert "authgate reverse proxy" in done.stdout
