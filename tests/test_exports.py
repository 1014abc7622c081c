"""Exports a teacher can post: the metrics CSV with the per-epoch test columns, and the run as one web page.

The CSV is checked on a short run trained here (random images, 8 steps an epoch). The web page is built once
for the shipped run (assets/chapter-run/experiment.npz) and checked as a file (self-contained, escaped, small)
and in Debian's chromium with the network blocked; its screenshot goes to /tmp/bnviz-webpage.png.
"""

import csv
import io
import json
import os
import re
from html.parser import HTMLParser
from pathlib import Path
from types import SimpleNamespace

import pytest
from conftest import missing, tiny_dataset
from plotly.offline import get_plotlyjs

from bnviz.live.engine import Experiment
from bnviz.live.experiment_file import metrics_csv
from bnviz.live.replay import Recording
from bnviz.live.snapshot import LaneSpec, Settings
from bnviz.pictures.web_page import charts_of, run_page

ROOT = Path(__file__).resolve().parents[1]
SHIPPED = ROOT / "assets" / "chapter-run" / "experiment.npz"
CHROMIUM = Path("/usr/bin/chromium")
SCREENSHOT = Path("/tmp/bnviz-webpage.png")
EVIL = "<img src=x onerror=alert(1)>"
CSV_COLUMNS = "lane step epoch lr train_loss train_acc val_loss val_acc test_loss test_acc event".split()


@pytest.fixture(scope="module")
def short_run():
    """The final snapshot of a two-epoch run of two lanes (8 steps an epoch, validation every 3 steps)."""
    settings = Settings(batch_size=32, epochs=2, probe_every=2, val_every=3, val_size=50, dist_capacity=4, device="cpu")
    with Experiment(tiny_dataset(), settings, (LaneSpec("none"), LaneSpec("scratch")), name="test-exports") as exp:
        exp.start()
        assert exp.wait(timeout=120)
        snap = exp.snapshot()
        header = exp.header()
    assert snap.status == "finished"
    return SimpleNamespace(snap=snap, header=header)


@pytest.fixture(scope="module")
def shipped():
    if not SHIPPED.is_file():
        missing(f"the shipped run {SHIPPED} is not in this checkout")
    return Recording.load(SHIPPED)


@pytest.fixture(scope="module")
def page_file(shipped, tmp_path_factory):
    """The shipped run's web page, as the dashboard's download button saves it."""
    path = tmp_path_factory.mktemp("page") / "run.html"
    path.write_text(run_page(shipped), encoding="utf-8")
    return path


@pytest.fixture(scope="module")
def page_html(page_file):
    return page_file.read_text(encoding="utf-8")


def page_data(text):
    """The frames the page's script draws from: {labels, steps, charts}."""
    return json.loads(re.search(r'<script type="application/json" id="bnviz-data">(.*?)</script>', text, re.S)[1])


class Tags(HTMLParser):
    """Every start tag with its attributes, and the text inside each <script> (the parser does not look into it)."""

    def __init__(self, text):
        super().__init__()
        self.tags, self.scripts, self._in_script = [], [], False
        self.feed(text)

    def handle_starttag(self, tag, attrs):
        self.tags.append((tag, dict(attrs)))
        self._in_script = tag == "script"
        if self._in_script:
            self.scripts.append("")

    def handle_endtag(self, tag):
        self._in_script = self._in_script and tag != "script"

    def handle_data(self, data):
        if self._in_script:
            self.scripts[-1] += data


# ------------------------------------------------------------------------------------------------- CSV
def test_csv_has_the_test_set_on_the_step_each_epoch_ended(short_run):
    lanes = short_run.snap.lanes
    rows = list(csv.reader(io.StringIO(metrics_csv([l.label for l in lanes], [l.tables for l in lanes]))))
    assert rows[0] == CSV_COLUMNS
    for lane in lanes:
        mine = [dict(zip(CSV_COLUMNS, r)) for r in rows[1:] if r[0] == lane.label]
        assert [int(r["step"]) for r in mine] == list(range(1, 17))  # every step, as before
        epochs = lane.tables["epochs"]
        ended = dict(zip(epochs["step"].astype(int).tolist(), zip(epochs["val_loss"], epochs["val_acc"])))
        assert sorted(ended) == [8, 16]  # 256 images / 32 a batch, two epochs
        for r in mine:
            step = int(r["step"])
            if step in ended:
                loss, acc = ended[step]
                assert float(r["test_loss"]) == pytest.approx(loss, rel=1e-5)
                assert float(r["test_acc"]) == pytest.approx(acc, rel=1e-5)
                assert int(r["epoch"]) == [8, 16].index(step) + 1
            else:
                assert r["test_loss"] == "" and r["test_acc"] == ""
        val_steps = [int(r["step"]) for r in mine if r["val_acc"] != ""]
        assert val_steps == lane.tables["val"]["step"].astype(int).tolist()  # the validation columns unchanged


def test_csv_test_columns_are_the_full_test_set_not_the_subset(short_run):
    lane = short_run.snap.lanes[1]
    rows = list(csv.DictReader(io.StringIO(metrics_csv([lane.label], [lane.tables]))))
    last = rows[-1]  # step 16: the end of epoch 2, not a validation step (every 3 steps)
    assert last["step"] == "16" and last["val_acc"] == "" and last["test_acc"] != ""
    correct = float(last["test_acc"]) * 200  # of all 200 test images, not of the 50 in the validation subset
    assert correct == pytest.approx(round(correct), abs=1e-3)


# -------------------------------------------------------------------------------------- the web page
@pytest.mark.slow  # child processes or large memory: several seconds
def test_page_is_one_file_that_needs_nothing_from_outside(page_html):
    tags = Tags(page_html)
    linked = [(tag, attrs) for tag, attrs in tags.tags if {"src", "href"} & set(attrs)]
    assert not linked, f"the page links to other files: {linked}"
    assert not re.search(r"<script[^>]*\bsrc\s*=", page_html, re.I)
    assert not any("http" in (v or "") for _, attrs in tags.tags for k, v in attrs.items() if k == "src")
    assert get_plotlyjs() in tags.scripts  # Plotly's library, inline, whole
    assert "cdn.plot.ly" not in "".join(s for s in tags.scripts if s != get_plotlyjs())


def test_page_is_under_ten_megabytes(page_file):
    assert page_file.stat().st_size < 10_000_000


def test_page_slider_covers_the_run_from_first_to_last_step(page_html, shipped):
    data = page_data(page_html)
    assert 20 <= len(data["steps"]) <= 40
    assert data["steps"][0] == 1 and data["steps"][-1] == shipped.last_step == 4690
    assert data["steps"] == sorted(set(data["steps"]))
    assert len(data["labels"]) == len(data["steps"])
    assert data["labels"][-1] == "step 4,690 of 4,690 · epoch 10"
    slider = next(attrs for tag, attrs in Tags(page_html).tags if attrs.get("id") == "step-slider")
    assert slider["type"] == "range" and int(slider["min"]) == 0 and int(slider["max"]) == len(data["steps"]) - 1
    for chart in data["charts"]:  # a chart of one moment has a frame per step; one over steps is cut in the page
        assert len(chart["frames"]) == (1 if chart["timeline"] else len(data["steps"]))


def test_page_holds_the_main_charts_with_a_sentence_each(page_html, shipped):
    charts = charts_of(shipped)
    titles = [c["frames"][-1]["layout"]["title"]["text"] for c in page_data(page_html)["charts"]]
    assert titles[:2] == ["Training loss per step", "Accuracy"]
    assert [t.split(" ·")[0] for t in titles[2:6]] == ["bn1", "bn2", "bn3", "bn4"]
    assert titles[6] == "Gradient norm per layer"
    assert titles[7].startswith("B · BN scratch: bn1 running statistics")
    assert len(charts) == len(titles) == page_html.count('<div class="chart"') == 8
    for c in charts:
        assert c.caption in page_html.replace("&#x27;", "'")
    assert "<th>learning rate</th><td>0.1</td>" in page_html
    assert "<td>A · BN off</td>" in page_html and "<td>86.4%</td>" in page_html  # B's last test accuracy


def test_page_escapes_what_a_user_wrote(shipped):
    meta = {**shipped.meta, "name": EVIL, "device": EVIL}
    text = run_page(Recording(meta, shipped.lane_tables), title=EVIL, frames=3)
    assert EVIL not in text and "<img" not in text
    assert text.count("&lt;img src=x onerror=alert(1)&gt;") >= 4  # <title>, <h1>, the lead, the settings table


def test_page_of_a_snapshot_and_of_a_live_experiment(short_run):
    from_snapshot = run_page(short_run.snap, frames=4)
    assert page_data(from_snapshot)["steps"] == [1, 6, 11, 16]
    assert "test-exports" not in from_snapshot  # a bare snapshot does not know the run's name
    live = SimpleNamespace(snapshot=lambda: short_run.snap, header=lambda: short_run.header)
    assert "test-exports" in run_page(live, frames=4)


def test_page_of_a_run_not_started_yet():
    with Experiment(tiny_dataset(), Settings(batch_size=32, device="cpu"), name="test-exports-idle") as exp:
        data = page_data(run_page(exp))
    assert data["steps"] == [0] and len(data["charts"]) == 8


# ------------------------------------------------------------------------------------ in a browser
CHARTS_JS = """() => [...document.querySelectorAll('.js-plotly-plot')].map(el => ({
  title: (el.layout.title && el.layout.title.text) || '',
  points: el._fullData.filter(t => t.visible !== false)
                      .reduce((n, t) => n + (t.x ? t.x.length : 0) * (t.y && t.y.length ? 1 : 0), 0),
}))"""


@pytest.mark.browser
def test_page_in_chromium_offline(page_file, shipped):
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        missing("the playwright package is not installed (make install-dev)")
    if not (CHROMIUM.is_file() and os.access(CHROMIUM, os.X_OK)):
        missing(f"{CHROMIUM} is not installed (apt-get install chromium)")
    errors, outside = [], []

    def offline(route):
        if route.request.url.startswith("file:"):
            route.continue_()
        else:
            outside.append(route.request.url)
            route.abort()

    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=str(CHROMIUM), args=["--headless", "--no-sandbox", "--disable-gpu"])
        try:
            page = browser.new_page(viewport={"width": 1280, "height": 800})
            page.on("pageerror", lambda e: errors.append(str(e)))
            page.route("**/*", offline)
            page.goto(page_file.as_uri())
            page.wait_for_selector("body[data-ready=yes]", timeout=60_000)
            page.screenshot(path=str(SCREENSHOT))

            at_end = page.evaluate(CHARTS_JS)
            assert len(at_end) == page.locator("div.chart").count() == len(charts_of(shipped)) == 8
            assert all(c["points"] > 0 for c in at_end), at_end  # no empty chart
            assert page.locator("#step-label").inner_text() == "step 4,690 of 4,690 · epoch 10"

            steps = page_data(page_file.read_text(encoding="utf-8"))["steps"]
            page.locator("#step-slider").focus()
            page.keyboard.press("Home")  # the slider to the run's first step
            page.wait_for_selector('body[data-step="1"]')
            assert page.locator("#step-label").inner_text() == "step 1 of 4,690 · epoch 1"
            at_start = page.evaluate(CHARTS_JS)
            assert at_start[0]["points"] < at_end[0]["points"]  # the loss curve is cut at step 1
            assert "(step 1)" in at_start[2]["title"] and "(step 4,681)" in at_end[2]["title"]  # bn1's histograms

            for _ in range(15):
                page.keyboard.press("ArrowRight")  # half way: the curves grow back
            page.wait_for_selector(f'body[data-step="{steps[15]}"]')
            middle = page.evaluate(CHARTS_JS)
            assert at_start[0]["points"] < middle[0]["points"] < at_end[0]["points"]
            assert middle[2]["title"] not in (at_start[2]["title"], at_end[2]["title"])

            page.locator("#play").click()  # Play goes on from here, a frame at a time
            page.wait_for_function(f"+document.body.dataset.step > {steps[15]}", timeout=10_000)
            page.locator("#play").click()  # and pauses
            assert page.locator("#play").inner_text().endswith("Play")
        finally:
            browser.close()
    assert not errors, errors
    assert not outside, f"the page asked the network for {outside}"
