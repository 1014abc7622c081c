"""Every session-state key of the page as a named constant, the widgets' choices and defaults, and flash messages.

Streamlit keeps widget values in ``st.session_state`` under their ``key``; naming each key once here means a
typo is an AttributeError at import, not a widget that silently forgets its value.
"""

from collections.abc import Callable
from typing import Any

import streamlit as st

from bnviz.live.snapshot import Settings
from bnviz.step.models import ACTIVATIONS, BN_LAYERS, NORM_INFO, NORMS


class Key:
    """Session-state keys (widget keys are also the names the tests use to find a widget)."""

    PRESET = "preset"
    LR = "lr"
    BATCH_SIZE = "batch_size"
    EPOCHS = "epochs"
    SEED = "seed"
    CLASSES = "classes"  # classes in each training batch (10: i.i.d.)
    DEVICE = "device"
    TRAIN_SIZE = "train_size"
    ACTIVATION = "activation"
    VIEW = "view"
    WINDOW = "window"
    LOG_LOSS = "log_loss"
    FREEZE = "freeze"
    POSITION = "position"
    STUDY = "study"
    STATE_LANE = "state_lane"
    LESSON_LANE = "lesson_lane"
    UPLOAD = "upload"
    RECORDING = "recording"
    REPLAY_STEP = "replay_step"
    REPLAY_OPENED = "replay_opened"
    PLAYING = "playing"
    SPEED = "speed"
    FLASH = "flash"
    RUN_KEY = "run_key"
    FLIP_RESULT = "flip_result"
    PRECISE_RESULT = "precise_result"
    PRESENT = "present"
    SHARE = "share"  # the sidebar's share panel is open
    SHOW_QR = "show_qr"  # the watch link's big QR code on the main page (ui/share.py)
    TEACHER = "teacher"  # this session showed the teacher's key (ui/access.py)
    VOTER = "voter"  # this browser's random voter id (ui/vote.py), kept in a cookie
    VOTE_PROBLEM = "vote_problem"  # why the last vote was not counted (ui/vote.py)
    WATCH_FRAME = "watch_frame"  # the teacher's frame a watch page last drew (ui/watch.py)
    EXERCISE = "exercise"
    STORY_STEP = "story_step"
    STORY_REVEAL = "story_reveal"
    STORY_ANSWER = "story_answer"  # + the step's number

    @staticmethod
    def bn(i):
        """The toggle that switches BN on in lane i."""
        return f"bn{i}"

    @staticmethod
    def prediction(exercise):
        """The class's prediction for one exercise."""
        return f"predict-{exercise}"

    @staticmethod
    def impl(i):
        """The selector of lane i's BN implementation."""
        return f"impl{i}"


PRESETS: dict[str, dict[str, Any]] = {
    "Class demo: fast": dict(
        train_size=12_800, epochs=3, batch_size=128, lr=0.1, probe_every=5, val_every=10, val_size=500
    ),
    "Chapter defaults": dict(
        train_size=None, epochs=10, batch_size=128, lr=0.1, probe_every=20, val_every=100, val_size=1000
    ),
}
DEFAULT_PRESET = "Class demo: fast"
URL_PRESETS = {"demo": "Class demo: fast", "chapter": "Chapter defaults"}  # ?preset=chapter in the URL
LR_CHOICES = (0.01, 0.03, 0.1, 0.3, 1.0, 3.0, 10.0)
BATCH_SIZES = (2, 4, 8, 16, 32, 64, 128, 256, 512)  # from 2: where BN's batch statistics break down
TRAIN_SIZES = {"all 60,000": None, "12,800 (fast)": 12_800, "6,400": 6_400, "25,600": 25_600}
WINDOWS = {"all steps": None, "last 200 steps": 200, "last 500 steps": 500, "last 2,000 steps": 2000}
SPEEDS = {"1×": 1, "5×": 5, "20×": 20, "100×": 100}
NORM_NAMES = {n: NORM_INFO[n].label for n in NORMS if n != "none"}  # what a lane with its BN toggle on can run
CLASS_CHOICES = (10, 5, 2, 1)
MAX_URL_EPOCHS = 100
BOUND = "query-params"  # the watch page's view picker lives in the URL (the lesson set-up: ui/lesson_url.py)


def url_raw(key: str) -> str | None:
    """A link's one value for ``key``: None when absent or given more than once (``url_problems`` names it)."""
    values = st.query_params.get_all(key)
    return values[0] if len(values) == 1 else None


def url_preset():
    """?preset= in the URL: a preset's name or its short form (demo, chapter)."""
    raw = url_raw(Key.PRESET)
    return raw if raw in PRESETS else URL_PRESETS.get(raw, DEFAULT_PRESET)


def url_value(key, parse, valid):
    """A lesson link's value for a bound widget (?lr=1.0), or None when absent, repeated or not valid."""
    raw = url_raw(key)
    if raw is None:
        return None
    try:
        value = parse(raw)
    except ValueError:
        return None
    return value if valid(value) else None


def url_bool(raw):
    if raw.lower() in ("true", "1", "yes", "on"):
        return True
    if raw.lower() in ("false", "0", "no", "off"):
        return False
    raise ValueError(raw)


def url_lanes():
    """The lanes a lesson link asks for (?bn0=true&impl0=torch&bn2=true ...), or None to use the default pair."""
    from bnviz.live.snapshot import LaneSpec

    if not any(st.query_params.get(k) is not None for i in range(3) for k in (Key.bn(i), Key.impl(i))):
        return None
    count = 3 if st.query_params.get(Key.bn(2)) is not None or st.query_params.get(Key.impl(2)) is not None else 2
    activation = url_value(Key.ACTIVATION, str, lambda v: v in ACTIVATIONS) or "sigmoid"
    lanes = []
    for i in range(count):
        default_on = i > 0  # lane A starts without BN, the others with it
        on = url_value(Key.bn(i), url_bool, lambda v: True)
        impl = url_value(Key.impl(i), str, lambda v: v in NORM_NAMES) or ("torch" if i == 2 else "scratch")
        lanes.append(LaneSpec(impl if (default_on if on is None else on) else "none", activation))
    return tuple(lanes)


def url_epochs():
    """?epochs=N in the URL (1 to 100), for a long unattended run; None when absent or not a number."""
    try:
        n = int(url_raw(Key.EPOCHS) or "")
    except ValueError:
        return None
    return n if 1 <= n <= MAX_URL_EPOCHS else None


# What else a link may carry: the page's own (run, watch, replay, exercise) and Streamlit's (embed).
LINK_KEYS = ("run", "watch", "replay", Key.EXERCISE, "embed", "embed_options")
SIDEBAR_ONLY = {Key.DEVICE: "the device", Key.TRAIN_SIZE: "the training-set size"}  # chosen in the sidebar


def url_problems(views):
    """The lesson link's values that cannot be used, each as a sentence that says what was used instead.

    A link's value that is not valid is dropped (the widget keeps its default); the page says so once,
    instead of silently training something other than what the link asked for.
    """
    return link_problems({k: st.query_params.get_all(k) for k in st.query_params}, views)


def link_problems(params: dict[str, list[str]], views: tuple[str, ...]) -> list[str]:
    """``url_problems`` of a link's parameters (each name with every value the link gives it): one phrase per
    parameter the page cannot use, naming it and what it must be. Every parameter the page reads is checked,
    one given twice is named (the page would use only the last), and one the page does not read is named too."""
    from bnviz.studies.exercises import EXERCISES

    checks: dict[str, tuple[Callable[[str], Any], Callable[[Any], bool], str]] = {  # key: (parse, valid, allowed)
        Key.LR: (float, lambda v: v in LR_CHOICES, "one of " + ", ".join(f"{v:g}" for v in LR_CHOICES)),
        Key.BATCH_SIZE: (int, lambda v: v in BATCH_SIZES, "one of " + ", ".join(map(str, BATCH_SIZES))),
        Key.EPOCHS: (int, lambda v: 1 <= v <= MAX_URL_EPOCHS, f"a whole number from 1 to {MAX_URL_EPOCHS}"),
        Key.SEED: (int, lambda v: 0 <= v <= 10_000, "a whole number from 0 to 10000"),
        Key.CLASSES: (int, lambda v: v in CLASS_CHOICES, "one of " + ", ".join(map(str, CLASS_CHOICES))),
        Key.ACTIVATION: (str, lambda v: v in ACTIVATIONS, " or ".join(ACTIVATIONS)),
        Key.VIEW: (str, lambda v: v in views, "one of " + ", ".join(views)),
        Key.POSITION: (str, lambda v: v in BN_LAYERS, "one of " + ", ".join(BN_LAYERS)),
        Key.PRESET: (str, lambda v: v in PRESETS or v in URL_PRESETS, "demo or chapter"),
        Key.PRESENT: (url_bool, lambda v: True, "true or false"),
        Key.EXERCISE: (str, lambda v: v in EXERCISES, "one of " + ", ".join(EXERCISES)),
        "replay": (str, lambda v: v == "chapter", "chapter, the one recorded run a link can open"),
    }
    for i in range(3):
        checks[Key.bn(i)] = (url_bool, lambda v: True, "true or false")
        checks[Key.impl(i)] = (str, lambda v: v in NORM_NAMES, " or ".join(NORM_NAMES))
    problems = []
    for key, values in params.items():
        name = str(key)[:40]
        if len(values) > 1:
            problems.append(f"{name} given {len(values)} times (give it once)")
            continue
        raw = values[0] if values else ""
        if key in SIDEBAR_ONLY:
            problems.append(f"{name}={str(raw)[:40]!r} ({SIDEBAR_ONLY[key]} is chosen in the sidebar, not by a link)")
            continue
        if key not in checks:
            if key not in LINK_KEYS:
                problems.append(f"{name}={str(raw)[:40]!r} (not a setting a link can hold)")
            continue
        parse, valid, allowed = checks[key]
        try:
            ok = valid(parse(raw))
        except ValueError:
            ok = False
        if not ok:
            problems.append(f"{name}={str(raw)[:40]!r} (it must be {allowed})")
    return problems


def init_widgets(views, exp=None):
    """Widget values: from the attached experiment (after a reload), else from a lesson link's URL, else the preset.

    The lesson set-up (preset, lanes, activation, lr, batch size, epochs, seed, view, BN position) is kept in
    the URL (ui/lesson_url.py), so a link opens exactly that set-up; for a new experiment the URL's values are
    read here first, so the experiment is made with them.
    """
    ss = st.session_state
    s = exp.settings if exp else Settings(**PRESETS[url_preset()])

    def choose(key, running, parse, valid):
        ss.setdefault(key, running if exp else (url_value(key, parse, valid) or running))

    ss.setdefault(Key.PRESET, url_preset())
    choose(Key.LR, s.lr if s.lr in LR_CHOICES else 0.1, float, lambda v: v in LR_CHOICES)
    choose(Key.BATCH_SIZE, s.batch_size, int, lambda v: v in BATCH_SIZES)
    ss.setdefault(Key.EPOCHS, s.epochs if exp else (url_epochs() or s.epochs))
    choose(Key.SEED, s.seed, int, lambda v: 0 <= v <= 10_000)
    choose(Key.CLASSES, s.classes_per_batch, int, lambda v: v in CLASS_CHOICES)
    ss.setdefault(Key.DEVICE, s.device)
    ss.setdefault(Key.TRAIN_SIZE, next((k for k, v in TRAIN_SIZES.items() if v == s.train_size), "12,800 (fast)"))
    choose(Key.ACTIVATION, exp.lanes[0].spec.activation if exp else "sigmoid", str, lambda v: v in ACTIVATIONS)
    ss.setdefault(Key.VIEW, url_value(Key.VIEW, str, lambda v: v in views) or "Training")
    ss.setdefault(Key.WINDOW, "all steps")
    ss.setdefault(Key.LOG_LOSS, True)
    ss.setdefault(Key.FREEZE, False)
    ss.setdefault(Key.POSITION, url_value(Key.POSITION, str, lambda v: v in BN_LAYERS) or "bn1")
    present = url_value(Key.PRESENT, url_bool, lambda v: True)
    if present is not None:  # ?present=1 or ?present=true (its toggle keeps it in the URL: keep_in_url)
        ss.setdefault(Key.PRESENT, present)


def keep_in_url(key: str, value: str | None) -> None:
    """Write an unbound widget's value into the URL (None removes it), so the page's own rewriting, a reload and
    the lesson link keep it. A bound widget drops what it cannot read: a selectbox writes its *label* ("BN
    torch") and dropped a link's short name (impl0=torch); a toggle reads only true/false and dropped present=1."""
    if value is None:
        if key in st.query_params:
            del st.query_params[key]
    elif st.query_params.get(key) != value:
        st.query_params[key] = value


def settings_from_widgets():
    """The Settings the sidebar describes (raises ValueError for a value out of range)."""
    ss = st.session_state
    preset = PRESETS[ss[Key.PRESET]]
    return Settings(
        lr=ss[Key.LR],
        batch_size=int(ss[Key.BATCH_SIZE]),
        epochs=int(ss[Key.EPOCHS]),
        seed=int(ss[Key.SEED]),
        classes_per_batch=int(ss[Key.CLASSES]),
        device=ss[Key.DEVICE],
        train_size=TRAIN_SIZES[ss[Key.TRAIN_SIZE]],
        probe_every=preset["probe_every"],
        val_every=preset["val_every"],
        val_size=preset["val_size"],
    )


def flash(kind, text):
    """A message shown once at the top of the next drawing of the page: kind is info, warning or error.

    Messages wait in order; the same message twice is shown once."""
    waiting = st.session_state.setdefault(Key.FLASH, [])
    if (kind, text) not in waiting:
        waiting.append((kind, text))


def show_flash():
    for kind, text in st.session_state.pop(Key.FLASH, []):
        getattr(st, kind)(text)
