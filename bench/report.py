"""The run's machine, its numbers against SPEC §11, and the JSON and markdown written from them."""

from __future__ import annotations

import json
import os
import platform
import subprocess
import sys
from importlib import metadata
from pathlib import Path
from typing import Any

from bench.stack import ROOT, find_go_binary

# SPEC §11, at 50 connections.
RATIO_CONNS = "50"
PROXY_P99_MS = 15.0
LOGIN_P50_MS, LOGIN_P99_MS, REVOCATION_S = 20.0, 60.0, 1.0

PATH_TITLES = {
    "nginx-proxy-pass": "nginx proxy_pass → upstream (B)",
    "authgate-proxy": "authgate reverse proxy, valid session → upstream",
    "oauth2-proxy-proxy": "oauth2-proxy reverse proxy, cookie session → upstream",
    "oauth2-proxy-redis-proxy": "oauth2-proxy reverse proxy, Redis session → upstream",
    "nginx-auth-200": "nginx auth_request → return 200 → upstream (C)",
    "nginx-auth-authgate": "nginx auth_request → authgate /auth → upstream",
    "nginx-auth-oauth2-proxy": "nginx auth_request → oauth2-proxy /oauth2/auth (cookie) → upstream",
    "nginx-auth-oauth2-proxy-redis": (
        "nginx auth_request → oauth2-proxy /oauth2/auth (Redis) → upstream"
    ),
    "authgate-auth": "authgate /auth alone",
}

# Throughput ratios at RATIO_CONNS: (measured path, baselines); against several baselines
# the fastest counts, so "vs oauth2-proxy" is against whichever of its stores did better.
PROXY_PEERS = ("oauth2-proxy-proxy", "oauth2-proxy-redis-proxy")
AUTH_PEERS = ("nginx-auth-oauth2-proxy", "nginx-auth-oauth2-proxy-redis")
RATIOS: dict[str, tuple[str, tuple[str, ...]]] = {
    "proxy_vs_nginx": ("authgate-proxy", ("nginx-proxy-pass",)),
    "proxy_vs_oauth2_proxy": ("authgate-proxy", PROXY_PEERS),
    "auth_vs_nginx_auth_request": ("nginx-auth-authgate", ("nginx-auth-200",)),
    "auth_vs_oauth2_proxy": ("nginx-auth-authgate", AUTH_PEERS),
    "proxy_vs_oauth2_proxy_cookie": ("authgate-proxy", PROXY_PEERS[:1]),
    "proxy_vs_oauth2_proxy_redis": ("authgate-proxy", PROXY_PEERS[1:]),
    "auth_vs_oauth2_proxy_cookie": ("nginx-auth-authgate", AUTH_PEERS[:1]),
    "auth_vs_oauth2_proxy_redis": ("nginx-auth-authgate", AUTH_PEERS[1:]),
}
# SPEC §11's throughput targets: ratio name, the least it may be, how the table names it.
RATIO_TARGETS = (
    ("proxy_vs_nginx", 0.30, "reverse proxy throughput vs nginx", "x B"),
    ("proxy_vs_oauth2_proxy", 3.0, "reverse proxy throughput vs oauth2-proxy", "x oauth2-proxy"),
    ("auth_vs_nginx_auth_request", 0.40, "auth_request → authgate vs → return 200", "x C"),
    ("auth_vs_oauth2_proxy", 2.0, "auth_request → authgate vs → oauth2-proxy", "x oauth2-proxy"),
)


def _version(argv: list[str]) -> str:
    try:
        done = subprocess.run(argv, capture_output=True, text=True, timeout=10, check=False)
    except OSError:
        return "absent"
    return (done.stdout + done.stderr).strip().splitlines()[0] if done.stdout + done.stderr else "?"


def _package(name: str) -> str:
    try:
        return metadata.version(name)
    except metadata.PackageNotFoundError:
        return "absent"


def _go_module(name: str) -> str:
    """The module version a Go binary was built from (its `--version` says "undefined")."""
    binary = find_go_binary(name)
    if binary is None:
        return "absent"
    try:
        done = subprocess.run(
            ["go", "version", "-m", binary], capture_output=True, text=True, timeout=10
        )
    except OSError:
        return "unknown (no go)"
    for line in done.stdout.splitlines():
        fields = line.split()
        if fields[:1] == ["mod"] and len(fields) >= 3:
            return fields[2]
    return "absent"


def machine() -> dict[str, Any]:
    model = "unknown"
    cpuinfo = Path("/proc/cpuinfo")
    if cpuinfo.exists():
        for line in cpuinfo.read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    return {
        "cores": os.cpu_count(),
        "cpu": model,
        "kernel": platform.release(),
        "python": sys.version.split()[0],
        "aiohttp": _package("aiohttp"),
        "uvloop": _package("uvloop"),
        "redis-py": _package("redis"),
        "hiredis": _package("hiredis"),
        "nginx": _version(["nginx", "-v"]),
        "redis-server": _version(["redis-server", "--version"]),
        "wrk": _version(["wrk", "--version"]),
        "go": _version(["go", "version"]),
        "oauth2-proxy": _go_module("oauth2-proxy"),
        "commit": _version(["git", "-C", str(ROOT), "describe", "--always", "--dirty"]),
    }


def vs_baselines(paths: dict[str, dict[str, dict[str, Any]]]) -> None:
    """Adds `vs_B` and `vs_C` (throughput ratios) to every path, per connection count."""
    for conns, base_b in paths.get("nginx-proxy-pass", {}).items():
        base_c = paths.get("nginx-auth-200", {}).get(conns)
        for runs in paths.values():
            if conns not in runs:
                continue
            runs[conns]["vs_B"] = runs[conns]["rps"] / base_b["rps"]
            if base_c:
                runs[conns]["vs_C"] = runs[conns]["rps"] / base_c["rps"]


def ratios(paths: dict[str, dict[str, dict[str, Any]]]) -> dict[str, float | None]:
    """RATIOS at RATIO_CONNS connections; None where the run measured a side of it not."""

    def rps(path: str) -> float | None:
        stats = paths.get(path, {}).get(RATIO_CONNS)
        return stats["rps"] if stats else None

    found: dict[str, float | None] = {}
    for name, (path, baselines) in RATIOS.items():
        measured = rps(path)
        base = [r for r in map(rps, baselines) if r is not None]
        found[name] = measured / max(base) if measured is not None and base else None
    return found


def rows(paths: dict[str, dict[str, dict[str, Any]]]) -> list[dict[str, Any]]:
    """One row per path and connection count: the medians, and CPU per request by server."""
    return [
        {
            "path": path,
            "conns": int(conns),
            "rps": stats["rps"],
            "p50_ms": stats["p50_ms"],
            "p99_ms": stats["p99_ms"],
            "cpu_us_per_request": stats["cpu_us_per_request"],
            "cpu_us_by_server": stats["cpu_us"],
        }
        for path, per in paths.items()
        for conns, stats in per.items()
    ]


def summary(result: dict[str, Any]) -> dict[str, Any]:
    """What `latest.json` holds: the machine, every row, the ratios and the targets."""
    return {
        "started": result["started"],
        "machine": result["machine"],
        "run": result["run"],
        "rows": rows(result["paths"]),
        "ratios": result["ratios"],
        "targets": result["targets"],
    }


def targets(result: dict[str, Any]) -> list[dict[str, Any]]:
    """Each SPEC §11 target this run could judge: what it needs, what was measured, met or not."""
    checks: list[dict[str, Any]] = []
    paths = result["paths"]

    def check(name: str, need: str, got: float | None, ok: bool | None, unit: str = "") -> None:
        if got is not None:
            checks.append({"target": name, "need": need, "measured": f"{got:.2f}{unit}", "met": ok})

    for ratio, least, name, unit in RATIO_TARGETS:
        got = result["ratios"][ratio]
        check(name, f"≥ {least} {unit}", got, got is not None and got >= least, f" {unit}")
    proxy = paths.get("authgate-proxy", {}).get(RATIO_CONNS, {})
    if proxy:
        check(
            "reverse proxy p99",
            f"≤ {PROXY_P99_MS} ms",
            proxy["p99_ms"],
            proxy["p99_ms"] <= PROXY_P99_MS,
            " ms",
        )
    for name, stats in result.get("logins", {}).items():
        if stats.get("n"):
            check(
                f"{name} p50",
                f"< {LOGIN_P50_MS} ms",
                stats["p50_ms"],
                stats["p50_ms"] < LOGIN_P50_MS,
                " ms",
            )
            check(
                f"{name} p99",
                f"< {LOGIN_P99_MS} ms",
                stats["p99_ms"],
                stats["p99_ms"] < LOGIN_P99_MS,
                " ms",
            )
    storm = result.get("storm")
    if storm:
        p99 = storm["proxy"]["p99_ms"]
        check(
            "proxy p99 during a login storm",
            f"≤ {PROXY_P99_MS} ms",
            p99,
            p99 <= PROXY_P99_MS,
            " ms",
        )
    revocation = result.get("revocation")
    if revocation:
        worst = revocation["max_s"]
        check(
            "revocation on every worker and replica",
            f"< {REVOCATION_S} s",
            worst,
            worst < REVOCATION_S,
            " s",
        )
    return checks


def _fmt(value: Any, digits: int = 2) -> str:
    return f"{value:.{digits}f}" if isinstance(value, float) else str(value)


def markdown(result: dict[str, Any]) -> str:
    m = result["machine"]
    run = result["run"]
    lines = [
        f"# authgate benchmark, {result['started']}",
        "",
        f"Machine: {m['cores']} cores, {m['cpu']}, Linux {m['kernel']}; Python {m['python']},"
        f" aiohttp {m['aiohttp']}, uvloop {m['uvloop']}, hiredis {m['hiredis']};"
        f" {m['nginx']}; {m['redis-server']}; oauth2-proxy {m['oauth2-proxy']} ({m['go']});"
        f" commit {m['commit']}.",
        "",
        f"authgate workers: {run['workers']}; nginx front ends: {run['workers']} workers each,"
        " the upstream nginx: auto; wrk: 2 threads,"
        f" keep-alive, {run['duration']} s per run, {run['repetitions']} interleaved repetitions"
        " (medians shown); 1 KiB upstream page served by nginx. CPU µs/req: utime + stime of"
        " the path's own servers (all their processes) over the wrk run, per request; the"
        " upstream page's nginx is left out.",
        "",
        "| path | conns | req/s | p50 ms | p99 ms | CPU µs/req | x B | x C |",
        "|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for key, runs in result["paths"].items():
        for conns, stats in runs.items():
            lines.append(
                f"| {PATH_TITLES[key]} | {conns} | {stats['rps']:.0f} | {_fmt(stats['p50_ms'])}"
                f" | {_fmt(stats['p99_ms'])} | {_fmt(stats['cpu_us_per_request'], 1)}"
                f" | {_fmt(stats.get('vs_B', '-'))} | {_fmt(stats.get('vs_C', '-'))} |"
            )
    lines += ["", f"CPU µs per request by server, {RATIO_CONNS} connections:", ""]
    for key, runs in result["paths"].items():
        if RATIO_CONNS in runs:
            parts = ", ".join(f"{s} {us:.1f}" for s, us in runs[RATIO_CONNS]["cpu_us"].items())
            lines.append(f"- {PATH_TITLES[key]}: {parts}")
    lines += ["", f"| ratio, {RATIO_CONNS} connections | measured |", "|---|---:|"]
    for name, value in result["ratios"].items():
        lines.append(f"| {name} | {_fmt(value) if value is not None else '-'} |")
    if result.get("logins"):
        lines += [
            "",
            "| login step (one at a time) | n | p50 ms | p99 ms |",
            "|---|---:|---:|---:|",
        ]
        for name, stats in result["logins"].items():
            lines.append(
                f"| {name} | {stats['n']} | {_fmt(stats['p50_ms'])} | {_fmt(stats['p99_ms'])} |"
            )
    storm = result.get("storm")
    if storm:
        lines += [
            "",
            f"Login storm: {storm['concurrency']} browsers signing in for {storm['seconds']} s"
            f" ({storm['logins']} logins, {storm['logins_per_s']:.0f}/s) while wrk drives the"
            f" reverse proxy at 50 connections: {storm['proxy']['rps']:.0f} req/s,"
            f" p50 {storm['proxy']['p50_ms']:.2f} ms, p99 {storm['proxy']['p99_ms']:.2f} ms;"
            f" OIDC callback p50/p99 {_fmt(storm['oidc_callback']['p50_ms'])}/"
            f"{_fmt(storm['oidc_callback']['p99_ms'])} ms, SAML ACS p50/p99"
            f" {_fmt(storm['saml_acs']['p50_ms'])}/{_fmt(storm['saml_acs']['p99_ms'])} ms.",
        ]
    revocation = result.get("revocation")
    if revocation:
        lines += [
            "",
            f"Revocation: logout on one replica, {revocation['probes']} keep-alive probe"
            f" connections over {revocation['replicas']} replicas ({run['workers']} + 1 workers):"
            f" median {revocation['median_s'] * 1000:.1f} ms,"
            f" worst {revocation['max_s'] * 1000:.1f} ms"
            f" over {revocation['rounds']} logouts.",
        ]
    if result["targets"]:
        lines += ["", "| SPEC §11 target | needs | measured | met |", "|---|---|---:|---|"]
        for t in result["targets"]:
            lines.append(
                f"| {t['target']} | {t['need']} | {t['measured']} | {'yes' if t['met'] else 'NO'} |"
            )
    return "\n".join(lines) + "\n"


def write(result: dict[str, Any], directory: Path) -> tuple[Path, Path, Path]:
    """The whole run as JSON and markdown, named by its start; its summary as `latest.json`."""
    directory.mkdir(parents=True, exist_ok=True)
    stem = directory / f"bench-{result['started'].replace(':', '').replace('-', '')}"
    json_path, md_path = stem.with_suffix(".json"), stem.with_suffix(".md")
    latest = directory / "latest.json"
    json_path.write_text(json.dumps(result, indent=2) + "\n")
    md_path.write_text(markdown(result))
    latest.write_text(json.dumps(summary(result), indent=2) + "\n")
    return json_path, md_path, latest
