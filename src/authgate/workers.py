"""Running authgate: one process, or `workers: N` processes on one port under a supervisor.

Each worker is a whole authgate (its own event loop, Redis and upstream
pools) bound to the same address with SO_REUSEPORT, so the kernel spreads
connections over them. Workers share nothing in memory: sessions, login
state and keys live in Redis, which is why settings refuse the memory store
with `workers > 1`. The supervisor only watches: it restarts a worker that
dies, and serves /metrics as the sum over every worker that ever ran, from
prometheus_client's multiprocess files. It points PROMETHEUS_MULTIPROC_DIR at
a fresh directory before the first worker is spawned (not forked), so each
worker's prometheus_client is imported already writing there.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import multiprocessing
import os
import shutil
import signal
import sys
import tempfile
import time
from collections.abc import Coroutine
from dataclasses import dataclass, field
from multiprocessing.connection import Connection
from multiprocessing.process import BaseProcess
from typing import Any

from aiohttp import web
from prometheus_client import CollectorRegistry, multiprocess

from authgate.app import metrics_app, serve, site
from authgate.errors import StoreUnavailable
from authgate.settings import Settings

log = logging.getLogger("authgate.workers")

MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"
EXIT_UNAVAILABLE = 3
READY_TIMEOUT = 60.0
PARENT_CHECK_INTERVAL = 1.0
STOP_TIMEOUT = 15.0
# A worker that dies sooner than this after its start is restarted after a growing pause.
STABLE_AFTER = 10.0
MAX_BACKOFF = 30.0
LOG_FORMAT = "%(asctime)s %(levelname)s %(name)s[%(process)d]: %(message)s"


def configure_logging(level: str) -> None:
    logging.basicConfig(level=level.upper(), format=LOG_FORMAT)


def run_loop(
    main: Coroutine[Any, Any, None], stop_on: tuple[int, ...] = (signal.SIGTERM, signal.SIGINT)
) -> None:
    """Run `main` on uvloop when installed; the `stop_on` signals end it through its cleanup."""
    with asyncio.Runner(loop_factory=_loop_factory()) as runner:
        loop = runner.get_loop()
        task = loop.create_task(main)
        for signum in stop_on:
            loop.add_signal_handler(signum, task.cancel)
        with contextlib.suppress(asyncio.CancelledError):
            runner.run(_await(task))


async def _await(task: asyncio.Task[None]) -> None:
    await task


def _loop_factory() -> Any:
    try:
        import uvloop  # optional: `pip install authgate[fast]`
    except ImportError:
        return None
    return uvloop.new_event_loop


def run(settings: Settings, log_level: str, force_retire: bool = False) -> int:
    """`authgate run`: the process itself serves, or supervises `workers` processes."""
    configure_logging(log_level)
    if settings.workers == 1:
        run_loop(serve(settings, force_retire=force_retire))
        return 0
    metrics_dir = tempfile.mkdtemp(prefix="authgate-metrics-")
    os.environ[MULTIPROC_ENV] = metrics_dir
    supervisor = Supervisor(settings, log_level, force_retire)
    try:
        run_loop(supervisor.run())
    finally:
        supervisor.stop_all()
        shutil.rmtree(metrics_dir, ignore_errors=True)
    return supervisor.exit_code


def _worker_main(settings: Settings, log_level: str, force_retire: bool, ready: Connection) -> None:
    """Entry point of a spawned worker: serve until the supervisor sends SIGTERM.

    Ctrl-C in a terminal reaches the whole process group; the supervisor alone
    acts on it, so that it never mistakes a worker stopping for a crash.
    """
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    configure_logging(log_level)
    try:
        run_loop(_serve_worker(settings, force_retire, ready), stop_on=(signal.SIGTERM,))
    except StoreUnavailable as exc:
        log.error("the session store is unreachable (%s)", exc.detail)
        sys.exit(EXIT_UNAVAILABLE)


async def _serve_worker(settings: Settings, force_retire: bool, ready: Connection) -> None:
    """Serve, and stop when the supervisor is gone, so no orphan keeps holding the port."""
    parent = os.getppid()
    server = asyncio.create_task(
        serve(settings, force_retire, worker=True, ready=lambda: ready.send(os.getpid()))
    )
    try:
        while not server.done():
            await asyncio.wait({server}, timeout=PARENT_CHECK_INTERVAL)
            if os.getppid() != parent:
                log.error("the supervisor is gone; stopping")
                server.cancel()
        await server
    finally:
        server.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await server


@dataclass
class _Slot:
    index: int
    process: BaseProcess | None = None
    started_at: float = 0.0
    backoff: float = 0.0
    restarts: int = 0
    exited: asyncio.Event = field(default_factory=asyncio.Event)


class StartupFailed(Exception):
    def __init__(self, code: int) -> None:
        super().__init__(f"a worker failed to start (exit code {code})")
        self.code = code


class Supervisor:
    """Starts the workers, restarts any that die, and serves their summed metrics."""

    def __init__(self, settings: Settings, log_level: str, force_retire: bool) -> None:
        self.settings = settings
        self.log_level = log_level
        self.force_retire = force_retire
        self.exit_code = 0
        self._ctx = multiprocessing.get_context("spawn")
        self._slots: list[_Slot] = []

    async def run(self) -> None:
        self._slots = [_Slot(i) for i in range(self.settings.workers)]
        try:
            await asyncio.gather(*(self._start(slot) for slot in self._slots))
        except StartupFailed as exc:
            log.error("%s; stopping", exc)
            self.exit_code = exc.code or 1
            return
        log.info("%d workers serving %s", len(self._slots), self.settings.listen)
        async with contextlib.AsyncExitStack() as stack:
            if self.settings.metrics.enabled:
                await stack.enter_async_context(
                    site(_summed_metrics(), self.settings.metrics.listen)
                )
            await asyncio.gather(*(self._watch(slot) for slot in self._slots))

    async def _start(self, slot: _Slot) -> None:
        """Spawn one worker and wait until it listens; an early exit is a start-up failure."""
        loop = asyncio.get_running_loop()
        receiver, sender = self._ctx.Pipe(duplex=False)
        process = self._ctx.Process(
            target=_worker_main,
            args=(self.settings, self.log_level, self.force_retire, sender),
            name=f"authgate-worker-{slot.index}",
            daemon=False,
        )
        process.start()
        sender.close()
        slot.process, slot.started_at, slot.exited = process, time.monotonic(), asyncio.Event()
        loop.add_reader(process.sentinel, _on_exit, loop, process.sentinel, slot.exited)
        try:
            if not await _ready(loop, receiver):
                process.join(timeout=5)
                raise StartupFailed(process.exitcode if process.exitcode is not None else 1)
        finally:
            receiver.close()

    async def _watch(self, slot: _Slot) -> None:
        """Restart the worker whenever it exits, pausing longer after each quick crash."""
        while True:
            await slot.exited.wait()
            assert slot.process is not None
            slot.process.join()
            code = slot.process.exitcode
            lived = time.monotonic() - slot.started_at
            slot.backoff = 0.0 if lived >= STABLE_AFTER else min(MAX_BACKOFF, slot.backoff * 2 or 1)
            slot.restarts += 1
            log.error(
                "worker %d (pid %s) exited with code %s after %.1fs; restarting in %.0fs",
                slot.index,
                slot.process.pid,
                code,
                lived,
                slot.backoff,
            )
            _mark_dead(slot.process.pid)
            await asyncio.sleep(slot.backoff)
            try:
                await self._start(slot)
            except StartupFailed as exc:
                log.error("worker %d did not come back: %s", slot.index, exc)

    def stop_all(self) -> None:
        """SIGTERM every worker, then SIGKILL what is still running after STOP_TIMEOUT."""
        processes = [s.process for s in self._slots if s.process is not None]
        for process in processes:
            if process.is_alive():
                process.terminate()
        deadline = time.monotonic() + STOP_TIMEOUT
        for process in processes:
            process.join(max(0.0, deadline - time.monotonic()))
            if process.is_alive():
                process.kill()
                process.join()


def _on_exit(loop: asyncio.AbstractEventLoop, fd: int, exited: asyncio.Event) -> None:
    loop.remove_reader(fd)
    exited.set()


async def _ready(loop: asyncio.AbstractEventLoop, receiver: Connection) -> bool:
    """True once the worker reports it listens; False when it exits (or hangs) first."""
    readable: asyncio.Future[None] = loop.create_future()
    loop.add_reader(receiver.fileno(), lambda: readable.done() or readable.set_result(None))
    try:
        await asyncio.wait_for(readable, READY_TIMEOUT)
        return bool(receiver.recv())
    except (TimeoutError, EOFError, OSError):
        return False
    finally:
        loop.remove_reader(receiver.fileno())


def _mark_dead(pid: int | None) -> None:
    """Lets prometheus_client drop the dead worker's live gauges; its counters still count."""
    if pid is not None:
        multiprocess.mark_process_dead(pid)


def _summed_metrics() -> web.Application:
    registry = CollectorRegistry()
    multiprocess.MultiProcessCollector(registry)
    return metrics_app(registry)
