"""A group of k processes on this machine, joined by torch.distributed: started, watched, always ended.

    results = run_local_group(fn, 2, data, settings)     # fn(rank, world_size, data, settings, report=...)

Each rank is a process from the experiment processes' start context (on Linux a fork of the forkserver that
imported torch once), with one torch thread. It joins the group with ``torch.distributed.init_process_group``
(gloo on the CPU) through a ``TCPStore`` that this process serves on a port the system picks (port 0): no
port is guessed, so one already in use is never chosen. Then it runs ``fn``, whose return value comes back
pickled, one per rank.

Watched: each rank sends a heartbeat twice a second from a thread of its own (a rank blocked in a collective
still beats; a stopped or dead one does not) and ``report(...)`` calls, passed on to ``progress(rank, info)``.
The group fails with ``GroupFailed``, naming the rank, when a rank

- raises (its message comes back),
- dies (killed, or exits without a result),
- is silent for ``heartbeat_s`` (hung, or stopped with SIGSTOP),
- or when the whole group makes no report for ``stall_s`` (a deadlock where every rank still beats: the rank
  with the fewest reports is named), or runs past ``timeout_s``.

Whatever happens (a failure, Ctrl-C, an exception here) every rank is killed and joined before this returns:
no process is left behind. Under ``torchrun`` this module is not used: torchrun starts and watches the ranks,
and ``init_from_torchrun`` joins the group it set up.
"""

import datetime
import os
import pickle
import threading
import time
from multiprocessing.connection import wait

import torch
import torch.distributed as dist

from bnviz.live.processes import die_with_parent, exit_words, start

HEARTBEAT_S = 0.5  # how often a rank says it is alive
ERROR_GRACE_S = 1.0  # after a rank raises, how long to look for a peer that died first (the cause to name)
TORCHRUN_VARS = ("RANK", "WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT")


class GroupFailed(RuntimeError):
    """A rank failed, died or hung; ``rank`` is the one named (None when the whole group timed out)."""

    def __init__(self, message, rank=None):
        super().__init__(message)
        self.rank = rank


def _rank_main(conn, rank, world_size, port, backend, collective_s, fn, args, kwargs):
    die_with_parent()  # the forkserver (or, spawned, the starter) ends: so does this rank
    torch.set_num_threads(1)
    lock, done = threading.Lock(), threading.Event()

    def send(message):  # plain pickle: a tensor travels by value, not as shared memory its sender may take away
        data = pickle.dumps(message)
        with lock:
            conn.send_bytes(data)

    def beat():
        while not done.wait(HEARTBEAT_S):
            try:
                send(("beat", None))
            except OSError:  # the pipe's other end is gone: whoever started the group died (kill -9)
                if not done.is_set():
                    os._exit(1)  # at once, even from inside a collective or a store's connect
                return

    threading.Thread(target=beat, daemon=True, name="bnviz-heartbeat").start()
    try:
        store = dist.TCPStore("127.0.0.1", port, world_size, is_master=False, timeout=datetime.timedelta(seconds=30))
        timeout = datetime.timedelta(seconds=collective_s)
        dist.init_process_group(backend, store=store, rank=rank, world_size=world_size, timeout=timeout)
        try:
            result = fn(rank, world_size, *args, report=lambda info: send(("report", info)), **kwargs)
        finally:
            dist.destroy_process_group()
        send(("result", result))
    except BaseException as e:  # noqa: BLE001  (sent to the parent, which names this rank)
        try:
            send(("error", f"{type(e).__name__}: {e}"))
        except OSError:
            pass
    finally:
        done.set()
        conn.close()


def run_local_group(
    fn,
    world_size,
    *args,
    backend="gloo",
    timeout_s=600.0,
    heartbeat_s=10.0,
    stall_s=120.0,
    collective_s=60.0,
    progress=None,
    on_start=None,
    should_stop=None,
    **kwargs,
):
    """``fn(rank, world_size, *args, report=..., **kwargs)`` in ``world_size`` processes; their results by rank.

    progress(rank, info): each ``report(info)`` of a rank. on_start(pids): the ranks' process ids, once started.
    should_stop(): polled; when true the ranks are ended and None is returned. collective_s: torch.distributed's
    own timeout for a collective that a peer never joins.
    """
    if world_size < 1:
        raise ValueError(f"a group needs at least one process, got {world_size}")
    store = dist.TCPStore("127.0.0.1", 0, world_size, is_master=True, wait_for_workers=False)
    procs, conns = [], []
    try:
        for rank in range(world_size):
            rank_args = (rank, world_size, store.port, backend, collective_s, fn, args, kwargs)
            proc, here = start(_rank_main, *rank_args, name=f"rank{rank}", duplex=False)
            procs.append(proc)
            conns.append(here)
        if on_start:
            on_start([p.pid for p in procs])
        return _watch(procs, conns, timeout_s, heartbeat_s, stall_s, progress, should_stop)
    finally:
        for proc in procs:
            if proc.is_alive():
                proc.kill()  # SIGKILL: ends a stopped (SIGSTOP) process too
        for proc in procs:
            proc.join(5.0)
        for conn in conns:
            conn.close()
        del store


def _watch(procs, conns, timeout_s, heartbeat_s, stall_s, progress, should_stop):
    world_size = len(procs)
    start = time.monotonic()
    heard = [start] * world_size  # the last message of any kind
    reports = [0] * world_size
    last_report = start
    results, finished = {}, set()
    by_conn = {c: r for r, c in enumerate(conns)}
    by_sentinel = {p.sentinel: r for r, p in enumerate(procs)}
    open_conns = set(conns)
    failed, errored = None, set()  # (rank, message, when) of the first rank that raised; all that raised
    while len(results) < world_size:
        ready = wait(list(open_conns) + [p.sentinel for r, p in enumerate(procs) if r not in finished], timeout=0.25)
        now = time.monotonic()
        for obj in ready:
            if obj in by_conn:
                rank = by_conn[obj]
                try:
                    kind, value = pickle.loads(obj.recv_bytes())
                except (EOFError, OSError):
                    open_conns.discard(obj)
                    continue
                heard[rank] = now
                if kind == "report":
                    reports[rank] += 1
                    last_report = now
                    if progress:
                        progress(rank, value)
                elif kind == "result":
                    results[rank] = value
                elif kind == "error":  # raised below, unless a peer that died caused it
                    errored.add(rank)
                    failed = failed or (rank, value, now)
            else:
                finished.add(by_sentinel[obj])
        for rank in sorted(finished):
            conn = conns[rank]
            if rank not in set(results) | errored and not (conn in open_conns and conn.poll()):  # nothing left to read
                code = procs[rank].exitcode
                raise GroupFailed(
                    f"rank {rank} of {world_size} ended without finishing ({exit_words(code)}); the group was ended",
                    rank,
                )
        if failed and (now - failed[2] > ERROR_GRACE_S or not any(p.is_alive() for p in procs)):
            rank, message, _ = failed
            raise GroupFailed(f"rank {rank} of {world_size} failed: {message}", rank)
        if should_stop and should_stop():
            return None
        silent = [r for r in range(world_size) if r not in results and now - heard[r] > heartbeat_s]
        if silent:
            rank = silent[0]
            raise GroupFailed(
                f"rank {rank} of {world_size} stopped responding (no heartbeat for {heartbeat_s:g} s: hung or "
                f"stopped; pid {procs[rank].pid}); the group was ended",
                rank,
            )
        if now - last_report > stall_s:
            rank = min((r for r in range(world_size) if r not in results), key=lambda r: reports[r])
            raise GroupFailed(
                f"the group made no progress for {stall_s:g} s; rank {rank} is the furthest behind "
                f"({reports[rank]} reports); the group was ended",
                rank,
            )
        if now - start > timeout_s:
            raise GroupFailed(f"the group of {world_size} did not finish within {timeout_s:g} s; it was ended")
    return [results[r] for r in range(world_size)]


def launched_by_torchrun(environ=None):
    """Whether this process is one rank of a group that torchrun (or another launcher) set up in the env."""
    environ = os.environ if environ is None else environ
    return all(name in environ for name in TORCHRUN_VARS)


def init_from_torchrun(backend=None, collective_s=60.0):
    """Join the group torchrun describes (RANK, WORLD_SIZE, MASTER_ADDR, MASTER_PORT); return (rank, world)."""
    backend = backend or ("nccl" if torch.cuda.is_available() else "gloo")
    timeout = datetime.timedelta(seconds=collective_s)
    dist.init_process_group(backend, init_method="env://", timeout=timeout)
    return dist.get_rank(), dist.get_world_size()
