"""Experiments: the studies that go beyond watching (the learning-rate race, batch vs running statistics,
switching BN off in a trained lane, recomputing BN's statistics, the loss landscape). The race and the batch
statistics run as background jobs of the registry; the others are commands to the live experiment."""

import dataclasses

import streamlit as st

from bnviz.live.child_run import in_child
from bnviz.live.jobs import Job
from bnviz.live.snapshot import Snapshot
from bnviz.machine import env
from bnviz.pictures import captions, exercise_figures, figures
from bnviz.step.models import NORM_INFO
from bnviz.studies.batch_and_lr import RACE_LRS, batch_statistics, lr_race
from bnviz.studies.devices_study import KS, devices_study, devices_summary
from bnviz.studies.exercises import EXERCISES

from ..charts import chart
from ..context import ViewContext, figure
from ..feedback import plain, say
from ..layout import headline, rest, why
from ..state import Key

STUDIES = (
    "Learning-rate race",
    "Batch vs running statistics",
    "Flip BN on a trained network",
    "Recompute statistics",
    "BN across devices",
    "Smoother landscape",
)
STUDY_JOBS = ("race", "batchstats", "devices")
MIN_STEPS_FOR_BATCHSTATS = 50
STOP_WAIT_S = 2.0

RACE_CAPTION = (
    "The chapter's exercise: how large can the learning rate be before optimisation fails? The same LeNet "
    "with and without BN, {steps} steps at each learning rate from 0.1 to 100, on the same batches. A run "
    "learns when it reaches 50% validation accuracy, stalls below that, and diverges when its loss becomes "
    "NaN or stays above the divergence limit."
)
BATCHSTATS_CAPTION = (
    "Take the trained BN lane and test it with BN using each test batch's own statistics (train "
    "mode) against the running averages (eval mode), over batch sizes from 2 to 1,024. The running averages "
    "do not depend on the batch at all; a small batch's statistics are noisy."
)
FLIP_CAPTION = (
    "Switch BN off in a trained lane: its layers become the identity, every weight stays. Predict first: "
    "what happens to its accuracy, when the weights were learned for normalised inputs? The accuracy is "
    "measured at once when you switch; the histograms show what now reaches the activations."
)
PRECISE_IMAGES = 6_400  # PreciseBN's average runs over this many training images, whatever the batch size
PRECISE_CAPTION = (
    "PreciseBN (Wu & Johnson 2021): freeze the weights and re-estimate each BN layer's running mean and variance "
    "as the plain average over about {images:,} training images in batches of the training size, instead of the moving "
    "average that training kept while the weights moved. Eval mode then uses statistics that fit the weights as "
    "they are. The accuracy before and after is measured at once, on the same validation images."
)
DEVICES_CAPTION = (
    "Data-parallel training cuts each minibatch of 128 over k devices. With BN per device (what PyTorch's "
    "DistributedDataParallel does by default) each device normalises its slice by the slice's own statistics, "
    "down to 2 images; with synchronised BN (nn.SyncBatchNorm) every device uses the whole minibatch's. Here the k "
    "devices are simulated in one process, each device's statistics computed on its slice: the same arithmetic as "
    "k processes (checked against real gloo processes at k = 2 and 4). `bnviz train --devices K` runs real ones."
)
LANDSCAPE_CAPTION = (
    "Santurkar et al. (2018): every few steps, on a fixed batch, step along the gradient by "
    "several sizes and record how much the loss and the gradient change. Smaller numbers mean a "
    "smoother landscape, where a large step is safe. A network that is not learning is trivially flat, so "
    "compare lanes that both learn (the paper's setting): ReLU learns with and without BN."
)

NAME = "Experiments"  # in the view picker and in a lesson link (?view=)


def stop_job(job):
    job.stop(timeout=STOP_WAIT_S)  # a study looks at Stop several times a second


def job_status(ctx, name, factory, label, blocked=None):
    """A button that starts a background study, its progress while it runs; returns the finished result.

    ``blocked``: what to do before the study can run; the button is then disabled and says so beneath it."""
    job = ctx.registry.job(ctx.key, name)
    if job is not None and not job.done:
        st.progress(job.progress, text=f"{label}: running… {job.progress:.0%}")
        st.button("Stop", key=f"stop-{name}", on_click=stop_job, args=(job,))
        return None
    if st.button(label, key=f"run-{name}", type="primary", disabled=blocked is not None, help=blocked):
        say(ctx.registry.start_job, ctx.key, name, factory)
        st.rerun()  # the whole page: it refreshes while a study runs
    if blocked is not None:
        st.caption(blocked)
    if job is not None and job.error:
        st.error(f"The study stopped: {job.error}")
        return None
    if job is not None and job.stopped:
        kept = ": below is what it had finished" if job.result else ""
        st.info(f"Stopped at {job.progress:.0%}{kept}. Press the button to run it again.")
    return job.result if job is not None else None


def running_jobs(registry, key):
    """The studies (and exercises) of this page still running: the page refreshes while there are any."""
    names = STUDY_JOBS + tuple(f"exercise-{k}" for k in EXERCISES)
    return [n for n in names if registry.job(key, n) is not None and not registry.job(key, n).done]


def render(snap: Snapshot, ctx: ViewContext) -> None:
    if not ctx.live:
        st.info("Studies run from a live page: they are not shown in a replay or on a viewer's page.")
        return
    study = st.radio("Study", STUDIES, horizontal=True, key=Key.STUDY, label_visibility="collapsed")
    {
        STUDIES[0]: race,
        STUDIES[1]: batch_vs_running,
        STUDIES[2]: flip,
        STUDIES[3]: recompute,
        STUDIES[4]: devices,
        STUDIES[5]: landscape,
    }[study](snap, ctx)


def race(snap, ctx):
    steps = env.race_steps()
    about = RACE_CAPTION.format(steps=steps)
    shown = st.container()  # the result, above the button that runs it again
    results = job_status(
        ctx,
        "race",
        lambda: Job(
            lr_race,
            ctx.data,
            steps=steps,
            train_size=25_600,
            activation=st.session_state[Key.ACTIVATION],
            name="race",
            experiment=type(ctx.exp),  # where the live lanes train
        ),
        f"Run the race ({len(RACE_LRS)} learning rates × {steps} steps × 2 lanes)",
    )
    if not results:
        st.caption(about)
        return
    said = captions.race(results)
    with shown:
        headline(said, about)
        chart(figure(figures.race_figure, results), "race")
    why(rest(said), about)
    table = figures.race_table(results)
    st.dataframe(table, hide_index=True, width="stretch", height=36 * (len(table) + 1) + 4)  # every row


NO_RUNNING_STATISTICS = (
    "No lane keeps a running mean and variance (LayerNorm, GroupNorm and BN that only centres or only scales keep "
    "none, or only one): turn BN on in a lane first (the sidebar's Lanes)."
)


def batchstats_lane(snap):
    """The lane the batch-vs-running study tests and what to do before it can (None when it can run now), or
    (None, what to do) when no lane could ever be tested: the first lane whose normalisation keeps a running mean
    and variance, preferring one whose BN is switched on."""
    kept = [l for l in snap.lanes if {"running_mean", "running_var"} <= set(NORM_INFO[l.spec.norm].state)]
    if not kept:
        return None, NO_RUNNING_STATISTICS
    lane = next((l for l in kept if not l.bn_bypassed), kept[0])
    name = lane.label.split(" · ")[0]
    if lane.bn_bypassed:
        return lane, (
            f"{name}'s BN is switched off (the study *Flip BN on a trained network*): switch {name}'s BN back on "
            "there first, then test it."
        )
    if lane.step < MIN_STEPS_FOR_BATCHSTATS:
        return lane, (
            f"Train {name} for at least {MIN_STEPS_FOR_BATCHSTATS} steps first (press Start; it is at step "
            f"{lane.step:,}), then run this study."
        )
    return lane, None


def batch_vs_running(snap, ctx):
    lane, blocked = batchstats_lane(snap)
    if lane is None:
        st.info(blocked)
        st.caption(BATCHSTATS_CAPTION)
        return
    shown = st.container()  # the result, above the button that runs it again
    result = job_status(
        ctx,
        "batchstats",
        lambda: Job(
            in_child,  # outside the server, on the live lanes' device
            batch_statistics,
            ctx.exp.clone_model(lane.index),
            ctx.data.test_images,
            ctx.data.test_labels,
            device=snap.settings.device,
            name="batchstats",
        ),
        f"Test {lane.label} at step {lane.step:,} over batch sizes 2 to 1,024",
        blocked,
    )
    if not result:
        st.caption(BATCHSTATS_CAPTION)
        return
    said = captions.batch_statistics(result)
    with shown:
        headline(said, BATCHSTATS_CAPTION)
        chart(figure(figures.batch_stats_figure, result), "batchstats")
    why(rest(said), BATCHSTATS_CAPTION)


def flip(snap, ctx):
    bn = [l for l in snap.lanes if l.spec.norm != "none"]
    if not bn:
        st.info("Turn BN on in a lane first.")
    for lane in bn:
        label = f"Switch BN back on in {lane.label}" if lane.bn_bypassed else f"Switch BN off in {lane.label}"
        if st.button(label, key=f"flip{lane.index}"):
            measured = say(ctx.exp.set_bn_bypass, lane.index, not lane.bn_bypassed)
            if measured is not None:
                st.session_state[Key.FLIP_RESULT] = (lane.label, not lane.bn_bypassed, lane.step, *measured)
            st.rerun()  # the whole page: the lanes in the sidebar show the switch too
    flip_result = st.session_state.get(Key.FLIP_RESULT)
    if flip_result:
        label, off, step, before, after = flip_result
        st.markdown(
            f"**{label}** at step {step:,}: validation accuracy {before:.1%} with BN "
            + (f"on, {after:.1%} with BN switched off" if off else f"switched off, {after:.1%} with BN back on")
            + " (measured at once, on the same images)."
        )
    else:
        st.caption(FLIP_CAPTION)
    chart(figure(figures.accuracy_figure, snap, ctx.last_n), "flip-acc")
    if flip_result:
        why(FLIP_CAPTION)
    chart(figure(figures.histogram_figure, snap, "bn3"), "flip-hist")


def recompute(snap, ctx):
    about = PRECISE_CAPTION.format(images=PRECISE_IMAGES)
    lanes = [l for l in snap.lanes if "running_mean" in NORM_INFO[l.spec.norm].state and not l.bn_bypassed]
    if not lanes:
        st.info("No lane keeps running statistics: turn on BN (or renorm, ghost, noisy, frozen) in a lane first.")
    batches = max(1, PRECISE_IMAGES // snap.settings.batch_size)
    for lane in lanes:
        if st.button(
            f"Recompute {lane.label.split(' · ')[0]}'s statistics ({batches:,} batches)", key=f"pbn{lane.index}"
        ):
            with st.spinner("Averaging the batch statistics…"):
                result = say(ctx.exp.recompute_statistics, lane.index, batches)
            if result is not None:
                st.session_state[Key.PRECISE_RESULT] = (lane.label, lane.step, result)
            st.rerun()
    done = st.session_state.get(Key.PRECISE_RESULT)
    if done:
        label, step, r = done
        change = r["after"] - r["before"]
        verb = "rose" if change > 0 else "fell" if change < 0 else "stayed"
        st.markdown(
            f"**{plain(label)}** at step {step:,}: eval-mode accuracy {verb} from {r['before']:.1%} to "
            f"{r['after']:.1%} after recomputing over {r['batches']:,} batches; in train mode (batch statistics) "
            f"it is {r['batch']:.1%}."
        )
    said = captions.train_eval(snap)
    if not done:  # before a result: what the study does, and the chart's own headline
        st.caption(about)
        headline(said)
    chart(figure(figures.train_eval_figure, snap, ctx.last_n), "precise-traineval")
    why(said if done else rest(said), about if done else None)


def devices(snap, ctx):
    shown = st.container()  # the result, above the button that runs it again
    both = job_status(
        ctx,
        "devices",
        lambda: Job(in_child, devices_study, ctx.data, steps=env.devices_steps(), name="devices"),  # in a child
        f"Run it (k = {', '.join(map(str, KS))}, each per device and synchronised)",
    )
    if not both:
        st.caption(DEVICES_CAPTION)
        return
    said = devices_summary(both)
    with shown:
        headline(said, DEVICES_CAPTION)
        chart(figure(exercise_figures.devices_figure, both), "devices")
    why(rest(said), DEVICES_CAPTION)


def landscape(snap, ctx):
    on = snap.settings.landscape_every > 0
    if st.button("Switch the landscape probe off" if on else "Switch the landscape probe on (restarts)"):
        say(ctx.exp.reset, dataclasses.replace(ctx.exp.settings, landscape_every=0 if on else env.landscape_every()))
        st.rerun()
    said = captions.landscape(snap, ctx.last_n)
    headline(said, LANDSCAPE_CAPTION)
    chart(figure(figures.landscape_figure, snap, ctx.last_n), "landscape")
    why(rest(said), LANDSCAPE_CAPTION)
