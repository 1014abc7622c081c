"""How many rank processes this machine can hold: a bound on ``bnviz train --devices K``, read before any start.

    cap = rank_capacity()          # cap.limit, and cap.words(): the figure and where it comes from
    cap.refuse(k)                  # None, or the sentence that refuses K ranks

Two things bound a local group: cores and memory. Each rank trains with one torch thread; up to
``RANKS_PER_CORE`` of them share a core (more only queue for the cores while gloo's and the heartbeat's
deadlines run). Each rank is a forked process holding its own copy of the dataset, its model and gloo's
buffers: measured at about 150 MB of private memory per rank while training (Linux, torch 2.x);
``RANK_MEMORY_BYTES`` counts twice that, and only ``MEMORY_SHARE`` of the memory the system says is
available is spent on ranks.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

RANKS_PER_CORE = 2
RANK_MEMORY_BYTES = 300 * 2**20  # twice the ~150 MB of private memory a training rank was measured to hold
MEMORY_SHARE = 0.8  # of the available memory; the rest stays for this process and everything else
STUDY = (
    'for more devices, the Experiments view\'s study "BN across devices" (bnviz/studies/devices_study.py) '
    "simulates k = 1 to 64 devices in one process"
)


def cores() -> int:
    """The cores this process may run on (its CPU affinity where the system tells it, else os.cpu_count())."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except (AttributeError, OSError):
        return max(1, os.cpu_count() or 1)


def available_memory() -> int | None:
    """Bytes of memory the system can give without swapping (Linux's MemAvailable), or None when unknown."""
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    try:
        return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (AttributeError, OSError, ValueError):
        return None


@dataclass(frozen=True)
class Capacity:
    """The most ranks this machine holds, and the two figures it is the smaller of."""

    cores: int
    memory: int | None  # bytes available, None when unknown

    @property
    def by_cores(self) -> int:
        return self.cores * RANKS_PER_CORE

    @property
    def by_memory(self) -> int | None:
        if self.memory is None:
            return None
        return max(1, int(self.memory * MEMORY_SHARE) // RANK_MEMORY_BYTES)

    @property
    def limit(self) -> int:
        return min(self.by_cores, self.by_memory or self.by_cores)

    def words(self) -> str:
        """The figure, and what it comes from: '4 (2 cores x 2 ranks each; memory: ... for 58)'."""
        core_part = f"{self.cores} core{'s' if self.cores > 1 else ''} x {RANKS_PER_CORE} ranks each = {self.by_cores}"
        if self.memory is None:
            mem_part = "available memory unknown"
        else:
            mem_part = (
                f"{self.memory / 2**30:.1f} GiB available, {int(100 * MEMORY_SHARE)}% of it at "
                f"{RANK_MEMORY_BYTES // 2**20} MiB per rank = {self.by_memory}"
            )
        return f"{self.limit} ({core_part}; {mem_part})"

    def refuse(self, k: int) -> str | None:
        """None when k ranks fit, else the sentence that says the maximum and where to go for more."""
        if k <= self.limit:
            return None
        return (
            f"--devices {k} is more than this machine can hold: at most {self.words()}. "
            f"Use --devices {self.limit} or fewer; {STUDY}."
        )


def rank_capacity() -> Capacity:
    """This machine's capacity now (cores and available memory, read at the call)."""
    return Capacity(cores=cores(), memory=available_memory())
