"""Under torchrun, each rank watches its peers as the local group's parent does: a dead or stopped rank named.

    watch = PeerWatch(rank, world_size)     # before init_from_torchrun(); beats and watches from threads
    ...train...
    watch.finished()                        # this rank is done: its silence from now on is not a fault

Each rank writes a heartbeat into torchrun's own store (MASTER_ADDR:MASTER_PORT) twice a second, from a thread
(a rank blocked in a collective still beats; a stopped or dead one does not), with its host and pid. Another
thread reads the peers' beats. Made before the group is joined, from the main thread (its SIGTERM handler).
Whichever rank sees the fault first says, in one line on stderr, which rank failed and how, and exits 1 at once,
without a traceback and without waiting on the group:

- a peer on this host that is gone (killed) or stopped (SIGSTOP) is named within a second; a stopped one is
  killed (SIGKILL), so that torchrun sees the faulty rank fail first and ends the group at once, instead of
  waiting on a process that cannot act on its SIGTERM;
- a peer anywhere that is silent for ``heartbeat_s`` seconds is named as not responding;
- a SIGTERM from torchrun (which ends every rank once one has failed) is answered the same way, naming the
  peer found dead, or saying that torchrun ended the group.

The collective that a fault interrupts raises in the main thread; ``fail_from(error)`` turns that into the
same one line, naming the faulty peer when there is one.
"""

from __future__ import annotations

import datetime
import os
import signal
import socket
import sys
import threading
import time

import torch.distributed as dist

BEAT_S = 0.5
HEARTBEAT_S = 10.0  # a peer silent this long is named, wherever it runs
LINGER_S = 5.0  # after naming a peer on this host, how long to wait for torchrun to end this rank


def process_state(pid: int) -> str | None:
    """'gone', 'stopped' or None (running, sleeping, or no /proc to read: not Linux) for a process on this host."""
    if not os.path.isdir("/proc/self"):
        return None
    try:
        with open(f"/proc/{pid}/stat") as f:
            state = f.read().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return "gone"
    return {"Z": "gone", "X": "gone", "T": "stopped", "t": "stopped"}.get(state)


class PeerWatch:
    """Heartbeats of every rank in torchrun's store, watched by every rank (see the module's docstring)."""

    def __init__(self, rank: int, world_size: int, heartbeat_s: float = HEARTBEAT_S) -> None:
        self.rank, self.world_size, self.heartbeat_s = rank, world_size, heartbeat_s
        self.host = socket.gethostname()
        restart = os.environ.get("TORCHELASTIC_RESTART_COUNT", "0")
        base = dist.TCPStore(
            os.environ["MASTER_ADDR"],
            int(os.environ["MASTER_PORT"]),
            is_master=False,
            timeout=datetime.timedelta(seconds=30),
        )
        self.store = dist.PrefixStore(f"bnviz-watch/{restart}/", base)
        self.store.set(f"who/{rank}", f"{self.host} {os.getpid()}")
        self.done, self.ended = threading.Event(), threading.Event()  # this rank finished; torchrun's SIGTERM came
        self.said = False  # the one line is written
        self.peers: dict[int, tuple[str, int]] = {}
        self.lock = threading.Lock()
        signal.signal(signal.SIGTERM, self._on_sigterm)  # from the main thread: construct it there
        for target, name in ((self._beat, "beat"), (self._watch, "watch")):
            threading.Thread(target=target, daemon=True, name=f"bnviz-{name}").start()

    # ------------------------------------------------------------------------------------------------ threads
    def _beat(self) -> None:
        count = 0
        while not self.done.wait(BEAT_S):
            count += 1
            try:
                self.store.set(f"beat/{self.rank}", str(count))
            except Exception:  # noqa: BLE001  (torchrun's store is gone: torchrun itself ended)
                self._exit(f"torchrun's store at {os.environ['MASTER_ADDR']}:{os.environ['MASTER_PORT']} is gone")

    def _watch(self) -> None:
        last: dict[int, bytes | None] = {}
        heard: dict[int, float] = {}
        start = time.monotonic()
        while not self.done.wait(BEAT_S):
            now = time.monotonic()
            for peer in range(self.world_size):
                if peer == self.rank:
                    continue
                try:
                    if self.store.check([f"done/{peer}"]):
                        continue
                    self._learn(peer)
                    value = self.store.get(f"beat/{peer}") if self.store.check([f"beat/{peer}"]) else None
                except Exception:  # noqa: BLE001
                    if self.done.is_set():
                        return
                    self._exit(f"torchrun's store at {os.environ['MASTER_ADDR']} stopped answering")
                if value != last.get(peer):
                    last[peer], heard[peer] = value, now
                fault = self._local_fault(peer)
                if fault:
                    self._name(peer, fault)
                if now - heard.get(peer, start) > self.heartbeat_s:
                    self._name(peer, f"stopped responding (no heartbeat for {self.heartbeat_s:g} s: hung or stopped)")

    def _on_sigterm(self, *_: object) -> None:
        if self.said:  # the fault is named: torchrun has seen the faulty rank fail first, now this one may go
            self.ended.set()
            return
        for peer in range(self.world_size):
            fault = self._local_fault(peer) if peer != self.rank else None
            if fault:
                self._name(peer, fault)
        self._exit("torchrun ended the group (SIGTERM) after another rank failed")

    # ------------------------------------------------------------------------------------------------ naming
    def _learn(self, peer: int) -> None:
        if peer not in self.peers and self.store.check([f"who/{peer}"]):
            host, pid = self.store.get(f"who/{peer}").decode().split()
            self.peers[peer] = (host, int(pid))

    def _local_fault(self, peer: int) -> str | None:
        """'died' or 'is stopped' for a peer on this host that is, else None."""
        host, pid = self.peers.get(peer, (None, 0))
        if host != self.host or self.done.is_set():
            return None
        state = process_state(pid)
        if state == "gone":
            return f"died (pid {pid} is gone)"
        if state == "stopped":
            return f"is stopped (SIGSTOP; pid {pid}); it was killed"
        return None

    def _name(self, peer: int, what: str) -> None:
        host, pid = self.peers.get(peer, (None, 0))
        if "killed" in what and host == self.host:
            try:
                os.kill(pid, signal.SIGKILL)  # a stopped process cannot act on torchrun's SIGTERM
            except OSError:
                pass
        # on this host, torchrun is left to see the faulty rank end before this one (its "root cause"): this
        # rank waits for torchrun's SIGTERM, at most LINGER_S
        self._exit(f"rank {peer} of {self.world_size} {what}", linger=host == self.host)

    def _exit(self, why: str, linger: bool = False) -> None:
        with self.lock:  # one line per rank, whichever thread sees the fault first
            if not self.said:
                self.said = True
                sys.stderr.write(f"\nbnviz: {why}; rank {self.rank} ends the run (exit 1)\n")
                sys.stderr.flush()
        if linger and threading.current_thread() is not threading.main_thread():
            self.ended.wait(LINGER_S)
        elif linger:  # the main thread: the SIGTERM handler must run here, so poll rather than block
            deadline = time.monotonic() + LINGER_S
            while not self.ended.is_set() and time.monotonic() < deadline:
                time.sleep(0.05)
        os._exit(1)

    # ------------------------------------------------------------------------------------------------ main
    def fail_from(self, error: BaseException) -> None:
        """A collective raised in the main thread: name the faulty peer if one is found within a heartbeat,
        else say what the collective said; exit 1 either way."""
        deadline = time.monotonic() + self.heartbeat_s + 2 * BEAT_S
        while time.monotonic() < deadline:  # the watch thread names a dead or silent peer, then exits
            for peer in range(self.world_size):
                if peer != self.rank:
                    fault = self._local_fault(peer)
                    if fault:
                        self._name(peer, fault)
            threading.Event().wait(BEAT_S)
        first = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        self._exit(f"a collective failed ({first[:200]})")

    def finished(self) -> None:
        """This rank is done: peers stop watching it, and it stops watching them."""
        try:
            self.store.set(f"done/{self.rank}", "1")
        except Exception:  # noqa: BLE001
            pass
        self.done.set()
