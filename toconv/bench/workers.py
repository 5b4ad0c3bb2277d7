"""Worker processes for the benchmark: independent jobs (an instrument seed, one run at one size)
spread over spawned processes, their progress lines forwarded to the caller's ``log``.

Small models on a CPU gain little from a second thread per op; two processes with one thread each
finish two jobs in about two thirds of the time one two-threaded process needs. Tensors travel
through shared memory (:mod:`torch.multiprocessing`), so the token caches are not copied.
"""

from __future__ import annotations

import os
import queue
from collections.abc import Callable, Sequence
from concurrent.futures import Future, ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from typing import Any, TypeVar

import torch
import torch.multiprocessing as mp

T = TypeVar("T")
Log = Callable[[str], None]

_worker_log: Log = print


def available_cores() -> int:
    """CPU cores this process may run on."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


def resolve_workers(requested: int | None, num_jobs: int) -> int:
    """``requested`` worker processes (≥ 1, checked by :class:`~toconv.bench.config.BenchConfig`;
    None: one per available core), at most one per job."""
    return max(1, min(available_cores() if requested is None else requested, num_jobs))


def _start_worker(lines: Any, threads: int) -> None:
    global _worker_log
    _worker_log = lines.put
    torch.set_num_threads(threads)


def _call(fn: Callable[..., T], args: tuple[Any, ...]) -> T:
    return fn(*args, log=_worker_log)


class Workers:
    """``map(fn, argsets)`` runs ``fn(*args, log=log)`` for every argset and returns the results in
    order: in this process when ``count`` is 1, else in ``count`` spawned processes with
    ``threads`` torch threads each (default: this process's threads shared out, at least one).
    ``fn`` must be importable (a module-level function). Use as a context manager."""

    def __init__(self, count: int, log: Log, threads: int | None = None) -> None:
        self.count, self.log = count, log
        self.threads = threads or max(1, torch.get_num_threads() // count)
        self._pool: ProcessPoolExecutor | None = None
        self._lines: Any = None

    def __enter__(self) -> Workers:
        if self.count > 1:
            context = mp.get_context("spawn")
            self._lines = context.Queue()
            self._pool = ProcessPoolExecutor(self.count, mp_context=context, initializer=_start_worker,
                                             initargs=(self._lines, self.threads))
        return self

    def __exit__(self, *exc: object) -> None:
        if self._pool is not None:
            self._pool.shutdown(cancel_futures=True)
            self._forward()
            self._pool = None

    def map(self, fn: Callable[..., T], argsets: Sequence[tuple[Any, ...]]) -> list[T]:
        if self._pool is None:
            return [fn(*args, log=self.log) for args in argsets]
        futures: list[Future[T]] = [self._pool.submit(_call, fn, args) for args in argsets]
        while not all(f.done() for f in futures):
            self._forward(timeout=0.5)
        self._forward()
        try:
            return [f.result() for f in futures]
        except BrokenProcessPool as error:
            raise RuntimeError(
                f"a worker process died while running {fn.__name__} ({self.count} workers, "
                f"{self.threads} torch threads each); the usual cause is memory: run with fewer "
                "workers (--workers 1 keeps everything in one process)") from error

    def _forward(self, timeout: float | None = None) -> None:
        """Pass the workers' queued log lines to ``log`` (waiting up to ``timeout`` for the first)."""
        try:
            line = self._lines.get(timeout=timeout) if timeout else self._lines.get_nowait()
            while True:
                self.log(line)
                line = self._lines.get_nowait()
        except queue.Empty:
            return
