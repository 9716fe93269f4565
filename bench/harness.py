"""`bench/run` (= `python -m bench`): start everything, sign in for real, measure, report.

Order of a run: redis-server, an nginx upstream serving a fixed 1 KiB page,
the test OpenID Provider, authgate with `workers` = cores (plus a one-worker
replica for the revocation test), and three nginx front ends. One real OIDC
login yields the session cookie; each path must then return the 1 KiB page
(a benchmark of a redirect is worthless) before wrk measures it, at each
connection count, repeated in interleaved rounds so drift hits every path
alike; the medians are reported. Then the login latencies, a login storm
under proxy load, and the revocation delay.
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import os
import shutil
import signal
import statistics
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
from tests.saml_idp import TestIdp

from bench import logins, report, revocation, stack, wrk
from bench.stack import Process, Stack, binary, free_port, page, wait_http

PATHS = (
    "nginx-proxy-pass",
    "authgate-proxy",
    "nginx-auth-200",
    "nginx-auth-authgate",
    "authgate-auth",
)
APP_PATH = "/app/page"
OP_SECRET = "bench-secret"
WARMUP_SECONDS = 2.0
STORM_SAML_PENDING = 300
REVOCATION_PROBES = {"workers": 8, "replica": 4}


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="bench/run", description=__doc__.split("\n\n")[0])
    parser.add_argument("--duration", type=float, default=10.0, help="seconds per wrk run (10)")
    parser.add_argument("--repetitions", type=int, default=3, help="interleaved rounds (3)")
    parser.add_argument(
        "--connections", default="10,50", help="comma-separated wrk connection counts (10,50)"
    )
    parser.add_argument(
        "--paths", default=",".join(PATHS), help=f"comma-separated subset of {','.join(PATHS)}"
    )
    parser.add_argument(
        "--workers", type=int, default=os.cpu_count() or 1, help="authgate workers (core count)"
    )
    parser.add_argument("--logins", type=int, default=200, help="timed logins per protocol (200)")
    parser.add_argument(
        "--storm-concurrency", type=int, default=4, help="browsers signing in during the storm"
    )
    parser.add_argument("--no-storm", action="store_true", help="skip the login storm")
    parser.add_argument("--revocations", type=int, default=10, help="timed logouts (10; 0 skips)")
    parser.add_argument(
        "--results-dir",
        type=Path,
        default=stack.ROOT / "bench" / "results",
        help="output directory",
    )
    args = parser.parse_args(argv)
    args.connections = [int(c) for c in args.connections.split(",")]
    args.paths = [p for p in args.paths.split(",") if p]
    unknown = set(args.paths) - set(PATHS)
    if unknown:
        parser.error(f"unknown path(s): {', '.join(sorted(unknown))}")
    return args


def say(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


@dataclass(frozen=True)
class Target:
    url: str
    headers: dict[str, str]
    check: Callable[[int, dict[str, str], bytes], str | None]


def _page_check(status: int, headers: dict[str, str], body: bytes) -> str | None:
    if status != 200 or body != page():
        return f"expected 200 and the {stack.PAGE_SIZE}-byte page, got {status}, {len(body)} bytes"
    return None


def _auth_check(status: int, headers: dict[str, str], body: bytes) -> str | None:
    if status != 200 or not headers.get("X-User"):
        return f"expected 200 with X-User, got {status} ({body[:200]!r})"
    return None


class Bench:
    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self.stack = Stack.create()
        self.idp = TestIdp()
        self.ports: dict[str, int] = {}

    # --- start-up -------------------------------------------------------------------------

    def start(self) -> None:
        work = self.stack.work
        self.ports = {
            name: free_port() for name in ("redis", "app", "op", "ag", "replica", "b", "c", "a")
        }
        redis = self.stack.add(
            Process(
                "redis",
                [
                    binary("redis-server"),
                    "--port",
                    str(self.ports["redis"]),
                    "--bind",
                    "127.0.0.1",
                    "--save",
                    "",
                    "--appendonly",
                    "no",
                    "--dir",
                    str(work),
                ],
                work,
            )
        )
        docroot = work / "docroot"
        docroot.mkdir()
        self._nginx("app", stack.upstream_site(self.ports["app"], docroot))
        op = self.stack.python("op", "-m", "bench.idp", str(self.ports["op"]), OP_SECRET)
        metadata = work / "idp-metadata.xml"
        metadata.write_bytes(self.idp.metadata())
        redis_url = f"redis://127.0.0.1:{self.ports['redis']}/0"
        wait_http(op, f"http://127.0.0.1:{self.ports['op']}/.well-known/openid-configuration")
        redis.check_running()
        gates = [("ag", self.args.workers)]
        if self.args.revocations:
            gates.append(("replica", 1))
        for name, workers in gates:
            config = work / f"{name}.yaml"
            stack.authgate_config(
                config,
                port=self.ports[name],
                upstream=self.ports["app"],
                redis_url=redis_url,
                op_issuer=f"http://127.0.0.1:{self.ports['op']}",
                saml_metadata=metadata,
                workers=workers,
                audit=work / f"{name}-audit.log",
            )
            gate = self.stack.python(
                f"authgate-{name}",
                "-m",
                "authgate",
                "run",
                "--config",
                str(config),
                "--log-level",
                "warning",
            )
            wait_http(gate, f"http://127.0.0.1:{self.ports[name]}/_authgate/healthz")
        self._nginx("b", stack.proxy_pass_site(self.ports["b"], self.ports["app"]))
        self._nginx(
            "c", stack.return_200_site(self.ports["c"], self.ports["ag"], self.ports["app"])
        )
        self._nginx("a", stack.shipped_site(self.ports["a"], self.ports["ag"], self.ports["app"]))

    def _nginx(self, name: str, site: str) -> None:
        conf = stack.nginx_conf(self.stack.work, f"nginx-{name}", site, "auto")
        process = self.stack.add(
            Process(
                f"nginx-{name}",
                [binary("nginx"), "-p", str(conf.parent), "-c", str(conf)],
                self.stack.work,
            )
        )
        wait_http(process, f"http://127.0.0.1:{self.ports[name]}/")

    def url(self, name: str, path: str = APP_PATH) -> str:
        return f"http://127.0.0.1:{self.ports[name]}{path}"

    def targets(self, sid: str) -> dict[str, Target]:
        cookie = {"Cookie": f"{logins.SESSION_COOKIE}={sid}"}
        return {
            "nginx-proxy-pass": Target(self.url("b"), {}, _page_check),
            "authgate-proxy": Target(self.url("ag"), cookie, _page_check),
            "nginx-auth-200": Target(self.url("c"), {}, _page_check),
            "nginx-auth-authgate": Target(self.url("a"), cookie, _page_check),
            "authgate-auth": Target(self.url("ag", "/_authgate/auth"), cookie, _auth_check),
        }

    # --- measurements ---------------------------------------------------------------------

    async def run(self) -> dict[str, Any]:
        started = dt.datetime.now(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
        result: dict[str, Any] = {
            "started": started,
            "machine": report.machine(),
            "run": {
                "workers": self.args.workers,
                "duration": self.args.duration,
                "repetitions": self.args.repetitions,
                "connections": self.args.connections,
            },
        }
        async with aiohttp.ClientSession(cookie_jar=aiohttp.DummyCookieJar()) as http:
            browser = logins.Browser(http, f"http://127.0.0.1:{self.ports['ag']}", self.idp)
            sid, _ = await browser.oidc()
            targets = {k: v for k, v in self.targets(sid).items() if k in self.args.paths}
            await self._check(http, targets)
            result["paths"] = await self._throughput(targets)
            report.ratios(result["paths"])
            if self.args.logins:
                result["logins"] = {
                    "OIDC callback": logins.percentiles(
                        await logins.oidc_latency(browser, self.args.logins)
                    ),
                    "SAML ACS": logins.percentiles(
                        await logins.saml_latency(browser, self.args.logins)
                    ),
                }
                say(f"logins: {result['logins']}")
            if not self.args.no_storm and "authgate-proxy" in targets:
                result["storm"] = await self._storm(browser, targets["authgate-proxy"])
            if self.args.revocations:
                result["revocation"] = await self._revocation(browser)
        result["targets"] = report.targets(result)
        return result

    async def _check(self, http: aiohttp.ClientSession, targets: dict[str, Target]) -> None:
        """One request per path: each must answer what is about to be measured."""
        for name, target in targets.items():
            async with http.get(target.url, headers=target.headers, allow_redirects=False) as resp:
                body = await resp.read()
                problem = target.check(resp.status, dict(resp.headers), body)
            if problem:
                raise RuntimeError(f"{name} ({target.url}): {problem}")
            say(f"checked {name}: OK")

    async def _throughput(self, targets: dict[str, Target]) -> dict[str, dict[str, dict[str, Any]]]:
        tool = binary("wrk")
        warmup = min(WARMUP_SECONDS, self.args.duration)
        for name, target in targets.items():
            await wrk.run(tool, target.url, max(self.args.connections), warmup, target.headers)
            say(f"warmed up {name}")
        runs: dict[str, dict[int, list[wrk.WrkResult]]] = {n: {} for n in targets}
        for rep in range(1, self.args.repetitions + 1):
            for conns in self.args.connections:
                for name, target in targets.items():
                    got = await wrk.run(tool, target.url, conns, self.args.duration, target.headers)
                    if got.non_2xx or got.socket_errors:
                        raise RuntimeError(
                            f"{name}: {got.non_2xx} non-2xx, {got.socket_errors} socket errors"
                        )
                    runs[name].setdefault(conns, []).append(got)
                    say(
                        f"round {rep}, {conns} connections, {name}: {got.rps:.0f} req/s,"
                        f" p50 {got.p50_ms:.2f} ms, p99 {got.p99_ms:.2f} ms"
                    )
        return {name: {str(c): _median(rs) for c, rs in per.items()} for name, per in runs.items()}

    async def _storm(self, browser: logins.Browser, target: Target) -> dict[str, Any]:
        """Logins at `storm_concurrency` while wrk loads the reverse proxy at 50 connections."""
        pending = [await browser.saml_start() for _ in range(STORM_SAML_PENDING)]
        seconds = self.args.duration
        load = asyncio.create_task(wrk.run(binary("wrk"), target.url, 50, seconds, target.headers))
        until = time.monotonic() + seconds
        timings = await logins.storm(browser, pending, until, self.args.storm_concurrency)
        proxy = await load
        count = sum(len(t) for t in timings.values())
        storm = {
            "concurrency": self.args.storm_concurrency,
            "seconds": seconds,
            "logins": count,
            "logins_per_s": count / seconds,
            "proxy": proxy.to_dict(),
            **{name: logins.percentiles(t) for name, t in timings.items()},
        }
        say(f"storm: {storm}")
        return storm

    async def _revocation(self, browser: logins.Browser) -> dict[str, Any]:
        """Logouts alternately on authgate and on the replica; probes on both."""
        delays = []
        ports = [self.ports["ag"], self.ports["replica"]]
        for round_ in range(self.args.revocations):
            sid, _ = await browser.oidc()
            logout_port = ports[round_ % 2]
            probes = [self.ports["ag"]] * REVOCATION_PROBES["workers"]
            probes += [self.ports["replica"]] * REVOCATION_PROBES["replica"]
            delays.append(await revocation.delay(logout_port, probes, sid, APP_PATH))
        result = {
            "rounds": len(delays),
            "replicas": 2,
            "probes": sum(REVOCATION_PROBES.values()),
            "median_s": statistics.median(delays),
            "max_s": max(delays),
        }
        say(f"revocation: {result}")
        return result


def _median(results: list[wrk.WrkResult]) -> dict[str, Any]:
    return {
        "rps": statistics.median(r.rps for r in results),
        "p50_ms": statistics.median(r.p50_ms for r in results),
        "p99_ms": statistics.median(r.p99_ms for r in results),
        "runs": [r.to_dict() for r in results],
    }


def _stop_on_sigterm() -> None:
    """SIGTERM unwinds like Ctrl-C, so every process started is stopped on the way out."""
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    _stop_on_sigterm()
    bench = Bench(args)
    try:
        bench.start()
        say(f"started in {bench.stack.work}; authgate workers: {args.workers}")
        result = asyncio.run(bench.run())
    except BaseException:
        say(f"failed; the processes' logs are in {bench.stack.work}")
        raise
    finally:
        bench.stack.stop()
    shutil.rmtree(bench.stack.work, ignore_errors=True)
    json_path, md_path = report.write(result, args.results_dir)
    print(report.markdown(result))
    say(f"wrote {json_path} and {md_path}")
    return 0
