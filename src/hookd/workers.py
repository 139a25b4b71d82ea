"""Extra delivery processes, so one box's cores all deliver.

One Python process spends most of a delivery's CPU in the HTTP client, under
one GIL.  With ``[delivery] workers = N`` (N > 1), ``hookd serve`` starts N-1
``hookd worker`` processes beside itself.  A worker runs only a store, a
sender and a scheduler: it claims and sends like the main process, and the
database's leases keep the processes from ever sending the same claim twice.
A worker killed by anything loses nothing (its leases expire and any process
takes the work again); the main process restarts it.

Metrics: each worker prints a snapshot of its counters and histograms as one
JSON line on stdout every second; the main process adds them to its own when
``/metrics`` is scraped, so the exposition is one set of series for the box.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import sys
from collections.abc import Iterable, Iterator

import structlog
from prometheus_client import CollectorRegistry
from prometheus_client.metrics_core import Metric
from prometheus_client.registry import Collector

from hookd.clock import SystemClock
from hookd.components import build_delivery
from hookd.config import Config
from hookd.metrics import Metrics

log = structlog.get_logger("hookd.workers")

SNAPSHOT_INTERVAL_SECONDS = 1.0
RESTART_DELAY_SECONDS = 1.0
# Families a worker reports: what its scheduler moves.  The database gauges
# come from the main process alone (they describe the one shared database).
_REPORTED_TYPES = ("counter", "histogram")
_REPORTED_GAUGES = frozenset({"hookd_attempts_in_flight"})

Sample = tuple[str, dict[str, str], float]


def snapshot(registry: CollectorRegistry) -> list[Sample]:
    out: list[Sample] = []
    for family in registry.collect():
        if family.name.startswith(("process_", "python_")):
            continue
        if family.type in _REPORTED_TYPES or family.name in _REPORTED_GAUGES:
            out.extend((s.name, dict(s.labels), float(s.value)) for s in family.samples)
    return out


class MergedRegistry(Collector):
    """The main process's registry plus the workers' latest snapshots."""

    def __init__(self, registry: CollectorRegistry, pool: WorkerPool) -> None:
        self.registry = registry
        self.pool = pool

    def collect(self) -> Iterator[Metric]:
        extra: dict[tuple[str, tuple[tuple[str, str], ...]], float] = {}
        for samples in self.pool.snapshots():
            for name, labels, value in samples:
                key = (name, tuple(sorted(labels.items())))
                extra[key] = extra.get(key, 0.0) + value
        for family in self.registry.collect():
            if extra and (family.type in _REPORTED_TYPES or family.name in _REPORTED_GAUGES):
                family.samples = [
                    s._replace(
                        value=s.value + extra.get((s.name, tuple(sorted(s.labels.items()))), 0.0)
                    )
                    for s in family.samples
                ]
            yield family


class WorkerPool:
    """Start, watch and stop the extra delivery processes."""

    def __init__(self, count: int, config_path: str | None) -> None:
        self.count = count
        self.config_path = config_path
        self._procs: dict[int, asyncio.subprocess.Process] = {}
        self._latest: dict[int, list[Sample]] = {}
        self._tasks: list[asyncio.Task[None]] = []
        self._stopping = False

    def snapshots(self) -> Iterable[list[Sample]]:
        return list(self._latest.values())

    async def start(self) -> None:
        for index in range(1, self.count + 1):
            self._tasks.append(asyncio.create_task(self._supervise(index), name=f"worker-{index}"))

    async def _spawn(self, index: int) -> asyncio.subprocess.Process:
        args = [sys.executable, "-m", "hookd.cli"]
        if self.config_path:
            args += ["--config", self.config_path]
        args += ["worker", "--index", str(index)]
        # stdout carries metric snapshots; stderr is the shared log stream.
        return await asyncio.create_subprocess_exec(*args, stdout=asyncio.subprocess.PIPE)

    async def _supervise(self, index: int) -> None:
        while not self._stopping:
            proc = await self._spawn(index)
            self._procs[index] = proc
            log.info("worker.started", worker=index, pid=proc.pid)
            assert proc.stdout is not None
            while line := await proc.stdout.readline():
                with contextlib.suppress(ValueError, KeyError, TypeError):
                    self._latest[index] = [
                        (str(n), dict(lbl), float(v)) for n, lbl, v in json.loads(line)["metrics"]
                    ]
            code = await proc.wait()
            if self._stopping:
                return
            # Its leases expire and the work is taken again; a fresh worker
            # keeps the box's capacity.  Its counters restart from zero, which
            # Prometheus' rate() treats as a counter reset.
            self._latest.pop(index, None)
            log.error("worker.exited", worker=index, pid=proc.pid, exit_code=code)
            await asyncio.sleep(RESTART_DELAY_SECONDS)

    async def stop(self, patience: float) -> None:
        self._stopping = True
        procs = [p for p in self._procs.values() if p.returncode is None]
        for proc in procs:
            with contextlib.suppress(ProcessLookupError):
                proc.send_signal(signal.SIGTERM)
        if procs:
            _done, pending = await asyncio.wait(
                [asyncio.create_task(p.wait()) for p in procs], timeout=patience
            )
            if pending:
                log.error("worker.stop_timeout", still_running=len(pending))
                for proc in procs:
                    if proc.returncode is None:
                        proc.kill()
                await asyncio.gather(*(p.wait() for p in procs))
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)


async def run_worker(config: Config, index: int) -> int:
    """``hookd worker``: claim and deliver until SIGTERM; no HTTP listener."""
    structlog.contextvars.bind_contextvars(worker=index)
    metrics = Metrics()
    delivery = build_delivery(config, SystemClock(), metrics, lead=False)
    scheduler = delivery.scheduler
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)

    def report() -> None:
        # serve may be gone (killed): a closed pipe must not stop the worker
        # from draining and closing its store.
        with contextlib.suppress(OSError, ValueError):
            sys.stdout.write(json.dumps({"metrics": snapshot(metrics.registry)}) + "\n")
            sys.stdout.flush()

    parent = os.getppid()

    async def reporter() -> None:
        while True:
            await asyncio.sleep(SNAPSHOT_INTERVAL_SECONDS)
            if os.getppid() != parent:
                # serve died without stopping us (SIGKILL, OOM): a worker must
                # not outlive it, or a restarted serve would start more beside us.
                log.error("worker.orphaned", parent_pid=parent)
                stop.set()
                return
            report()

    await delivery.start()
    scheduler.start()
    reporting = asyncio.create_task(reporter())
    log.info("worker.ready", pid=os.getpid())
    try:
        await stop.wait()
    finally:
        try:
            await scheduler.stop()
            reporting.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await reporting
            report()
        finally:
            # The store's threads would keep the process alive if left open.
            await delivery.close()
    return 0
