"""SAML ACS latency in-process: the xmlsec1 program (before) against libxmlsec1 in-process (now).

    .venv/bin/python bench/saml_acs.py [--requests 200] [--burst 50] [--repeat 3]

authgate (memory store) runs in this process on a loopback port with one
SAML connection trusting the test IdP of tests/saml_idp.py, which signs with
signxml (RSA-SHA256, exc-c14n) and encrypts with AES-256-CBC + RSA-OAEP for
the SP's certificate. "Before" is pysaml2 running the xmlsec1 program on the
shared thread pool; "now" is libxmlsec1 in-process on the connection's own
check thread. For each kind of response (signed assertion; signed, then
encrypted) the two take turns, one login each, so that noise from other work
on the machine falls on both alike: a login is started and the IdP's
response built (not timed), then the POST to the ACS is timed until its 302.
Then `--burst` ACS posts arrive at once from another process, `--repeat`
times, while a ticker task in the server measures how late the event loop
wakes it. No thresholds: it prints markdown tables."""

from __future__ import annotations

import argparse
import asyncio
import logging
import multiprocessing
import os
import platform
import statistics
import sys
import tempfile
import time
from collections.abc import Sequence
from concurrent.futures import Executor, ThreadPoolExecutor
from contextlib import suppress
from dataclasses import dataclass
from multiprocessing.connection import Connection
from multiprocessing.process import BaseProcess
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import aiohttp  # noqa: E402
from aiohttp.test_utils import TestClient, TestServer  # noqa: E402
from lxml import etree  # noqa: E402
from saml2.sigver import CryptoBackendXmlSec1, SigverError, get_xmlsec_binary  # noqa: E402
from tests.saml_gate import ACS_URL, SP_ENTITY, SamlBrowser, saml_settings  # noqa: E402
from tests.saml_idp import TestIdp, encode  # noqa: E402

from authgate.app import create_app  # noqa: E402
from authgate.errors import ProtocolError  # noqa: E402
from authgate.keys import write_pair  # noqa: E402
from authgate.protocols.saml_crypto import XmlSec, embedded_certificate, ordered, pem  # noqa: E402
from authgate.web.state import STATE  # noqa: E402

KINDS = ("signed", "encrypted+signed")


class Xmlsec1Program(XmlSec):
    """The backend before: pysaml2 runs the xmlsec1 program once per operation and certificate."""

    def __init__(self) -> None:
        super().__init__()
        logging.getLogger("saml2.sigver").setLevel(logging.CRITICAL)
        self._backend = CryptoBackendXmlSec1(get_xmlsec_binary())

    def verify(self, signature: etree._Element, certs: Sequence[str]) -> bool:
        node = signature.getparent()
        qname = etree.QName(node)
        xml = etree.tostring(signature.getroottree())
        for cert in ordered(certs, embedded_certificate(signature)):
            with tempfile.NamedTemporaryFile(suffix=".pem") as handle, suppress(SigverError):
                handle.write(pem(cert).encode())
                handle.flush()
                name = f"{qname.namespace}:{qname.localname}"
                if self._backend.validate_signature(xml, handle.name, "pem", name, node.get("ID")):
                    return True
        return False

    def decrypt(self, encrypted: etree._Element, key_files: Sequence[Path]) -> bytes:
        xml = etree.tostring(encrypted.getroottree())
        for key_file in key_files:
            with suppress(SigverError):
                plain = self._backend.decrypt(xml, str(key_file))
                if plain:
                    return plain.encode() if isinstance(plain, str) else plain
        raise ProtocolError("decrypt_failed", "no SP key decrypts the assertion")


@dataclass
class Bench:
    server: TestServer | None
    idp: TestIdp
    sp_cert: bytes
    backends: dict[str, tuple[XmlSec, Executor]]

    def use(self, backend: str) -> None:
        """Swap the connection's crypto and the executor its checks run on (before: shared pool)."""
        assert self.server is not None
        protocol = self.server.app[STATE].protocols["corp"]
        protocol.xmlsec, protocol._checks = self.backends[backend]

    async def browser(self) -> SamlBrowser:
        """A browser of its own (cookie jar); closed with its session, never the shared server."""
        assert self.server is not None
        client = TestClient(self.server)
        await client.start_server()
        return SamlBrowser(client)

    async def prepared(self, browser: SamlBrowser, kind: str) -> str:
        """A started login and the IdP's answer to it (none of this is timed)."""
        rid = await browser.start()
        assertion = self.idp.sign(
            self.idp.assertion(audience=SP_ENTITY, recipient=ACS_URL, in_response_to=rid)
        )
        if kind != "signed":
            assertion = self.idp.encrypt(assertion, self.sp_cert)
        return encode(self.idp.response(assertion, destination=ACS_URL, in_response_to=rid))

    async def post(self, browser: SamlBrowser, saml_response: str) -> float:
        started = time.perf_counter()
        resp = await browser.post(saml_response)
        elapsed = time.perf_counter() - started
        if resp.status != 302:
            raise SystemExit(f"ACS answered {resp.status}: {await resp.text()}")
        return elapsed


def percentile(samples: list[float], p: float) -> float:
    ordered_samples = sorted(samples)
    return ordered_samples[min(len(ordered_samples) - 1, round(p / 100 * len(ordered_samples)))]


async def sequential(bench: Bench, kind: str, requests: int) -> dict[str, list[float]]:
    browser = await bench.browser()
    times: dict[str, list[float]] = {name: [] for name in bench.backends}
    try:
        for i in range(requests + 5):
            for name in bench.backends:
                bench.use(name)
                elapsed = await bench.post(browser, await bench.prepared(browser, kind))
                if i >= 5:
                    times[name].append(elapsed)
    finally:
        await browser.gate.session.close()
    return times


async def _client_burst(url: str, idp: TestIdp, sp_cert: bytes, kind: str, size: int) -> tuple:
    """In the client process: `size` started logins, then all their ACS posts at once."""
    sessions = [
        aiohttp.ClientSession(base_url=url, cookie_jar=aiohttp.CookieJar(unsafe=True))
        for _ in range(size)
    ]
    try:
        bench = Bench(None, idp, sp_cert, {})
        browsers = [SamlBrowser(session) for session in sessions]  # type: ignore[arg-type]
        answers = [await bench.prepared(b, kind) for b in browsers]
        started = time.monotonic()
        posts = (bench.post(b, a) for b, a in zip(browsers, answers, strict=True))
        latencies = await asyncio.gather(*posts)
        return started, time.monotonic(), latencies
    finally:
        for session in sessions:
            await session.close()


def _client_process(url: str, idp: TestIdp, sp_cert: bytes, kind: str, size: int, out) -> None:
    """Sends (start, end) of the burst, or the error that stopped it (never nothing)."""
    try:
        out.send(asyncio.run(_client_burst(url, idp, sp_cert, kind, size)))
    except BaseException as exc:
        out.send(f"client process failed: {exc!r}")


def _outcome(receive: Connection, client: BaseProcess) -> tuple[float, float, list[float]] | str:
    """What the client process sent, or why it sent nothing."""
    while not receive.poll(0.1):
        if not client.is_alive() and not receive.poll():
            return f"client process exited with {client.exitcode}"
    return receive.recv()


@dataclass
class Burst:
    lags: list[float]
    latencies: list[float]
    wall: float


async def burst(bench: Bench, backend: str, kind: str, size: int) -> Burst:
    """Event-loop lags and ACS latencies while `size` ACS posts arrive at once.

    The clients run in another process, so the lag is the server's own: how
    late the loop wakes a task that sleeps 1 ms while the posts are handled.
    """
    bench.use(backend)
    lags: list[tuple[float, float]] = []
    done = asyncio.Event()

    async def ticker() -> None:
        while not done.is_set():
            before = time.monotonic()
            await asyncio.sleep(0.001)
            lags.append((before, time.monotonic() - before - 0.001))

    receive, send = multiprocessing.Pipe(duplex=False)
    url = str(bench.server.make_url("/"))
    client = multiprocessing.get_context("spawn").Process(
        target=_client_process, args=(url, bench.idp, bench.sp_cert, kind, size, send)
    )
    tick = asyncio.create_task(ticker())
    client.start()
    try:
        outcome = await asyncio.get_running_loop().run_in_executor(None, _outcome, receive, client)
    finally:
        done.set()
        await tick
        client.join()
    if isinstance(outcome, str):
        raise SystemExit(outcome)
    started, ended, latencies = outcome
    window = [lag for at, lag in lags if started <= at <= ended]
    return Burst(window, latencies, ended - started)


def machine() -> str:
    model = "unknown CPU"
    with suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    return f"{os.cpu_count()} cores, {model}, Python {platform.python_version()}"


async def main(requests: int, size: int, repeat: int) -> None:
    with tempfile.TemporaryDirectory() as folder:
        tmp = Path(folder)
        idp = TestIdp()
        metadata = tmp / "idp-metadata.xml"
        metadata.write_bytes(idp.metadata())
        write_pair(tmp / "sp.key", tmp / "sp.crt", "bench-sp", bits=2048)
        keys = {"key_file": str(tmp / "sp.key"), "cert_file": str(tmp / "sp.crt")}
        audit = {"audit": {"output": str(tmp / "audit.log")}}
        settings = saml_settings("http://127.0.0.1:9", metadata, top=audit, sp_keys=[keys])
        server = TestServer(create_app(settings))
        await server.start_server()
        protocol = server.app[STATE].protocols["corp"]
        backends = {
            "xmlsec1 program": (Xmlsec1Program(), ThreadPoolExecutor()),
            "in-process": (protocol.xmlsec, protocol._checks),
        }
        bench = Bench(server, idp, (tmp / "sp.crt").read_bytes(), backends)
        try:
            print(f"machine: {machine()}; {requests} logins per row, after 5 warm-up\n")
            print("| response | backend | p50 ms | p99 ms | mean ms |")
            print("|---|---|---|---|---|")
            for kind in KINDS:
                for name, samples in (await sequential(bench, kind, requests)).items():
                    ms = [s * 1000 for s in samples]
                    print(
                        f"| {kind} | {name} | {percentile(ms, 50):.1f} | {percentile(ms, 99):.1f}"
                        f" | {statistics.fmean(ms):.1f} |"
                    )
            print(f"\n{repeat} x {size} ACS posts at once (clients in another process):\n")
            print(
                "| response | backend | loop lag worst / p99 / p50 ms"
                " | ACS p50 / p99 ms in the burst | burst wall ms |"
            )
            print("|---|---|---|---|---|")
            for kind in KINDS:
                for name in backends:
                    runs = [await burst(bench, name, kind, size) for _ in range(repeat)]
                    lag = [x * 1000 for run in runs for x in run.lags]
                    ms = [x * 1000 for run in runs for x in run.latencies]
                    wall = statistics.median(run.wall * 1000 for run in runs)
                    print(
                        f"| {kind} | {name} | {max(lag):.1f} / {percentile(lag, 99):.1f}"
                        f" / {percentile(lag, 50):.2f} | {percentile(ms, 50):.0f}"
                        f" / {percentile(ms, 99):.0f} | {wall:.0f} |"
                    )
        finally:
            await server.close()


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--requests", type=int, default=200, help="timed logins per row")
    parser.add_argument("--burst", type=int, default=50, help="concurrent ACS posts")
    parser.add_argument("--repeat", type=int, default=3, help="bursts per row")
    args = parser.parse_args()
    asyncio.run(main(args.requests, args.burst, args.repeat))
