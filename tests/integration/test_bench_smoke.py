"""The benchmark starts, signs in for real, measures every path once and writes its results.

Only that it runs: the numbers of a one-second run on a shared CI machine mean
nothing, so nothing here compares them with anything (SPEC §11 targets are
checked by a full `bench/run`, not by tests). The peer oauth2-proxy is part of
it: missing, that is a failure, never a skip (`.ci/run`'s "bench tools" phase
installs it).
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
from bench import harness, report, stack

from tests.servers import require_binary

ROOT = Path(__file__).resolve().parents[2]


def pinned_oauth2_proxy() -> str:
    """The version `bench/install-tools.sh` installs: the one the run must have used."""
    script = (ROOT / "bench" / "install-tools.sh").read_text()
    match = re.search(r"^OAUTH2_PROXY_VERSION=(\S+)$", script, re.M)
    assert match, "bench/install-tools.sh names no OAUTH2_PROXY_VERSION"
    return match.group(1)


def test_bench_measures_every_path_and_writes_results(tmp_path: Path):
    for tool in ("nginx", "redis-server", "wrk"):
        require_binary(tool)
    try:
        stack.go_binary("oauth2-proxy")
    except SystemExit as missing:
        pytest.fail(str(missing))
    argv = [
        *("--duration", "1", "--repetitions", "1", "--connections", "50"),
        *("--logins", "2", "--no-storm", "--revocations", "1"),
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
    latest = json.loads((tmp_path / "latest.json").read_text())
    (json_path,) = tmp_path.glob("bench-*.json")
    (md_path,) = tmp_path.glob("bench-*.md")
    result = json.loads(json_path.read_text())

    assert latest["machine"] == result["machine"]
    assert latest["machine"]["cores"] == os.cpu_count()
    assert latest["machine"]["oauth2-proxy"] == pinned_oauth2_proxy()
    assert [(r["path"], r["conns"]) for r in latest["rows"]] == [(p, 50) for p in harness.PATHS]
    for row in latest["rows"]:
        assert row["rps"] > 0 and 0 < row["p50_ms"] <= row["p99_ms"], row
        # Every server of the path used CPU, so each row's sum is more than nothing.
        assert row["cpu_us_per_request"] > 0, row
        assert "nginx-app" in row["cpu_us_by_server"], row
    by_path = {r["path"]: r for r in latest["rows"]}
    assert set(by_path["oauth2-proxy-redis-proxy"]["cpu_us_by_server"]) == {
        "oauth2-proxy-redis",
        "redis",
        "nginx-app",
    }
    assert set(latest["ratios"]) == set(report.RATIOS)
    assert all(ratio > 0 for ratio in latest["ratios"].values()), latest["ratios"]
    rps = {path: row["rps"] for path, row in by_path.items()}
    assert latest["ratios"]["proxy_vs_nginx"] == rps["authgate-proxy"] / rps["nginx-proxy-pass"]
    assert latest["ratios"]["auth_vs_oauth2_proxy_redis"] == (
        rps["nginx-auth-authgate"] / rps["nginx-auth-oauth2-proxy-redis"]
    )
    assert {t["target"] for t in latest["targets"]} >= {
        name for _, _, name, _ in report.RATIO_TARGETS
    }

    assert result["run"]["workers"] == 2
    assert result["logins"]["OIDC callback"]["n"] == 2
    assert result["logins"]["SAML ACS"]["n"] == 2
    assert result["revocation"]["rounds"] == 1
    for text in (md_path.read_text(), done.stdout):
        assert "authgate reverse proxy" in text
        assert "oauth2-proxy reverse proxy, Redis session" in text
        assert "auth_vs_oauth2_proxy" in text
