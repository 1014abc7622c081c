"""Exercises: the chapter's exercises and the papers' experiments, each as predict, run, reveal.

The class chooses a prediction before anything runs; the run is a background job of the registry (progress,
Stop); the reveal puts the measured answer beside the prediction, with a sentence written from the numbers
(``bnviz.studies.exercises``).
"""

import streamlit as st

from bnviz.live.child_run import in_child
from bnviz.live.jobs import Job
from bnviz.live.snapshot import Snapshot
from bnviz.pictures import exercise_figures
from bnviz.studies import norm_findings
from bnviz.studies.exercises import EXERCISES, run

from .. import ask
from ..charts import chart
from ..context import ViewContext, figure
from ..state import Key
from .experiments import job_status

INTRO = (
    "Each exercise asks a question, you (or the class) choose a prediction, then it trains the variants on the "
    "same batches from the same seed and reveals what they measured. The numbers decide the answer, not the book."
)

NAME = "Exercises"  # in the view picker and in a lesson link (?view=)


def describe(exercise):
    rows = []
    for v in exercise.variants:
        extra = [f"{k}={val}" for k, val in v.options.items()]
        if v.classes_per_batch != 10:
            extra.append(f"{v.classes_per_batch} classes a batch")
        rows.append(
            f"- **{v.name}**: {v.norm}, {v.activation}, lr {v.lr:g}, batch {v.batch_size}"
            + (f", {', '.join(extra)}" if extra else "")
        )
    return (
        f"{len(exercise.variants)} runs of {exercise.steps:,} steps on {exercise.train_size:,} training images:\n"
        + "\n".join(rows)
    )


def render(snap: Snapshot, ctx: ViewContext) -> None:
    """Once an exercise has run, its verdict and chart come first (the first screen), the question below them."""
    if not ctx.live:
        st.info("Exercises run from a live page: they are not shown in a replay or on a viewer's page.")
        return
    linked = st.query_params.get(Key.EXERCISE)  # a lesson link's ?exercise=small (the key, not the title)
    if Key.EXERCISE not in st.session_state and linked in EXERCISES:
        st.session_state[Key.EXERCISE] = linked
    key = st.selectbox(
        "Exercise",
        list(EXERCISES),
        format_func=lambda k: EXERCISES[k].title,
        key=Key.EXERCISE,
        bind="query-params",
        label_visibility="collapsed",
    )
    exercise = EXERCISES[key]
    verdict = st.container()  # filled once the run has results: above the question, in the first screen
    st.markdown(f"### {exercise.title}", help=INTRO)
    st.caption(exercise.source)
    st.markdown(f"**{exercise.question}**")
    guess = st.radio("Your prediction", exercise.choices, index=None, key=Key.prediction(key))
    qid = f"exercise-{key}"
    ran = ctx.registry.job(ctx.key, qid) is not None
    if ran:
        ask.close(ctx, qid)  # the run decides: the class's votes are in
    ask.ask(ctx, qid, exercise.question, exercise.choices, closed=ran)
    with st.expander("What will run"):
        st.markdown(INTRO + "\n\n" + describe(exercise))
    asked = ask.polls(ctx) is not None and ask.polls(ctx).get(qid) is not None
    if guess is None and not asked:
        st.info("Choose a prediction first, or ask the class: the run starts after it.")
        return
    results = job_status(
        ctx,
        f"exercise-{key}",
        lambda: Job(in_child, run, exercise, ctx.data, name=f"exercise-{key}"),  # trains outside the server
        f"Run it ({len(exercise.variants)} runs × {exercise.steps:,} steps)",
    )
    if not results:
        return
    whole = len(results) == len(exercise.variants)
    with verdict:
        reveal(exercise, guess, results, key, ask.verdict(ctx, qid, exercise.reveal(results)[0]) if whole else None)
    chart(figure(exercise_figures.loss_curves, results), f"exercise-loss-{key}")


def reveal(exercise, guess, results, key, the_class=None):
    """The prediction against the run (one line; the class's tally beside it when the class was asked), the
    accuracy chart, then what the numbers show."""
    if len(results) < len(exercise.variants):
        st.warning("Stopped before every run finished: no answer from part of the runs. Run it again to see it.")
        chart(figure(exercise_figures.accuracy_bars, results), f"exercise-acc-{key}")
        return
    answer, text = exercise.reveal(results)
    truth = exercise.choices[answer]
    if guess is None:
        st.info(f"The run shows **{truth}**.")
    elif guess == truth:
        st.success(f"You predicted **{guess}**, and the run agrees.")  # the choices are ours: Markdown is fine
    else:
        st.warning(f"You predicted **{guess}**; the run shows **{truth}**.")
    if the_class:
        st.markdown(the_class)
    chart(figure(exercise_figures.accuracy_bars, results), f"exercise-acc-{key}")
    st.markdown(text)
    if exercise.finding:
        st.caption(f"Measured at a larger scale ({norm_findings.SOURCE}): {norm_findings.sentence(exercise.finding)}")
