"""What one Streamlit server holds for every tab: the registry of experiments, the dataset, the shipped run.

A page finds its experiment by the id in its URL (``?run=``), so a reload or a dropped connection finds the
same run again; a new page gets a new experiment.
"""

import atexit
import dataclasses
import gc
from pathlib import Path

import streamlit as st

import bnviz.data
from bnviz import env
from bnviz.device import DeviceError, resolve_device
from bnviz.engine import Experiment, describe_error
from bnviz.experiment_process import ExperimentProcess, warm_up
from bnviz.history import RecordingError
from bnviz.registry import Janitor, Registry
from bnviz.replay import Recording
from bnviz.snapshot import LaneSpec

from .feedback import plain
from .state import Key, flash, init_widgets, settings_from_widgets, url_lanes, url_problems

SHIPPED_RUN = Path(__file__).resolve().parents[1] / "assets" / "chapter-run" / "experiment.npz"
SHIPPED_NAME = "the chapter's 10 epochs (shipped)"


@st.cache_resource
def server():
    """One registry for the whole server, so reloads find their experiment again."""
    warm_up()  # experiments train in child processes, forked from a server that imports torch once
    # Streamlit runs a full gc.collect() after every script run, each 1 Hz refresh included. Over the
    # 380,000 objects that torch, plotly and streamlit load, that took 190 ms a time (py-spy: a third of a core).
    # They live as long as the server: freeze them out of every later collection (it then takes ~0 ms).
    gc.collect()
    gc.freeze()
    registry = Registry(max_training=env.max_training(), grace_s=env.grace_s())
    Janitor(registry).start()
    atexit.register(registry.close)
    return registry


@st.cache_resource
def runs_made_here():
    """The ids of every run this server made (ended ones too): a link to any other is from before a restart."""
    return set()


def register(registry, exp):
    key = registry.add(exp)
    runs_made_here().add(key)
    return key


@st.cache_resource(show_spinner="Loading Fashion-MNIST…")
def dataset():
    """The dataset, found, unpacked and checked once per server (a DataError is not cached: a reload retries)."""
    return bnviz.data.load_fashion_mnist()


def no_maths(text):
    """A data message as Markdown: "$BNVIZ_DATA ... $BNVIZ_DATA" must not become a formula."""
    return str(text).replace("$", "\\$")


def data_notice(data):
    """Under the title, when it is worth knowing: the folder $BNVIZ_DATA names (or a partly filled one) was
    passed over and why, or the data's digests were not checked (bnviz.data's notice)."""
    if data.notice:
        st.caption(f"Fashion-MNIST: {no_maths(data.notice)}")


def make_experiment(data, settings, lanes):
    """Training in a child process, so building the page never slows it; in this process if that fails.

    BNVIZ_ENGINE=thread asks for the in-process engine (one process, easier to debug).
    """
    if env.engine() != "thread":
        try:
            return ExperimentProcess(data, settings, lanes, name="dashboard")
        except DeviceError:
            raise
        except (OSError, EOFError, TimeoutError, RuntimeError) as e:
            flash(
                "warning",
                "Training runs inside the web server, slower while the page is open: its own process could "
                f"not start ({describe_error(e)}).",
            )
    return Experiment(data, settings, lanes, name="dashboard")


def new_experiment(registry, data):
    problems = url_problems()
    if problems:
        # the values are the link's own text: shown as text, never as Markdown (a link's value could be a link)
        flash("warning", plain(f"This link's {'; '.join(problems)} could not be used: the default is used instead."))
    init_widgets()
    activation = st.session_state[Key.ACTIVATION]
    lanes = url_lanes() or (LaneSpec("none", activation), LaneSpec("scratch", activation))  # a lesson link's lanes
    exp = make_experiment(data, settings_from_widgets(), lanes)
    key = register(registry, exp)
    st.query_params["run"] = key
    return key, exp


def attach(registry, data):
    """The experiment named in the URL, or a new one."""
    key = st.query_params.get("run")
    exp = registry.get(key) if key else None
    if exp is None:
        if key in runs_made_here():
            flash("info", "That run has ended (its page was closed for a while); here is a fresh one.")
        elif key:
            flash(
                "info",
                "That run is not on this server: the server has restarted since (a run lives as long as the server "
                "that trains it), or the link is from another server. Here is a fresh run.",
            )
        key, exp = new_experiment(registry, data)
    init_widgets(exp)
    st.session_state[Key.RUN_KEY] = key
    return key, exp


def apply_setup(exp, registry, data):
    """Reset with the sidebar's settings; a new experiment when the device changes."""
    ss = st.session_state
    try:
        # what the sidebar does not show (the landscape probe) stays as it is
        settings = dataclasses.replace(settings_from_widgets(), landscape_every=exp.settings.landscape_every)
        lanes = [LaneSpec(l.spec.norm, ss[Key.ACTIVATION]) for l in exp.lanes]
        if resolve_device(settings.device) != exp.device:
            fresh = make_experiment(data, settings, lanes)
            st.query_params["run"] = ss[Key.RUN_KEY] = register(registry, fresh)
            exp.stop(timeout=0)
            return
        exp.reset(settings, lanes)
    except DeviceError as e:
        ss[Key.DEVICE] = exp.settings.device  # the selector shows what is running again
        flash("error", f"Not applied: {device_message(e)} The run goes on on {exp.settings.device}.")
    except (ValueError, RuntimeError) as e:
        flash("error", f"Not applied: {e}")


def device_message(e):
    """The device error in the page's words (the library's message names the CLI flag)."""
    return str(e).replace("Use --device auto or cpu.", "Choose auto or cpu under Device.")


def open_recording(source, name):
    """Open a saved experiment for replay in this tab; a message instead when it cannot be read."""
    try:
        st.session_state[Key.RECORDING] = Recording.load(source, name=name)
        st.session_state.pop(Key.REPLAY_STEP, None)
    except (RecordingError, FileNotFoundError) as e:
        # the message may quote the file (a table's name): as text, never as Markdown
        flash("error", plain(f"The recorded run could not be opened: {e}" if name == SHIPPED_NAME else str(e)))


def open_shipped_run():
    open_recording(SHIPPED_RUN, SHIPPED_NAME)
