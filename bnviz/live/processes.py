"""Child processes, in one place: how they start, and how to ask one something without waiting on it forever.

Three kinds of child use it: an experiment (``experiment_process``), a study (``child_run``) and the ranks of a
local process group (``devices.process_group``).

    proc, conn = start(target, arg1, arg2, name="exercise")     # a child named bnviz-process-exercise
    channel = Channel(conn)                                      # requests and replies with deadlines

On Linux, children come from a forkserver that imported torch and the engine once, so a new child is a fork of
a warm process (30-60 ms) rather than a fresh interpreter importing torch (2 s); elsewhere they are spawned.

Streamlit runs the page as a fake ``__main__`` module; multiprocessing would re-run that file in every child to
recreate ``__main__``. ``context()`` strips the main module from the preparation data of our own processes
(named ``bnviz-process-…``) and of nothing else.
"""

from __future__ import annotations

import itertools
import multiprocessing
import os
import pickle
import sys
import threading
import time
from collections.abc import Callable, Iterator
from multiprocessing import spawn
from multiprocessing.connection import Connection
from multiprocessing.context import BaseContext
from multiprocessing.process import BaseProcess
from typing import Any

from bnviz.machine import env

PREFIX = "bnviz-process-"
PRELOAD = "bnviz.live.experiment_process"  # what the forkserver imports once: torch and the engine
GUARD = "bnviz.live.forkserver_guard"  # imported by the forkserver before PRELOAD: a tied one dies with its starter
PR_SET_PDEATHSIG = 1  # <linux/prctl.h>
STATUS_TIMEOUT_S = 3.0  # a status request or a snapshot: a child silent this long is "not responding"
NOT_RESPONDING = (
    "the training process is not responding (it may be stopped or overloaded). Press Reset to start a new one"
)

_context: BaseContext | None = None
_context_lock = threading.Lock()


def start_method() -> str:
    """forkserver on Linux, spawn elsewhere; $BNVIZ_START_METHOD (forkserver or spawn) overrides.

    Linux forks each child from a warm forkserver. Elsewhere a fresh interpreter is spawned (each child then
    imports torch, a few seconds): on macOS a process that has loaded torch's Metal (MPS) support must not be
    forked.
    """
    chosen = env.start_method()
    if chosen:
        return chosen
    linux = sys.platform.startswith("linux")
    return "forkserver" if linux and "forkserver" in multiprocessing.get_all_start_methods() else "spawn"


def context() -> BaseContext:
    """The start context (forkserver where there is one, preloading torch and the engine); made once."""
    global _context
    with _context_lock:
        if _context is None:
            method = start_method()
            ctx = multiprocessing.get_context(method)
            if method == "forkserver":  # children fork with torch and bnviz imported (training.SGD: no torch._dynamo)
                ctx.set_forkserver_preload([GUARD, PRELOAD])
            real = spawn.get_preparation_data

            def preparation_data(name: str) -> dict[str, Any]:
                data = real(name)
                if name.startswith(PREFIX):  # our children need nothing from __main__ (the page, under Streamlit)
                    data.pop("init_main_from_name", None)
                    data.pop("init_main_from_path", None)
                return data

            spawn.get_preparation_data = preparation_data
            _context = ctx
    return _context


def warm_up(tied: bool = False) -> None:
    """Start the forkserver now (it imports torch once, about 2 s), so the first child starts at once.

    tied: the forkserver, if this call starts it, is killed by the kernel when this process ends (see
    ``forkserver_guard``). Only from the main thread of a process that will not outlive it by design (a
    command-line run); elsewhere the forkserver ends when its pipe from this process closes.
    """
    if context().get_start_method() == "forkserver":
        from multiprocessing import forkserver

        tie = tied and threading.current_thread() is threading.main_thread()
        env.set_forkserver_tied(tie)
        try:
            forkserver.ensure_running()
        finally:
            env.set_forkserver_tied(False)


def start(target: Callable[..., Any], *args: Any, name: str, duplex: bool = True) -> tuple[BaseProcess, Connection]:
    """``target(conn, *args)`` in a new daemon child named ``bnviz-process-<name>``; returns (process, our end).

    With ``duplex=False`` the pipe goes one way, from the child to us.
    """
    ctx = context()
    here, there = ctx.Pipe(duplex=duplex)
    proc = ctx.Process(target=target, args=(there, *args), name=f"{PREFIX}{name}", daemon=True)  # type: ignore[attr-defined]
    proc.start()
    there.close()
    return proc, here


def die_with_parent(parent: int | None = None) -> None:
    """Ask the kernel to SIGKILL this process when its parent ends (Linux's PR_SET_PDEATHSIG; elsewhere nothing).

    Call it first thing in a child. The parent is the thread that forked this process: the forkserver (single
    threaded) for a child it forks, so a child dies with the forkserver, which ends when its client does.
    parent: the pid the parent must have (else it has already ended, and this process exits now); by default
    the parent at this call.
    """
    if not sys.platform.startswith("linux"):
        return
    import ctypes
    import signal

    parent = os.getppid() if parent is None else parent
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
    except (OSError, AttributeError):  # no prctl here: the child's pipe to its parent still ends it
        return
    if os.getppid() != parent:  # the parent ended before the request: nothing will send the signal
        os._exit(1)


def portable(e: BaseException) -> BaseException:
    """The exception itself if it survives pickling (to cross a pipe), else a RuntimeError saying what it was."""
    try:
        pickle.loads(pickle.dumps(e))
        return e
    except Exception:
        return RuntimeError(f"{type(e).__name__}: {e}")


def exit_words(code: int | None) -> str:
    """A child's exit code in words: 'exit code 1', 'killed by signal 9', 'still running'."""
    if code is None:
        return "still running"
    return f"killed by signal {-code}" if code < 0 else f"exit code {code}"


class ChildGone(Exception):
    """The pipe to the child closed: it has ended."""


class Channel:
    """Requests to a child and its replies, one at a time, each within a deadline.

    A request is ``(id, op, args)``; a reply ``(id, ok, value, state)``. A reply to a request that gave up
    waiting is dropped, except for its state. A child that lets a request go unanswered is "not responding": from
    then on nobody queues behind it (``acquire`` says no at once) and nothing more is sent until a late reply
    shows that it answers again (``late_replies``). A request in flight longer than ``silent_after`` seconds
    makes the child not responding to a status call too. The pipe's lock is only ever waited on up to the
    caller's own deadline.
    """

    def __init__(self, conn: Connection | None = None, silent_after: float | None = None) -> None:
        self.silent_after = STATUS_TIMEOUT_S if silent_after is None else silent_after
        self.lock = threading.RLock()  # one request and its reply at a time, whichever child is at the other end
        self._ids = itertools.count(1)
        if conn is not None:
            self.attach(conn)

    def attach(self, conn: Connection) -> None:
        """Talk to a new child from now on (under the lock, or before anyone else uses the channel)."""
        self.conn = conn
        self.sent_at: float | None = None  # when the request now waiting for its reply was sent (monotonic)
        self.unanswered = False  # a request gave up waiting, and no reply has come since

    @property
    def responding(self) -> bool:
        """False while a request has gone unanswered, or the one in flight has waited past ``silent_after``."""
        sent = self.sent_at
        return not self.unanswered and (sent is None or time.monotonic() - sent <= self.silent_after)

    def acquire(self, timeout: float) -> bool:
        """Take the pipe's lock within ``timeout`` seconds; False at once when the request holding it has gone
        unanswered (or, for a status call, has waited longer than a status call may): nobody queues behind it."""
        end = time.monotonic() + timeout
        while not self.lock.acquire(timeout=min(0.05, max(0.0, end - time.monotonic()))):
            now, sent = time.monotonic(), self.sent_at
            stale = sent is not None and now - sent > self.silent_after and timeout <= self.silent_after
            if self.unanswered or stale or now >= end:
                return False
        return True

    def release(self) -> None:
        self.lock.release()

    def late_replies(self, wait: float = 0.0) -> Iterator[Any]:
        """Under the lock: the states of replies that came in late (a child that answers again), waiting for the
        first up to ``wait`` seconds. Raises ChildGone if the pipe closed."""
        try:
            while self.conn.poll(wait):
                wait = 0.0
                _, _, _, state = self.conn.recv()  # its request gave up long ago: only the state is news
                self.unanswered = False
                yield state
        except (EOFError, OSError):
            raise ChildGone from None

    def ask(self, op: str, args: tuple[Any, ...], timeout: float) -> tuple[bool, Any, Any]:
        """Under the lock: send one request and wait for its reply; (ok, value, state).

        TimeoutError when no reply came in ``timeout`` seconds (the child may only be busy: it is marked
        unanswered, not dead); ChildGone when the pipe closed."""
        rid = next(self._ids)
        try:
            self.conn.send((rid, op, args))
            self.sent_at = time.monotonic()
            deadline = self.sent_at + timeout
            while True:
                left = deadline - time.monotonic()
                if left <= 0 or not self.conn.poll(left):
                    self.unanswered = True
                    raise TimeoutError("the training process did not answer in time")
                got, ok, value, state = self.conn.recv()
                if got == rid:  # a reply to a request that timed out earlier is dropped
                    return ok, value, state
        except TimeoutError:  # an OSError, but the child may only be busy
            raise
        except (EOFError, OSError):
            raise ChildGone from None
        finally:
            self.sent_at = None

    def tell(self, op: str) -> None:
        """Send a request that expects no reply (``stop``); a closed pipe is not an error here."""
        try:
            self.conn.send((0, op, ()))
        except OSError:
            pass

    def close(self) -> None:
        self.unanswered = False
        try:
            self.conn.close()
        except OSError:
            pass
