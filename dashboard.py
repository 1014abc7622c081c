"""bnviz: Batch Normalization, live. Start with `make run` (or `streamlit run dashboard.py`).

Thin on purpose: widgets and layout here; training, probes and figures live in the `bnviz` package.
"""
import atexit
import dataclasses
import gc
import contextlib
import inspect
import json
import os
import time
from pathlib import Path

import streamlit as st

import bnviz.batchnorm
from bnviz import figures
from bnviz.data import DataError, load_fashion_mnist
from bnviz.device import DeviceError, resolve_device
from bnviz.engine import Experiment, LaneSpec, MAX_LANES, Settings, describe_error
from bnviz.experiment_process import ExperimentProcess, warm_up
from bnviz.history import RecordingError, experiment_bytes, metrics_csv, to_jsonable
from bnviz.jobs import Job
from bnviz.studies import RACE_LRS, batch_statistics, lr_race
from bnviz.models import BN_LAYERS
from bnviz.registry import CapacityError, Janitor, Registry
from bnviz.replay import Recording

REFRESH_S = 1.0
HEARTBEAT_S = 10.0
PRESETS = {
    "Class demo: fast": dict(train_size=12_800, epochs=3, batch_size=128, lr=0.1, probe_every=5, val_every=10,
                             val_size=500),
    "Chapter defaults": dict(train_size=None, epochs=10, batch_size=128, lr=0.1, probe_every=20, val_every=100,
                             val_size=1000),
}
RACE_STEPS = int(os.environ.get("BNVIZ_RACE_STEPS", "200"))  # steps per learning rate in the race
URL_PRESETS = {"demo": "Class demo: fast", "chapter": "Chapter defaults"}  # ?preset=chapter in the URL
LR_CHOICES = (0.01, 0.03, 0.1, 0.3, 1.0, 3.0, 10.0)
TRAIN_SIZES = {"all 60,000": None, "12,800 (fast)": 12_800, "6,400": 6_400, "25,600": 25_600}
WINDOWS = {"all steps": None, "last 200 steps": 200, "last 500 steps": 500, "last 2,000 steps": 2000}
VIEWS = ("Training", "Inside BN", "BN state", "Gradients", "Experiments", "Lesson")
STUDIES = ("Learning-rate race", "Batch vs running statistics", "Flip BN on a trained network", "Smoother landscape")
SHIPPED_RUN = Path(__file__).parent / "assets" / "chapter-run" / "experiment.npz"
SPEEDS = {"1×": 1, "5×": 5, "20×": 20, "100×": 100}
NORM_NAMES = {"scratch": "scratch", "torch": "torch"}

st.set_page_config(page_title="bnviz · Batch Normalization, live", page_icon="🧪", layout="wide")
st.markdown("<style>.block-container {padding-top: 2.2rem;}</style>", unsafe_allow_html=True)


# ----------------------------------------------------------------------------------- server-wide state
@st.cache_resource
def server():
    """One registry for the whole server, so reloads find their experiment again."""
    warm_up()  # experiments train in child processes, forked from a server that imports torch once
    # Streamlit runs a full gc.collect() after every script run, each 1 Hz refresh included. Over the
    # 380,000 objects that torch, plotly and streamlit load, that took 190 ms a time (py-spy: a third of a core).
    # They live as long as the server: freeze them out of every later collection (it then takes ~0 ms).
    gc.collect()
    gc.freeze()
    registry = Registry(max_training=int(os.environ.get("BNVIZ_MAX_TRAINING", "2")),
                        grace_s=float(os.environ.get("BNVIZ_GRACE_S", "120")))
    Janitor(registry).start()
    atexit.register(registry.close)
    return registry


@st.cache_resource(show_spinner="Loading Fashion-MNIST…")
def dataset():
    return load_fashion_mnist()


@contextlib.contextmanager
def guard():
    """Show a failure inside a part of the page as a message, not a traceback."""
    try:
        yield
    except Exception as e:
        st.error(f"This view could not be drawn: {describe_error(e)}")


def say(fn, *args, **kwargs):
    """Run a command; show what went wrong as a message, never a traceback."""
    try:
        return fn(*args, **kwargs)
    except CapacityError as e:
        st.session_state["flash"] = ("warning", str(e))
    except (ValueError, DeviceError, RecordingError, RuntimeError, TimeoutError) as e:
        st.session_state["flash"] = ("error", describe_error(e) if isinstance(e, RuntimeError) else str(e))


def settings_from_widgets():
    ss = st.session_state
    preset = PRESETS[ss["preset"]]
    return Settings(lr=ss["lr"], batch_size=int(ss["batch_size"]), epochs=int(ss["epochs"]), seed=int(ss["seed"]),
                    device=ss["device"], train_size=TRAIN_SIZES[ss["train_size"]],
                    probe_every=preset["probe_every"], val_every=preset["val_every"], val_size=preset["val_size"])


def init_widgets(exp=None):
    """Widget values from the attached experiment (after a reload) or from the default preset."""
    ss = st.session_state
    preset = URL_PRESETS.get(st.query_params.get("preset"), "Class demo: fast")
    s = exp.settings if exp else Settings(**PRESETS[preset])
    ss.setdefault("preset", URL_PRESETS.get(st.query_params.get("preset"), "Class demo: fast"))
    ss.setdefault("lr", s.lr if s.lr in LR_CHOICES else 0.1)
    ss.setdefault("batch_size", s.batch_size)
    ss.setdefault("epochs", url_epochs() or s.epochs)
    ss.setdefault("seed", s.seed)
    ss.setdefault("device", s.device)
    ss.setdefault("train_size", next((k for k, v in TRAIN_SIZES.items() if v == s.train_size), "12,800 (fast)"))
    activation = exp.lanes[0].spec.activation if exp else "sigmoid"
    ss.setdefault("activation", activation)
    ss.setdefault("view", VIEWS[0])
    ss.setdefault("window", "all steps")
    ss.setdefault("log_loss", True)
    ss.setdefault("freeze", False)
    ss.setdefault("position", "bn1")


def url_epochs():
    """?epochs=N in the URL (1 to 100), for a long unattended run; None when absent or not a number."""
    try:
        n = int(st.query_params.get("epochs", ""))
    except ValueError:
        return None
    return n if 1 <= n <= 100 else None


def make_experiment(data, settings, lanes):
    """Training in a child process, so building the page never slows it; in this process if that fails.

    BNVIZ_ENGINE=thread asks for the in-process engine (one process, easier to debug).
    """
    if os.environ.get("BNVIZ_ENGINE", "process") != "thread":
        try:
            return ExperimentProcess(data, settings, lanes, name="dashboard")
        except DeviceError:
            raise
        except (OSError, EOFError, TimeoutError, RuntimeError) as e:
            st.session_state["flash"] = ("warning", "Training runs inside the web server, slower while the page "
                                         f"is open: its own process could not start ({describe_error(e)}).")
    return Experiment(data, settings, lanes, name="dashboard")


def new_experiment(registry, data):
    init_widgets()
    settings = settings_from_widgets()
    lanes = (LaneSpec("none", st.session_state["activation"]), LaneSpec("scratch", st.session_state["activation"]))
    exp = make_experiment(data, settings, lanes)
    key = registry.add(exp)
    st.query_params["run"] = key
    return key, exp


def attach(registry, data):
    """The experiment named in the URL, or a new one."""
    key = st.query_params.get("run")
    exp = registry.get(key) if key else None
    if exp is None:
        if key:
            st.session_state["flash"] = ("info", "That run has ended (the page was closed for a while); "
                                                 "here is a fresh one.")
        key, exp = new_experiment(registry, data)
    init_widgets(exp)
    return key, exp


# ----------------------------------------------------------------------------------- callbacks
def on_lane_change(exp, i):
    ss = st.session_state
    norm = ss[f"impl{i}"] if ss[f"bn{i}"] else "none"
    say(exp.set_lane, i, LaneSpec(norm, ss["activation"]))


def on_lr_change(exp):
    say(exp.set_lr, st.session_state["lr"])


def on_upload():
    """Open an uploaded experiment for replay, once per upload (so 'Back to live' stays back)."""
    up = st.session_state.get("upload")
    if up is None:
        return
    try:
        st.session_state["recording"] = Recording.load(up.getvalue(), name=up.name)
        st.session_state.pop("replay_step", None)
    except RecordingError as e:
        st.session_state["flash"] = ("error", str(e))


def on_preset_change():
    p = PRESETS[st.session_state["preset"]]
    ss = st.session_state
    ss["lr"], ss["batch_size"], ss["epochs"] = p["lr"], p["batch_size"], p["epochs"]
    ss["train_size"] = next(k for k, v in TRAIN_SIZES.items() if v == p["train_size"])
    st.session_state["apply_pending"] = True


def apply_setup(exp, registry, data):
    """Reset with the sidebar's settings; a new experiment when the device changes."""
    ss = st.session_state
    try:
        settings = settings_from_widgets()
        lanes = [LaneSpec(l.spec.norm, ss["activation"]) for l in exp.lanes]
        if resolve_device(settings.device) != exp.device:
            old = ss.get("run_key")
            fresh = make_experiment(data, settings, lanes)
            key = registry.add(fresh)
            st.query_params["run"] = key
            if old:
                exp.stop(timeout=0)
            return fresh
        exp.reset(settings, lanes)
    except (ValueError, DeviceError, RuntimeError) as e:
        ss["flash"] = ("error", f"Not applied: {e}")
    return exp


# ----------------------------------------------------------------------------------- sidebar
def sidebar(exp, registry, data):
    sb = st.sidebar
    sb.selectbox("Preset", list(PRESETS), key="preset", on_change=on_preset_change,
                 help="Class demo: a 12,800-image subset and frequent probes, so curves move within seconds. "
                      "Chapter defaults: all 60,000 images, 10 epochs, as in the book.")
    sb.subheader("Lanes")
    sb.caption("Each lane is the same LeNet on the same batches; only BN differs. Changing a lane restarts it.")
    for lane in exp.lanes:
        i = lane.index
        st.session_state.setdefault(f"bn{i}", lane.spec.norm != "none")
        st.session_state.setdefault(f"impl{i}", lane.spec.norm if lane.spec.norm != "none" else "scratch")
        c1, c2 = sb.columns([1, 1])
        c1.toggle(f"{'ABC'[i]} · BN", key=f"bn{i}", on_change=on_lane_change, args=(exp, i))
        c2.selectbox("implementation", list(NORM_NAMES), format_func=NORM_NAMES.get, key=f"impl{i}",
                     disabled=not st.session_state[f"bn{i}"], on_change=on_lane_change, args=(exp, i),
                     label_visibility="collapsed")
    c1, c2 = sb.columns(2)
    if len(exp.lanes) < MAX_LANES and c1.button("+ add lane", help="A third lane: torch's BN, from step 0"):
        say(exp.add_lane, LaneSpec("torch", st.session_state["activation"]))
        st.rerun()
    if len(exp.lanes) > 1 and c2.button("− remove last"):
        i = len(exp.lanes) - 1
        say(exp.remove_lane, i)
        for k in (f"bn{i}", f"impl{i}"):
            st.session_state.pop(k, None)
        st.rerun()

    sb.subheader("Training")
    sb.select_slider("Learning rate (live)", options=LR_CHOICES, key="lr", on_change=on_lr_change, args=(exp,),
                     help="Applied at the next step, without a restart")
    with sb.form("setup"):
        st.caption("These restart every lane from the seed when applied.")
        st.selectbox("Batch size", (16, 32, 64, 128, 256, 512), key="batch_size")
        st.number_input("Epochs", 1, 100, key="epochs")
        st.selectbox("Activation", ("sigmoid", "relu"), key="activation")
        st.number_input("Seed", 0, 10_000, key="seed")
        st.selectbox("Training-set size", list(TRAIN_SIZES), key="train_size")
        st.selectbox("Device", ("auto", "cpu", "cuda", "mps"), key="device",
                     help="auto: CUDA, then Apple's MPS, then the CPU")
        applied = st.form_submit_button("Apply and restart")
    if applied or st.session_state.pop("apply_pending", False):
        exp = apply_setup(exp, registry, data)
        st.rerun()

    sb.subheader("View")
    sb.selectbox("Window", list(WINDOWS), key="window")
    sb.toggle("Log scale for loss", key="log_loss")
    sb.toggle("Freeze charts", key="freeze", help="Stop refreshing to look closely; training goes on")
    export(sb, exp)
    if SHIPPED_RUN.exists() and sb.button("Replay the recorded 10-epoch run", width="stretch",
                                          help="Nothing to wait for: a run recorded with `python -m bnviz train`"):
        open_shipped_run()
        st.rerun()
    return exp


def export(sb, exp):
    with sb.expander("Export · load a run"):
        snap_names = lambda: [l.label for l in exp.snapshot().lanes]  # noqa: E731
        st.download_button("Metrics (CSV)", data=lambda: metrics_csv(snap_names(), [l.tables for l in exp.snapshot().lanes]),
                           file_name="bnviz-metrics.csv", mime="text/csv", on_click="ignore")
        st.download_button("Metrics and probes (JSON)", file_name="bnviz-history.json", mime="application/json",
                           on_click="ignore", data=lambda: json.dumps(
                               {l.label: to_jsonable(l.tables) for l in exp.snapshot().lanes}))
        st.download_button("Whole experiment (replayable)", file_name="bnviz-experiment.npz",
                           data=lambda: experiment_bytes(exp.header(), [l.tables for l in exp.snapshot().lanes]),
                           mime="application/octet-stream", on_click="ignore")
        st.caption("Charts: the camera icon above each chart saves it as PNG.")
        st.file_uploader("Load a saved experiment", type=["npz"], key="upload", on_change=on_upload)


# ----------------------------------------------------------------------------------- main area
def await_step(exp, before, timeout=0.6):
    """Right after Start, give training a moment to take a step, so the redraw already shows it."""
    end = time.monotonic() + timeout
    while exp.status == "running" and time.monotonic() < end:
        if exp.snapshot().max_step > before:
            return
        time.sleep(0.03)


def controls(exp, registry, key):
    c = st.columns([1, 1, 1, 1, 4])
    if c[0].button("Start", icon=":material/play_arrow:", type="primary", width="stretch",
                   help="Start or resume training", disabled=exp.status == "running"):
        before = exp.snapshot().max_step
        say(registry.start, key)
        await_step(exp, before)
        st.rerun()
    if c[1].button("Pause", icon=":material/pause:", width="stretch", disabled=exp.status != "running"):
        say(exp.pause)
        st.rerun()
    if c[2].button("Step", icon=":material/skip_next:", width="stretch", help="One step of every lane, then pause"):
        say(exp.step, 1)
        say(exp.wait, 5)
        st.rerun()
    if c[3].button("Reset", icon=":material/restart_alt:", width="stretch",
                   help="Every lane back to step 0, same seed"):
        say(exp.reset)
        st.rerun()


def status_bar(snap):
    lane0 = max(snap.lanes, key=lambda l: l.step)
    total = lane0.steps_per_epoch * snap.settings.epochs
    ips = sum(l.images_per_s for l in snap.lanes if l.status == "training")
    st.progress(min(1.0, lane0.step / max(total, 1)),
                text=f"{snap.device} · epoch {lane0.epoch}/{snap.settings.epochs} · step {lane0.step:,}/{total:,} · "
                     f"{ips:,.0f} images/s · {snap.status}")
    for lane in snap.lanes:
        if lane.status == "diverged":
            st.warning(f"{lane.label} diverged at step {lane.diverged_at:,} (its loss became NaN or infinite, or stayed above 20 for 5 steps; chance level is 2.3) and "
                       "stopped; the other lanes go on. Try a smaller learning rate, or turn BN on.")
        elif lane.status == "error":
            st.error(f"{lane.label} stopped: {lane.error}")
    if snap.error:
        st.error(f"Training stopped: {snap.error}. Press Reset to start again.")


def chart(fig, key):
    st.plotly_chart(fig, key=key, config=figures.PNG_CONFIG, theme=None)


def view_training(snap, last_n):
    st.caption("Same network, same batches: the BN lane should reach a given accuracy in far fewer steps. "
               "Thin lines: training accuracy (smoothed); thick: the validation subset; diamonds: the full test set.")
    c1, c2 = st.columns(2)
    with c1:
        chart(figures.loss_figure(snap, last_n, st.session_state["log_loss"]), "loss")
    with c2:
        chart(figures.accuracy_figure(snap, last_n), "acc")
    st.markdown("**When did each lane first reach 50 / 70 / 80 % validation accuracy?**")
    st.dataframe(figures.scoreboard(snap), hide_index=True, width="stretch")


def position_picker():
    st.segmented_control("BN position", BN_LAYERS, key="position", format_func=lambda p: p,
                         help="bn1, bn2 follow the convolutions; bn3, bn4 the fully connected layers")
    return st.session_state["position"] or "bn1"


def view_inside(snap, last_n):
    pos = position_picker()
    st.caption("Left: what enters BN (the conv/linear output). Middle: what leaves it — with BN centred and "
               "scaled, without BN unchanged. Right: after the activation; without BN many sigmoid units sit "
               "near 0 or 1, where their gradient vanishes.")
    chart(figures.histogram_figure(snap, pos), "hist")
    st.caption("Ioffe & Szegedy (2015), Figure 1: the 15th, 50th and 85th percentiles of the input to the "
               "activation. With BN they stay put; without BN they drift as the layers below change.")
    chart(figures.percentile_figure(snap, pos, "out", last_n), "pct")
    st.caption("The whole distribution over time: each column is one probe.")
    cols = st.columns(len(snap.lanes))
    for col, lane in zip(cols, snap.lanes):
        with col:
            chart(figures.heatmap_figure(lane, pos, "out"), f"heat{lane.index}")


def view_state(snap):
    pos = position_picker()
    bn_lanes = [l for l in snap.lanes if l.spec.norm != "none"] or list(snap.lanes)
    lane = bn_lanes[0]
    if len(bn_lanes) > 1:
        i = st.radio("Lane", range(len(bn_lanes)), format_func=lambda i: bn_lanes[i].label, horizontal=True,
                     key="state_lane")
        lane = bn_lanes[i or 0]
    st.caption("The running mean and variance are what BN uses at test time: moving averages of the batch "
               "statistics (momentum 0.1). They settle as training goes on.")
    chart(figures.running_stats_figure(lane, pos), "running")
    st.caption("One batch's statistics scatter around the running ones: that noise is part of why BN regularises.")
    chart(figures.batch_vs_running_figure(lane, pos), "batchrun")
    st.caption("gamma and beta start at 1 and 0 and are learned: the network chooses the scale and shift it wants.")
    chart(figures.gamma_beta_figure(lane, pos), "gb")


def view_gradients(snap, last_n):
    st.caption("Without BN the gradient shrinks layer by layer on the way down (sigmoid saturates); with BN "
               "every layer gets a healthy gradient.")
    chart(figures.gradient_figure(snap, "grad_norm", last_n), "gn")
    st.caption("Update-to-weight ratio: how much a step changes each layer's weights, relative to their size.")
    chart(figures.gradient_figure(snap, "update_ratio", last_n), "ur")
    chart(figures.saturation_figure(snap, last_n), "sat")


STUDY_JOBS = ("race", "batchstats")


def job_status(ctx, name, factory, label):
    """A button that starts a background study, its progress while it runs; returns the finished result."""
    registry, key = ctx
    job = registry.job(key, name)
    if job is not None and not job.done:
        st.progress(job.progress, text=f"{label}: running…")
        if st.button("Stop", key=f"stop-{name}"):
            job.stop(timeout=0)
        return None
    if st.button(label, key=f"run-{name}", type="primary"):
        say(registry.start_job, key, name, factory)
        st.rerun()
    if job is not None and job.error:
        st.error(f"The study stopped: {job.error}")
        return None
    return job.result if job is not None else None


def poll_jobs(registry, key):
    """While a study runs, refresh once a second; one full redraw when it ends."""
    @st.fragment(run_every=1.0)
    def poll():
        if all(registry.job(key, n) is None or registry.job(key, n).done for n in STUDY_JOBS):
            st.rerun()
    poll()


def view_experiments(exp, snap, data, last_n, ctx):
    study = st.radio("Study", STUDIES, horizontal=True, key="study")
    if study == STUDIES[0]:
        st.caption(f"The same LeNet with and without BN, {RACE_STEPS} steps at each learning rate from 0.1 to 100, on the "
                   "same batches. Without BN the sigmoid network stalls at chance for every rate and blows up at the "
                   "largest; with BN it learns across a wide range. The chapter's exercise: how large can the "
                   "learning rate be before optimisation fails?")
        results = job_status(ctx, "race", lambda: Job(lr_race, data, steps=RACE_STEPS, train_size=25_600,
                                                 activation=st.session_state["activation"], name="race",
                                                 experiment=type(exp)),  # where the live lanes train
                             f"Run the race ({len(RACE_LRS)} learning rates × {RACE_STEPS} steps × 2 lanes)")
        if results:
            chart(figures.race_figure(results), "race")
            st.dataframe(figures.race_table(results), hide_index=True, width="stretch")
    elif study == STUDIES[1]:
        st.caption("Take the trained BN lane and test it with BN using each test batch's own statistics (train "
                   "mode) against the running averages (eval mode). With small batches the batch statistics are "
                   "noisy and accuracy falls; the running averages do not depend on the batch at all.")
        bn = [l for l in snap.lanes if l.spec.norm != "none"]
        if not bn or bn[0].step < 50:
            st.info("Train a lane with BN for at least 50 steps first (press Start), then run this study.")
        else:
            lane = bn[0]
            result = job_status(ctx, "batchstats", lambda: Job(
                batch_statistics, exp.clone_model(lane.index), data.test_images, data.test_labels, name="batchstats"),
                f"Test {lane.label} at step {lane.step:,} over batch sizes 2 to 1,024")
            if result:
                chart(figures.batch_stats_figure(result), "batchstats")
    elif study == STUDIES[2]:
        st.caption("Switch BN off in a trained lane: its layers become the identity, every weight stays. Accuracy "
                   "collapses, because the weights were learned for normalised inputs: BN is part of the function, "
                   "not a training trick. The histograms show what now reaches the activations. Switch BN back on "
                   "and the lane recovers.")
        bn = [l for l in snap.lanes if l.spec.norm != "none"]
        if not bn:
            st.info("Turn BN on in a lane first.")
        for lane in bn:
            label = f"Switch BN back on in {lane.label}" if lane.bn_bypassed else f"Switch BN off in {lane.label}"
            if st.button(label, key=f"flip{lane.index}"):
                say(exp.set_bn_bypass, lane.index, not lane.bn_bypassed)
                st.rerun()
        chart(figures.accuracy_figure(snap, last_n), "flip-acc")
        chart(figures.histogram_figure(snap, "bn3"), "flip-hist")
    else:
        st.caption("Santurkar et al. (2018): every few steps, on a fixed batch, step along the gradient by "
                   "several sizes and record how much the loss and the gradient change. Smaller numbers mean a "
                   "smoother landscape, where a large step is safe. Early on, the network without BN sits on a flat "
                   "plateau (nothing changes because nothing is learned); compare the lanes once both learn, or "
                   "with ReLU.")
        on = snap.settings.landscape_every > 0
        if st.button("Switch the landscape probe off" if on else "Switch the landscape probe on (restarts)"):
            say(exp.reset, dataclasses.replace(exp.settings, landscape_every=0 if on else 25))
            st.rerun()
        chart(figures.landscape_figure(snap, last_n), "landscape")


def view_lesson():
    st.markdown("### Batch Normalization, in one line")
    st.latex(r"\mathrm{BN}(\mathbf{x}) = \boldsymbol{\gamma} \odot "
             r"\frac{\mathbf{x} - \hat{\boldsymbol{\mu}}_\mathcal{B}}{\sqrt{\hat{\boldsymbol{\sigma}}^2_\mathcal{B} + \epsilon}}"
             r" + \boldsymbol{\beta}")
    st.markdown("- $\\hat\\mu_\\mathcal{B}$, $\\hat\\sigma^2_\\mathcal{B}$: mean and variance of the minibatch, per "
                "channel (over the batch, and over height and width after a convolution).\n"
                "- $\\gamma$, $\\beta$: learned scale and shift, one per channel.\n"
                "- At test time the running averages replace the batch statistics (`model.eval()`).")
    st.markdown("### The layer you are watching train (read from `bnviz/batchnorm.py`)")
    st.code(inspect.getsource(bnviz.batchnorm), language="python", line_numbers=True)
    st.markdown("### What to look for\n"
                "1. **Training**: the BN lane leaves chance accuracy within the first hundred steps; without BN "
                "the sigmoid LeNet stays at 10% for a long time at this learning rate.\n"
                "2. **Inside BN**: before BN the distributions wander; after BN they are centred with unit spread.\n"
                "3. **BN state**: running statistics settle; gamma and beta move away from 1 and 0.\n"
                "4. **Gradients**: without BN the first layers get tiny gradients.")


def render(snap, view, last_n, exp=None, data=None, ctx=None):
    if view == "Experiments":
        if exp is None:
            st.info("The studies run live; switch to live training to use them.")
        else:
            view_experiments(exp, snap, data, last_n, ctx)
    elif view == "Training":
        view_training(snap, last_n)
    elif view == "Inside BN":
        view_inside(snap, last_n)
    elif view == "BN state":
        view_state(snap)
    elif view == "Gradients":
        view_gradients(snap, last_n)
    else:
        view_lesson()


def live_panel(exp, registry, key, data):
    running = exp.status == "running" and not st.session_state["freeze"]

    @st.fragment(run_every=REFRESH_S if running else None)
    def panel():
        registry.touch(key)
        snap = exp.snapshot()
        with guard():
            status_bar(snap)
            render(snap, st.session_state["view"] or VIEWS[0], WINDOWS[st.session_state["window"]], exp, data,
                   (registry, key))
        if running and snap.status != "running":
            st.rerun()  # training ended: redraw the page once, and stop refreshing

    panel()


@st.fragment(run_every=HEARTBEAT_S)
def heartbeat(registry, key):
    registry.touch(key)  # keeps a paused experiment alive while its tab is open


def replay_panel(rec):
    """A recorded run on a timeline: play it at a chosen speed, or drag to any step."""
    ss = st.session_state
    st.sidebar.info("You are viewing a recording: the controls here belong to the live run, which waits "
                    "until you go back to it.")
    c = st.columns([4, 1])
    c[0].info(f"Replay of **{rec.name}**: {rec.last_step:,} steps, {len(rec.specs)} lanes, recorded on "
              f"{rec.header.get('device', '?')}. Every chart works as live; nothing trains.")
    if c[1].button("Back to live training", width="stretch"):
        for k in ("recording", "replay_step", "playing"):
            ss.pop(k, None)
        st.rerun()
    ss.setdefault("replay_step", rec.last_step)
    ss.setdefault("playing", False)
    c = st.columns([1, 1, 6])
    c[2].caption("Play runs the recording forward; drag the slider to any step.")
    if c[0].button("Pause" if ss["playing"] else "Play", icon=":material/pause:" if ss["playing"] else
                   ":material/play_arrow:", width="stretch", key="play"):
        if not ss["playing"] and ss["replay_step"] >= rec.last_step:
            ss["replay_step"] = 0
        ss["playing"] = not ss["playing"]
        st.rerun()
    c[1].selectbox("Speed", list(SPEEDS), index=1, key="speed", label_visibility="collapsed")

    @st.fragment(run_every=0.5 if ss["playing"] else None)
    def frame():
        if ss["playing"]:  # advance before the slider is drawn, so it shows the new step
            per_tick = SPEEDS[ss.get("speed", "5×")] * max(1, rec.last_step // 600)
            ss["replay_step"] = min(rec.last_step, ss["replay_step"] + per_tick)
            if ss["replay_step"] >= rec.last_step:
                ss["playing"] = False
                st.rerun()
        st.slider("Step", 0, max(rec.last_step, 1), key="replay_step", label_visibility="collapsed")
        snap = rec.snapshot(ss["replay_step"])
        with guard():
            status_bar(snap)
            render(snap, ss["view"] or VIEWS[0], WINDOWS[ss["window"]])

    frame()


def open_shipped_run():
    try:
        st.session_state["recording"] = Recording.load(SHIPPED_RUN, name="the chapter's 10 epochs (shipped)")
        st.session_state.pop("replay_step", None)
    except (RecordingError, FileNotFoundError) as e:
        st.session_state["flash"] = ("error", f"The recorded run could not be opened: {e}")


def main():
    try:
        data = dataset()
    except DataError as e:
        st.title("bnviz · Batch Normalization, live")
        st.error(f"**The Fashion-MNIST data was not found.** {e}")
        st.stop()
    registry = server()
    key, exp = attach(registry, data)
    st.session_state["run_key"] = key
    exp = sidebar(exp, registry, data)
    key = st.query_params.get("run", key)

    st.title("bnviz · Batch Normalization, live")
    flash = st.session_state.pop("flash", None)
    if flash:
        getattr(st, flash[0])(flash[1])
    st.segmented_control("View", VIEWS, key="view", label_visibility="collapsed")
    if st.query_params.get("replay") == "chapter" and "recording" not in st.session_state \
            and not st.session_state.get("replay_opened"):
        st.session_state["replay_opened"] = True
        open_shipped_run()
    heartbeat(registry, key)  # the live run stays alive while this tab is open, replaying or not
    rec = st.session_state.get("recording")
    if rec is not None:
        replay_panel(rec)
        return
    controls(exp, registry, key)
    if any(registry.job(key, n) is not None and not registry.job(key, n).done for n in STUDY_JOBS):
        poll_jobs(registry, key)
    live_panel(exp, registry, key, data)


try:
    main()
except Exception as e:  # the last line of defence: a message, never a traceback in front of a class
    st.error(f"Something went wrong: {describe_error(e)}. Reload the page; if it happens again, restart "
             "`make run` and tell us what you did.")
