"""What one stopped training process (``kill -STOP``) costs every other tab of the server (issue 11, part 2).

    python bench/hung_child_bench.py [--cap 90]

Headless tabs (Streamlit's AppTest; one server process, one registry, as in a real server), on random images:
tab A starts a run and its child process is stopped with SIGSTOP; A's own 1 Hz refresh then runs in the
background. Measured, each in its own thread with a deadline of ``--cap`` seconds:
- a new tab (no run in its URL): how long its first drawing takes, and its Start;
- tab A reloaded (``?run=<A>``): how long its drawing takes, and what it says;
- tab B, another experiment running healthily: the longest gap between two of its snapshots, over 10 s;
- Reset on tab A: how long it takes, and whether A trains again afterwards.
"""

import argparse
import os
import signal
import sys
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import streamlit as st  # noqa: E402
import torch  # noqa: E402
from streamlit.testing.v1 import AppTest  # noqa: E402

import bnviz.data.fashion_mnist  # noqa: E402

DASHBOARD = ROOT / "dashboard.py"


def synthetic():
    g = torch.Generator().manual_seed(0)
    return bnviz.data.fashion_mnist.FashionMNISTData(
        torch.randint(0, 256, (12_800, 28, 28), dtype=torch.uint8, generator=g),
        torch.arange(12_800) % 10,
        torch.randint(0, 256, (1_000, 28, 28), dtype=torch.uint8, generator=g),
        torch.arange(1_000) % 10,
        "synthetic",
    )


def tab(run=None):
    at = AppTest.from_file(str(DASHBOARD), default_timeout=600)
    if run:
        at.query_params["run"] = run
    return at


def timed(fn, cap):
    """(seconds, result) of fn() in a thread; (None, None) if it did not return within cap seconds."""
    out = {}

    def go():
        t = time.monotonic()
        out["r"] = fn()
        out["s"] = time.monotonic() - t

    th = threading.Thread(target=go, daemon=True)
    th.start()
    th.join(cap)
    return out.get("s"), out.get("r")


def secs(s, cap):
    return f"> {cap:.0f}" if s is None else f"{s:.2f}"


def click(at, label):
    [b] = [b for b in at.button if b.label == label]
    b.click()
    return at.run()


def enabled(at, label):
    return [not b.disabled for b in at.button if b.label == label]


def messages(at):
    return [e.value for e in (*at.error, *at.warning)]


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--cap", type=float, default=90)
    args = p.parse_args(argv)
    data = synthetic()
    bnviz.data.fashion_mnist.load_fashion_mnist = lambda *a, **k: data
    os.environ.setdefault("BNVIZ_MAX_TRAINING", "4")
    st.cache_resource.clear()

    a = tab().run()
    key_a = a.query_params["run"]
    click(a, "Start")
    b = tab().run()
    key_b = b.query_params["run"]
    click(b, "Start")
    from ui.server import server

    registry = server()
    exp_a, exp_b = registry.get(key_a), registry.get(key_b)
    time.sleep(2)
    pid = exp_a._proc.pid
    os.kill(pid, signal.SIGSTOP)
    print(f"tab A's child {pid} stopped; B runs (status {exp_b.status})")
    stop = threading.Event()

    def a_refreshes():  # tab A's own page, refreshing as its fragment would
        while not stop.is_set():
            tab(key_a).run()
            time.sleep(1)

    threading.Thread(target=a_refreshes, daemon=True).start()
    time.sleep(0.5)
    try:
        s, at = timed(lambda: tab().run(), args.cap)
        print(f"new tab: {secs(s, args.cap)} s")
        c = tab().run()
        s, at = timed(lambda: click(c, "Start"), args.cap)
        print(f"new tab presses Start: {secs(s, args.cap)} s", messages(at) if at else "")
        s, at = timed(lambda: tab(key_a).run(), args.cap)
        print(f"tab A reloaded: {secs(s, args.cap)} s", messages(at) if at else "")
        gaps, last, end = [], time.monotonic(), time.monotonic() + 10
        while time.monotonic() < end:
            s, snap = timed(exp_b.snapshot, args.cap)
            if s is None:
                gaps.append(args.cap)
                break
            now = time.monotonic()
            gaps.append(now - last)
            last = now
            time.sleep(0.2)
        print(f"tab B's snapshots over 10 s: longest gap {max(gaps):.2f} s, {len(gaps)} snapshots")
        s, at = timed(lambda: tab(key_b).run(), args.cap)
        print(f"tab B redrawn: {secs(s, args.cap)} s")
        s, a_page = timed(lambda: tab(key_a).run(), args.cap)
        print(f"tab A drawn again: {secs(s, args.cap)} s; Start enabled: {enabled(a_page, 'Start')}")
        reset = [x for x in a_page.button if x.label == "Reset"][0]
        reset.click()
        s, at = timed(lambda: a_page.run(), args.cap)
        print(f"Reset on A: {secs(s, args.cap)} s", messages(at) if at else "")
        fresh = registry.get(key_a)
        print(f"A after Reset: child {fresh._proc.pid}, alive {fresh.alive}, status {fresh.status}")
    finally:
        stop.set()
        try:
            os.kill(pid, signal.SIGCONT)
        except ProcessLookupError:
            pass
        os._exit(0)  # what is left waiting on the stopped child is not this script's to wait for


if __name__ == "__main__":
    main()
