"""`bench/run` (= `python -m bench`): start everything, sign in for real, measure, report.

Order of a run: redis-server, an nginx upstream serving a fixed 1 KiB page,
the test OpenID Provider, authgate with `workers` = cores (plus a one-worker
replica for the revocation test), the peer oauth2-proxy twice (cookie and
Redis session store), and the nginx front ends, each with as many workers as
authgate. One real OIDC login per server yields its session cookie; each path
must then return the 1 KiB page (a benchmark of a redirect is worthless)
before wrk measures it, at each connection count, repeated in interleaved
rounds so drift hits every path alike; the medians are reported, with the CPU
each server spent per request. Then the login latencies, a login storm under
proxy load, and the revocation delay.
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

from bench import cpu, logins, report, revocation, stack, wrk
from bench.stack import Process, Stack, binary, free_port, page, wait_http

PATHS = (
    "nginx-proxy-pass",
    "authgate-proxy",
    "oauth2-proxy-proxy",
    "oauth2-proxy-redis-proxy",
    "nginx-auth-200",
    "nginx-auth-authgate",
    "nginx-auth-oauth2-proxy",
    "nginx-auth-oauth2-proxy-redis",
    "authgate-auth",
)
# The oauth2-proxy instances (by port name): their session store, and the paths they serve.
OAUTH2_PROXIES = {
    "o2p": ("cookie", ("oauth2-proxy-proxy", "nginx-auth-oauth2-proxy")),
    "o2p-redis": ("redis", ("oauth2-proxy-redis-proxy", "nginx-auth-oauth2-proxy-redis")),
}
UPSTREAM = "nginx-app"
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
    """A measured path; `servers` are the processes whose CPU its row counts (all but the page)."""

    url: str
    headers: dict[str, str]
    check: Callable[[int, dict[str, str], bytes], str | None]
    servers: tuple[str, ...]


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
        names = ["redis", "app", "op", "ag", "replica", "b", "c", "a"]
        names += [f"{prefix}{peer}" for peer in OAUTH2_PROXIES for prefix in ("", "a-")]
        self.ports = {name: free_port() for name in names}
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
        self._nginx("app", stack.upstream_site(self.ports["app"], docroot), "auto")
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
        for peer in self.peers():
            self._oauth2_proxy(peer, redis_url)
        app = self.ports["app"]
        self._nginx("b", stack.proxy_pass_site(self.ports["b"], app))
        self._nginx("c", stack.return_200_site(self.ports["c"], self.ports["ag"], app))
        self._nginx("a", stack.shipped_site(self.ports["a"], self.ports["ag"], app))
        for peer in self.peers():
            front = f"a-{peer}"
            self._nginx(front, stack.oauth2_proxy_site(self.ports[front], self.ports[peer], app))

    def peers(self) -> list[str]:
        """The oauth2-proxy instances a chosen path needs (none when only authgate is measured)."""
        return [
            peer for peer, (_, paths) in OAUTH2_PROXIES.items() if set(paths) & set(self.args.paths)
        ]

    def _oauth2_proxy(self, peer: str, redis_url: str) -> None:
        store, _ = OAUTH2_PROXIES[peer]
        argv = stack.oauth2_proxy_argv(
            stack.go_binary("oauth2-proxy"),
            port=self.ports[peer],
            upstream=self.ports["app"],
            op_issuer=f"http://127.0.0.1:{self.ports['op']}",
            client_secret=OP_SECRET,
            redis_url=redis_url if store == "redis" else None,
        )
        process = self.stack.add(Process(self._name(peer), argv, self.stack.work))
        wait_http(process, self.url(peer, "/ping"))

    @staticmethod
    def _name(port_name: str) -> str:
        return port_name.replace("o2p", "oauth2-proxy")

    def _nginx(self, name: str, site: str, workers: str | None = None) -> None:
        """An nginx with as many workers as authgate, unless told otherwise (the upstream)."""
        conf = stack.nginx_conf(
            self.stack.work, f"nginx-{name}", site, workers or str(self.args.workers)
        )
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

    def targets(self, sid: str, peer_cookies: dict[str, str]) -> dict[str, Target]:
        """Every chosen path; `peer_cookies` holds each started oauth2-proxy's session cookie."""
        cookie = {"Cookie": f"{logins.SESSION_COOKIE}={sid}"}
        gate = ("authgate-ag", "redis")
        targets = {
            "nginx-proxy-pass": Target(self.url("b"), {}, _page_check, ("nginx-b",)),
            "authgate-proxy": Target(self.url("ag"), cookie, _page_check, gate),
            "nginx-auth-200": Target(self.url("c"), {}, _page_check, ("nginx-c",)),
            "nginx-auth-authgate": Target(self.url("a"), cookie, _page_check, ("nginx-a", *gate)),
            "authgate-auth": Target(self.url("ag", "/_authgate/auth"), cookie, _auth_check, gate),
        }
        for peer, value in peer_cookies.items():
            store, (proxy, auth) = OAUTH2_PROXIES[peer]
            servers = (self._name(peer), "redis") if store == "redis" else (self._name(peer),)
            headers = {"Cookie": value}
            targets[proxy] = Target(self.url(peer), headers, _page_check, servers)
            targets[auth] = Target(
                self.url(f"a-{peer}"), headers, _page_check, (f"nginx-a-{peer}", *servers)
            )
        return {name: targets[name] for name in PATHS if name in self.args.paths}

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
            peer_cookies = {
                peer: await logins.oauth2_proxy(http, f"http://127.0.0.1:{self.ports[peer]}")
                for peer in self.peers()
            }
            targets = self.targets(sid, peer_cookies)
            await self._check(http, targets)
            result["paths"] = await self._throughput(targets)
            report.vs_baselines(result["paths"])
            result["ratios"] = report.ratios(result["paths"])
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
        roots = {p.name: p.pid for p in self.stack.processes}
        runs: dict[str, dict[int, list[Run]]] = {n: {} for n in targets}
        for rep in range(1, self.args.repetitions + 1):
            for conns in self.args.connections:
                for name, target in targets.items():
                    before = cpu.seconds(roots)
                    got = await wrk.run(tool, target.url, conns, self.args.duration, target.headers)
                    used = cpu.per_request_us(before, cpu.seconds(roots), got.requests)
                    if got.non_2xx or got.socket_errors:
                        raise RuntimeError(
                            f"{name}: {got.non_2xx} non-2xx, {got.socket_errors} socket errors"
                        )
                    run = Run(got, {s: used[s] for s in (*target.servers, UPSTREAM)}, target)
                    runs[name].setdefault(conns, []).append(run)
                    say(
                        f"round {rep}, {conns} connections, {name}: {got.rps:.0f} req/s,"
                        f" p50 {got.p50_ms:.2f} ms, p99 {got.p99_ms:.2f} ms,"
                        f" CPU {run.cpu_us_per_request:.1f} µs/request"
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


@dataclass(frozen=True)
class Run:
    """One wrk run of a path and the CPU µs per request each server spent during it."""

    result: wrk.WrkResult
    cpu_us: dict[str, float]
    target: Target

    @property
    def cpu_us_per_request(self) -> float:
        """The path's own servers; the upstream page is the application's cost, not theirs."""
        return sum(self.cpu_us[s] for s in self.target.servers)

    def to_dict(self) -> dict[str, Any]:
        return {
            **self.result.to_dict(),
            "cpu_us_per_request": self.cpu_us_per_request,
            "cpu_us": self.cpu_us,
        }


def _median(runs: list[Run]) -> dict[str, Any]:
    return {
        "rps": statistics.median(r.result.rps for r in runs),
        "p50_ms": statistics.median(r.result.p50_ms for r in runs),
        "p99_ms": statistics.median(r.result.p99_ms for r in runs),
        "cpu_us_per_request": statistics.median(r.cpu_us_per_request for r in runs),
        "cpu_us": {s: statistics.median(r.cpu_us[s] for r in runs) for s in runs[0].cpu_us},
        "runs": [r.to_dict() for r in runs],
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
    json_path, md_path, latest = report.write(result, args.results_dir)
    print(report.markdown(result))
    say(f"wrote {json_path}, {md_path} and {latest}")
    return 0
