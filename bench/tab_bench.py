"""How long a fresh tab takes to load on a warm server, idle and under load.

    python bench/tab_bench.py [--samples 5] [--load-samples 5] [--no-load] [--baseline DIR] [--json PATH]

A real server and a real browser (Debian's chromium). The server is warmed by one tab first (the dataset,
the registry, the forkserver, Streamlit's script cache). Then, for each sample, a fresh browser context (an
empty cache: a student opening the link) and a fresh tab in the warm context (a cached bundle: the teacher's
second tab) open the page. The page itself records, at the first animation frame where each is on screen
(times from the navigation's start, as the browser counts them):
- ``dom``: the HTML and Streamlit's JavaScript bundle loaded and run (DOMContentLoaded),
- ``usable``: the page can be used: its title, the Start button and the Training view's content (the loss
  chart, or the placeholder drawn where it will be) all on screen,
- ``idle``: the script run over (Streamlit's "notRunning"),
- ``plotly``: the first Plotly chart drawn, shown or not (Plotly's bundle loaded and run),
- ``chart``: the first Plotly chart shown, empty or not (a page that draws its charts only once they have
  points shows it after Start),
- then Start is pressed (at once, or ``--think`` seconds after ``idle``, as a person would): ``points``, the
  loss chart with a point of every lane, and ``start_to_points``, from the click to that (the "first points
  within 3 s of Start" target); the tab then pauses and closes.
With ``--baseline DIR`` (another checkout, e.g. ``git archive <commit> | tar -x -C DIR``, with its ``data``;
repeatable), a server runs from each and every sample opens a tab on each, each server first in turn, so they
are compared under the same load.
Idle first, then under load: 3 experiments training (the "Chapter defaults" preset for 100 epochs, each in
its own tab that stays open and refreshes) and 2 studies (the learning-rate race with 2,000 steps per learning
rate, each from its own tab), with BNVIZ_MAX_TRAINING=6 so that all five run and the measured tab can start.
"""

import argparse
import json
import os
import platform
import re
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "bench"))

from dashboard_bench import CHROMIUM_ARGS, cpu_s, descendants, start_server  # noqa: E402

START = re.compile(r"^Start( Shortcut \S+)?$")
PAUSE = re.compile(r"^Pause( Shortcut \S+)?$")
STAGES = ("dom", "usable", "idle", "plotly", "chart", "points", "start_to_points")

# Runs in the page before Streamlit's own scripts: each animation frame, note when each stage first shows.
MARKS_JS = """(() => {
  const marks = window.__marks = {};
  const mark = name => { if (!(name in marks)) marks[name] = performance.now() / 1000; };
  const lossPoints = () => [...document.querySelectorAll('.js-plotly-plot')].some(el =>
      ((el.layout && el.layout.title && el.layout.title.text) || '').startsWith('Training loss')
      && (el._fullData || []).length >= 2 && (el._fullData || []).every(t => t.x && t.x.length > 0));
  const frame = () => {
    const h1 = document.querySelector('h1');
    if (h1 && h1.textContent.startsWith('bnviz')) mark('title');
    if ([...document.querySelectorAll('button')].some(b => b.innerText.split('\\n').includes('Start'))) mark('start');
    const drawn = [...document.querySelectorAll('.js-plotly-plot')].filter(el => el.querySelector('.main-svg'));
    if (drawn.length) mark('plotly');  // Plotly loaded and drawing (a hidden warm-up chart counts here only)
    if (drawn.some(el => !el.closest('.st-key-plotly-warm-up'))) mark('chart');
    if (drawn.some(el => ((el.layout && el.layout.title && el.layout.title.text) || '').startsWith('Training loss'))
        || document.querySelector('.st-key-placeholder-loss')) mark('content');
    if ('title' in marks && 'start' in marks && 'content' in marks) mark('usable');
    if ('usable' in marks && document.querySelector("[data-test-script-state='notRunning']")) mark('idle');
    if (lossPoints()) { mark('points'); return; }
    requestAnimationFrame(frame);
  };
  requestAnimationFrame(frame);
})();"""


def new_context(browser):
    context = browser.new_context(viewport={"width": 1400, "height": 900})
    context.add_init_script(MARKS_JS)
    return context


def marks(page):
    return page.evaluate("() => window.__marks")


def wait_mark(page, name, timeout=180):
    deadline = time.monotonic() + timeout
    while name not in marks(page):
        if time.monotonic() > deadline:
            raise TimeoutError(f"no {name!r} within {timeout} s: {marks(page)}")
        page.wait_for_timeout(50)
    return marks(page)[name]


THINK_S = [0.0]  # how long the user looks at the page before pressing Start (--think)


def open_page(context, url, press_start=True):
    """Times (s, from the navigation's start) of each stage; the page, still open."""
    page = context.new_page()
    page.goto(url, wait_until="domcontentloaded", timeout=180_000)
    dom = page.evaluate("() => performance.getEntriesByType('navigation')[0].domContentLoadedEventEnd")
    times = {"dom": dom / 1000}
    for stage in ("usable", "idle"):
        times[stage] = wait_mark(page, stage)
    page.wait_for_selector("[data-test-script-state='notRunning']", timeout=180_000)
    if not press_start:
        return page, times
    button = page.get_by_role("button", name=START)
    page.wait_for_timeout(THINK_S[0] * 1000)
    clicked = page.evaluate("() => performance.now() / 1000")
    button.click()
    times["points"] = wait_mark(page, "points")
    times["start_to_points"] = times["points"] - clicked
    times["chart"], times["plotly"] = marks(page)["chart"], marks(page)["plotly"]
    page.get_by_role("button", name=PAUSE).click()  # the measured tab's training stops: the load is the load's
    page.get_by_role("button", name=START).wait_for(timeout=60_000)
    return page, times


def resources(page):
    """What the browser fetched for the page: (count, kB transferred, the slowest few with their ms)."""
    entries = page.evaluate("""() => performance.getEntriesByType('resource').map(e => ({
        name: e.name.split('/').pop().slice(0, 60), kb: Math.round(e.transferSize / 1024),
        decoded_kb: Math.round(e.decodedBodySize / 1024), ms: Math.round(e.duration)}))""")
    slow = sorted(entries, key=lambda e: -e["ms"])[:5]
    return len(entries), sum(e["kb"] for e in entries), sum(e["decoded_kb"] for e in entries), slow


def measure(browser, servers, n, label):
    """n samples; in each, a tab of each kind on each server (the servers' order alternates)."""
    rows = []
    for i in range(n):
        for server in servers[i % len(servers) :] + servers[: i % len(servers)]:  # each first in turn
            for kind in ("new context", "warm context"):
                context = new_context(browser) if kind == "new context" else server["warm_context"]
                server_cpu0 = cpu_s(server["pid"])
                page, times = open_page(context, server["url"])
                times["server_cpu_s"] = cpu_s(server["pid"]) - server_cpu0
                count, kb, decoded_kb, slow = resources(page)
                times.update(
                    server=server["name"],
                    kind=kind,
                    loadavg=os.getloadavg()[0],
                    resources=count,
                    transferred_kb=kb,
                    decoded_kb=decoded_kb,
                    slowest=slow,
                )
                rows.append(times)
                print(
                    f"  {label} {i + 1} {server['name']} ({kind}): "
                    + ", ".join(f"{s} {times[s]:.2f} s" for s in STAGES)
                    + f"; server CPU {times['server_cpu_s']:.2f} s; {count} resources, {kb:,} kB; "
                    f"load {times['loadavg']:.1f}",
                    flush=True,
                )
                page.close()
                if kind == "new context":
                    context.close()
                time.sleep(2)
    return rows


def summary(rows, label):
    out = {}
    for name in dict.fromkeys(r["server"] for r in rows):
        for kind in ("new context", "warm context"):
            mine = [r for r in rows if r["kind"] == kind and r["server"] == name]
            if not mine:
                continue
            out[f"{name}, {kind}"] = {
                s: (min(r[s] for r in mine), statistics.median(r[s] for r in mine), max(r[s] for r in mine))
                for s in STAGES
            }
            print(
                f"{label}, {name}, {kind} ({len(mine)} tabs): "
                + "; ".join(f"{s} {a:.2f}/{m:.2f}/{b:.2f}" for s, (a, m, b) in out[f"{name}, {kind}"].items())
                + " s (min/median/max)",
                flush=True,
            )
    return out


def load(browser, url):
    """3 tabs training, 2 tabs racing; returns their pages (kept open: they refresh as a class's would)."""
    pages = []
    context = new_context(browser)
    for _ in range(3):
        page, _ = open_page(context, f"{url}/?preset=chapter&epochs=100", press_start=False)
        page.get_by_role("button", name=START).click()
        pages.append(page)
    for _ in range(2):
        page, _ = open_page(context, url, press_start=False)
        page.get_by_role("radiogroup", name="View").get_by_role("radio", name="Experiments", exact=True).click()
        group = page.get_by_role("radiogroup", name="Study")
        group.locator("label", has=page.get_by_role("radio", name="Learning-rate race", exact=True)).click()
        page.get_by_role("button", name=re.compile(r"^Run the race")).click(timeout=120_000)
        page.get_by_text(re.compile(r"running…")).first.wait_for(timeout=120_000)
        pages.append(page)
    time.sleep(15)  # let them all get going
    return context, pages


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--samples", type=int, default=5, help="fresh tabs of each kind, idle")
    p.add_argument("--load-samples", type=int, default=5, help="fresh tabs of each kind, under load")
    p.add_argument("--no-load", action="store_true")
    p.add_argument(
        "--baseline", action="append", default=[], help="another checkout to compare, sample by sample (repeatable)"
    )
    p.add_argument("--think", type=float, default=0.0, help="seconds between the page's idle and pressing Start")
    p.add_argument("--json", default=None)
    args = p.parse_args(argv)
    THINK_S[0] = args.think
    from playwright.sync_api import sync_playwright

    os.environ["BNVIZ_MAX_TRAINING"] = "6"
    os.environ["BNVIZ_RACE_STEPS"] = "2000"
    roots = {"this": ROOT} | {Path(b).resolve().name: Path(b).resolve() for b in args.baseline}
    servers = []
    result = {
        "machine": f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores",
        "uname": " ".join(platform.uname()),
        "date": time.strftime("%Y-%m-%d %H:%M"),
        "roots": {k: str(v) for k, v in roots.items()},
        "loadavg_start": os.getloadavg(),
        "think_s": args.think,
    }
    try:
        for name, root in roots.items():
            process, url = start_server(root)
            servers.append({"name": name, "process": process, "pid": process.pid, "url": url})
        with sync_playwright() as pw:
            browser = pw.chromium.launch(executable_path="/usr/bin/chromium", args=CHROMIUM_ARGS)
            for server in servers:
                server["warm_context"] = new_context(browser)
                page, times = open_page(server["warm_context"], server["url"])  # warms the server
                print(
                    f"first tab of the server ({server['name']}): "
                    + ", ".join(f"{s} {times[s]:.2f} s" for s in STAGES),
                    flush=True,
                )
                page.close()
            time.sleep(3)
            result["idle"] = measure(browser, servers, args.samples, "idle")
            result["idle_summary"] = summary(result["idle"], "idle")
            result["loadavg_after_idle"] = os.getloadavg()
            if not args.no_load:
                context, pages = load(browser, servers[0]["url"])
                print(f"load on: {len(pages)} tabs, load average {os.getloadavg()[0]:.1f}", flush=True)
                result["loadavg_under_load"] = os.getloadavg()
                result["load"] = measure(browser, servers, args.load_samples, "under load")
                result["load_summary"] = summary(result["load"], "under load")
                result["loadavg_end"] = os.getloadavg()
                result["processes_under_server"] = len(descendants(servers[0]["pid"]))
                context.close()
            browser.close()
    finally:
        for server in servers:
            server["process"].terminate()
            server["process"].wait(10)
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=2))
    return result


if __name__ == "__main__":
    main()
