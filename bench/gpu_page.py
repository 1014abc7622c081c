"""The dashboard on a GPU (issue 13): does the child process train at the GPU's rate with the page open, and
does the page still refresh at 1 Hz with every view?

    python bench/gpu_page.py [--seconds 10] [--json PATH]

The lent GPU machines have no browser, so Streamlit's AppTest runs ``dashboard.py`` in this process, as the
server would, against a real child process (device "auto": CUDA where there is one). Measured in one run:
1. headless: an ``ExperimentProcess`` with the chapter's settings trains for ``--seconds``: its steps/s;
2. the page, with the "Chapter defaults" preset: Start, then each view in turn for ``--seconds``,
   refreshed as a browser does (a rerun of the script, then a wait to the next whole second): each rerun's
   seconds (1 Hz holds while the slowest is under 1 s), the refreshes per second, and the child's steps/s
   meanwhile against headless.
The data is random, shaped like Fashion-MNIST (the speed does not depend on the pixels): nothing has to travel.
"""

import argparse
import json
import os
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import bnviz.data.fashion_mnist  # noqa: E402
import bnviz.live.registry  # noqa: E402
from bnviz.live.experiment_process import ExperimentProcess  # noqa: E402
from bnviz.live.processes import warm_up  # noqa: E402
from bnviz.live.snapshot import Settings  # noqa: E402


def steps_now(exp):
    return min(lane.step for lane in exp.snapshot().lanes)


def headless(data, seconds):
    exp = ExperimentProcess(data, Settings(epochs=100, device="auto"), name="headless")
    try:
        exp.start()
        time.sleep(2.0)  # past the first steps' set-up (and the CUDA graphs' capture)
        s0, t0 = steps_now(exp), time.monotonic()
        time.sleep(seconds)
        s1, t1 = steps_now(exp), time.monotonic()
        return dict(steps_per_s=(s1 - s0) / (t1 - t0), device=exp.snapshot().device)
    finally:
        exp.stop()


def page_views(data, seconds):
    from streamlit.testing.v1 import AppTest

    from ui.views import VIEWS

    registries = []
    init = bnviz.live.registry.Registry.__init__

    def tracking(self, *args, **kwargs):
        init(self, *args, **kwargs)
        registries.append(self)

    bnviz.live.registry.Registry.__init__ = tracking
    bnviz.data.fashion_mnist.load_fashion_mnist = lambda *a, **k: data  # the page loads the data through this
    at = AppTest.from_file(str(ROOT / "dashboard.py"), default_timeout=60)
    at.query_params["preset"] = "chapter"
    at.query_params["epochs"] = "100"
    at.run()
    assert not at.exception, [e.value for e in at.exception]
    exp = registries[0].get(at.query_params["run"])
    next(b for b in at.button if b.label == "Start").click()
    at.run()
    time.sleep(2.0)
    rows = []
    try:
        for view in VIEWS:
            at.segmented_control(key="view").set_value(view)
            at.run()
            s0, t0, runs = steps_now(exp), time.monotonic(), []
            while time.monotonic() - t0 < seconds:
                start = time.monotonic()
                at.run()
                runs.append(time.monotonic() - start)
                time.sleep(max(0.0, 1.0 - (time.monotonic() - start)))  # a browser refreshes once a second
            s1, t1 = steps_now(exp), time.monotonic()
            errors = [e.value for e in at.exception] + [e.value for e in at.error]
            rows.append(
                dict(
                    view=view,
                    refreshes_per_s=len(runs) / (t1 - t0),
                    rerun_s_median=sorted(runs)[len(runs) // 2],
                    rerun_s_max=max(runs),
                    steps_per_s=(s1 - s0) / (t1 - t0),
                    errors=errors,
                )
            )
            r = rows[-1]
            print(
                f"  {view:>12}: {r['refreshes_per_s']:.2f} refreshes/s, rerun {r['rerun_s_median']:.3f} s median, "
                f"{r['rerun_s_max']:.3f} s slowest; training {r['steps_per_s']:.1f} steps/s"
                + (f"; errors: {errors}" if errors else ""),
                flush=True,
            )
        return dict(device=exp.snapshot().device, views=rows)
    finally:
        for registry in registries:
            registry.close()


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--seconds", type=float, default=10.0, help="seconds of each measurement (headless, each view)")
    p.add_argument("--json", default=None)
    args = p.parse_args(argv)
    os.environ.setdefault("BNVIZ_MAX_TRAINING", "2")
    warm_up()
    data = bnviz.data.fashion_mnist.random_dataset(
        60_000, 10_000
    )  # Fashion-MNIST's shapes; the pixels do not matter here
    base = headless(data, args.seconds)
    print(f"headless on {base['device']}: {base['steps_per_s']:.1f} steps/s (both lanes)", flush=True)
    page = page_views(data, args.seconds)
    worst = min(r["steps_per_s"] for r in page["views"]) / base["steps_per_s"]
    slowest = max(r["rerun_s_max"] for r in page["views"])
    print(
        f"with the page open: training at {worst:.0%} of headless in the slowest view; the slowest rerun "
        f"{slowest:.3f} s (1 Hz {'holds' if slowest < 1.0 else 'does not hold'} in every view)"
    )
    if args.json:
        Path(args.json).write_text(json.dumps(dict(headless=base, page=page), indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
