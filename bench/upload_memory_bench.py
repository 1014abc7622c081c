"""Does the server give back the memory of a closed tab's uploaded recording?

    python bench/upload_memory_bench.py [--rows 3000000] [--uploads 3] [--after-s 180] [--json PATH]

A real server and a real browser (Debian's chromium): a large valid experiment file (the shipped run with
its steps tables replaced by ``--rows`` rows of random losses and accuracies per lane, so it hardly
compresses) is uploaded through the sidebar's "Load a saved experiment", the replay shows, the tab closes.
The server's RSS (/proc/PID/status VmRSS) and PSS (smaps_rollup) are sampled before the upload, while the
replay shows, and every 10 s for ``--after-s`` seconds after the tab closed; ``--uploads`` times in a row.
The target: back within 50 MB of the level before the upload, after the session ends.
"""

import argparse
import json
import os
import platform
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

from dashboard_bench import CHROMIUM_ARGS, pss_mb, start_server  # noqa: E402

SHIPPED = ROOT / "assets" / "chapter-run" / "experiment.npz"


def big_experiment(path, rows, seed=0):
    """The shipped run with ``rows`` steps per lane of random losses, accuracies and learning rates."""
    from bnviz.live.experiment_file import load_experiment, save_experiment

    header, lanes = load_experiment(SHIPPED)
    rng = np.random.default_rng(seed)
    # a run that long, as the dashboard could have recorded it: batch size 2 (30,000 steps an epoch)
    per_epoch = 60_000 // 2
    epochs = -(-rows // per_epoch)
    header["settings"].update(batch_size=2, train_size=None, epochs=epochs)
    for tables in lanes:
        step = np.arange(1, rows + 1, dtype=np.int64)
        tables["steps"] = {
            "step": step,
            "epoch": 1 + (step - 1) // per_epoch,
            "lr": np.full(rows, 0.1),  # a change of rate is marked on the charts: random rates would mark every step
            "train_loss": rng.uniform(0.2, 2.3, rows),
            "train_acc": rng.uniform(0.0, 1.0, rows),
        }
    header = {k: v for k, v in header.items() if k not in ("format", "version")}
    save_experiment(path, header, lanes)
    return path


def rss_mb(pid):
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


def sample(pid, label, t0):
    s = {"t": round(time.monotonic() - t0, 1), "what": label, "rss_mb": rss_mb(pid), "pss_mb": pss_mb(pid)}
    print(f"  t={s['t']:>6} s  {label:<28} RSS {s['rss_mb']:7.0f} MB  PSS {s['pss_mb']:7.0f} MB", flush=True)
    return s


def settle(page, timeout=120_000):
    page.wait_for_selector("[data-testid='stApp'][data-test-connection-state='CONNECTED']", timeout=timeout)
    page.wait_for_selector("[data-test-script-state='notRunning']", timeout=timeout)


def open_tab(browser, url):
    page = browser.new_page(viewport={"width": 1400, "height": 900})
    page.goto(url)
    settle(page)
    page.get_by_role("button", name=re.compile(r"^Start( Shortcut \S+)?$")).wait_for(timeout=120_000)
    return page


def upload(page, path, timeout_s):
    """Upload, then wait for the replay's first chart; seconds from choosing the file to that chart."""
    page.get_by_text("Export · load a run").click()
    t = time.monotonic()
    page.locator("[data-testid='stFileUploaderDropzoneInput']").set_input_files(str(path))
    page.get_by_text(re.compile(r"^Replay of")).wait_for(timeout=timeout_s * 1000)
    page.locator(".js-plotly-plot .main-svg").first.wait_for(timeout=timeout_s * 1000)
    return time.monotonic() - t


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--rows", type=int, default=3_000_000, help="steps per lane (2 lanes)")
    p.add_argument("--uploads", type=int, default=3)
    p.add_argument("--after-s", type=float, default=180)
    p.add_argument("--replay-timeout-s", type=float, default=900, help="how long the replay may take to show")
    p.add_argument("--json", default=None)
    args = p.parse_args(argv)
    from playwright.sync_api import sync_playwright

    tmp = Path(tempfile.mkdtemp(prefix="bnviz-upload-"))
    path = big_experiment(tmp / "big-experiment.npz", args.rows)
    from bnviz.live.experiment_file import load_experiment

    _, lanes = load_experiment(path)
    columns = sum(a.nbytes for t in lanes for cols in t.values() for a in cols.values())
    print(f"file {path.stat().st_size / 2**20:.0f} MB on disk, {columns / 2**20:.0f} MB of columns", flush=True)
    del lanes

    result = {
        "machine": f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores",
        "uname": " ".join(platform.uname()),
        "date": time.strftime("%Y-%m-%d %H:%M"),
        "file_mb": path.stat().st_size / 2**20,
        "columns_mb": columns / 2**20,
        "uploads": [],
    }
    server, url = start_server()
    t0 = time.monotonic()
    try:
        with sync_playwright() as pw:
            browser = pw.chromium.launch(executable_path="/usr/bin/chromium", args=CHROMIUM_ARGS)
            warm = open_tab(browser, url)  # the server's dataset, registry and first experiment
            warm.close()
            time.sleep(20)
            start = sample(server.pid, "warm, no tab open", t0)
            for i in range(args.uploads):
                print(f"upload {i + 1}", flush=True)
                before = sample(server.pid, "before the upload", t0)
                page = open_tab(browser, url)
                opened = sample(server.pid, "tab open", t0)
                shown_s = upload(page, path, args.replay_timeout_s)
                during = sample(server.pid, f"replay shown after {shown_s:.0f} s", t0)
                page.close()
                closed = time.monotonic()
                after = []
                while time.monotonic() - closed < args.after_s:
                    time.sleep(10)
                    after.append(sample(server.pid, f"{time.monotonic() - closed:.0f} s after the close", t0))
                result["uploads"].append(
                    {"before": before, "tab_open": opened, "replay": during, "replay_s": shown_s, "after": after},
                )
                print(
                    f"upload {i + 1}: RSS {before['rss_mb']:.0f} MB before, {during['rss_mb']:.0f} MB during, "
                    f"{after[-1]['rss_mb']:.0f} MB {args.after_s:.0f} s after the close "
                    f"(+{after[-1]['rss_mb'] - before['rss_mb']:.0f} MB; PSS "
                    f"+{after[-1]['pss_mb'] - before['pss_mb']:.0f} MB)",
                    flush=True,
                )
            browser.close()
    finally:
        server.terminate()
        try:
            server.wait(30)
        except subprocess.TimeoutExpired:
            server.kill()
            server.wait(10)
        path.unlink()
        tmp.rmdir()
    last = result["uploads"][-1]["after"][-1]
    result["start"] = start
    print(
        f"over {args.uploads} uploads: RSS {start['rss_mb']:.0f} MB before the first, {last['rss_mb']:.0f} MB "
        f"after the last (+{last['rss_mb'] - start['rss_mb']:.0f} MB); PSS +{last['pss_mb'] - start['pss_mb']:.0f} MB"
    )
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=2))
    return result


if __name__ == "__main__":
    main()
