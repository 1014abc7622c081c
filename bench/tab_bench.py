"""How long a fresh tab takes to load on a warm server, idle and under load.

    python bench/tab_bench.py [--samples 5] [--load-samples 5] [--no-load] [--json PATH]

A real server and a real browser (Debian's chromium). The server is warmed by one tab first (the dataset,
the registry, the forkserver, Streamlit's script cache). Then, for each sample, a fresh browser context (an
empty cache: a student opening the link) and a fresh tab in the warm context (a cached bundle: the teacher's
second tab) open the page; the times from ``page.goto`` to
- ``dom``: the HTML and Streamlit's JavaScript bundle loaded and run (DOMContentLoaded),
- ``connected``: the websocket up,
- ``start``: the Start button visible,
- ``chart``: the first Plotly chart drawn (the Training view's loss chart),
- ``idle``: the script run over (Streamlit's "notRunning").
Idle first, then under load: 3 experiments training (the "Chapter defaults" preset for 100 epochs, each in
its own tab that stays open and refreshes) and 2 studies (the learning-rate race with 2,000 steps per learning
rate, each from its own tab), with BNVIZ_MAX_TRAINING=5 so that all five run.
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
STAGES = ("dom", "connected", "start", "chart", "idle")


def new_context(browser):
    return browser.new_context(viewport={"width": 1400, "height": 900})


def open_page(context, url):
    """Times (s) from goto to each stage; the page, still open."""
    page = context.new_page()
    t0 = time.monotonic()
    times = {}
    page.goto(url, wait_until="domcontentloaded", timeout=180_000)
    times["dom"] = time.monotonic() - t0
    page.wait_for_selector("[data-testid='stApp'][data-test-connection-state='CONNECTED']", timeout=180_000)
    times["connected"] = time.monotonic() - t0
    page.get_by_role("button", name=START).wait_for(timeout=180_000)
    times["start"] = time.monotonic() - t0
    page.locator(".js-plotly-plot .main-svg").first.wait_for(timeout=180_000)
    times["chart"] = time.monotonic() - t0
    page.wait_for_selector("[data-test-script-state='notRunning']", timeout=180_000)
    times["idle"] = time.monotonic() - t0
    return page, times


def resources(page):
    """What the browser fetched for the page: (count, kB transferred, the slowest few with their ms)."""
    entries = page.evaluate("""() => performance.getEntriesByType('resource').map(e => ({
        name: e.name.split('/').pop().slice(0, 60), kb: Math.round(e.transferSize / 1024),
        decoded_kb: Math.round(e.decodedBodySize / 1024), ms: Math.round(e.duration)}))""")
    slow = sorted(entries, key=lambda e: -e["ms"])[:5]
    return len(entries), sum(e["kb"] for e in entries), sum(e["decoded_kb"] for e in entries), slow


def measure(browser, warm_context, url, n, label):
    rows = []
    for i in range(n):
        for kind in ("new context", "warm context"):
            context = new_context(browser) if kind == "new context" else warm_context
            server_cpu0 = sum(cpu_s(p) for p in SERVER_PIDS)
            page, times = open_page(context, url)
            times["server_cpu_s"] = sum(cpu_s(p) for p in SERVER_PIDS) - server_cpu0
            count, kb, decoded_kb, slow = resources(page)
            times.update(kind=kind, resources=count, transferred_kb=kb, decoded_kb=decoded_kb, slowest=slow)
            rows.append(times)
            print(
                f"  {label} {i + 1} ({kind}): "
                + ", ".join(f"{s} {times[s]:.2f} s" for s in STAGES)
                + f"; server CPU {times['server_cpu_s']:.2f} s; {count} resources, {kb:,} kB transferred",
                flush=True,
            )
            page.close()
            if kind == "new context":
                context.close()
            time.sleep(2)
    return rows


def summary(rows, label):
    out = {}
    for kind in ("new context", "warm context"):
        mine = [r for r in rows if r["kind"] == kind]
        if not mine:
            continue
        out[kind] = {
            s: (min(r[s] for r in mine), statistics.median(r[s] for r in mine), max(r[s] for r in mine)) for s in STAGES
        }
        print(
            f"{label}, {kind} ({len(mine)} tabs): "
            + "; ".join(f"{s} {a:.2f}/{m:.2f}/{b:.2f}" for s, (a, m, b) in out[kind].items())
            + " s (min/median/max)",
            flush=True,
        )
    return out


def load(browser, url, steps_timeout=180):
    """3 tabs training, 2 tabs racing; returns their pages (kept open: they refresh as a class's would)."""
    pages = []
    context = new_context(browser)
    for _ in range(3):
        page, _ = open_page(context, f"{url}/?preset=chapter&epochs=100")
        page.get_by_role("button", name=START).click()
        pages.append(page)
    for _ in range(2):
        page, _ = open_page(context, url)
        page.get_by_role("radiogroup", name="View").get_by_role("radio", name="Experiments", exact=True).click()
        group = page.get_by_role("radiogroup", name="Study")
        group.locator("label", has=page.get_by_role("radio", name="Learning-rate race", exact=True)).click()
        page.get_by_role("button", name=re.compile(r"^Run the race")).click(timeout=120_000)
        page.get_by_text(re.compile(r"running…")).first.wait_for(timeout=120_000)
        pages.append(page)
    time.sleep(15)  # let them all get going
    return context, pages


SERVER_PIDS = []


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--samples", type=int, default=5, help="fresh tabs of each kind, idle")
    p.add_argument("--load-samples", type=int, default=5, help="fresh tabs of each kind, under load")
    p.add_argument("--no-load", action="store_true")
    p.add_argument("--json", default=None)
    args = p.parse_args(argv)
    from playwright.sync_api import sync_playwright

    os.environ["BNVIZ_MAX_TRAINING"] = "5"
    os.environ["BNVIZ_RACE_STEPS"] = "2000"
    server, url = start_server()
    SERVER_PIDS.append(server.pid)
    result = {
        "machine": f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores",
        "uname": " ".join(platform.uname()),
        "date": time.strftime("%Y-%m-%d %H:%M"),
        "loadavg_start": os.getloadavg(),
    }
    try:
        with sync_playwright() as pw:
            browser = pw.chromium.launch(executable_path="/usr/bin/chromium", args=CHROMIUM_ARGS)
            warm_context = new_context(browser)
            page, times = open_page(warm_context, url)  # warms the server
            print("first tab of the server: " + ", ".join(f"{s} {times[s]:.2f} s" for s in STAGES), flush=True)
            page.close()
            time.sleep(3)
            result["idle"] = measure(browser, warm_context, url, args.samples, "idle")
            result["idle_summary"] = summary(result["idle"], "idle")
            if not args.no_load:
                context, pages = load(browser, url)
                print(f"load on: {len(pages)} tabs, load average {os.getloadavg()[0]:.1f}", flush=True)
                result["loadavg_under_load"] = os.getloadavg()
                result["load"] = measure(browser, warm_context, url, args.load_samples, "under load")
                result["load_summary"] = summary(result["load"], "under load")
                result["loadavg_end"] = os.getloadavg()
                result["processes_under_server"] = len(descendants(server.pid))
                context.close()
            browser.close()
    finally:
        server.terminate()
        server.wait(10)
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=2))
    return result


if __name__ == "__main__":
    main()
