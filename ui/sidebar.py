"""The sidebar: the lanes, the live learning rate, the set-up that restarts, the view options, export and load."""

import json

import streamlit as st

from bnviz.live.experiment_file import experiment_bytes, metrics_csv, to_jsonable
from bnviz.live.snapshot import MAX_LANES, LaneSpec
from bnviz.live.votes import tallies_csv
from bnviz.pictures import web_page
from bnviz.step.models import NORM_INFO

from . import lesson_url, share
from .feedback import say
from .server import SHIPPED_RUN, apply_setup, open_shipped_run, open_upload
from .state import (
    BATCH_SIZES,
    CLASS_CHOICES,
    LR_CHOICES,
    NORM_NAMES,
    PRESETS,
    TRAIN_SIZES,
    WINDOWS,
    Key,
    settings_from_widgets,
    url_value,
)

PRESET_HELP = (
    "Class demo: a 12,800-image subset and frequent probes, so curves move within seconds. "
    "Chapter defaults: all 60,000 images, 10 epochs, as in the book."
)
NORM_HELP = "\n\n".join(f"**{NORM_INFO[n].label}**: {NORM_INFO[n].description}" for n in NORM_INFO if n != "none")
LANES_CAPTION = (
    "Each lane is the same LeNet on the same batches; only its normalisation differs (the switch: on or off; "
    "beside it: which kind). Changing a lane restarts it."
)
SETUP_CAPTION = "These restart every lane from the seed when applied."


# ----------------------------------------------------------------------------------- callbacks
def on_lane_change(exp, i):
    ss = st.session_state
    norm = ss[Key.impl(i)] if ss[Key.bn(i)] else "none"
    say(exp.set_lane, i, LaneSpec(norm, ss[Key.ACTIVATION]))


def on_lr_change(exp):
    say(exp.set_lr, st.session_state[Key.LR])


def on_preset_change(exp, registry, data):
    """A preset sets the form's values and applies them at once."""
    ss = st.session_state
    p = PRESETS[ss[Key.PRESET]]
    ss[Key.LR], ss[Key.BATCH_SIZE], ss[Key.EPOCHS] = p["lr"], p["batch_size"], p["epochs"]
    ss[Key.TRAIN_SIZE] = next(k for k, v in TRAIN_SIZES.items() if v == p["train_size"])
    apply_setup(exp, registry, data)


def on_add_lane(exp):
    say(exp.add_lane, LaneSpec("torch", st.session_state[Key.ACTIVATION]))


def on_remove_lane(exp):
    i = len(exp.lanes) - 1
    say(exp.remove_lane, i)
    for k in (Key.bn(i), Key.impl(i)):
        st.session_state.pop(k, None)  # the URL loses them at this run's end (lesson_url.write)


def on_upload():
    """Open an uploaded experiment for replay, once per upload (so 'Back to live' stays back)."""
    up = st.session_state.get(Key.UPLOAD)
    if up is not None:
        open_upload(up)


# ----------------------------------------------------------------------------------- the sidebar
def describe(settings, specs=None, device=None):
    """The settings as one line a class can read: what is (or was) actually running."""
    size = "all 60,000" if settings.train_size is None else f"{settings.train_size:,}"
    text = (
        f"batch {settings.batch_size} · {settings.epochs} epoch{'s' if settings.epochs != 1 else ''} · "
        f"lr {settings.lr:g} · seed {settings.seed} · {size} images"
    )
    if settings.classes_per_batch != 10:
        text += f" · {settings.classes_per_batch} classes a batch"
    if specs:
        text += " · " + ", ".join(sorted({s.activation for s in specs}))
    return text + (f" · {device}" if device else "")


def pending(exp):
    """What the set-up form holds that is not running, as 'batch size 64 (running: 128)' items."""
    ss = st.session_state
    try:
        wanted = settings_from_widgets()
    except ValueError:
        return ["a value out of range"]
    running = exp.settings
    items = [
        f"{name} {getattr(wanted, field)} (running: {getattr(running, field)})"
        for name, field in (
            ("batch size", "batch_size"),
            ("epochs", "epochs"),
            ("seed", "seed"),
            ("classes in each batch", "classes_per_batch"),
            ("device", "device"),
        )
        if getattr(wanted, field) != getattr(running, field)
    ]
    if wanted.train_size != running.train_size:
        items.append(f"training-set size {ss[Key.TRAIN_SIZE]}")
    activations = {lane.spec.activation for lane in exp.lanes}
    if activations != {ss[Key.ACTIVATION]}:
        items.append(f"activation {ss[Key.ACTIVATION]} (running: {', '.join(sorted(activations))})")
    return items


def render(exp, registry, data, snap=None):
    sb = st.sidebar
    sb.selectbox(
        "Preset",
        list(PRESETS),
        key=Key.PRESET,
        on_change=on_preset_change,
        args=(exp, registry, data),
        help=PRESET_HELP,
    )
    lanes(sb, exp, snap)
    sb.subheader("Training")
    sb.select_slider(
        "Learning rate (live)",
        options=LR_CHOICES,
        key=Key.LR,
        on_change=on_lr_change,
        args=(exp,),
        help="Applied at the next step, without a restart",
    )
    sb.caption(f"Running: {describe(exp.settings, [l.spec for l in exp.lanes])}")
    waiting = pending(exp)
    if waiting:
        sb.warning(f"Not running yet: {'; '.join(waiting)}. Press *Apply and restart* to use them.")
    with sb.form("setup"):
        st.caption(SETUP_CAPTION)
        st.selectbox("Batch size", BATCH_SIZES, key=Key.BATCH_SIZE)
        st.number_input("Epochs", 1, 100, key=Key.EPOCHS)
        st.selectbox("Activation", ("sigmoid", "relu"), key=Key.ACTIVATION)
        st.number_input("Seed", 0, 10_000, key=Key.SEED)
        st.selectbox(
            "Classes in each batch",
            CLASS_CHOICES,
            format_func=lambda k: "10 (i.i.d. batches)" if k == 10 else f"{k} of the 10",
            key=Key.CLASSES,
            help="Fewer classes per batch: skewed batches, whose statistics are not the data's (where BN breaks)",
        )
        st.selectbox("Training-set size", list(TRAIN_SIZES), key=Key.TRAIN_SIZE)
        st.selectbox(
            "Device", ("auto", "cpu", "cuda", "mps"), key=Key.DEVICE, help="auto: CUDA, then Apple's MPS, then the CPU"
        )
        st.form_submit_button("Apply and restart", on_click=apply_setup, args=(exp, registry, data))

    sb.subheader("View")
    sb.toggle(
        "Presenter mode",
        key=Key.PRESENT,
        help="For a projector: sidebar closed, one chart per row, large captions (also ?present=1 in the URL)",
    )
    sb.selectbox("Window", list(WINDOWS), key=Key.WINDOW)
    sb.toggle("Log scale for loss", key=Key.LOG_LOSS)
    sb.toggle("Freeze charts", key=Key.FREEZE, help="Stop refreshing to look closely; training goes on")
    export(sb, exp, registry.polls(st.session_state.get(Key.RUN_KEY, "")))
    lesson_url.write(len(exp.lanes))  # before the share panel reads it: the set-up as a link (ui/lesson_url.py)
    share.panel(sb, registry, st.session_state[Key.RUN_KEY])
    if SHIPPED_RUN.exists():
        sb.button(
            "Replay the recorded 10-epoch run",
            width="stretch",
            on_click=open_shipped_run,
            help="Nothing to wait for: a run recorded with `python -m bnviz train`",
        )


def kept_kind(i):
    """The kind of a lane whose BN is off: the link's (impl1=torch with bn1=false), so switching BN on restores it."""
    return url_value(Key.impl(i), str, lambda v: v in NORM_NAMES) or lesson_url.default_impl(i)


def lanes(sb, exp, snap=None):
    sb.subheader("Lanes")
    sb.caption(LANES_CAPTION)
    bypassed = {l.index for l in snap.lanes if l.bn_bypassed} if snap else set()
    for lane in exp.lanes:
        i = lane.index
        st.session_state.setdefault(Key.bn(i), lane.spec.norm != "none")
        st.session_state.setdefault(Key.impl(i), lane.spec.norm if lane.spec.norm != "none" else kept_kind(i))
        c1, c2 = sb.columns([2, 3])  # the wider side for the normalisation's name ("GroupNorm", "Ghost BN (32)")
        c1.toggle(f"{'ABC'[i]} · BN", key=Key.bn(i), on_change=on_lane_change, args=(exp, i))
        c2.selectbox(
            "normalisation",
            list(NORM_NAMES),
            format_func=NORM_NAMES.get,
            help=NORM_HELP,
            key=Key.impl(i),
            disabled=not st.session_state[Key.bn(i)],
            on_change=on_lane_change,
            args=(exp, i),
            label_visibility="collapsed",
        )
        if i in bypassed:
            sb.caption(
                f"{'ABC'[i]}: BN is switched off for now (Experiments → Flip BN): its layers act as the identity."
            )
    c1, c2 = sb.columns(2)
    if len(exp.lanes) < MAX_LANES:
        c1.button("+ add lane", help="A third lane: torch's BN, from step 0", on_click=on_add_lane, args=(exp,))
    if len(exp.lanes) > 1:
        c2.button("− remove last", on_click=on_remove_lane, args=(exp,))


PREDICTIONS_HELP = (
    "Each question asked of the class on this run, one row per choice: votes and share, open or closed; no names"
)
WEB_PAGE_HELP = "One HTML file with the charts and a step slider: no server needed, opens offline"


def download(label, data, file_name, mime, help=None):
    """A download built only when clicked (``data`` is called then), without rerunning the page."""
    st.download_button(label, data=data, file_name=file_name, mime=mime, on_click="ignore", help=help)


def export(sb, exp, polls=None):
    """Downloads built when clicked, each from ONE snapshot (names and tables always agree); beside the metrics,
    the class's predictions on this run (``polls``, bnviz/live/votes.py)."""

    def tables():
        snap = exp.snapshot()
        return [l.label for l in snap.lanes], [l.tables for l in snap.lanes]

    def csv():
        return metrics_csv(*tables())

    def history_json():
        names, views = tables()
        return json.dumps({name: to_jsonable(t) for name, t in zip(names, views)})

    def replayable():
        header = exp.header()
        return experiment_bytes(header, tables()[1])

    with sb.expander("Export · load a run"):
        if exp.status == "error" or not getattr(exp, "responding", True):
            st.caption(
                "The training process has ended or does not answer: these files hold the curves as this server "
                "last received them."
            )
        download("Metrics (CSV)", csv, "bnviz-metrics.csv", "text/csv")
        if polls is not None:
            download(
                "Class predictions (CSV)",
                lambda: tallies_csv(polls.tallies()),
                "bnviz-class-predictions.csv",
                "text/csv",
                PREDICTIONS_HELP,
            )
        download("Metrics and probes (JSON)", history_json, "bnviz-history.json", "application/json")
        download("Whole experiment (replayable)", replayable, "bnviz-experiment.npz", "application/octet-stream")
        download("Save as a web page", lambda: web_page.run_page(exp), "bnviz-run.html", "text/html", WEB_PAGE_HELP)
        st.caption("Charts: the camera icon at the top right of each chart (on hover) saves it as PNG.")
        st.file_uploader("Load a saved experiment", type=["npz"], key=Key.UPLOAD, on_change=on_upload)


def render_replay(rec):
    """In a replay the sidebar shows the recording's settings, read-only, and exports the recording."""
    sb = st.sidebar
    sb.subheader("Recording")
    sb.caption("You are viewing a recording. Its settings (read-only); the live run waits until you go back to it.")
    specs = rec.specs
    sb.text(f"{len(specs)} lanes: " + ", ".join(f"{'ABC'[i]} · {s.label}" for i, s in enumerate(specs)))
    sb.text(describe(rec.settings, specs, rec.header().get("device")))
    snap = rec.snapshot()
    names, views = [l.label for l in snap.lanes], [l.tables for l in snap.lanes]
    with sb.expander("Export this recording", expanded=True):
        download("Metrics (CSV)", lambda: metrics_csv(names, views), "bnviz-recording-metrics.csv", "text/csv")
        download(
            "Whole experiment (replayable)",
            lambda: experiment_bytes(rec.header(), views),
            "bnviz-recording.npz",
            "application/octet-stream",
        )
        download(
            "Save as a web page", lambda: web_page.run_page(rec), "bnviz-recording.html", "text/html", WEB_PAGE_HELP
        )
