"""Viewers without browsers: what 30 students watching the teacher's run cost the server, measured on one machine.

    python bench/protocol_viewers.py [--viewers 1 10 30] [--seconds 20] [--json PATH]
    python bench/protocol_viewers.py --viewers 0 30 100 --seconds 180 --crowd-nice 19 --roots <old checkout> .

A browser tab watching ``?watch=<id>`` does two things to the server: it opens a session (one script run), then
its refreshing fragments ask for reruns at the intervals the server gave them. This script does exactly that over
Streamlit's own websocket protocol (``/_stcore/stream``, the BackMsg/ForwardMsg protobufs the frontend sends
and receives), so N viewers cost the server what N tabs would, without N chromium renderers competing for the
same two cores (in a class they run on the students' laptops). Per count it reports the server's own CPU
(cores), the teacher's training speed, and how long one more viewer takes from connecting to its first full
page (a script run that finished). Then ``--samples`` real students: each a chromium of its own (a fresh browser
process and an empty cache, as on a student's laptop, but on the same cores), timed from the navigation to the
loss chart drawn with its points; and, for comparison, as many tabs opened in the teacher's own browser. A
real browser's time is mostly its own work on cores it shares here with the server, the training and the teacher's
browser; a phone has its own. So ``new_phone_server_part_s`` times what the server adds: the page and the files
that student's browser fetched, six at a time, then the websocket until the loss chart's message comes. A count of
0 viewers is the teacher alone: ``training_vs_teacher_alone`` then says what the class costs the training, apart
from what the teacher's own page and browser cost it.

Each simulated viewer counts the bytes the server sends it (the websocket messages, after the first page) and,
as the browser does, keeps the hashes of the large elements it was sent (``cacheable``) and names them in each
rerun, so an unchanged large element comes back as a reference (Streamlit's message cache). The teacher's
training is compared with the same pair trained headless in this process just before the server starts.
``--roots`` runs the whole session once per checkout (each served from its own folder, this script's client),
alternating over ``--rounds``: today's code and a change, side by side on the same machine in one run.
"""

import argparse
import asyncio
import json
import os
import platform
import statistics
import sys
import threading
import time
from pathlib import Path

from dashboard_bench import CHROMIUM_ARGS, cpu_s, headless_rate, page_step, start_server
from playwright.sync_api import TimeoutError as PlaywrightTimeout
from streamlit.proto.BackMsg_pb2 import BackMsg
from streamlit.proto.ForwardMsg_pb2 import ForwardMsg
from viewer_bench import START, loaded
from websockets.asyncio.client import connect

ROOT = Path(__file__).resolve().parents[1]


LOSS_SVG = b'data-chart="Training loss per step"'  # the viewer's loss chart (bnviz/pictures/svg_chart.py)
MAX_CACHED_AGE = 2  # Streamlit's global.maxCachedMessageAge: the browser forgets a hash unused for 2 runs


def rerun(query, fragment_id=None, cached=()):
    msg = BackMsg()
    msg.rerun_script.query_string = query
    msg.rerun_script.page_script_hash = ""
    msg.rerun_script.cached_message_hashes.extend(cached)
    if fragment_id:
        msg.rerun_script.fragment_id = fragment_id
        msg.rerun_script.is_auto_rerun = True
    return msg.SerializeToString()


class Viewer:
    """One simulated viewer tab: connect, run the page, then rerun its auto-refreshing fragments as asked."""

    def __init__(self, url, key):
        self.ws_url = url.replace("http://", "ws://") + "/_stcore/stream"
        self.query = f"watch={key}"
        self.first_page_s = None
        self.first_chart_s = None  # when the message holding the loss chart (its SVG) came
        self.runs = 0
        self.closed = False
        self.bytes = 0  # every websocket message received
        self.cache = {}  # hash of a cacheable message -> the run that last used it (as the browser keeps them)
        self.by_kind = {}  # bytes per message kind (a delta: the element's kind)

    def cached(self):
        return [h for h, used in self.cache.items() if self.runs - used <= MAX_CACHED_AGE]

    async def run(self, stop):
        t0 = time.monotonic()
        ws = await connect(self.ws_url, subprotocols=["streamlit"], max_size=None)
        await ws.send(rerun(self.query))
        timers = {}
        try:
            while not stop.is_set():
                try:
                    raw = await asyncio.wait_for(ws.recv(), 0.5)
                except asyncio.TimeoutError:
                    continue
                except Exception:  # the server closed the connection
                    break
                msg = ForwardMsg()
                msg.ParseFromString(raw)
                kind = msg.WhichOneof("type")
                self.bytes += len(raw)
                what = kind
                if kind == "delta":
                    what = msg.delta.WhichOneof("type")
                    if what == "new_element":
                        what = msg.delta.new_element.WhichOneof("type")
                self.by_kind[what] = self.by_kind.get(what, 0) + len(raw)
                if self.first_chart_s is None and what == "markdown" and LOSS_SVG in raw:
                    self.first_chart_s = time.monotonic() - t0
                if msg.metadata.cacheable and msg.hash:
                    self.cache[msg.hash] = self.runs
                elif kind == "ref_hash":
                    self.cache[msg.ref_hash] = self.runs
                if kind == "script_finished":
                    self.runs += 1
                    self.cache = {h: used for h, used in self.cache.items() if self.runs - used <= MAX_CACHED_AGE}
                    if self.first_page_s is None:
                        self.first_page_s = time.monotonic() - t0
                elif kind == "auto_rerun":
                    fid, every = msg.auto_rerun.fragment_id, msg.auto_rerun.interval
                    if fid not in timers:
                        timers[fid] = asyncio.ensure_future(self._refresh(ws, fid, every, stop))
                elif kind == "stop_auto_rerun":
                    for task in timers.values():
                        task.cancel()
                    timers.clear()
        finally:
            for task in timers.values():
                task.cancel()
            await ws.close()
            self.closed = True

    async def _refresh(self, ws, fragment_id, every, stop):
        while not stop.is_set():
            await asyncio.sleep(every)
            await ws.send(rerun(self.query, fragment_id, self.cached()))


class Crowd:
    """Simulated viewers in one background event loop; add() more while the others keep refreshing."""

    def __init__(self, url, key):
        self.url, self.key, self.viewers = url, key, []
        self.loop = asyncio.new_event_loop()
        self.stop = asyncio.Event()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()

    def add(self, n):
        for _ in range(n):
            v = Viewer(self.url, self.key)
            self.viewers.append(v)
            asyncio.run_coroutine_threadsafe(v.run(self.stop), self.loop)

    def wait_loaded(self, timeout=300):
        end = time.monotonic() + timeout
        while time.monotonic() < end and any(v.first_page_s is None for v in self.viewers):
            time.sleep(0.2)
        return [v.first_page_s for v in self.viewers]

    def close(self):
        self.loop.call_soon_threadsafe(self.stop.set)
        time.sleep(1.5)
        self.loop.call_soon_threadsafe(self.loop.stop)


def crowd_process(url, key, nice, conn):
    """A Crowd in a process of its own, at CPU priority ``nice``, driven over ``conn``: ("add", n), ("loaded",),
    ("runs",) and ("close",); each answer is sent back. Its CPU is the simulated students' own, counted apart from
    the server's (in a class each viewer runs on a student's laptop)."""
    os.nice(nice)
    crowd = Crowd(url, key)
    while True:
        command, *arg = conn.recv()
        if command == "add":
            crowd.add(arg[0])
            conn.send(len(crowd.viewers))
        elif command == "loaded":
            conn.send(crowd.wait_loaded())
        elif command == "runs":
            conn.send(sum(v.runs for v in crowd.viewers))
        elif command == "bytes":
            by_kind = {}
            for v in crowd.viewers:
                for k, b in v.by_kind.items():
                    by_kind[k] = by_kind.get(k, 0) + b
            conn.send((sum(v.bytes for v in crowd.viewers), by_kind))
        else:
            crowd.close()
            conn.send(None)
            return


class CrowdProcess:
    """The simulated viewers, in a child process (``crowd_process``)."""

    def __init__(self, url, key, nice):
        import multiprocessing as mp

        self.conn, child = mp.Pipe()
        self.process = mp.get_context("spawn").Process(target=crowd_process, args=(url, key, nice, child))
        self.process.start()
        self.count = 0

    def ask(self, *command):
        self.conn.send(command)
        return self.conn.recv()

    def add(self, n):
        self.count = self.ask("add", n)

    def wait_loaded(self):
        return self.ask("loaded")

    def runs(self):
        return self.ask("runs")

    def bytes(self):
        return self.ask("bytes")

    def close(self):
        self.ask("close")
        self.process.join(10)


ASSETS_JS = """() => performance.getEntriesByType('resource').map(e => e.name)
    .filter(n => n.startsWith(location.origin) && !n.includes('/_stcore/'))"""


def student_tab(pw, browser, url, timeout, assets=None):
    """Seconds from the navigation to the loss chart drawn with its points, in a tab of ``browser``, or (None) in
    a chromium of its own: a new process and an empty cache, as a student's laptop opens the link. None when no
    chart came within ``timeout`` seconds. The files the page fetched from the server are added to ``assets``."""
    own = browser is None
    if own:
        browser = pw.chromium.launch(executable_path="/usr/bin/chromium", args=CHROMIUM_ARGS)
    page = browser.new_page(viewport={"width": 1280, "height": 800})
    try:
        t_open = time.monotonic()
        try:
            page.goto(url, wait_until="commit", timeout=timeout * 1000)
        except PlaywrightTimeout:  # the server did not even answer the navigation
            return None
        while not loaded(page):
            if time.monotonic() - t_open > timeout:
                return None
            page.wait_for_timeout(50)
        took = time.monotonic() - t_open
        if assets is not None:
            assets.update(page.evaluate(ASSETS_JS))
        return took
    finally:
        page.close()
        if own:
            browser.close()


def new_phone(url, key, assets, timeout):
    """What the server adds to a new phone's first chart, with the phone's own work left out: the seconds from
    asking for the page to the message that brings the loss chart, for a client that fetches the page and the
    files a real student's browser fetched (``assets``), six at a time as a browser does, then opens the page's
    websocket. None when no chart came within ``timeout``. (A browser finds the files in a few waves, each after
    parsing the last, on the phone's own CPU: that part is the phone's, measured apart with a quiet server.)"""
    from concurrent.futures import ThreadPoolExecutor
    from urllib.request import urlopen

    t0 = time.monotonic()
    try:
        with ThreadPoolExecutor(6) as pool:
            list(pool.map(lambda a: urlopen(a, timeout=timeout).read(), [f"{url}/?watch={key}", *sorted(assets)]))
    except OSError:  # a file did not come within the timeout (or at all): no chart
        return None
    fetched = time.monotonic() - t0
    viewer = Viewer(url, key)

    async def until_chart():
        stop = asyncio.Event()
        task = asyncio.ensure_future(viewer.run(stop))
        while viewer.first_chart_s is None and time.monotonic() - t0 < timeout:
            await asyncio.sleep(0.01)
        stop.set()
        await task

    with ThreadPoolExecutor(1) as loop:  # a loop of its own: Playwright's runs in this thread
        loop.submit(asyncio.run, until_chart()).result()
    return None if viewer.first_chart_s is None else fetched + viewer.first_chart_s


def per_viewer(x, n):
    """A figure shared among ``n`` viewers; None for the teacher alone (n = 0)."""
    return x / n if n else None


def median(samples):
    """The median of the samples that came (None: none came within the timeout)."""
    came = [x for x in samples if x is not None]
    return statistics.median(came) if came else None


def watch_id(page):
    """The watch id the teacher's share panel gives (opened if it is closed): ``?watch=<id>``."""
    share = page.get_by_role("switch", name="Share with the class")
    if not share.is_checked():
        page.locator("label", has=share).click()
    code = page.locator("[data-testid='stCode']").filter(has_text="?watch=").first
    code.wait_for(timeout=60_000)
    return code.inner_text().strip().rsplit("=", 1)[1]


def session(pw, root, args, headless):
    """One server from ``root``: the teacher trains, then each count of viewers is measured; the runs."""
    server, url = start_server(root)
    runs = []
    try:
        browser = pw.chromium.launch(executable_path="/usr/bin/chromium", args=CHROMIUM_ARGS)
        teacher = browser.new_page(viewport={"width": 1280, "height": 800})
        teacher.goto(f"{url}/?preset=chapter&epochs=100")
        teacher.wait_for_selector("[data-test-script-state='notRunning']", timeout=120_000)
        teacher.get_by_role("button", name=START).click()
        key = watch_id(teacher)
        teacher.wait_for_timeout(5000)
        crowd = CrowdProcess(url, key, args.crowd_nice)
        try:
            for n in args.viewers:
                crowd.add(n - crowd.count)
                firsts = crowd.wait_loaded()
                teacher.wait_for_timeout(3000)  # settle
                s0, c0, t0 = page_step(teacher), cpu_s(server.pid), time.monotonic()
                runs0, v0, (b0, k0) = crowd.runs(), cpu_s(crowd.process.pid), crowd.bytes()
                teacher.wait_for_timeout(args.seconds * 1000)
                s1, c1, t1 = page_step(teacher), cpu_s(server.pid), time.monotonic()
                runs1, v1, (b1, k1) = crowd.runs(), cpu_s(crowd.process.pid), crowd.bytes()
                own, shared, assets = [], [], set()  # real students, opened now: until each shows the loss chart
                for _ in range(args.samples):
                    own.append(student_tab(pw, None, f"{url}/?watch={key}", args.chart_timeout, assets))
                    shared.append(student_tab(pw, browser, f"{url}/?watch={key}", args.chart_timeout))
                phones = [new_phone(url, key, assets, args.chart_timeout) for _ in range(args.samples)]
                wall = t1 - t0
                run = {
                    "root": str(root),
                    "viewers": n,
                    "seconds": wall,
                    "server_cores": (c1 - c0) / wall,
                    "server_cores_per_viewer": per_viewer((c1 - c0) / wall, n),
                    "teacher_steps_per_s": (s1 - s0) / wall,
                    "headless_steps_per_s": headless,
                    "training_vs_headless": (s1 - s0) / wall / headless,
                    "viewer_kB_per_s": per_viewer((b1 - b0) / wall / 1000, n),
                    "viewer_kB_per_s_by_kind": {
                        k: per_viewer((b - k0.get(k, 0)) / wall / 1000, n) for k, b in k1.items()
                    },
                    "viewer_refreshes_per_s": (runs1 - runs0) / wall,
                    "simulated_viewers_own_cores": (v1 - v0) / wall,
                    "slowest_simulated_first_page_s": max((f for f in firsts if f is not None), default=None),
                    "simulated_not_loaded": sum(f is None for f in firsts),
                    "new_student_browser_chart_s": median(own),
                    "new_student_browser_chart_samples_s": own,
                    "new_tab_in_teachers_browser_chart_s": median(shared),
                    "new_tab_in_teachers_browser_chart_samples_s": shared,
                    "new_phone_server_part_s": median(phones),
                    "new_phone_server_part_samples_s": phones,
                    "files_a_new_page_fetched": len(assets) + 1,
                }
                runs.append(run)
                print(json.dumps(run), flush=True)
        finally:
            crowd.close()
        browser.close()
        alone = [r for r in runs if r["viewers"] == 0]
        for r in runs:  # what the class costs the training, the teacher's own page and browser left out
            r["training_vs_teacher_alone"] = (
                r["teacher_steps_per_s"] / alone[0]["teacher_steps_per_s"] if alone else None
            )
    finally:
        server.terminate()
        server.wait(10)
    return runs


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--viewers", type=int, nargs="+", default=[1, 10, 30], help="0: the teacher alone")
    p.add_argument("--seconds", type=float, default=20)
    p.add_argument(
        "--crowd-nice",
        type=int,
        default=0,
        help="CPU priority of the simulated viewers' process (19: as if they ran elsewhere, on students' laptops)",
    )
    p.add_argument("--samples", type=int, default=3, help="real student tabs per count (median reported)")
    p.add_argument("--roots", nargs="+", default=[str(ROOT)], help="checkouts to serve from, one session each")
    p.add_argument("--rounds", type=int, default=1, help="sessions per checkout, alternating between them")
    p.add_argument("--headless-seconds", type=float, default=20, help="the headless baseline before each session")
    p.add_argument("--chart-timeout", type=float, default=60, help="seconds a student waits for the first chart")
    p.add_argument("--json", default=None)
    args = p.parse_args(argv)
    from playwright.sync_api import sync_playwright

    result = {
        "machine": f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores",
        "load_average": os.getloadavg(),
        "crowd_nice": args.crowd_nice,
        "runs": [],
    }
    with sync_playwright() as pw:
        for _ in range(args.rounds):
            for root in args.roots:
                headless = headless_rate(args.headless_seconds)
                print(f"{root}: headless {headless:.1f} steps/s", flush=True)
                result["runs"] += session(pw, Path(root).resolve(), args, headless)
    result["load_average_end"] = os.getloadavg()
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=2))
    print(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
