"""Every ``BNVIZ_*`` environment variable, read here and nowhere else (the README lists them too).

Each is read when asked for, not at import, so a test or a child process can change it. A value that
cannot be used falls back to the default and says so once on stderr.
"""

import os
import sys
from pathlib import Path

VARIABLES = {
    "BNVIZ_DATA": "folder holding the four Fashion-MNIST files (searched first)",
    "BNVIZ_DATA_UNCHECKED": "1: accept Fashion-MNIST-shaped data whose SHA-256 is not Zalando's (tests)",
    "BNVIZ_THREADS": "torch intra-op threads per experiment (default: chosen for the machine)",
    "BNVIZ_ENGINE": "'process' (default: each experiment in a child process) or 'thread' (inside the server)",
    "BNVIZ_START_METHOD": "'forkserver' (default on Linux) or 'spawn' (default elsewhere) for those processes",
    "BNVIZ_MAX_TRAINING": "experiments and studies that may train at once per server (default 2)",
    "BNVIZ_GRACE_S": "seconds an experiment whose tab is closed keeps living (default 120)",
    "BNVIZ_CUDA_GRAPHS": "0: on a GPU, train every step eagerly instead of replaying a captured CUDA graph",
    "BNVIZ_RACE_STEPS": "steps per learning rate in the learning-rate race (default 200)",
    "BNVIZ_DEVICES_STEPS": "steps per run in the BN-across-devices study (default 300)",
    "BNVIZ_LANDSCAPE_EVERY": "steps between loss-landscape measurements once the study switches them on (default 25)",
    "BNVIZ_CHILD_NICE": "how much lower the training processes' CPU priority is than the page's (0-19, default 10)",
    "BNVIZ_SCREENSHOTS": "folder where the browser tests save screenshots (default: a temporary folder)",
    "BNVIZ_TEACHER_KEY": "the teacher's control key, set by `bnviz class` (at least 22 URL-safe characters)",
    "BNVIZ_FORKSERVER_TIED": "set by bnviz, not by hand: a command-line run's pid while it starts its forkserver",
    "BNVIZ_REQUIRE_ALL": "1 in CI: a test whose input (the dataset, chromium) is missing fails instead of skipping",
}
_warned: set[str] = set()


def _warn(name, value, default):
    if name not in _warned:
        _warned.add(name)
        print(f"bnviz: ignoring {name}={value!r} ({VARIABLES[name]}); using {default!r}", file=sys.stderr)


def _read(name, parse, default, valid=lambda v: True):
    raw = os.environ.get(name, "").strip()
    if not raw:
        return default
    try:
        value = parse(raw)
    except ValueError:
        value = None
    if value is None or not valid(value):
        _warn(name, raw, default)
        return default
    return value


def data_dir():
    raw = os.environ.get("BNVIZ_DATA", "").strip()
    return Path(raw) if raw else None


def data_unchecked():
    return os.environ.get("BNVIZ_DATA_UNCHECKED", "").strip().lower() in ("1", "true", "yes")


def cuda_graphs():
    """Whether a lane on a GPU replays its training step as a CUDA graph (the default) or runs it eagerly."""
    return os.environ.get("BNVIZ_CUDA_GRAPHS", "").strip().lower() not in ("0", "false", "no", "off")


def threads():
    """The thread count asked for, or None to let bnviz choose."""
    return _read("BNVIZ_THREADS", int, None, lambda v: v > 0)


def set_threads_variable(n):
    """Hand a thread budget to code that reads BNVIZ_THREADS (a child process's own environment)."""
    os.environ["BNVIZ_THREADS"] = str(int(n))


def engine():
    return _read("BNVIZ_ENGINE", str.lower, "process", lambda v: v in ("process", "thread"))


def start_method():
    """'forkserver' or 'spawn' when asked for, else None."""
    return _read("BNVIZ_START_METHOD", str.lower, None, lambda v: v in ("forkserver", "spawn"))


def max_training():
    return _read("BNVIZ_MAX_TRAINING", int, 2, lambda v: v >= 0)  # 0: nothing may train (a read-only server)


def grace_s():
    return _read("BNVIZ_GRACE_S", float, 120.0, lambda v: v > 0)


def race_steps():
    return _read("BNVIZ_RACE_STEPS", int, 200, lambda v: v >= 10)


def devices_steps():
    return _read("BNVIZ_DEVICES_STEPS", int, 300, lambda v: v >= 1)


def landscape_every():
    return _read("BNVIZ_LANDSCAPE_EVERY", int, 25, lambda v: v >= 1)


def child_nice():
    """How far a training child lowers its CPU priority (``os.nice``): the page and its browser come first."""
    return _read("BNVIZ_CHILD_NICE", int, 10, lambda v: 0 <= v <= 19)


MIN_TEACHER_KEY = 22  # secrets.token_urlsafe(16): 128 bits


def teacher_key():
    """The key a page must show to command trainings on a server shared with a class (None: not set)."""
    return _read("BNVIZ_TEACHER_KEY", str, None, lambda v: len(v) >= MIN_TEACHER_KEY and v.isascii())


def set_forkserver_tied(on):
    """Mark (or unmark) the forkserver about to start as tied to this process: it ends when this process does."""
    if on:
        os.environ["BNVIZ_FORKSERVER_TIED"] = str(os.getpid())
    else:
        os.environ.pop("BNVIZ_FORKSERVER_TIED", None)


def take_forkserver_tied():
    """In a forkserver: the pid of the starter that tied it to itself, or None; the mark is removed, so no
    child inherits it."""
    raw = os.environ.pop("BNVIZ_FORKSERVER_TIED", "").strip()
    return int(raw) if raw.isdigit() else None


def require_all():
    return os.environ.get("BNVIZ_REQUIRE_ALL", "").strip().lower() in ("1", "true", "yes")


def screenshots_dir():
    raw = os.environ.get("BNVIZ_SCREENSHOTS", "").strip()
    return Path(raw) if raw else None
