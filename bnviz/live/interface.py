"""What the dashboard, the registry and the studies may call on an experiment, declared once.

Two protocols (structural: nothing inherits from them):

- ``ExperimentView``: what can be drawn. A saved run (``replay.Recording``) is one, and so is every live
  experiment.
- ``LiveExperiment``: an ``ExperimentView`` that trains and takes commands. ``engine.Experiment`` (a worker
  thread in this process) and ``experiment_process.ExperimentProcess`` (the same, in a child process) are
  both one, with the same parameter names for every method (tests/test_interface.py checks it).

Commands return once the experiment has carried them out, and raise what it raised: ``ValueError`` for a bad
argument (``"there is no lane 5"``), ``RuntimeError`` once it has stopped, ``TimeoutError`` when it did not
answer in time. ``status`` never waits: it is the last state seen (``refresh()`` asks for a fresh one).
"""

from collections.abc import Sequence
from typing import Any, Protocol, runtime_checkable

from bnviz.live.snapshot import LaneSpec, Settings, Snapshot, Status


@runtime_checkable
class ExperimentView(Protocol):
    """A run that can be drawn: its settings, a snapshot of it, and what its experiment file records."""

    settings: Settings

    def snapshot(self) -> Snapshot:
        """Every lane's tables and state, immutable."""
        ...

    def header(self) -> dict:
        """What the experiment file records besides the tables: name, settings, device, lanes, ..."""
        ...


@runtime_checkable
class LiveExperiment(ExperimentView, Protocol):
    """An experiment that trains: commands from any thread, state, and ``with ... as exp:`` to stop it."""

    device: Any  # a torch.device
    lanes: Sequence  # each has .index and .spec

    @property
    def status(self) -> Status:
        """The last status seen; never waits."""
        ...

    @property
    def alive(self) -> bool:
        """Still able to take commands (its worker or child process runs)."""
        ...

    def refresh(self, timeout: float = 2.0) -> Status:
        """The status as it is now, asked for if need be (TimeoutError past ``timeout``)."""
        ...

    def start(self) -> None: ...

    def resume(self) -> None: ...

    def pause(self) -> None: ...

    def step(self, n: int = 1) -> None:
        """Train n steps of every lane, then pause."""
        ...

    def set_lr(self, lr: float) -> None: ...

    def set_lane(self, index: int, spec: LaneSpec) -> None: ...

    def set_bn_bypass(self, index: int, bypass: bool) -> tuple[float, float]:
        """Switch BN off or back on in a lane; returns its validation accuracy (before, after), measured at once."""
        ...

    def extend(self, epochs: int = 1) -> int:
        """Train this many more epochs: finished lanes go on; returns the new number of epochs."""
        ...

    def recompute_statistics(self, index: int, batches: int = 200) -> dict:
        """Re-estimate lane ``index``'s BN statistics over ``batches`` training batches, weights frozen
        (PreciseBN); returns the validation accuracy before and after, in eval and train mode."""
        ...

    def add_lane(self, spec: LaneSpec) -> None: ...

    def remove_lane(self, index: int) -> None: ...

    def reset(self, settings: Settings | None = None, lanes: Sequence[LaneSpec] | None = None) -> None: ...

    def clone_model(self, index: int) -> Any:
        """A copy of lane ``index``'s network (a torch module, on the CPU for a child process)."""
        ...

    def wait(self, timeout: float | None = None, poll: float = 0.02) -> bool:
        """Block until it is no longer running or stepping; True if that happened in time."""
        ...

    def stop(self, timeout: float = 1.0) -> bool:
        """End it (its worker or child process); True when it is gone."""
        ...

    def __enter__(self) -> "LiveExperiment": ...

    def __exit__(self, *exc) -> None: ...
