"""The declared experiment interface: who satisfies which protocol, with the same parameter names, and the
statuses every implementation hands out."""

import inspect
import pickle
from pathlib import Path

import pytest

from bnviz.live.engine import COMMANDS, Experiment
from bnviz.live.experiment_process import ExperimentProcess
from bnviz.live.interface import ExperimentView, LiveExperiment
from bnviz.live.replay import Recording
from bnviz.live.snapshot import LaneStatus, Settings, Status

SHIPPED = Path(__file__).resolve().parents[1] / "assets" / "chapter-run" / "experiment.npz"
SETTINGS = Settings(batch_size=32, val_size=50, device="cpu")

VIEW_MEMBERS = {"settings", "snapshot", "header"}
# every command (engine.COMMANDS, declared once by @on_worker), and what else a caller uses
LIVE_METHODS = set(COMMANDS) | {"resume", "wait", "stop", "refresh", "snapshot", "header", "__enter__", "__exit__"}
LIVE_PROPERTIES = {"status", "alive"}
LIVE_ATTRIBUTES = {"settings", "device", "lanes"}


def declared(protocol):
    """The members a protocol declares itself (methods, properties and annotated attributes)."""
    names = set(getattr(protocol, "__annotations__", {}))
    for name, value in vars(protocol).items():
        if (not name.startswith("_") or name in ("__enter__", "__exit__")) and (
            inspect.isfunction(value) or isinstance(value, property)
        ):
            names.add(name)
    return names


def test_the_commands_are_the_workers_methods():
    """COMMANDS is read off the methods marked @on_worker: the list and the methods cannot drift apart."""
    marked = [
        name
        for name, f in vars(Experiment).items()
        if callable(f) and getattr(f, "__wrapped__", None) and f.__name__ == name
    ]
    assert COMMANDS == marked and {"start", "set_bn_bypass", "reset"} <= set(COMMANDS)


def test_the_protocols_declare_what_the_callers_use():
    assert declared(ExperimentView) == VIEW_MEMBERS
    live = declared(LiveExperiment) | declared(ExperimentView)
    assert live == LIVE_METHODS | LIVE_PROPERTIES | LIVE_ATTRIBUTES


def test_a_recording_is_a_view_and_not_a_live_experiment():
    rec = Recording.load(SHIPPED)
    assert isinstance(rec, ExperimentView)
    assert not isinstance(rec, LiveExperiment)  # nothing to start, pause or step in a saved run
    assert not isinstance(object(), ExperimentView)


@pytest.mark.parametrize("cls", [Experiment, ExperimentProcess])
def test_both_engines_are_live_experiments(cls, make_experiment):
    exp = make_experiment(SETTINGS, cls=cls)
    assert isinstance(exp, LiveExperiment) and isinstance(exp, ExperimentView)
    for name in LIVE_PROPERTIES:
        assert isinstance(inspect.getattr_static(cls, name), property), name  # a property, as declared
    assert exp.status is Status.IDLE and exp.refresh() is Status.IDLE and exp.alive
    assert isinstance(exp.header(), dict) and exp.snapshot().status is Status.IDLE


@pytest.mark.parametrize("name", sorted(LIVE_METHODS))
def test_both_engines_take_the_same_parameters(name):
    """A caller written against one engine works against the other: same names, same defaults."""

    def params(obj):
        sig = inspect.signature(getattr(obj, name))
        return [(p.name, p.kind, p.default) for p in sig.parameters.values()]

    here, there, declared_ = params(Experiment), params(ExperimentProcess), params(LiveExperiment)
    assert here == there, (name, here, there)
    assert [p[:2] for p in here] == [p[:2] for p in declared_], (name, here, declared_)


# ------------------------------------------------------------------------------------------- header() and meta
def test_recording_header_is_a_method_returning_its_meta():
    rec = Recording.load(SHIPPED)
    assert rec.header() is rec.meta
    assert {"settings", "lanes", "device"} <= set(rec.meta)
    assert rec.settings.batch_size == rec.meta["settings"]["batch_size"]


# ------------------------------------------------------------------------------------------- statuses
def test_statuses_compare_print_and_hash_as_their_plain_strings():
    assert Status.RUNNING == "running" and "running" == Status.RUNNING and Status.RUNNING != "paused"
    assert str(Status.RUNNING) == "running" and f"{Status.RUNNING}" == "running"
    assert f"[{LaneStatus.DIVERGED:>10}]" == "[  diverged]"
    assert "status: " + str(Status.ERROR) == "status: error" and repr(Status.ERROR) != "error"
    assert {"finished": 1}[Status.FINISHED] == 1 and Status("paused") is Status.PAUSED
    assert Status.IDLE in ("idle", "paused") and LaneStatus.READY in {"ready"}


def test_statuses_pickle_as_themselves():
    for member in (*Status, *LaneStatus):
        again = pickle.loads(pickle.dumps(member))
        assert again is member
