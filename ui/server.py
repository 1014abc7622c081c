"""What one Streamlit server holds for every tab: the registry of experiments, the dataset, the shipped run.

A page finds its experiment by the id in its URL (``?run=``), so a reload or a dropped connection finds the
same run again; a new page gets a new experiment.
"""

import atexit
import ctypes
import dataclasses
import gc
import os
import threading
import time
import weakref
from pathlib import Path

import streamlit as st
from streamlit import runtime
from streamlit.runtime.scriptrunner import get_script_run_ctx

import bnviz.data.fashion_mnist
from bnviz.live.engine import Experiment, describe_error
from bnviz.live.experiment_file import RecordingError
from bnviz.live.experiment_process import ExperimentProcess
from bnviz.live.processes import warm_up
from bnviz.live.registry import Janitor, Registry
from bnviz.live.replay import Recording
from bnviz.live.snapshot import LaneSpec
from bnviz.machine import env
from bnviz.machine.device import DeviceError, resolve_device

from . import shared
from .feedback import plain
from .state import Key, flash, init_widgets, settings_from_widgets, url_lanes, url_problems
from .views import VIEWS

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
    give_large_blocks_back()
    registry = Registry(max_training=env.max_training(), grace_s=env.grace_s())
    Janitor(registry).start()
    atexit.register(registry.close)
    closed_tabs().start()
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
    return bnviz.data.fashion_mnist.load_fashion_mnist()


def no_maths(text):
    """A data message as Markdown: "$BNVIZ_DATA ... $BNVIZ_DATA" must not become a formula."""
    return str(text).replace("$", "\\$")


def data_notice(data):
    """Under the title, when it is worth knowing: the folder $BNVIZ_DATA names (or a partly filled one) was
    passed over and why, or the data's digests were not checked (bnviz.data.fashion_mnist's notice)."""
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
    problems = url_problems(tuple(VIEWS))
    if problems:
        # the values are the link's own text: shown as text, never as Markdown (a link's value could be a link)
        flash("warning", plain(f"This link's {'; '.join(problems)} could not be used: the default is used instead."))
    init_widgets(tuple(VIEWS))
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
    init_widgets(tuple(VIEWS), exp)
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
        rec = Recording.load(source, name=name)
        st.session_state[Key.RECORDING] = rec
        st.session_state.pop(Key.REPLAY_STEP, None)
        closed_tabs().opened(rec)
    except (RecordingError, FileNotFoundError) as e:
        # the message may quote the file (a table's name): as text, never as Markdown
        flash("error", plain(f"The recorded run could not be opened: {e}" if name == SHIPPED_NAME else str(e)))


def open_shipped_run():
    open_recording(SHIPPED_RUN, SHIPPED_NAME)


def open_upload(upload):
    """Open an uploaded experiment (``st.file_uploader``'s file), then drop Streamlit's copy of its bytes.

    Streamlit keeps an uploaded file's bytes for as long as the session lives (up to 512 MB here), in its file
    manager and in the uploader's value; once read into a Recording they are not needed, and the uploader gives
    None from the next run on.
    """
    try:
        open_recording(upload.getvalue(), upload.name)
    finally:
        ctx = get_script_run_ctx()
        if ctx is not None and runtime.exists():
            runtime.get_instance().uploaded_file_mgr.remove_file(ctx.session_id, upload.file_id)
        # the widget's state keeps this object (a BytesIO) as long as the session: empty it, not close it (the
        # uploader copies its value when it is drawn again, and a closed file cannot be copied)
        upload.seek(0)
        upload.truncate()


# ----------------------------------------------------------------------------------- memory
# glibc's malloc serves a block of at least its "mmap threshold" with a mapping of its own, given back to the
# system when freed. That threshold starts at 128 kB and rises to the size of every such block freed, up to
# 32 MB: after one large recording is dropped, the next one's columns (20 MB each for 2.5 million steps) come
# from the heap, which keeps the memory once they are freed. Set explicitly, the threshold stays where it is set.
M_TRIM_THRESHOLD, M_MMAP_THRESHOLD = -1, -3  # glibc's malloc.h
MMAP_THRESHOLD = 4 * 2**20  # above a figure's arrays and the mirror's growth steps; every column of a long run
TRIM_THRESHOLD = 2 * MMAP_THRESHOLD  # glibc's own rule when it moves the threshold itself


def _glibc():
    """The C library when it is glibc (Linux); None elsewhere (musl, macOS, Windows), where nothing is changed."""
    try:
        if not os.confstr("CS_GNU_LIBC_VERSION").startswith("glibc"):
            return None
        return ctypes.CDLL("libc.so.6")
    except (ValueError, OSError, AttributeError):
        return None


def give_large_blocks_back():
    """Large blocks get mappings of their own, returned when freed (in this server process only: the training
    processes start from a forkserver, a fresh program, and keep glibc's defaults). True if set."""
    libc = _glibc()
    if libc is None:
        return False
    return bool(libc.mallopt(M_MMAP_THRESHOLD, MMAP_THRESHOLD)) and bool(libc.mallopt(M_TRIM_THRESHOLD, TRIM_THRESHOLD))


def trim():
    """Hand the heap's free pages back to the system (glibc's malloc_trim); False where there is no glibc."""
    libc = _glibc()
    return bool(libc is not None and libc.malloc_trim(0))


class ClosedTabs:
    """Give back the memory of a recording when its tab is closed.

    Streamlit keeps a closed tab's session (its session state: the recording) for two minutes in case it
    reconnects, and frees it only when a later session writes to that store: on a server that no one else opens,
    never. A thread looks every ``every_s`` at the sessions that opened a recording; one that has not been
    connected for ``grace_s`` (the same grace as a closed tab's experiment) is closed as Streamlit closes an
    expired one (``Runtime.close_session``, on its event loop), its recordings' tables are dropped
    (``Recording.release``), and the freed memory is handed back to the system.

    Closing the session is not enough to free it. Its download buttons' callables (a replay's export keeps the
    snapshot's tables) are dropped too: a session that stayed in Streamlit's store past its two minutes is no
    longer found there and never shut down, and its callables stayed (+232 MB). And Streamlit's runtime loop
    keeps the last session it sent messages to in a local variable (``Runtime._loop_coroutine``: ``for
    active_session_info in ...``) until it sends to another one, so on a server with no other tab open the
    closed tab's session state, the recording and all, stays (the first upload of a fresh server kept 235-331
    MB). Hence the release of the tables themselves. A recording dropped in an open tab (back to live, another
    one opened) is handed back at the next look.
    """

    def __init__(self, grace_s, every_s=5.0):
        self.grace_s, self.every_s = grace_s, every_s
        self._lock = threading.Lock()
        self._seen = {}  # session id -> when it was last seen connected
        self._recordings = {}  # session id -> weak references to the recordings it opened
        self._freed, self._halt = threading.Event(), threading.Event()
        self._thread = None
        self._frames = None  # ui.shared's figures, which keep the snapshots they were drawn from

    def opened(self, rec):
        """This script's session opened ``rec``."""
        self._frames = shared.frames()  # its figures keep the replay's snapshots: dropped with the session
        ctx = get_script_run_ctx()
        self.track(ctx.session_id if ctx is not None else None, rec)

    def track(self, session_id, rec):
        if session_id is not None:
            with self._lock:
                self._seen[session_id] = time.monotonic()
                alive = [r for r in self._recordings.get(session_id, ()) if r() is not None]
                self._recordings[session_id] = [*alive, weakref.ref(rec)]
        weakref.finalize(rec, self._freed.set)

    def start(self):
        if self._thread is None:
            self._thread = threading.Thread(target=self._run, name="bnviz-closed-tabs", daemon=True)
            self._thread.start()
        return self

    def halt(self):
        self._halt.set()
        if self._thread is not None:
            self._thread.join(10)

    def _run(self):
        while not self._halt.wait(self.every_s):
            try:
                self.look(runtime.get_instance() if runtime.exists() else None)
            except Exception:  # noqa: BLE001 - a helper thread must never die: memory is a nicety
                pass

    def look(self, rt, now=None):
        """Close the sessions of Streamlit's runtime ``rt`` gone for longer than the grace; trim when a recording
        was freed. Returns the ids of the sessions it closed."""
        now = time.monotonic() if now is None else now
        gone = []
        with self._lock:
            for sid, seen in list(self._seen.items()):
                if rt is None:
                    break
                if rt.is_active_session(sid):
                    self._seen[sid] = now
                elif now - seen > self.grace_s:
                    gone.append(sid)
                    del self._seen[sid]
        if gone:
            _on_event_loop(rt, lambda: self._close(rt, gone))
        if self._freed.is_set():
            self._freed.clear()
            gc.collect()
            trim()
        return gone

    def _close(self, rt, sessions):
        for sid in sessions:
            if not rt.is_active_session(sid):  # a reconnect after all: it stays
                rt.close_session(sid)
                _forget_downloads(rt, sid)
                with self._lock:
                    recordings = self._recordings.pop(sid, ())
                for ref in recordings:
                    rec = ref()
                    if rec is not None:
                        rec.release()
            else:
                with self._lock:
                    self._seen.setdefault(sid, time.monotonic())
        if self._frames is not None:
            self._frames.forget_figures()
        gc.collect()  # the session's own reference cycles, so its state (and the recording) go now
        trim()


def _forget_downloads(rt, session_id):
    """Drop the session's download buttons' callables (each keeps what it would export: a replay's tables).

    Streamlit does this when it shuts a session down, but a session whose two minutes in its store ran out
    before ClosedTabs closed it is no longer found there, is never shut down, and its callables stayed."""
    media = getattr(rt, "media_file_mgr", None)
    if media is not None:
        media.clear_session_refs(session_id)
        media.remove_orphaned_files()


def _on_event_loop(rt, fn):
    """Run ``fn`` on Streamlit's event loop, where closing a session must happen (not public: found carefully)."""
    objs = getattr(rt, "_get_async_objs", None)
    loop = getattr(objs(), "eventloop", None) if objs is not None else None
    if loop is not None and not loop.is_closed():
        loop.call_soon_threadsafe(fn)


@st.cache_resource(on_release=ClosedTabs.halt)
def closed_tabs():
    return ClosedTabs(env.grace_s())
