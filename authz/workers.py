"""`authz serve --workers N`: one process per worker sharing the ports (SO_REUSEPORT), and
the parent that forwards signals to them and replaces a worker that dies on its own."""

from __future__ import annotations

import asyncio
import collections
import contextlib
import logging
import os
import signal
import sys
from time import monotonic
from typing import Any, NoReturn

from authz.errors import ListenError
from authz.observability.metrics import worker_exited
from authz.server import FORWARDED_SIGNALS, AuthzServer, ServeOptions, probe

log = logging.getLogger("authz.server")


def run_server(options: ServeOptions) -> int:
    """Run one server process (or several sharing the ports) until SIGTERM/SIGINT."""
    addresses = (options.listen, options.http_listen, options.check_http_listen)
    for address in filter(None, addresses):  # a taken port: one line, no forks
        probe(address, options.workers > 1)
    if options.workers > 1:
        return _run_workers(options)
    return _run_one(options)


def _run_one(options: ServeOptions) -> int:
    try:
        import uvloop

        loop_factory = uvloop.new_event_loop
    except ImportError:  # pragma: no cover - uvloop is optional
        loop_factory = None
    with asyncio.Runner(loop_factory=loop_factory) as runner:
        runner.run(AuthzServer(options).run())
    return 0


def _run_workers(options: ServeOptions) -> int:
    """Fork N workers sharing the ports (SO_REUSEPORT); forward SIGTERM, SIGINT and SIGHUP to
    every worker; replace a worker that dies on its own; return when all have exited after a
    stop (0, or the first failing worker's status)."""
    children: list[int] = []
    stopping = False

    def forward(signum: int, _frame: Any) -> None:
        nonlocal stopping
        stopping = stopping or signum != signal.SIGHUP
        for pid in children:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signum)

    parent = os.getpid()
    for sig in FORWARDED_SIGNALS:
        signal.signal(sig, forward)
    try:
        for _ in range(options.workers):
            children.append(_fork_worker(options, parent))
    except BaseException:
        forward(signal.SIGTERM, None)  # fork failed: stop the workers already started
        raise
    status, restarts = 0, _RestartBudget(options.workers)
    while children:
        pid, code = os.wait()
        if pid not in children:
            continue
        children.remove(pid)
        worker_exited(pid)
        exit_code = os.waitstatus_to_exitcode(code)
        if stopping:
            status = status or exit_code
        elif restarts.spend():
            log.error("worker %d exited (%s): starting a replacement", pid, exit_code)
            children.append(_fork_worker(options, parent))
        else:  # crashing in a loop (e.g. a port taken): give up rather than spin
            log.error("workers keep exiting (last: %d, %s): stopping", pid, exit_code)
            status = status or exit_code or 1
            forward(signal.SIGTERM, None)
    return status


class _RestartBudget:
    """At most 3 replacements per worker per minute."""

    def __init__(self, workers: int):
        self.limit, self.times = 3 * workers, collections.deque[float]()

    def spend(self) -> bool:
        now = monotonic()
        while self.times and now - self.times[0] > 60:
            self.times.popleft()
        if len(self.times) >= self.limit:
            return False
        self.times.append(now)
        return True


def _fork_worker(options: ServeOptions, parent: int) -> int:
    # Signals are blocked while forking, so that one arriving meanwhile is neither lost nor
    # handled by the child with the parent's handler; the worker unblocks them once its own
    # handlers are set (AuthzServer.run).
    blocked = signal.pthread_sigmask(signal.SIG_BLOCK, FORWARDED_SIGNALS)
    try:
        pid = os.fork()
        if pid == 0:
            _worker(options, parent)  # never returns
        return pid
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, blocked)


def _worker(options: ServeOptions, parent: int) -> NoReturn:
    """A forked worker: serve until stopped, then leave without running the parent's code."""
    code = 1
    try:
        for sig in FORWARDED_SIGNALS:  # the parent's `forward`; still blocked until AuthzServer.run
            signal.signal(sig, signal.SIG_DFL)
        _stop_with_parent(parent)
        code = _run_one(options)
    except ListenError as exc:
        print(f"authz serve: {exc}", file=sys.stderr)
        code = 3
    except BaseException:
        log.exception("worker failed")
    finally:
        with contextlib.suppress(Exception):
            sys.stdout.flush()
            sys.stderr.flush()
        os._exit(code)


def _stop_with_parent(parent: int) -> None:
    """Linux: SIGTERM (so: drain and exit) this worker when the parent dies, even by SIGKILL,
    so that no orphan keeps serving on the shared port."""
    if not sys.platform.startswith("linux"):
        return
    try:
        import ctypes

        ctypes.CDLL(None, use_errno=True).prctl(1, int(signal.SIGTERM))  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):  # pragma: no cover - not glibc/musl
        return
    if os.getppid() != parent:  # the parent died before prctl took effect
        os.kill(os.getpid(), signal.SIGTERM)
