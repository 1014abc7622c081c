"""The dashboard in a real browser: `streamlit run` in a subprocess, Debian's chromium driven by Playwright.

Skipped where /usr/bin/chromium or the playwright package is missing (never `playwright install`), and a
failure then in CI (BNVIZ_REQUIRE_ALL=1).
Trains on the real Fashion-MNIST when this machine has it (./data, $BNVIZ_DATA or Debian's package), else
on the full-size synthetic files from conftest. Saves screenshots of every view, of the shipped recording in
replay, and of each study in the Experiments view: into a temporary folder during `make test`, into
docs/screenshots with `make screenshots` ($BNVIZ_SCREENSHOTS).
"""

import os
import re
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest
from conftest import missing

import bnviz.data.fashion_mnist
from bnviz.machine import env

ROOT = Path(__file__).resolve().parents[1]
CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]

try:
    from playwright import sync_api
except ImportError:  # reported by the fixture below: a skip here, a failure in CI
    sync_api = None
pytestmark = pytest.mark.browser


@pytest.fixture(autouse=True)
def browser_available():
    if sync_api is None:
        missing("the playwright package is not installed (make install-dev)")
    if not (CHROMIUM.is_file() and os.access(CHROMIUM, os.X_OK)):
        missing(f"{CHROMIUM} is not installed (apt-get install chromium)")


@pytest.fixture(scope="module")
def shots(tmp_path_factory):
    """Where screenshots go: $BNVIZ_SCREENSHOTS (make screenshots: docs/screenshots), else a temporary folder."""
    folder = env.screenshots_dir() or tmp_path_factory.mktemp("screenshots")
    folder = folder if folder.is_absolute() else ROOT / folder
    folder.mkdir(parents=True, exist_ok=True)
    return folder


# What each plot on the page holds: its title, and per trace its type and number of points. Plotly sends
# numeric arrays as {dtype, bdata} (base64); el.data keeps them so, el._fullData holds them decoded.
PLOTS_JS = """() => {
  const size = {f8: 8, f4: 4, i4: 4, u4: 4, i2: 2, u2: 2, i1: 1, u1: 1, u1c: 1};
  const count = v => !v ? 0 : (Array.isArray(v) || ArrayBuffer.isView(v)) ? v.length
                 : v.bdata ? atob(v.bdata).length / (size[v.dtype] || 8) : 0;
  return [...document.querySelectorAll('.js-plotly-plot')].map(el => ({
    title: (el.layout && el.layout.title && el.layout.title.text) || '',
    traces: (el.data || []).map((t, i) => {
      const full = (el._fullData || [])[i] || {};
      return {name: t.name || '', type: t.type || 'scatter',
              n: Math.max(count(full.x), count(t.x), count(full.z), count(t.z))};
    })}));
}"""


PLOTLY_FETCHES = "() => performance.getEntriesByType('resource').filter(e => e.name.includes('/PlotlyChart.')).length"


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def data_env(request):
    """Environment for the server's data: the real data if bnviz can find it here, else synthetic files."""
    cwd = Path.cwd()
    try:
        os.chdir(ROOT)  # ./data means the repository's data folder, as for the server
        found = any(bnviz.data.fashion_mnist._find_files(d) for d in bnviz.data.fashion_mnist.search_dirs())
    finally:
        os.chdir(cwd)
    if found:
        return {}
    return {"BNVIZ_DATA": str(request.getfixturevalue("full_synthetic").folder), "BNVIZ_DATA_UNCHECKED": "1"}


@pytest.fixture
def server(request, tmp_path):
    port = free_port()
    env = {
        **os.environ,
        "BNVIZ_GRACE_S": "30",
        "PYTHONUNBUFFERED": "1",
        "BNVIZ_RACE_STEPS": "60",  # a short race
        "BNVIZ_DEVICES_STEPS": "30",  # a short BN-across-devices study
        "BNVIZ_LANDSCAPE_EVERY": "10",  # three landscape measurements after 30 steps, not 75
        **data_env(request),
    }
    env.pop("BNVIZ_MAX_TRAINING", None)
    yield from serve_dashboard(env, port, tmp_path / "server.log", "--server.fileWatcherType", "none")


def serve_dashboard(env, port, log_path, *options):
    """``streamlit run dashboard.py`` on 127.0.0.1:port with ``env``; yields its URL once healthy, then stops it and
    checks its log holds no traceback."""
    log = open(log_path, "w+")
    command = [sys.executable, "-m", "streamlit", "run", "dashboard.py", "--server.headless", "true"]
    command += ["--server.port", str(port), "--server.address", "127.0.0.1", "--browser.gatherUsageStats", "false"]
    proc = subprocess.Popen([*command, *options], cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while True:
            assert proc.poll() is None, f"the server exited: {read(log)}"
            try:
                with urllib.request.urlopen(f"{url}/_stcore/health", timeout=2) as r:
                    if r.read().decode().strip() == "ok":
                        break
            except OSError:
                pass
            assert time.monotonic() < deadline, f"the server did not come up: {read(log)}"
            time.sleep(0.2)
        yield url
    finally:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(10)
        output = read(log)
        log.close()
        assert "Traceback" not in output, output


def read(log):
    log.flush()
    log.seek(0)
    return log.read()[-5000:]


def settle(page, timeout=30_000):
    page.wait_for_selector("[data-testid='stApp'][data-test-connection-state='CONNECTED']", timeout=timeout)
    page.wait_for_selector("[data-test-script-state='notRunning']", timeout=timeout)


def assert_no_failure(page, stage):
    exceptions = page.locator("[data-testid='stException']")
    assert exceptions.count() == 0, f"{stage}: {exceptions.all_inner_texts()}"
    errors = page.locator("[data-testid='stAlertContentError']")
    assert errors.count() == 0, f"{stage}: {errors.all_inner_texts()}"


def plots(page):
    return page.evaluate(PLOTS_JS)


def wait_for_plots(page, check, what, timeout=60):
    deadline = time.monotonic() + timeout
    while True:
        current = plots(page)
        if check(current):
            return current
        assert time.monotonic() < deadline, f"gave up waiting for {what}: {current}"
        page.wait_for_timeout(200)


def loss_plot(current):
    return next((p for p in current if p["title"].startswith("Training loss")), None)


def curves_have(n):
    def check(current):
        loss = loss_plot(current)
        return loss is not None and len(loss["traces"]) == 2 and all(t["n"] >= n for t in loss["traces"])

    return check


def wait_until(page, check, what, timeout=60):
    """Poll check() (every 200 ms) until it returns something true; return that."""
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if value:
            return value
        assert time.monotonic() < deadline, f"gave up waiting for {what}"
        page.wait_for_timeout(200)


def progress_step(page):
    """The step in the status bar's progress text ("... · step 1,234/4,690 · ..."), or None."""
    bar = page.locator("[data-testid='stProgress']")
    if bar.count() == 0:
        return None
    m = re.search(r"step ([\d,]+)/", bar.first.inner_text())
    return int(m.group(1).replace(",", "")) if m else None


def current_step(page):
    """The status bar's step, waiting for the bar while a fragment redraws it."""
    return wait_until(
        page, lambda: [progress_step(page)] if progress_step(page) is not None else None, "the status bar's step"
    )[0]


def plot_titled(prefix):
    return lambda current: next((p for p in current if p["title"].startswith(prefix)), None)


def has_points(prefix):
    """A check for wait_for_plots: the plot whose title starts with prefix has a trace with points."""
    return lambda current: (
        plot_titled(prefix)(current) is not None and any(t["n"] > 0 for t in plot_titled(prefix)(current)["traces"])
    )


def control(page, label):
    """A button by its label; one with a keyboard shortcut is named with it ("Start Shortcut Space")."""
    return page.get_by_role("button", name=re.compile("^" + re.escape(label) + r"( Shortcut \S+)?$"))


def button_starting(page, prefix):
    return page.get_by_role("button", name=re.compile("^" + re.escape(prefix)))


def show_view(page, view):
    # st.segmented_control: a radiogroup named by the widget's label, one radio per option
    radio = page.get_by_role("radiogroup", name="View").get_by_role("radio", name=view, exact=True)
    radio.click()
    sync_api.expect(radio).to_be_checked()
    settle(page)


def test_the_dashboard_trains_in_a_browser_and_every_view_draws(server, shots):
    with sync_api.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS, headless=True)
        try:
            page = browser.new_page(viewport={"width": 1280, "height": 800})  # a classroom projector
            page.goto(server, wait_until="domcontentloaded")
            settle(page, timeout=60_000)
            control(page, "Start").wait_for(timeout=30_000)
            assert_no_failure(page, "first load")
            assert "run=" in page.url  # the run's id is in the URL, so a reload finds it again
            # nothing trained yet: a placeholder where each chart will be, and no Plotly chart to wait for
            sync_api.expect(page.locator(".st-key-placeholder-loss")).to_contain_text("Press Start")
            sync_api.expect(page.locator(".st-key-placeholder-acc")).to_contain_text("Press Start")
            assert page.locator(".js-plotly-plot").count() == 0
            page.mouse.move(1275, 795)
            page.screenshot(path=str(shots / "fresh-page.png"))

            control(page, "Start").click()
            clicked = time.monotonic()
            page.mouse.move(1275, 795)  # no tooltip over the picture
            wait_for_plots(page, curves_have(1), "the first points of both curves")
            first_points_s = time.monotonic() - clicked
            print(f"\nfirst curve points {first_points_s:.2f} s after clicking Start")
            wait_for_plots(page, curves_have(5), "both curves with 5 points")
            settle(page)
            assert_no_failure(page, "training")
            assert page.locator("[class*='st-key-placeholder-']").count() == 0
            # Plotly's module, loaded ahead by the idle page (ui/charts.warm_up), is the one the charts use
            assert page.evaluate(PLOTLY_FETCHES) == 1
            wait_for_plots(page, curves_have(12), "both curves with 12 points")  # a little more for the picture
            page.screenshot(path=str(shots / "training.png"))

            show_view(page, "Inside BN")
            wait_for_plots(
                page,
                lambda c: len(c) == 4 and sum(t["type"] == "bar" and t["n"] > 0 for t in c[0]["traces"]) == 6,
                "the histograms",
            )
            assert_no_failure(page, "Inside BN")
            page.screenshot(path=str(shots / "inside-bn.png"))

            show_view(page, "BN state")
            wait_for_plots(  # running statistics, batch vs running, gamma and beta, eval against train mode
                page, lambda c: len(c) == 4 and all(p["traces"] for p in c), "the BN state charts"
            )
            assert_no_failure(page, "BN state")
            page.screenshot(path=str(shots / "bn-state.png"))

            show_view(page, "Gradients")
            wait_for_plots(page, lambda c: len(c) == 3 and all(p["traces"] for p in c), "the gradient charts")
            assert_no_failure(page, "Gradients")
            page.screenshot(path=str(shots / "gradients.png"))

            show_view(page, "Lesson")
            page.get_by_text("Batch Normalization, in one line").wait_for(timeout=10_000)
            page.locator("[data-testid='stMain'] [data-testid='stCode']").first.wait_for(timeout=10_000)
            assert "def normalize(" in page.locator("[data-testid='stMain'] [data-testid='stCode']").first.inner_text()
            assert_no_failure(page, "Lesson")
            page.screenshot(path=str(shots / "lesson.png"))

            show_view(page, "Training")
            wait_for_plots(page, curves_have(5), "the training curves again")
            switch = page.get_by_role("switch", name="A · BN")
            assert not switch.is_checked()
            page.locator("label", has=switch).click()
            sync_api.expect(switch).to_be_checked()
            settle(page)
            assert_no_failure(page, "BN turned on in lane A")
            assert switch.is_checked()
            wait_for_plots(
                page,
                lambda c: (
                    loss_plot(c) is not None
                    and [t["name"] for t in loss_plot(c)["traces"]].count("B · BN scratch") >= 1
                    and "A · BN off" not in [t["name"] for t in loss_plot(c)["traces"]]
                ),
                "lane A to restart with BN",
            )
            assert_no_failure(page, "after the restart")
        finally:
            browser.close()


def new_page(browser, height=800):
    """A page, and the list of uncaught JavaScript errors it will collect."""
    page = browser.new_page(viewport={"width": 1280, "height": height})
    page.set_default_timeout(30_000)
    js_errors = []
    page.on("pageerror", lambda e: js_errors.append(str(e)))
    return page, js_errors


def test_the_shipped_recording_replays_in_a_browser(server, shots):
    with sync_api.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS, headless=True)
        try:
            page, js_errors = new_page(browser)
            page.goto(f"{server}/?replay=chapter", wait_until="domcontentloaded")
            settle(page, timeout=60_000)
            page.get_by_text("Replay of").first.wait_for()
            assert_no_failure(page, "replay opened")
            wait_for_plots(
                page,
                lambda c: (
                    loss_plot(c) is not None
                    and loss_plot(c)["traces"]
                    and all(t["n"] > 0 for t in loss_plot(c)["traces"])
                ),
                "the recorded loss curves",
            )
            last = current_step(page)  # a replay opens at its last step

            # Play: from the end it starts again at step 0 and moves forward; Pause stops it
            page.get_by_role("button", name="Play", exact=True).click()
            control(page, "Pause").wait_for()
            wait_until(page, lambda: (progress_step(page) or last) < last, "Play to go back to the start")
            first = current_step(page)
            wait_until(page, lambda: (progress_step(page) or 0) > first, "the replay to move forward")
            assert_no_failure(page, "playing")
            control(page, "Pause").click()
            page.get_by_role("button", name="Play", exact=True).wait_for()
            settle(page)
            paused = current_step(page)

            # the timeline (a react-aria slider named "Step"): drag its thumb to about two thirds of the run
            track = page.locator("[data-testid='stMain']").get_by_role("group", name="Step").locator("> div").first
            thumb = track.locator("> div[style*='absolute']").first
            track, box = track.bounding_box(), thumb.bounding_box()
            page.mouse.move(box["x"] + box["width"] / 2, box["y"] + box["height"] / 2)
            page.mouse.down()
            page.mouse.move(track["x"] + track["width"] * 2 / 3, box["y"] + box["height"] / 2, steps=10)
            page.mouse.up()
            wait_until(page, lambda: progress_step(page) not in (None, paused), "the slider to move the replay")
            settle(page)
            step = current_step(page)
            assert 0 < step < last, (step, last)
            wait_for_plots(
                page,
                lambda c: loss_plot(c) is not None and all(t["n"] > 0 for t in loss_plot(c)["traces"]),
                "the loss curves at the chosen step",
            )
            assert_no_failure(page, "after dragging the timeline")
            page.screenshot(path=str(shots / "replay.png"))
            assert not js_errors, js_errors
        finally:
            browser.close()


def shoot_last_chart(page, path):
    """A picture at 1280×800 with the study's chart in view, as the teacher scrolls to it."""
    page.locator(".js-plotly-plot").last.scroll_into_view_if_needed()
    page.screenshot(path=str(path))


def pick_study(page, study):
    # st.radio: a radiogroup named by the widget's label; the inputs are hidden, their labels take the click
    group = page.get_by_role("radiogroup", name="Study")
    group.locator("label", has=page.get_by_role("radio", name=study, exact=True)).click()
    sync_api.expect(group.get_by_role("radio", name=study, exact=True)).to_be_checked()
    settle(page)


def test_every_study_of_the_experiments_view_runs_in_a_browser(server, shots):
    t0 = time.monotonic()

    def phase(name):
        print(f"\n{time.monotonic() - t0:6.1f} s  {name}", end="")

    with sync_api.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS, headless=True)
        try:
            page, js_errors = new_page(browser)  # 1280×800; each study's chart is scrolled into view for its picture
            page.goto(server, wait_until="domcontentloaded")
            settle(page, timeout=60_000)
            start = control(page, "Start")
            pause = control(page, "Pause")
            start.click()
            wait_until(page, lambda: (progress_step(page) or 0) >= 60, "60 steps of training", timeout=120)
            # pause while the first two studies run: the demo preset's 300 steps would be over before the
            # flip study, which needs a lane that is still training (and the studies get the CPU to themselves)
            pause.click()
            start.wait_for(state="visible")
            wait_until(page, start.is_enabled, "the pause")
            settle(page)
            assert_no_failure(page, "training")
            show_view(page, "Experiments")
            assert_no_failure(page, "Experiments")

            phase("the learning-rate race")
            pick_study(page, "Learning-rate race")
            button_starting(page, "Run the race").click()
            wait_for_plots(
                page,
                lambda c: (
                    plot_titled("Learning-rate race")(c) is not None
                    and len(plot_titled("Learning-rate race")(c)["traces"]) > 0
                ),
                "the race's chart",
                timeout=120,
            )
            page.locator("[data-testid='stDataFrame']").first.wait_for()  # the race's table
            settle(page)
            assert_no_failure(page, "the race")
            shoot_last_chart(page, shots / "experiments-race.png")

            phase("batch against running statistics")
            pick_study(page, "Batch vs running statistics")
            button_starting(page, "Test ").click()
            wait_for_plots(
                page,
                has_points("Batch statistics against running statistics"),
                "the batch-statistics chart",
                timeout=90,
            )
            settle(page)
            assert_no_failure(page, "batch statistics")
            shoot_last_chart(page, shots / "experiments-batchstats.png")

            phase("BN switched off and on in a training lane")
            pick_study(page, "Flip BN on a trained network")
            before = current_step(page)
            start.click()
            wait_until(page, lambda: (progress_step(page) or 0) >= before + 10, "training to resume")
            button_starting(page, "Switch BN off in").click()
            button_starting(page, "Switch BN back on in").wait_for()
            flipped = current_step(page)
            # training goes on without BN in that lane: wait for a few validation points after the switch
            wait_until(page, lambda: (progress_step(page) or 0) >= flipped + 60, "60 steps without BN")
            settle(page)
            assert_no_failure(page, "BN switched off")
            shoot_last_chart(page, shots / "experiments-flip.png")
            button_starting(page, "Switch BN back on in").click()
            button_starting(page, "Switch BN off in").wait_for()
            settle(page)
            assert_no_failure(page, "BN switched back on")

            phase("BN recomputed, and BN across devices")
            pick_study(page, "Recompute statistics")  # its page can take long to draw on a loaded machine
            button_starting(page, "Recompute B's statistics").click(timeout=90_000)
            page.get_by_text(re.compile(r"after recomputing over [\d,]+ batches")).wait_for(timeout=60_000)
            assert_no_failure(page, "statistics recomputed")
            pick_study(page, "BN across devices")
            button_starting(page, "Run it").click()
            wait_for_plots(
                page,
                lambda c: (
                    plot_titled("Test accuracy after the same steps")(c) is not None
                    and [t["n"] for t in plot_titled("Test accuracy after the same steps")(c)["traces"]] == [7, 7]
                ),
                "both modes at k = 1 to 64",
                timeout=240,
            )
            settle(page)
            assert_no_failure(page, "BN across devices")
            shoot_last_chart(page, shots / "experiments-devices.png")

            phase("the landscape probe")
            pick_study(page, "Smoother landscape")
            button_starting(page, "Switch the landscape probe on").click()
            button_starting(page, "Switch the landscape probe off").wait_for()
            settle(page)
            wait_until(page, lambda: start.is_enabled() or pause.is_enabled(), "the restarted experiment")
            if start.is_enabled():  # the probe restarts the experiment, which then waits for Start
                start.click()
            wait_for_plots(
                page,
                lambda c: (
                    plot_titled("How smooth")(c) is not None
                    and len(plot_titled("How smooth")(c)["traces"]) >= 4
                    and all(t["n"] >= 3 for t in plot_titled("How smooth")(c)["traces"])
                ),
                "three landscape measurements per lane",
                timeout=90,
            )
            settle(page)
            assert_no_failure(page, "the landscape probe")
            shoot_last_chart(page, shots / "experiments-landscape.png")
            assert not js_errors, js_errors
            phase("done\n")
        finally:
            browser.close()


# ----------------------------------------------------------------------------------------- a lesson at 1280×800
TRUNCATED_JS = """() => [...document.querySelectorAll(
    '[data-testid="stMain"] button, [data-testid="stSidebar"] button')]
  .filter(b => b.offsetParent !== null && b.innerText.trim() && b.getBoundingClientRect().left >= 0)
  .filter(b => [...b.querySelectorAll('p, span, div')].some(e => e.scrollWidth > e.clientWidth + 1)
               || b.scrollWidth > b.clientWidth + 1)
  .map(b => b.innerText.trim())"""
LESSON = "/?epochs=1&lr=0.3&activation=relu&bn0=true&impl0=torch&view=Gradients&position=bn2"


def projector_page(browser):
    page = browser.new_page(viewport={"width": 1280, "height": 800})
    page.set_default_timeout(30_000)
    js_errors = []
    page.on("pageerror", lambda e: js_errors.append(str(e)))
    return page, js_errors


def run_id(page):
    return re.search(r"[?&]run=([^&]+)", page.url).group(1)


def watch_link(page):
    """The watch link the share panel gives (opened if it is closed): ``?watch=<watch id>``, not the run's key."""
    share = page.get_by_role("switch", name="Share with the class")
    if not share.is_checked():
        page.locator("label", has=share).click()
    code = page.locator("[data-testid='stCode']").filter(has_text="?watch=").first
    code.wait_for()
    return code.inner_text().strip()


def test_a_lesson_at_projector_size_links_flips_studies_and_a_class_that_watches(server, shots):
    with sync_api.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS, headless=True)
        try:
            page, js_errors = projector_page(browser)
            # a lesson link opens exactly its set-up, on a fresh run
            page.goto(server + LESSON, wait_until="domcontentloaded")
            settle(page, timeout=60_000)
            control(page, "Start").wait_for()
            assert_no_failure(page, "the lesson link")
            view = page.get_by_role("radiogroup", name="View")
            sync_api.expect(view.get_by_role("radio", name="Gradients", exact=True)).to_be_checked()
            sync_api.expect(page.get_by_role("switch", name="A · BN")).to_be_checked()
            running = page.get_by_text(re.compile(r"^Running: batch 128 · 1 epoch · lr 0.3 · seed 0 .* · relu"))
            sync_api.expect(running).to_be_visible()
            # every label fits its button at 1280×800, with the sidebar open
            assert page.evaluate(TRUNCATED_JS) == []
            # a second click on the active view keeps it
            view.get_by_role("radio", name="Gradients", exact=True).click()
            settle(page)
            sync_api.expect(view.get_by_role("radio", name="Gradients", exact=True)).to_be_checked()
            # keys 1-7 pick the views
            page.keyboard.press("3")
            sync_api.expect(view.get_by_role("radio", name="BN state", exact=True)).to_be_checked()
            page.keyboard.press("1")
            sync_api.expect(view.get_by_role("radio", name="Training", exact=True)).to_be_checked()
            settle(page)
            control(page, "Start").click()
            wait_for_plots(
                page,
                lambda c: (
                    loss_plot(c) is not None and "A · BN torch · relu" in [t["name"] for t in loss_plot(c)["traces"]]
                ),
                "lane A with torch's BN and ReLU, from the link",
            )
            # the run finishes (100 steps): Start is off, and more epochs are offered
            wait_until(
                page,
                lambda: "finished" in page.locator("[data-testid='stProgress']").first.inner_text(),
                "the end of the run",
                timeout=180,
            )
            settle(page)
            sync_api.expect(control(page, "Start")).to_be_disabled()
            sync_api.expect(button_starting(page, "Train 1 more epoch")).to_be_visible()
            key = run_id(page)
            watching = watch_link(page)
            assert key not in watching  # the public watch id is not the run's control key

            # on a finished run, switching BN off measures the accuracy at once
            show_view(page, "Experiments")
            pick_study(page, "Flip BN on a trained network")
            button_starting(page, "Switch BN off in B").click()
            result = page.get_by_text(
                re.compile(r"validation accuracy [\d.]+% with BN on, [\d.]+% with BN switched off")
            )
            result.wait_for()
            on, off = map(float, re.findall(r"([\d.]+)%", result.inner_text())[:2])
            assert on != off, result.inner_text()
            page.screenshot(path=str(shots / "lesson-flip-finished.png"))

            # a study's progress moves while training is idle, and Stop says so at once
            pick_study(page, "Learning-rate race")
            button_starting(page, "Run the race").click()
            bar = page.locator("[data-testid='stProgress']").filter(has_text="running")

            def percent():
                m = re.search(r"running… (\d+)%", bar.first.inner_text()) if bar.count() else None
                return int(m.group(1)) if m else None

            first = wait_until(page, lambda: [percent()] if percent() is not None else None, "the race's progress")[0]
            wait_until(page, lambda: (percent() or 0) > first, "the race's progress to move", timeout=120)
            page.get_by_role("button", name="Stop", exact=True).click()
            page.get_by_text(re.compile(r"^Stopped at \d+%")).wait_for(timeout=10_000)
            assert_no_failure(page, "the stopped race")

            # the class watches: the same run, read-only, at the same size
            viewer, viewer_errors = projector_page(browser)
            viewer.goto(f"{server}/?watch={watching.rsplit('=', 1)[1]}", wait_until="domcontentloaded")
            settle(viewer, timeout=60_000)
            # the Training charts as static SVG (svg_chart.py): both lanes' curves, and no Plotly chart drawn
            loss_svg = viewer.locator("svg[data-chart='Training loss per step'] g[data-trace]")
            wait_until(viewer, lambda: loss_svg.count() == 2, "the run's two curves on the viewer page")
            assert viewer.locator("svg[data-chart='Accuracy'] path.line").count() >= 2
            assert viewer.locator(".js-plotly-plot").count() == 0
            for label in ("Start", "Pause", "Step", "Reset", "Train 1 more epoch", "Apply and restart"):
                assert control(viewer, label).count() == 0, label
            assert viewer.get_by_role("switch").count() == 0  # no lane toggles, no sidebar controls
            assert_no_failure(viewer, "the viewer page")
            viewer.screenshot(path=str(shots / "viewer.png"))
            assert not viewer_errors, viewer_errors

            # presenter mode: sidebar closed, Start and the first chart without scrolling (tests/test_browser_layout.py
            # measures every view)
            page.goto(f"{server}/?run={key}&present=1&view=Training", wait_until="domcontentloaded")
            settle(page, timeout=60_000)
            control(page, "Start").wait_for()
            sync_api.expect(page.locator("[data-testid='stSidebar']")).to_have_attribute("data-collapsed", "true")
            page.locator("[data-testid='stPlotlyChart']").first.wait_for()
            for element in (control(page, "Reset"), page.locator("[data-testid='stPlotlyChart']").first):
                box = element.bounding_box()
                assert box is not None and box["y"] + box["height"] <= 800, box
            assert page.evaluate(TRUNCATED_JS) == []
            assert_no_failure(page, "presenter mode")
            page.screenshot(path=str(shots / "presenter.png"))
            assert not js_errors, js_errors
        finally:
            browser.close()


def test_an_exercise_and_groupnorm_against_bn_at_batch_2_in_a_browser(server, shots):
    with sync_api.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS, headless=True)
        try:
            page, js_errors = projector_page(browser)
            # an exercise: nothing runs before a prediction; the reveal sits beside the prediction
            page.goto(f"{server}/?view=Exercises&exercise=small", wait_until="domcontentloaded")
            settle(page, timeout=60_000)
            page.get_by_role("heading", name="Batches of 2 images").wait_for()
            assert button_starting(page, "Run it").count() == 0
            page.get_by_text("GroupNorm", exact=True).click()
            button_starting(page, "Run it").click()
            page.get_by_text(re.compile(r"^You predicted")).wait_for(timeout=240_000)
            reveal = page.get_by_text(re.compile(r"^Eval mode \(what a test sees\): BN [\d.]+%, GroupNorm [\d.]+%"))
            sync_api.expect(reveal).to_be_visible()
            wait_for_plots(page, has_points("Validation accuracy at the end"), "the exercise's chart")
            assert_no_failure(page, "the exercise")
            page.screenshot(path=str(shots / "exercise-small-batches.png"), full_page=True)

            # the same comparison live: lane A GroupNorm, lane B BN, batches of 2, eval against train mode
            page.goto(
                f"{server}/?batch_size=2&lr=0.01&activation=relu&bn0=true&impl0=groupnorm&bn1=true&impl1=scratch"
                "&view=BN%20state",
                wait_until="domcontentloaded",
            )
            settle(page, timeout=60_000)
            running = page.get_by_text(re.compile(r"^Running: batch 2 · .* · relu"))
            sync_api.expect(running).to_be_visible()
            control(page, "Start").click()
            wait_for_plots(
                page,
                lambda c: any(
                    p["title"].startswith("Validation accuracy: running statistics")
                    and any(t["n"] >= 3 for t in p["traces"])
                    for p in c
                ),
                "three validation checks of both modes",
                timeout=180,
            )
            control(page, "Pause").click()
            settle(page)
            page.get_by_text(re.compile(r"^At step [\d,]+: A: [\d.]+% in both modes; B: ")).wait_for()
            assert_no_failure(page, "GroupNorm against BN at batch 2")
            shoot_last_chart(page, shots / "groupnorm-vs-bn-batch2.png")
            assert not js_errors, js_errors
        finally:
            browser.close()


@pytest.mark.slow
def test_the_shortcuts_work_whatever_was_clicked_last(server):
    """A mouse click leaves the focus on what it clicked, and Streamlit's shortcuts are silent while an input has
    it: after clicking the *Share with the class* toggle, Space toggled it again instead of starting."""
    with sync_api.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS, headless=True)
        try:
            page, js_errors = new_page(browser)
            page.goto(server, wait_until="domcontentloaded")
            settle(page, timeout=60_000)
            control(page, "Start").wait_for()
            share = page.get_by_role("switch", name="Share with the class")
            page.locator("label", has=share).click()
            sync_api.expect(share).to_be_checked()
            settle(page)
            page.keyboard.press("Space")  # starts the run; the toggle stays on
            sync_api.expect(control(page, "Pause")).to_be_enabled()
            sync_api.expect(share).to_be_checked()
            settle(page)
            page.keyboard.press("Space")  # and pauses it
            sync_api.expect(control(page, "Start")).to_be_enabled()
            sync_api.expect(share).to_be_checked()
            settle(page)
            log_scale = page.get_by_role("switch", name="Log scale for loss")  # on by default
            page.locator("label", has=log_scale).click()
            sync_api.expect(log_scale).not_to_be_checked()
            settle(page)
            before = current_step(page)
            page.keyboard.press("s")  # one step of every lane
            wait_until(page, lambda: progress_step(page) == before + 1, f"step {before + 1} after S")
            sync_api.expect(log_scale).not_to_be_checked()
            assert_no_failure(page, "the shortcuts")
            assert not js_errors, js_errors
        finally:
            browser.close()
