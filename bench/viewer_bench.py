"""What a class watching along costs the teacher's server: 1, 10 and 30 viewer pages (``?watch=<id>``).

    python bench/viewer_bench.py [--viewers 1 10 30] [--seconds 20] [--json PATH]

A real server and Debian's chromium. The teacher's page starts a long run (chapter preset, 100 epochs); then,
for each count, that many viewer tabs open on the run, and over ``--seconds`` we sample
- the server process's own CPU (not the browsers', not the training process's): cores = CPU seconds / wall;
- the training speed (steps/s, read from the run's status text), against the same run headless, measured in
  this process before the server starts;
- how long the last viewer tab took to show the loss chart with points;
- the browsers' CPU, to say how much of any slowdown is theirs (in a class they run on the students' laptops).
Each viewer beyond the first should cost the server at most 0.01 of a core (issue 10).
"""

import argparse
import json
import os
import platform
import re
import time
from pathlib import Path

from dashboard_bench import CHROMIUM_ARGS, chromium_cpu_s, cpu_s, headless_rate, page_step, start_server

ROOT = Path(__file__).resolve().parents[1]
START = re.compile(r"^Start( Shortcut \S+)?$")


def loaded(page):
    """Whether the page shows the loss chart with its points: Plotly's (a teacher's page) or the SVG one (a
    viewer's page, bnviz/pictures/svg_chart.py)."""
    return page.evaluate("""() => [...document.querySelectorAll('.js-plotly-plot')].some(el =>
        (el.layout.title.text || '').startsWith('Training loss')
        && (el._fullData || []).some(t => t.x && t.x.length))
        || !!document.querySelector('svg[data-chart^="Training loss"] :is(polyline, path.line)')""")


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--viewers", type=int, nargs="+", default=[1, 10, 30])
    p.add_argument("--seconds", type=float, default=20)
    p.add_argument("--baseline-seconds", type=float, default=20)
    p.add_argument("--json", default=None)
    args = p.parse_args(argv)
    from playwright.sync_api import sync_playwright

    baseline = headless_rate(args.baseline_seconds)
    print(f"headless: {baseline:.1f} steps/s", flush=True)
    server, url = start_server()
    result = {"machine": f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores",
              "headless_steps_per_s": baseline, "runs": []}  # fmt: skip
    try:
        with sync_playwright() as pw:
            browser = pw.chromium.launch(executable_path="/usr/bin/chromium", args=CHROMIUM_ARGS)
            teacher = browser.new_page(viewport={"width": 1280, "height": 800})
            teacher.goto(f"{url}/?preset=chapter&epochs=100")
            teacher.wait_for_selector("[data-test-script-state='notRunning']", timeout=60_000)
            teacher.get_by_role("button", name=START).click()
            key = re.search(r"[?&]run=([^&]+)", teacher.url).group(1)
            teacher.wait_for_timeout(5000)
            viewers = []
            for n in args.viewers:
                t_open = None
                while len(viewers) < n:
                    page = browser.new_page(viewport={"width": 1280, "height": 800})
                    t_open = time.monotonic()
                    page.goto(f"{url}/?watch={key}", wait_until="commit", timeout=180_000)
                    viewers.append(page)
                while not all(loaded(v) for v in viewers[-1:]):
                    viewers[-1].wait_for_timeout(100)
                load_s = time.monotonic() - t_open if t_open else None
                viewers[-1].wait_for_timeout(3000)  # settle
                s0, c0, b0, t0 = page_step(teacher), cpu_s(server.pid), chromium_cpu_s(), time.monotonic()
                teacher.wait_for_timeout(args.seconds * 1000)
                s1, c1, b1, t1 = page_step(teacher), cpu_s(server.pid), chromium_cpu_s(), time.monotonic()
                run = {
                    "viewers": n,
                    "server_cores": (c1 - c0) / (t1 - t0),
                    "browser_cores": (b1 - b0) / (t1 - t0),
                    "steps_per_s": (s1 - s0) / (t1 - t0),
                    "of_headless": (s1 - s0) / (t1 - t0) / baseline,
                    "last_viewer_load_s": load_s,
                }
                result["runs"].append(run)
                print(json.dumps(run), flush=True)
            browser.close()
    finally:
        server.terminate()
        server.wait(10)
    runs = result["runs"]
    if len(runs) > 1:
        first = runs[0]
        for r in runs[1:]:
            r["server_cores_per_extra_viewer"] = (r["server_cores"] - first["server_cores"]) / (
                r["viewers"] - first["viewers"]
            )
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=2))
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
