"""The dashboard's targets, measured with a real server and a real browser on this machine.

    python bench/dashboard_bench.py [--seconds 600] [--baseline-seconds 60] [--json PATH]

1. Latency: seconds from clicking Start until both lanes' loss curves have points on screen.
2. Throughput: training steps per second with the page open (Training view refreshing at 1 Hz) against
   the same experiment trained headless in this process (same settings, same thread choice) just before and
   just after, as a ratio to the mean of the two.
3. Refresh: how often the page redrew (counted in the browser: the progress text changes at every refresh).
4. Server memory: the proportional set size of the server and its child processes (training runs in a child
   process), sampled every 10 s over the whole run.
The experiment uses the "Chapter defaults" preset (60,000 images) with 100 epochs, so it trains the whole time.
"""

import argparse
import json
import os
import platform
import re
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]
PAGE_WEIGHT = """() => ({heap_mb: Math.round(performance.memory.usedJSHeapSize / 2 ** 20),
                          nodes: document.getElementsByTagName('*').length})"""
STEP_RE = re.compile(r"step ([\d,]+)/")


def headless_rate(seconds):
    """Steps/s of the dashboard's default pair, trained here as the dashboard trains it (shared CPU)."""
    from bnviz.data.fashion_mnist import load_fashion_mnist
    from bnviz.live.engine import Experiment
    from bnviz.live.snapshot import LaneSpec, Settings

    exp = Experiment(
        load_fashion_mnist(), Settings(probe_every=20, val_every=100), (LaneSpec("none"), LaneSpec("scratch"))
    )
    try:
        exp.start()
        time.sleep(5)  # warm-up
        s0, t0 = exp.snapshot().lanes[0].step, time.monotonic()
        time.sleep(seconds)
        s1, t1 = exp.snapshot().lanes[0].step, time.monotonic()
    finally:
        exp.stop()
    return (s1 - s0) / (t1 - t0)


def descendants(pid):
    """pid and every process below it (the server, its forkserver, the experiments' training processes)."""
    children = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
            children.setdefault(int(fields[1]), []).append(int(stat.parent.name))
        except (OSError, ValueError, IndexError):
            pass
    out, todo = [], [pid]
    while todo:
        p = todo.pop()
        out.append(p)
        todo.extend(children.get(p, []))
    return out


def pss_mb(pid):
    try:
        for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines():
            if line.startswith("Pss:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return 0.0


def memory_mb(pid):
    """Proportional set size of the server and of its child processes (the forkserver, the training
    process): shared pages (torch's libraries, the dataset in shared memory) counted once across them,
    not once per process as RSS would. Returns (total, the server alone)."""
    return sum(pss_mb(p) for p in descendants(pid)), pss_mb(pid)


def cpu_s(pid):
    """CPU seconds used so far by one process."""
    try:
        parts = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(parts[11]) + int(parts[12])) / os.sysconf("SC_CLK_TCK")
    except (OSError, ValueError, IndexError):
        return 0.0


def chromium_cpu_s():
    """CPU seconds used so far by every chromium process."""
    total = 0.0
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)
            if "chrom" not in fields[0]:
                continue
            parts = fields[1].split()
            total += (int(parts[11]) + int(parts[12])) / os.sysconf("SC_CLK_TCK")
        except (OSError, ValueError, IndexError):
            pass
    return total


def start_server(root=ROOT):
    """`streamlit run dashboard.py` from ``root`` (this checkout, or another) on a free port, waited for until
    healthy: (process, url)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    command = [sys.executable, "-m", "streamlit", "run", "dashboard.py", "--server.headless", "true"]
    command += ["--server.port", str(port), "--server.address", "127.0.0.1"]
    server = subprocess.Popen(command, cwd=root, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    url = f"http://127.0.0.1:{port}"
    for _ in range(300):
        try:
            if urllib.request.urlopen(f"{url}/_stcore/health", timeout=2).read() == b"ok":
                break
        except OSError:
            time.sleep(0.2)
    return server, url


def page_step(page):
    text = page.locator("[data-testid='stProgress']").first.inner_text()
    m = STEP_RE.search(text)
    return int(m.group(1).replace(",", "")) if m else None


def points_on_screen(page):
    return page.evaluate("""() => [...document.querySelectorAll('.js-plotly-plot')]
        .filter(el => (el.layout.title.text || '').startsWith('Training loss'))
        .map(el => (el._fullData || []).map(t => t.x ? t.x.length : 0))""")


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--seconds", type=float, default=600)
    p.add_argument("--baseline-seconds", type=float, default=60)
    p.add_argument("--json", default=None)
    args = p.parse_args(argv)
    from playwright.sync_api import sync_playwright

    baseline = headless_rate(args.baseline_seconds)
    print(f"headless: {baseline:.1f} steps/s (both lanes, {baseline * 128 * 2:,.0f} images/s)", flush=True)

    server, url = start_server()
    result = {
        "machine": f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores",
        "headless_steps_per_s": baseline,
    }
    try:
        with sync_playwright() as pw:
            browser = pw.chromium.launch(executable_path="/usr/bin/chromium", args=CHROMIUM_ARGS)
            page = browser.new_page(viewport={"width": 1600, "height": 1000})
            page.goto(f"{url}/?preset=chapter&epochs=100")  # keeps training for the whole run
            page.wait_for_selector("[data-testid='stApp'][data-test-connection-state='CONNECTED']", timeout=60_000)
            page.wait_for_selector("[data-test-script-state='notRunning']", timeout=60_000)
            start = page.get_by_role("button", name=re.compile(r"^Start( Shortcut \S+)?$"))
            start.wait_for()
            t_click = time.monotonic()
            start.click()
            while True:
                counts = points_on_screen(page)
                if counts and len(counts[0]) >= 2 and min(counts[0]) >= 1:
                    break
                page.wait_for_timeout(50)
            result["first_points_s"] = time.monotonic() - t_click
            print(f"first curve points {result['first_points_s']:.2f} s after Start", flush=True)
            page.wait_for_timeout(5000)  # the same warm-up as headless
            # count the page's refreshes in the browser itself: the progress text changes at every refresh
            page.evaluate("""() => { window.__refreshes = 0; window.__last = null;
                setInterval(() => { const el = document.querySelector("[data-testid='stProgress']");
                    const t = el ? el.innerText : null;
                    if (t !== window.__last) { window.__refreshes++; window.__last = t; } }, 100); }""")
            s0, t0 = page_step(page), time.monotonic()
            memory = []
            samples = []  # (seconds, step, server and children MB, chromium CPU s, server alone MB, server CPU s, page)
            while time.monotonic() - t0 < args.seconds:
                total, alone = memory_mb(server.pid)
                memory.append((round(time.monotonic() - t0), total))
                samples.append(
                    (
                        round(time.monotonic() - t0),
                        page_step(page),
                        total,
                        chromium_cpu_s(),
                        alone,
                        cpu_s(server.pid),
                        page.evaluate(PAGE_WEIGHT),
                    )
                )
                print(
                    f"  t={samples[-1][0]:>4} s step {samples[-1][1]} server and children {total:.0f} MB "
                    f"(server {alone:.0f} MB) CPU: chromium {samples[-1][3]:.1f} s, server {samples[-1][5]:.1f} s; "
                    f"page: {samples[-1][6]}",
                    flush=True,
                )
                page.wait_for_timeout(10_000)
            s1, t1 = page_step(page), time.monotonic()
            refreshes = page.evaluate("() => window.__refreshes")
            memory.append((round(t1 - t0), memory_mb(server.pid)[0]))
            errors = page.locator("[data-testid='stException'], [data-testid='stAlertContentError']").count()
            browser.close()
    finally:
        server.terminate()
        server.wait(10)
    after = headless_rate(args.baseline_seconds)  # again, so a drift of this shared machine hits both sides
    print(f"headless again: {after:.1f} steps/s", flush=True)
    result["headless_after_steps_per_s"] = after
    baseline = (baseline + after) / 2
    result["headless_mean_steps_per_s"] = baseline
    rate = (s1 - s0) / (t1 - t0)
    span = samples[-1][0] - samples[0][0] or 1
    result.update(
        server_cpu_cores=(samples[-1][5] - samples[0][5]) / span,
        chromium_cpu_cores=(samples[-1][3] - samples[0][3]) / span,
    )
    result.update(
        samples=samples,
        page_steps_per_s=rate,
        refreshes_per_s=refreshes / (t1 - t0),
        ratio=rate / baseline,
        errors_on_page=errors,
        memory_mb=memory,
        memory_start_mb=memory[1][1] if len(memory) > 1 else memory[0][1],
        memory_end_mb=memory[-1][1],
        seconds=args.seconds,
    )
    print(
        f"page open: {rate:.1f} steps/s = {rate / baseline:.0%} of headless; server memory "
        f"{result['memory_start_mb']:.0f} MB after 10 s, {memory[-1][1]:.0f} MB after {memory[-1][0]} s, "
        f"max {max(m for _, m in memory):.0f} MB; errors on the page: {errors}; "
        f"{result['refreshes_per_s']:.2f} refreshes/s; CPU cores used: server {result['server_cpu_cores']:.2f}, "
        f"chromium {result['chromium_cpu_cores']:.2f}"
    )
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=2))
    return result


if __name__ == "__main__":
    main()
