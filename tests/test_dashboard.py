"""The Streamlit page, driven headless by streamlit.testing.v1.AppTest.

The page trains on random images here (bnviz.data.fashion_mnist.load_fashion_mnist is replaced), so these tests need
neither the real data nor a browser. ``run_every`` never fires under AppTest: a test waits for the
worker, then calls ``at.run()`` again. Every experiment, registry and janitor the page creates is
tracked and stopped after each test, and a test fails if it leaves a ``bnviz-*`` thread behind.
"""

import base64
import json
import os
import shutil
import signal
import threading
import time
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import streamlit as st
import torch
from streamlit.runtime.media_file_manager import MediaFileManager
from streamlit.testing.v1 import AppTest

import bnviz.data.fashion_mnist
import bnviz.live.engine
import bnviz.live.experiment_process
import bnviz.live.jobs
import bnviz.live.registry
from bnviz.live.experiment_file import RecordingError, experiment_bytes, load_experiment, metrics_csv
from bnviz.live.replay import Recording
from bnviz.pictures.figures import LANE_COLORS
from ui.views import VIEWS
from ui.views import training as training_view

DASHBOARD = Path(__file__).resolve().parents[1] / "dashboard.py"
CSV_HEADER = "lane,step,epoch,lr,train_loss,train_acc,val_loss,val_acc,test_loss,test_acc,event"


# ----------------------------------------------------------------------------------------- fixtures
@pytest.fixture(scope="module")
def synthetic():
    """Random images shaped like the class-demo subset: 12,800 training images (100 steps an epoch)."""
    g = torch.Generator().manual_seed(0)
    return bnviz.data.fashion_mnist.FashionMNISTData(
        torch.randint(0, 256, (12_800, 28, 28), dtype=torch.uint8, generator=g),
        torch.arange(12_800) % 10,
        torch.randint(0, 256, (1_000, 28, 28), dtype=torch.uint8, generator=g),
        torch.arange(1_000) % 10,
        "synthetic",
    )


@pytest.fixture(autouse=True)
def owned(monkeypatch):
    """Track what the page starts (registries, janitors, experiments, deferred downloads); stop it all after."""
    tracked = SimpleNamespace(registries=[], janitors=[], experiments=[], jobs=[], downloads={})
    before = set(threading.enumerate())

    def tracking(cls, where):
        init = cls.__init__

        def __init__(self, *args, **kwargs):
            init(self, *args, **kwargs)
            where.append(self)

        monkeypatch.setattr(cls, "__init__", __init__)

    tracking(bnviz.live.registry.Registry, tracked.registries)
    tracking(bnviz.live.registry.Janitor, tracked.janitors)
    tracking(bnviz.live.engine.Experiment, tracked.experiments)
    tracking(bnviz.live.experiment_process.ExperimentProcess, tracked.experiments)
    tracking(bnviz.live.jobs.Job, tracked.jobs)

    add_deferred = MediaFileManager.add_deferred

    def capture(self, fn, *args, file_name=None, **kwargs):
        tracked.downloads[file_name] = fn
        return add_deferred(self, fn, *args, file_name=file_name, **kwargs)

    monkeypatch.setattr(MediaFileManager, "add_deferred", capture)

    st.cache_resource.clear()  # a fresh server() registry and dataset() for this test
    yield tracked
    for registry in tracked.registries:
        registry.close()
    for exp in tracked.experiments:
        exp.stop(timeout=10)
    for job in tracked.jobs:
        job.stop(timeout=30)
    for janitor in tracked.janitors:
        janitor.halt()
        janitor.join(10)
    st.cache_resource.clear()
    leaked = [t.name for t in threading.enumerate() if t not in before and t.name.startswith("bnviz-") and t.is_alive()]
    assert not leaked, f"threads left running: {leaked}"


class Page:
    """An AppTest of dashboard.py and what it is showing."""

    def __init__(self, tracked, run_key=None, **query):
        self.tracked = tracked
        self.at = AppTest.from_file(str(DASHBOARD), default_timeout=30)
        if run_key:
            self.at.query_params["run"] = run_key
        for k, v in query.items():
            self.at.query_params[k] = v
        self.run()

    def run(self):
        self.at.run()
        return self

    def assert_clean(self):
        """No traceback and no error message anywhere on the page."""
        assert not self.at.exception, [e.value for e in self.at.exception]
        assert not self.at.error, [e.value for e in self.at.error]

    def button(self, label):
        matches = [b for b in self.at.button if b.label == label]
        assert len(matches) == 1, f"{label!r} among {[b.label for b in self.at.button]}"
        return matches[0]

    def has_button(self, label):
        """Exactly one button with this label is on the page."""
        return sum(b.label == label for b in self.at.button) == 1

    def click(self, label):
        self.button(label).click()
        return self.run()

    @property
    def key(self):
        return self.at.query_params["run"]

    @property
    def registry(self):
        assert len(self.tracked.registries) == 1, "one registry per server"
        return self.tracked.registries[0]

    @property
    def exp(self):
        exp = self.registry.get(self.key)
        assert exp is not None
        return exp

    def steps(self):
        return [lane.step for lane in self.exp.snapshot().lanes]

    def charts(self):
        return [json.loads(c.proto.spec) for c in self.at.get("plotly_chart")]

    def chart(self, title_start):
        found = [c for c in self.charts() if title(c).startswith(title_start)]
        assert len(found) == 1, f"{title_start!r} among {[title(c) for c in self.charts()]}"
        return found[0]

    def progress_text(self):
        return self.at.get("progress")[0].proto.text

    def texts(self, kind):
        return [e.value for e in getattr(self.at, kind)]

    def start_and_pause_after(self, steps):
        """Start, let every lane train at least ``steps`` steps, pause."""
        self.click("Start")
        self.assert_clean()
        wait_until(lambda: min(self.steps()) >= steps, f"{steps} steps")
        self.click("Pause")
        self.assert_clean()
        assert self.exp.status == "paused"


@pytest.fixture
def page(owned, monkeypatch, synthetic):
    monkeypatch.setattr(bnviz.data.fashion_mnist, "load_fashion_mnist", lambda *a, **k: synthetic)
    monkeypatch.delenv("BNVIZ_MAX_TRAINING", raising=False)
    monkeypatch.delenv("BNVIZ_GRACE_S", raising=False)
    p = Page(owned)
    p.assert_clean()
    return p


def wait_until(condition, what, timeout=60):
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"gave up waiting for {what}")
        time.sleep(0.05)


def title(spec):
    t = spec["layout"].get("title", {})
    return t.get("text", "") if isinstance(t, dict) else str(t)


def values(v):
    """A trace's x or y as an array, whether Plotly sent a list or a typed array ({dtype, bdata})."""
    if isinstance(v, dict) and "bdata" in v:
        a = np.frombuffer(base64.b64decode(v["bdata"]), dtype=np.dtype(v["dtype"]))
        return a.reshape(v["shape"]) if "shape" in v and isinstance(v["shape"], list) else a
    return np.asarray(v if v is not None else [], dtype=float)


# ----------------------------------------------------------------------------------------- the page
def placeholders(page):
    """The Training view's placeholders (ui/charts.placeholder): {key: its Markdown}."""
    return {
        key: next(m.value for m in page.at.main.get("markdown") if m.value.startswith(f"**{title}**"))
        for key, title in (("loss", "Training loss per step"), ("acc", "Accuracy"))
        if any(m.value.startswith(f"**{title}**") for m in page.at.main.get("markdown"))
    }


def test_the_page_renders_idle_with_placeholders_where_the_charts_will_be(page):
    at = page.at
    assert at.title[0].value.startswith("bnviz")
    assert page.exp.status == "idle" and page.steps() == [0, 0]
    assert [l.spec.norm for l in page.exp.lanes] == ["none", "scratch"]
    assert "step 0/300" in page.progress_text() and "idle" in page.progress_text()
    assert page.charts() == []  # no Plotly chart before there is a point: the page does not wait for Plotly
    shown = placeholders(page)
    assert set(shown) == {"loss", "acc"}
    assert "Press Start: the training loss of every lane" in shown["loss"]
    assert "Press Start: every lane's training accuracy" in shown["acc"]
    assert page.button("Start").disabled is False and page.button("Pause").disabled is True
    assert [t.label for t in at.toggle][:2] == ["A · BN", "B · BN"]
    assert at.toggle(key="bn0").value is False and at.toggle(key="bn1").value is True
    assert len(page.registry) == 1


@pytest.mark.parametrize(
    "status, responding, error, live, says, never",
    [
        ("idle", True, None, True, "Press Start: the loss", "started"),
        ("paused", True, None, True, "Press Start: the loss", "started"),
        ("running", True, None, True, "Training has started: the loss will appear here after the first step", "Press"),
        ("error", True, "the training process died", True, "Press Reset", "Press Start"),
        ("running", False, None, True, "Press Reset", "Press Start"),
        ("idle", True, None, False, "once a lane has trained", "Press"),  # a viewer or a replay: no button
    ],
)
def test_a_placeholder_says_what_is_true_for_its_page(status, responding, error, live, says, never):
    from ui.context import ViewContext

    snap = SimpleNamespace(status=status, responding=responding, error=error)
    text = training_view.waiting(snap, ViewContext(exp=object() if live else None), "the loss")
    assert says in text and never not in text, text


def test_start_trains_both_lanes_and_the_charts_fill(page):
    page.click("Start")
    page.assert_clean()
    assert page.exp.status == "running"
    wait_until(lambda: min(page.steps()) >= 12, "12 steps")
    page.run()
    page.assert_clean()
    assert "running" in page.progress_text()
    assert placeholders(page) == {}  # the charts took their places, at the placeholders' height
    assert [c["layout"]["height"] for c in page.charts()] == [training_view.CHART_HEIGHT] * 2
    assert page.button("Start").disabled is True and page.button("Pause").disabled is False
    loss = page.chart("Training loss per step")
    assert [t["name"] for t in loss["data"]] == ["A · BN off", "B · BN scratch"]
    for trace, colour in zip(loss["data"], LANE_COLORS):
        x, y = values(trace["x"]), values(trace["y"])
        assert len(x) == len(y) >= 12
        assert np.all(np.isfinite(y)) and np.all(y > 0)
        assert trace["line"]["color"] == colour
    acc = page.chart("Accuracy")
    names = [t["name"] for t in acc["data"]]
    assert "A · BN off · validation" in names and "B · BN scratch · validation" in names  # val_every 10
    assert all(len(values(t["x"])) > 0 for t in acc["data"])
    board = next(m.value for m in page.at.markdown if "| lane |" in m.value)  # under its title, one element
    board = board[board.index("| lane |") :]
    assert [row.split(" | ")[0].strip("| ") for row in board.splitlines()[2:]] == ["A · BN off", "B · BN scratch"]


def test_pause_stops_the_steps_and_step_advances_exactly_one(page):
    page.start_and_pause_after(3)
    paused_at = page.steps()
    assert paused_at[0] == paused_at[1]  # lockstep
    time.sleep(0.5)
    assert page.steps() == paused_at, "training went on after Pause"
    assert "paused" in page.progress_text()
    assert page.button("Start").disabled is False and page.button("Pause").disabled is True
    for n in (1, 2):
        page.click("Step")
        page.assert_clean()
        assert page.steps() == [s + n for s in paused_at]
        assert page.exp.status == "paused"
    assert f"step {paused_at[0] + 2}/300" in page.progress_text()
    page.click("Start")  # and it resumes
    wait_until(lambda: min(page.steps()) > paused_at[0] + 2, "training to resume")
    assert page.exp.status == "running"


def test_turning_bn_on_in_lane_a_restarts_that_lane_only(page):
    page.start_and_pause_after(5)
    b_step = page.steps()[1]
    assert page.at.selectbox(key="impl0").disabled is True
    page.at.toggle(key="bn0").set_value(True)
    page.run()
    page.assert_clean()
    assert page.exp.lanes[0].spec.norm == "scratch"
    assert page.steps() == [0, b_step]  # lane A starts again from step 0, lane B goes on
    assert page.at.selectbox(key="impl0").disabled is False
    loss = page.chart("Training loss per step")
    assert [(t["name"], t["line"]["color"]) for t in loss["data"]] == [("B · BN scratch", LANE_COLORS[1])]
    page.at.selectbox(key="impl0").set_value("torch")
    page.run()
    page.assert_clean()
    assert page.exp.lanes[0].spec.norm == "torch"
    page.at.toggle(key="bn0").set_value(False)
    page.run()
    assert page.exp.lanes[0].spec.norm == "none"
    page.click("Step")
    assert page.steps() == [1, b_step + 1]


def test_a_lane_runs_any_normalisation_and_the_set_up_takes_small_and_skewed_batches(page):
    assert set(page.at.selectbox(key="impl1").options) >= {"GroupNorm", "LayerNorm", "BN renorm", "Noisy BN"}
    page.at.selectbox(key="impl1").set_value("groupnorm")
    page.run()
    page.assert_clean()
    assert page.exp.lanes[1].spec.norm == "groupnorm"
    page.at.selectbox(key="batch_size").set_value(2)
    page.at.selectbox(key="classes").set_value(2)
    page.click("Apply and restart")
    page.assert_clean()
    assert page.exp.settings.batch_size == 2 and page.exp.settings.classes_per_batch == 2
    assert any("batch 2 ·" in c and "2 classes a batch" in c for c in page.texts("caption"))
    page.click("Step")
    page.assert_clean()
    assert page.steps() == [1, 1]


def test_a_third_lane_can_be_added_and_removed(page):
    page.click("Step")
    page.click("+ add lane")
    page.assert_clean()
    assert [l.spec.norm for l in page.exp.lanes] == ["none", "scratch", "torch"]
    assert page.steps() == [1, 1, 0]  # the new lane starts from step 0
    assert page.at.toggle(key="bn2").value is True and page.at.selectbox(key="impl2").value == "torch"
    assert not [b for b in page.at.button if b.label == "+ add lane"]  # three is the most
    page.click("Step")
    loss = page.chart("Training loss per step")
    assert [(t["name"], t["line"]["color"]) for t in loss["data"]] == list(
        zip(["A · BN off", "B · BN scratch", "C · BN torch"], LANE_COLORS)
    )
    page.click("− remove last")
    page.assert_clean()
    assert [l.spec.norm for l in page.exp.lanes] == ["none", "scratch"]
    assert len(page.chart("Training loss per step")["data"]) == 2


def test_reset_goes_back_to_step_zero(page):
    page.click("Start")
    wait_until(lambda: min(page.steps()) >= 3, "3 steps")
    page.click("Reset")
    page.assert_clean()
    assert page.exp.status == "idle" and page.steps() == [0, 0]
    assert "step 0/300" in page.progress_text()
    assert all(not c["data"] for c in page.charts())
    time.sleep(0.3)
    assert page.steps() == [0, 0]  # and it stays there until Start


EXPECTED_CHARTS = {
    "Training": ["Training loss per step", "Accuracy"],
    "Inside BN": ["bn1 · after conv1", "bn1: percentiles", "A · BN off: bn1", "B · BN scratch: bn1"],
    "BN state": [
        "B · BN scratch: bn1 running statistics",
        "B · BN scratch: bn1 batch vs running",
        "B · BN scratch: bn1 gamma and beta",
        "Validation accuracy: running statistics (eval) vs batch statistics (train mode)",
    ],
    "Gradients": ["Gradient norm per layer", "Update-to-weight ratio", "Saturated units"],
    "Experiments": [],  # the first study draws nothing until it is run
    "Lesson": ["BN scratch at bn1 (after conv1): one number and shade per set of statistics"],
    "Story": [],  # a question first: the chart comes with the reveal
    "Exercises": [],  # a prediction first: nothing runs, nothing is drawn before it
}


def show(page, view):
    page.at.segmented_control(key="view").set_value(view)
    page.run()
    page.assert_clean()
    assert page.at.session_state["view"] == view


def test_every_view_renders_before_and_during_training(page):
    for view in VIEWS:  # nothing recorded yet
        show(page, view)
        titles = [title(c) for c in page.charts()]
        if view == "Training":  # placeholders instead of its two empty charts
            assert titles == [] and set(placeholders(page)) == {"loss", "acc"}
            continue
        assert len(titles) == len(EXPECTED_CHARTS[view]), (view, titles)
        if view != "Lesson":  # the Lesson's picture is of the layer, not of the run
            assert all(not c["data"] for c in page.charts()), view
    page.start_and_pause_after(12)
    for view in VIEWS:
        show(page, view)
        titles = [title(c) for c in page.charts()]
        assert len(titles) == len(EXPECTED_CHARTS[view]), (view, titles)
        for start, spec in zip(EXPECTED_CHARTS[view], page.charts()):
            assert title(spec).startswith(start), (view, title(spec))
            assert spec["data"], f"{view}: {title(spec)} is empty"
    show(page, "Lesson")
    assert "def batch_norm(" in page.at.code[0].value and "def normalize(" in page.at.code[0].value  # what trains
    assert page.at.latex and "gamma" in page.at.latex[0].value
    show(page, "Inside BN")
    page.at.segmented_control(key="position").set_value("bn3")
    page.run()
    page.assert_clean()
    hist = page.chart("bn3 · after fc1")
    assert len(hist["data"]) == 6 and all(t["type"] == "bar" for t in hist["data"])
    assert all(values(t["y"]).sum() > 0 for t in hist["data"])


def test_the_studies_render_and_bn_can_be_flipped_off_in_a_trained_lane(page):
    page.start_and_pause_after(12)
    show(page, "Experiments")
    studies = page.at.radio(key="study").options
    assert len(studies) >= 4
    for study in studies:
        page.at.radio(key="study").set_value(study)
        page.run()
        page.assert_clean()
    flip = next(s for s in studies if s.startswith("Flip BN"))
    page.at.radio(key="study").set_value(flip)
    page.run()
    page.click("Switch BN off in B · BN scratch")
    page.assert_clean()
    assert page.exp.snapshot().lanes[1].bn_bypassed
    assert page.has_button("Switch BN back on in B · BN scratch")
    assert page.chart("Accuracy")["data"]
    page.click("Switch BN back on in B · BN scratch")
    assert not page.exp.snapshot().lanes[1].bn_bypassed
    # PreciseBN: the statistics recomputed, the accuracy before and after said, as recorded
    page.at.radio(key="study").set_value("Recompute statistics")
    page.run()
    rows = len(page.exp.snapshot().lanes[1].tables["val"]["step"])
    page.click(next(b.label for b in page.at.button if b.label.startswith("Recompute B's statistics")))
    page.assert_clean()
    val = page.exp.snapshot().lanes[1].tables["val"]
    assert len(val["step"]) == rows + 1
    said = next(t for t in page.texts("markdown") if "after recomputing over" in t)
    assert f"to {val['val_acc'][-1]:.1%}" in said and f"it is {val['val_acc_batch'][-1]:.1%}" in said
    assert not page.tracked.jobs  # nothing started in the background without a click


def test_the_bn_across_devices_study_runs_and_says_what_it_measured(page, monkeypatch):
    import functools

    import ui.views.experiments as experiments
    from bnviz.studies.devices_study import devices_study, devices_summary

    short = functools.partial(devices_study, ks=(1, 2), eval_size=256)
    monkeypatch.setattr(experiments, "devices_study", short)
    monkeypatch.setenv("BNVIZ_DEVICES_STEPS", "3")  # the page passes steps=$BNVIZ_DEVICES_STEPS (300)
    show(page, "Experiments")
    page.at.radio(key="study").set_value("BN across devices")
    page.run()
    page.click(next(b.label for b in page.at.button if b.label.startswith("Run it")))
    job = page.registry.job(page.key, "devices")
    assert job is not None and job.wait(120) and job.error is None
    assert {mode: sorted(runs) for mode, runs in job.result.items()} == {"per device": [1, 2], "synchronised": [1, 2]}
    page.run()
    page.assert_clean()
    assert devices_summary(job.result) in page.texts("markdown")
    assert [t["name"] for t in page.chart("Test accuracy after the same steps")["data"]] == [
        "BN per device",
        "BN synchronised",
    ]


def test_the_window_and_log_scale_controls_reach_the_charts(page):
    page.start_and_pause_after(12)
    page.at.selectbox(key="window").set_value("last 200 steps")
    page.at.toggle(key="log_loss").set_value(False)
    page.run()
    page.assert_clean()
    assert page.chart("Training loss per step")["layout"]["yaxis"]["type"] == "linear"


def test_the_exports_give_csv_and_a_replayable_file(page):
    page.start_and_pause_after(10)
    page.run()
    steps = page.steps()
    labels = [b.label for b in page.at.download_button]
    assert labels == [
        "Metrics (CSV)",
        "Class predictions (CSV)",  # the class's votes on this run's questions (test_class_votes.py)
        "Metrics and probes (JSON)",
        "Whole experiment (replayable)",
        "Save as a web page",
    ]
    page_html = page.tracked.downloads["bnviz-run.html"]()
    assert page_html.lstrip().lower().startswith("<!doctype html") and "A · BN off" in page_html
    downloads = page.tracked.downloads
    assert set(downloads) >= {"bnviz-metrics.csv", "bnviz-history.json", "bnviz-experiment.npz"}
    history = json.loads(downloads["bnviz-history.json"]())
    assert set(history) == {"A · BN off", "B · BN scratch"}
    assert history["B · BN scratch"]["steps"]["step"] == list(range(1, max(steps) + 1))
    assert "bn1.gamma" in history["B · BN scratch"]["dists"] and "bn1.gamma" not in history["A · BN off"]["dists"]
    csv_text = downloads["bnviz-metrics.csv"]()
    lines = csv_text.splitlines()
    assert lines[0] == CSV_HEADER
    assert len(lines) == 1 + sum(steps)
    assert {line.split(",")[0] for line in lines[1:]} == {"A · BN off", "B · BN scratch"}
    assert any(line.split(",")[7] != "" for line in lines[1:])  # validation rows are filled in
    raw = downloads["bnviz-experiment.npz"]()
    header, lanes = load_experiment(raw)
    assert [l["norm"] for l in header["lanes"]] == ["none", "scratch"] and len(lanes) == 2
    rec = Recording.load(raw)
    assert rec.last_step == max(steps)
    snap = page.exp.snapshot()
    np.testing.assert_array_equal(
        rec.snapshot().lanes[1].tables["steps"]["train_loss"], snap.lanes[1].tables["steps"]["train_loss"]
    )
    assert metrics_csv([l.label for l in snap.lanes], [l.tables for l in snap.lanes]) == csv_text


def recorded_bytes(page, steps=10):
    page.start_and_pause_after(steps)
    return experiment_bytes(page.exp.header(), [l.tables for l in page.exp.snapshot().lanes])


def test_loading_a_saved_experiment_replays_it(page):
    raw = recorded_bytes(page)
    last = Recording.load(raw).last_step
    page.at.file_uploader(key="upload").set_value(("lecture.npz", raw, "application/octet-stream"))
    page.run()
    page.assert_clean()
    assert isinstance(page.at.session_state["recording"], Recording)
    assert any("lecture.npz" in t.value for t in page.at.title)  # the replay's title names the file
    assert page.has_button("Back to live training")
    assert not [b for b in page.at.button if b.label == "Start"]  # no live controls in a replay
    assert "replay of lecture.npz" in page.progress_text()
    loss = page.chart("Training loss per step")
    assert [len(values(t["x"])) for t in loss["data"]] == [last, last]
    slider = page.at.slider(key="replay_step")
    assert slider.value == last
    slider.set_value(4)
    page.run()
    page.assert_clean()
    assert [values(t["x"])[-1] for t in page.chart("Training loss per step")["data"]] == [4, 4]
    page.click("Play")  # under AppTest the timer never fires: each run is one tick
    page.run()
    page.assert_clean()
    assert 4 < page.at.session_state["replay_step"] <= last
    assert page.at.slider(key="replay_step").value == page.at.session_state["replay_step"]
    for view in VIEWS:
        show(page, view)
        if view != "Experiments":  # the studies need a live run: a replay says so
            assert len(page.charts()) == len(EXPECTED_CHARTS[view])


def test_back_to_live_training_leaves_the_replay(page):
    raw = recorded_bytes(page, steps=2)
    page.at.file_uploader(key="upload").set_value(("lecture.npz", raw, "application/octet-stream"))
    page.run()
    assert "recording" in page.at.session_state
    page.click("Back to live training")
    page.assert_clean()
    assert "recording" not in page.at.session_state
    assert page.has_button("Start")


SHIPPED_RUN = DASHBOARD.parent / "assets" / "chapter-run" / "experiment.npz"


def test_the_shipped_run_replays_without_training(page):
    assert SHIPPED_RUN.is_file(), "the recorded 10-epoch run is part of the repository"
    page.click("Replay the recorded 10-epoch run")
    page.assert_clean()
    rec = page.at.session_state["recording"]
    assert rec.last_step > 0 and any("shipped" in t.value for t in page.at.title)
    loss = page.chart("Training loss per step")
    assert len(loss["data"]) == len(rec.specs) and all(len(values(t["x"])) > 0 for t in loss["data"])
    assert all(len(values(t["x"])) <= 2000 for c in page.charts() for t in c["data"] if "x" in t)
    assert page.exp.status == "idle" and page.steps() == [0, 0]  # the live run was left alone
    show(page, "Inside BN")
    assert all(c["data"] for c in page.charts())
    linked = Page(page.tracked, replay="chapter")  # a link can open it: ?replay=chapter
    linked.assert_clean()
    assert any("shipped" in t.value for t in linked.at.title)


def test_loading_a_file_that_is_not_an_experiment_says_so(page):
    page.at.file_uploader(key="upload").set_value(("holiday.npz", b"PK\x03\x04 certainly not", "application/zip"))
    page.run()
    assert not page.at.exception
    errors = page.texts("error")
    assert len(errors) == 1 and "not a bnviz experiment" in errors[0]
    assert "recording" not in page.at.session_state
    assert page.has_button("Start")  # the live page goes on
    for bad in (b"", b"garbage", np.lib.format.magic(1, 0) + b"junk"):
        with pytest.raises(RecordingError):
            Recording.load(bad)


def test_a_reload_finds_its_experiment_and_a_stale_link_gets_a_fresh_one(page):
    page.click("Step")
    key = page.key
    again = Page(page.tracked, run_key=key)
    again.assert_clean()
    assert again.key == key and len(page.registry) == 1
    assert [l.step for l in page.registry.get(key).snapshot().lanes] == [1, 1]
    # a run of this server that ended (its page closed longer than the grace period)
    page.registry.grace_s, page.registry.clock = 0, lambda: float("inf")
    assert page.registry.reap() == [key]
    page.registry.grace_s, page.registry.clock = 120.0, time.monotonic
    ended = Page(page.tracked, run_key=key)
    assert not ended.at.exception and ended.key != key
    assert any("That run has ended" in t for t in ended.texts("info")), ended.texts("info")
    # a run this server never made: the server restarted since, or the link is from another one
    stale = Page(page.tracked, run_key="no-such-run")
    assert not stale.at.exception
    assert stale.key != "no-such-run" and len(page.registry) == 2
    assert any("the server has restarted since" in t for t in stale.texts("info")), stale.texts("info")


def test_a_lesson_link_s_values_that_cannot_be_used_are_named(owned, monkeypatch, synthetic):
    monkeypatch.setattr(bnviz.data.fashion_mnist, "load_fashion_mnist", lambda *a, **k: synthetic)
    p = Page(owned, epochs="101", lr="abc", view="Training")
    assert not p.at.exception
    (warning,) = p.texts("warning")
    warning = warning.replace("\\", "")  # the Markdown source escapes the link's text; the page shows it plain
    assert "epochs='101' (it must be a whole number from 1 to 100)" in warning
    assert "lr='abc' (it must be one of 0.01" in warning and "view" not in warning
    assert p.exp.settings.epochs == 3 and p.exp.settings.lr == 0.1  # the preset's values, as the page says
    # the link's text is shown as text: a value written as a Markdown link stays text
    linked = Page(owned, seed="[click](http://example.com)")
    (warning,) = linked.texts("warning")
    assert "\\[click\\]\\(http://example.com\\)" in warning
    for fine in ({"epochs": "7"}, {}):
        assert not Page(owned, **fine).texts("warning")


# ----------------------------------------------------------------------------------------- when things go wrong
@pytest.fixture
def no_data(monkeypatch, tmp_path):
    """Fashion-MNIST nowhere: an empty $BNVIZ_DATA, an empty working directory, no Debian folder, no download."""
    import torchvision.datasets

    class NoDownload:  # never reach the network from a test
        def __init__(self, *args, download=False, **kwargs):
            raise RuntimeError("no network in this test")

    (tmp_path / "empty").mkdir()
    (tmp_path / "cwd" / "data").mkdir(parents=True)  # as the download attempt leaves it: the message stays the same
    monkeypatch.setenv("BNVIZ_DATA", str(tmp_path / "empty"))
    (tmp_path / "cwd" / ".streamlit").mkdir()  # the project's settings (loopback only), as `make run` has them
    shutil.copy(DASHBOARD.parent / ".streamlit" / "config.toml", tmp_path / "cwd" / ".streamlit" / "config.toml")
    monkeypatch.chdir(tmp_path / "cwd")
    monkeypatch.setattr(bnviz.data.fashion_mnist, "DEBIAN_DIR", tmp_path / "no-debian")
    monkeypatch.setattr(torchvision.datasets, "FashionMNIST", NoDownload)


def test_without_data_the_shipped_replay_the_lesson_and_the_story_work(owned, no_data):
    """?replay=chapter needs no dataset: every view of it draws; live training says why it is missing, with the
    same message as the page without a replay, where the controls would stand."""
    page = Page(owned, replay="chapter")
    assert not page.at.exception
    (message,) = page.texts("error")
    plain = Page(owned)
    assert plain.texts("error") == [message]  # the same exact message on the page without the replay
    assert "?replay=chapter" in " ".join(plain.texts("info"))  # which offers the way to the recording
    assert any("Replay of" in t.value for t in page.at.title)
    for view in ("Lesson", "Training", "Inside BN", "Story"):
        page.at.segmented_control(key="view").set_value(view)
        page.run()
        assert not page.at.exception, (view, [e.value for e in page.at.exception])
        assert page.texts("error") == [message], view
    page.click("Reveal")  # the Story's first reveal, from the recording
    assert not page.at.exception
    assert any("validation accuracy" in t for t in page.texts("markdown"))
    assert not owned.experiments and not owned.registries  # nothing was started


def test_missing_data_shows_how_to_fix_it(owned, no_data):
    page = Page(owned)
    assert not page.at.exception
    errors = page.texts("error")
    assert len(errors) == 1
    assert "Fashion-MNIST data could not be used" in errors[0]
    assert "To fix it" in errors[0] and "dataset-fashion-mnist" in errors[0] and "BNVIZ_DATA" in errors[0]
    assert not [b for b in page.at.button if b.label == "Start"]
    assert not owned.experiments and not owned.registries  # nothing was started


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has CUDA")
def test_choosing_cuda_without_a_gpu_says_so_and_keeps_the_run(page):
    key, exp = page.key, page.exp
    page.at.selectbox(key="device").set_value("cuda")
    page.click("Apply and restart")
    assert not page.at.exception
    errors = page.texts("error")
    assert len(errors) == 1 and "CUDA" in errors[0] and "Not applied" in errors[0]
    assert page.key == key and page.exp is exp and exp.device.type == "cpu"
    assert len(page.tracked.experiments) == 1
    page.at.selectbox(key="device").set_value("cpu")
    page.click("Apply and restart")
    page.assert_clean()


def test_the_training_cap_gives_a_warning_not_a_crash(owned, monkeypatch, synthetic):
    monkeypatch.setattr(bnviz.data.fashion_mnist, "load_fashion_mnist", lambda *a, **k: synthetic)
    monkeypatch.setenv("BNVIZ_MAX_TRAINING", "0")  # read when the registry is made, after the cache was cleared
    page = Page(owned)
    page.click("Start")
    page.assert_clean()
    warnings = page.texts("warning")
    assert len(warnings) == 1 and "limit is 0" in warnings[0] and "Pause one of them" in warnings[0]
    assert page.exp.status == "idle" and page.steps() == [0, 0]


def test_step_while_running_leaves_the_buttons_right(page):
    page.click("Start")
    wait_until(lambda: min(page.steps()) >= 2, "2 steps")
    page.click("Step")
    page.assert_clean()
    assert page.exp.status == "paused"
    assert "paused" in page.progress_text()
    assert page.button("Start").disabled is False, "Start is disabled although the run is paused"
    assert page.button("Pause").disabled is True


def test_two_lanes_with_the_same_set_up_can_be_told_apart(page):
    page.at.toggle(key="bn0").set_value(True)
    page.run()
    page.click("Step")
    names = [t["name"] for t in page.chart("Training loss per step")["data"]]
    assert len(names) == 2
    show(page, "BN state")
    options = page.at.radio(key="state_lane").options
    assert len(options) == 2
    assert len(set(options)) == 2, f"the lane picker offers {options}"
    assert len(set(names)) == 2, f"the loss legend shows {names}"


# ----------------------------------------------------------------------------------------- the training process
def test_training_runs_in_its_own_process_by_default(page):
    assert isinstance(page.exp, bnviz.live.experiment_process.ExperimentProcess)
    assert page.exp._proc.pid != os.getpid() and page.exp.alive


def test_a_killed_training_process_is_a_message_and_reset_brings_it_back(page):
    page.start_and_pause_after(3)
    os.kill(page.exp._proc.pid, signal.SIGKILL)
    page.exp._proc.join(10)
    page.run()
    assert not page.at.exception
    errors = page.texts("error")
    assert len(errors) == 1 and "ended unexpectedly" in errors[0] and errors[0].count("Reset") == 1, errors
    assert len(values(page.chart("Training loss per step")["data"][1]["x"])) >= 3  # the curves stay on screen
    assert [page.button(b).disabled for b in ("Start", "Pause", "Step", "Reset")] == [True, True, True, False]
    page.click("Reset")
    page.assert_clean()
    assert page.exp.alive and page.steps() == [0, 0]
    page.click("Step")
    page.assert_clean()
    assert page.steps() == [1, 1]


def test_a_crashed_training_process_can_still_be_saved_and_replayed(page):
    """kill -9: the replayable file (and the web page) come from the server's last copy of the curves."""
    page.start_and_pause_after(3)
    page.run()
    steps = page.steps()
    os.kill(page.exp._proc.pid, signal.SIGKILL)
    page.exp._proc.join(10)
    page.run()
    assert page.exp.status == "error"
    raw = page.tracked.downloads["bnviz-experiment.npz"]()
    rec = Recording.load(raw)
    assert [s.norm for s in rec.specs] == ["none", "scratch"] and rec.last_step == max(steps)
    np.testing.assert_array_equal(
        rec.snapshot().lanes[1].tables["steps"]["train_loss"],
        page.exp.snapshot().lanes[1].tables["steps"]["train_loss"],
    )
    assert "A · BN off" in page.tracked.downloads["bnviz-run.html"]()


def test_a_stopped_training_process_is_said_on_its_page_and_holds_up_no_other_tab(quick_deadlines, page):
    """kill -STOP on the training process: its page says so within a few seconds (the charts it had stay), only
    Reset can act, a new tab opens as usual, and Reset starts a new process."""
    page.click("Start")
    wait_until(lambda: min(page.steps()) >= 3, "3 steps")
    pid = page.exp._proc.pid
    os.kill(pid, signal.SIGSTOP)
    try:
        page.run()  # AppTest gives up after 30 s: it used to wait 60 s on the stopped process
        assert not page.at.exception and not page.at.error
        assert any("not responding" in w and "Reset" in w for w in page.texts("warning")), page.texts("warning")
        assert "not responding" in page.progress_text()
        assert len(values(page.chart("Training loss per step")["data"][1]["x"])) >= 3  # its curves stay
        assert [page.button(b).disabled for b in ("Start", "Pause", "Step", "Reset")] == [True, True, True, False]
        again = Page(page.tracked, run_key=page.key)  # the same run in a new tab: drawn at once, says the same
        assert not again.at.exception and any("not responding" in w for w in again.texts("warning"))
        other = Page(page.tracked)  # a new tab, with its own run
        other.assert_clean()
        other.click("Step")
        other.assert_clean()
        assert [l.step for l in other.exp.snapshot().lanes] == [1, 1]
        page.click("Reset")
        page.assert_clean()
        assert page.exp._proc.pid != pid and page.exp.alive and page.steps() == [0, 0]
        assert not any("not responding" in w for w in page.texts("warning"))
        page.click("Step")
        page.assert_clean()
        assert page.steps() == [1, 1]
    finally:
        try:
            os.kill(pid, signal.SIGCONT)
        except ProcessLookupError:
            pass


def test_without_a_training_process_it_trains_in_the_server_and_says_so(owned, monkeypatch, synthetic):
    monkeypatch.setattr(bnviz.data.fashion_mnist, "load_fashion_mnist", lambda *a, **k: synthetic)

    def cannot_start(*a, **k):
        raise OSError("no more processes")

    monkeypatch.setattr(bnviz.live.experiment_process.ExperimentProcess, "__init__", cannot_start)
    page = Page(owned)
    assert not page.at.exception and not page.at.error
    warnings = page.texts("warning")
    assert len(warnings) == 1 and "inside the web server" in warnings[0] and "no more processes" in warnings[0]
    assert type(page.exp) is bnviz.live.engine.Experiment
    page.click("Step")
    page.assert_clean()
    assert page.steps() == [1, 1]


def test_bnviz_engine_thread_keeps_training_in_the_server(owned, monkeypatch, synthetic):
    monkeypatch.setattr(bnviz.data.fashion_mnist, "load_fashion_mnist", lambda *a, **k: synthetic)
    monkeypatch.setenv("BNVIZ_ENGINE", "thread")
    page = Page(owned)
    page.assert_clean()
    assert type(page.exp) is bnviz.live.engine.Experiment and not page.texts("warning")


# ----------------------------------------------------------------------------------------- known defects
def test_each_export_reads_one_snapshot(page):
    """Lane names and tables come from the same snapshot, so a lane change between them cannot mix them."""
    page.start_and_pause_after(3)
    page.run()
    exp, calls = page.exp, []
    real = exp.snapshot

    def counting():
        calls.append(1)
        return real()

    exp.snapshot = counting
    for name in ("bnviz-metrics.csv", "bnviz-history.json", "bnviz-experiment.npz"):
        calls.clear()
        page.tracked.downloads[name]()
        assert len(calls) == 1, f"{name} took {len(calls)} snapshots"


def test_the_divergence_warning_reads_the_runs_own_rule():
    def app():
        from bnviz.live.snapshot import LaneSpec, LaneView, Settings, Snapshot
        from ui.controls import status_bar

        settings = Settings(diverge_loss=50.0, diverge_steps=3)
        lane = LaneView(0, LaneSpec("none"), "diverged", None, 12, 1, 100, 0.0, 9, {})
        status_bar(Snapshot("finished", None, settings, "CPU", (lane,)))

    at = AppTest.from_function(app).run()
    assert not at.exception
    (warning,) = [w.value for w in at.warning]
    assert "diverged at step 9" in warning and "above 50 for 3 steps" in warning, warning
    assert "above 20" not in warning


def test_the_story_asks_first_and_reveals_from_the_run(page):
    page.start_and_pause_after(12)
    show(page, "Story")
    assert "Two lanes, one difference" in "\n".join(m.value for m in page.at.markdown)
    assert not page.charts()  # the question comes before anything is shown
    page.at.radio(key="story_answer0").set_value("B, with BN")
    page.click("Reveal")
    page.assert_clean()
    text = "\n".join(m.value for m in page.at.markdown)
    assert "The class said: *B, with BN*" in text and len(page.charts()) == 1
    for _ in range(3):
        page.click("Next")
    assert "Take BN away" in "\n".join(m.value for m in page.at.markdown)
    page.click("Switch BN off in B · BN scratch")
    page.click("Reveal")
    page.assert_clean()
    assert page.exp.snapshot().lanes[1].bn_bypassed
    text = "\n".join(m.value for m in page.at.markdown)
    assert "validation accuracy" in text
    _, _, step, before, after = page.at.session_state["flip_result"]
    assert "This run shows **" in text and f"{before:.1%} with BN, {after:.1%} without." in text, text


def test_a_files_name_is_shown_as_text_not_as_markdown(page):
    raw = recorded_bytes(page, steps=2)
    name = "[click](http://evil.example)![x](http://evil.example/i.png).npz"
    page.at.file_uploader(key="upload").set_value((name, raw, "application/octet-stream"))
    page.run()
    page.assert_clean()
    (info,) = [t.value for t in page.at.title if "Replay of" in t.value]  # the replay's title names the file
    assert "\\[click\\]\\(http://evil.example\\)" in info and "\\!\\[x\\]" in info  # escaped: no link, no image


def test_an_exercise_asks_for_a_prediction_runs_and_reveals_from_its_numbers(page, monkeypatch):
    import dataclasses

    import bnviz.studies.exercises

    short = dataclasses.replace(bnviz.studies.exercises.EXERCISES["bias"], steps=20, train_size=640)
    monkeypatch.setitem(bnviz.studies.exercises.EXERCISES, "bias", short)
    show(page, "Exercises")
    page.at.selectbox(key="exercise").set_value("bias")
    page.run()
    assert any("Choose a prediction first" in t for t in page.texts("info"))
    assert not any(b.label.startswith("Run it") for b in page.at.button)  # nothing runs before a prediction
    page.at.radio(key="predict-bias").set_value("Accuracy rises clearly")
    page.run()
    page.click(next(b.label for b in page.at.button if b.label.startswith("Run it")))
    job = page.registry.job(page.key, "exercise-bias")
    assert job is not None and job.wait(120) and job.error is None
    page.run()
    page.assert_clean()
    results = job.result
    answer, text = short.reveal(results)
    truth = short.choices[answer]
    said = page.texts("warning") + page.texts("success")
    assert any(f"the run shows **{truth}**" in t or "the run agrees" in t for t in said), said
    assert text in page.texts("markdown")
    assert page.chart("Validation accuracy at the end")["data"][0]["y"] == [r.val_acc for r in results.values()]


def test_a_viewer_is_not_told_to_press_a_button_it_does_not_have():
    def app():
        import dataclasses

        from bnviz.live.snapshot import Settings, Snapshot, Status
        from ui.controls import status_bar

        silent = Snapshot(Status.RUNNING, None, Settings(), "cpu", (), responding=False)
        dead = Snapshot(
            Status.ERROR,
            "the training process ended unexpectedly (x). Press Reset to start it again.",
            Settings(),
            "cpu",
            (),
        )
        for snap in (silent, dead):
            status_bar(snap, commands=False)
            status_bar(dataclasses.replace(snap), commands=True)

    at = AppTest.from_function(app).run()
    assert not at.exception
    texts = [e.value for e in at.warning] + [e.value for e in at.error]
    assert len(texts) == 4
    viewer, teacher = texts[0::2][:1] + [at.error[0].value], [at.warning[1].value, at.error[1].value]
    assert all("Press Reset" not in t and "teacher's page can reset" in t for t in viewer), viewer
    assert all("Press Reset" in t for t in teacher), teacher


def test_the_share_panel_gives_the_watch_link_its_qr_code_and_the_lesson_link(page):
    assert not page.at.code  # closed: nothing built for it
    page.at.toggle(key="share").set_value(True)
    page.run()
    page.assert_clean()
    links = [c.value for c in page.at.code]
    watch_id = page.tracked.registries[0].watch_id(page.key)
    assert watch_id and watch_id != page.key  # the public id is not the control key
    assert any(link.endswith(f"/?watch={watch_id}") for link in links)
    assert not any(page.key in link for link in links)
    assert any("run=" not in link and "watch=" not in link for link in links)  # the lesson link: no run of its own
    assert page.at.sidebar.get("image")  # the QR code


def test_bn_state_says_what_each_normalisation_keeps(page):
    for norm, said in (("groupnorm", "keeps no running statistics"), ("frozen", "they are not learned")):
        page.at.selectbox(key="impl1").set_value(norm)
        page.run()
        show(page, "BN state")
        captions = page.texts("caption") + page.texts("markdown")  # a headline, or below a chart
        assert any(said in c for c in captions), (norm, captions)
        assert not any("are learned: the network chooses" in c for c in captions) or norm != "frozen"


@pytest.mark.slow
def test_train_one_more_epoch_leaves_no_false_note_before_or_after_reset(owned, monkeypatch, synthetic):
    monkeypatch.setattr(bnviz.data.fashion_mnist, "load_fashion_mnist", lambda *a, **k: synthetic)
    page = Page(owned, epochs="1")
    page.assert_clean()
    page.click("Start")
    wait_until(lambda: page.exp.snapshot().status == "finished", "the end of the 1-epoch run", timeout=120)
    page.run()
    page.click("Train 1 more epoch")
    page.assert_clean()
    assert page.exp.settings.epochs == 2
    assert page.at.number_input(key="epochs").value == 2  # the form follows what runs
    assert not [w for w in page.texts("warning") if "Not running yet" in w], page.texts("warning")
    page.click("Reset")
    page.assert_clean()
    assert page.exp.settings.epochs == 2 and page.steps() == [0, 0]
    assert not [w for w in page.texts("warning") if "Not running yet" in w], page.texts("warning")
    assert "step 0/200" in page.progress_text()


@pytest.mark.slow
def test_batch_vs_running_says_to_switch_bn_back_on_instead_of_failing(page):
    page.start_and_pause_after(50)
    show(page, "Experiments")
    page.at.radio(key="study").set_value("Flip BN on a trained network")
    page.run()
    page.click("Switch BN off in B · BN scratch")
    page.at.radio(key="study").set_value("Batch vs running statistics")
    page.run()
    page.assert_clean()
    test_b = page.button(next(b.label for b in page.at.button if b.label.startswith("Test B · BN scratch")))
    assert test_b.disabled
    assert any("switch B's BN back on" in c for c in page.texts("caption")), page.texts("caption")
    assert not page.tracked.jobs  # nothing ran
    page.at.radio(key="study").set_value("Flip BN on a trained network")
    page.run()
    page.click("Switch BN back on in B · BN scratch")
    page.at.radio(key="study").set_value("Batch vs running statistics")
    page.run()
    assert not page.button(next(b.label for b in page.at.button if b.label.startswith("Test B"))).disabled


@pytest.mark.parametrize(
    "lanes, tested, says",
    [
        ([("none", False, 80), ("scratch", False, 80)], "B", None),
        ([("none", False, 80), ("scratch", True, 80)], "B", "switch B's BN back on"),
        ([("torch", True, 80), ("scratch", False, 80)], "B", None),  # the lane whose BN is on
        ([("none", False, 80), ("scratch", False, 10)], "B", "at least 50 steps"),
        ([("none", False, 80), ("layernorm", False, 80)], None, "No lane keeps a running mean and variance"),
        ([("centre", False, 80), ("groupnorm", False, 80)], None, "No lane keeps a running mean and variance"),
    ],
)
def test_the_batch_vs_running_study_tests_a_lane_it_can_or_says_what_to_do(lanes, tested, says):
    from bnviz.live.snapshot import LaneSpec
    from ui.views.experiments import batchstats_lane

    snap = SimpleNamespace(
        lanes=[
            SimpleNamespace(spec=LaneSpec(norm), label=f"{'AB'[i]} · {norm}", bn_bypassed=off, step=step)
            for i, (norm, off, step) in enumerate(lanes)
        ]
    )
    lane, blocked = batchstats_lane(snap)
    assert (lane.label[0] if lane else None) == tested
    assert (blocked is None) if says is None else (says in blocked)


def test_the_story_on_a_replay_says_whether_each_prediction_held_and_offers_no_missing_button(page):
    page.click("Replay the recorded 10-epoch run")
    show(page, "Story")
    assert "Which lane will reach 50% validation accuracy first?" in [r.label for r in page.at.radio]
    page.at.radio(key="story_answer0").set_value("A, without BN")
    page.click("Reveal")
    page.assert_clean()
    text = "\n".join(page.texts("markdown"))
    # the recording's B (BN) reaches 50% first: the class's A did not hold, and the reveal says what did
    assert "The class said: *A, without BN*; this run shows **B, with BN**: B · BN" in text, text
    assert "reached 50% validation accuracy first" in text  # the caption below measures the same thing
    for _ in range(3):
        page.click("Next")
    page.click("Reveal")
    page.assert_clean()
    text = "\n".join(page.texts("markdown"))
    assert "the button above" not in text and not page.has_button("Switch BN off in B · BN scratch")
    assert "This run cannot tell yet: this recording never switched BN off" in text, text


LESSON = dict(
    bn0="true", impl0="torch", present="1", lr="0.3", batch_size="64", epochs="2", seed="7", activation="relu",
    view="Gradients", position="bn2",
)  # fmt: skip


def test_a_lesson_link_s_every_parameter_survives_the_page_a_reload_and_the_share_panel(owned, monkeypatch, synthetic):
    monkeypatch.setattr(bnviz.data.fashion_mnist, "load_fashion_mnist", lambda *a, **k: synthetic)
    kept = LESSON | {"present": "true"}  # ?present=1 is written the way the toggle reads it
    page = Page(owned, **LESSON)
    page.assert_clean()
    assert [l.spec.norm for l in page.exp.lanes] == ["torch", "scratch"]
    assert page.at.session_state["present"] is True
    url = dict(page.at.query_params)
    assert {k: url.get(k) for k in kept} == kept, url
    page.run()  # the page's own rewriting is done: the next run keeps it
    assert {k: dict(page.at.query_params).get(k) for k in kept} == kept
    reload = Page(owned, **dict(page.at.query_params))  # a reload: the same URL, run id and all
    reload.assert_clean()
    assert reload.key == page.key and {k: dict(reload.at.query_params).get(k) for k in kept} == kept
    reload.at.toggle(key="share").set_value(True)
    reload.run()
    (link,) = [c.value for c in reload.at.code if "?" in c.value and "watch=" not in c.value]
    for k, v in kept.items():
        assert f"{k}={v}" in link, (k, link)
    assert "run=" not in link
