"""Story: the chapter's argument as a guided sequence for a class. Each step has one prompt, a question the
class answers before anything is shown, and a reveal written from the run's own numbers (bnviz.pictures.captions)."""

from dataclasses import dataclass

import streamlit as st

from bnviz.live.lane_events import lane_events
from bnviz.live.snapshot import Snapshot
from bnviz.pictures import captions, figures, story_answers
from bnviz.pictures.story_answers import Answer

from .. import ask
from ..charts import chart
from ..context import ViewContext, figure
from ..feedback import say
from ..state import Key


@dataclass(frozen=True)
class Step:
    title: str
    prompt: str
    question: str
    options: tuple


STEPS = (
    Step(
        "1 · Two lanes, one difference",
        "Lane A is LeNet with sigmoid activations; lane B is the same network, same weights at step 0, same "
        "batches, with a BN layer after each convolution and fully connected layer. Press Start.",
        f"Which lane will reach {captions.TARGET:.0%} validation accuracy first?",
        ("A, without BN", "B, with BN", "they will be level"),
    ),
    Step(
        "2 · The plateau",
        "Let it train for a minute. One lane sits at about 10% for a long time.",
        "Why does the lane without BN stay at chance?",
        (
            "its sigmoid units are saturated (stuck near 0 or 1)",
            "its signal and its gradient fade on the way through the layers",
            "the learning rate is too high for it",
        ),
    ),
    Step(
        "3 · Inside BN",
        "Look at what enters the activation at the first BN position, in both lanes.",
        "What does BN do to the values that reach the sigmoid?",
        ("nothing visible", "it spreads them out around 0, where the sigmoid is steep", "it pushes them to 0 or 1"),
    ),
    Step(
        "4 · Take BN away",
        "Switch BN off in the trained lane B: its BN layers become the identity, every weight stays as learned.",
        "What happens to lane B's accuracy?",
        ("it stays about the same", "it falls a little", "it collapses towards chance"),
    ),
    Step(
        "5 · Race the learning rates",
        "The chapter's exercise: train both networks briefly at learning rates from 0.1 to 100 "
        "(Experiments → Learning-rate race, a minute or two).",
        "Up to which learning rate does the network with BN still learn?",
        ("0.1", "around 1", "10 or more"),
    ),
)

NAME = "Story"  # in the view picker and in a lesson link (?view=)


def go(step):
    st.session_state[Key.STORY_STEP] = max(0, min(len(STEPS) - 1, step))
    st.session_state[Key.STORY_REVEAL] = False


def render(snap: Snapshot, ctx: ViewContext) -> None:
    ss = st.session_state
    i = ss.setdefault(Key.STORY_STEP, 0)
    step = STEPS[i]
    st.markdown(f"### {step.title}")
    st.markdown(step.prompt)
    st.radio(step.question, step.options, index=None, key=f"{Key.STORY_ANSWER}{i}")
    revealed = ss.get(Key.STORY_REVEAL, False)
    ask.ask(ctx, qid(i), step.question, step.options, closed=revealed)
    row = st.container(horizontal=True)
    row.button("Back", disabled=i == 0, on_click=go, args=(i - 1,))
    row.button("Reveal", type="primary", disabled=revealed, on_click=show_answer, args=(ctx, i))
    row.button("Next", disabled=i == len(STEPS) - 1, on_click=go, args=(i + 1,))
    if i == 3 and ctx.live:
        bn = [l for l in snap.lanes if l.spec.norm != "none" and not l.bn_bypassed]
        if bn and st.button(f"Switch BN off in {bn[0].label}", key="story-flip"):
            measured = say(ctx.exp.set_bn_bypass, bn[0].index, True)
            if measured is not None:
                ss[Key.FLIP_RESULT] = (bn[0].label, True, bn[0].step, *measured)
    if not revealed:
        st.caption("Answer first (hands up, or on the radio buttons), then Reveal: the answer comes from this run.")
        return
    found = answer(i, snap, ctx)
    st.markdown(verdict(step, ss.get(f"{Key.STORY_ANSWER}{i}"), found))
    the_class = ask.verdict(ctx, qid(i), found.option)
    if the_class:
        st.markdown(the_class)
    reveal(i, snap, ctx)


def qid(i: int) -> str:
    """Question ``i``'s id among the run's polls (bnviz/live/votes.py)."""
    return f"story-{i}"


def show_answer(ctx, i: int) -> None:
    """Reveal: the class's votes close, the answer shows."""
    ask.close(ctx, qid(i))
    st.session_state[Key.STORY_REVEAL] = True


def verdict(step: Step, said: str | None, found: Answer) -> str:
    """Whether the class's prediction held, from the answer the run supports (``story_answers``)."""
    if found.option is None:
        return (f"The class said: *{said}*. " if said else "") + f"This run cannot tell yet: {found.why}."
    shown = step.options[found.option]
    if said is None:
        return f"This run shows **{shown}**: {found.why}."
    if said == shown:
        return f"The class said: *{said}*, and the prediction held: {found.why}."
    return f"The class said: *{said}*; this run shows **{shown}**: {found.why}."


def recorded_flip(snap):
    """The first BN switch-off in the run's own tables: (lane label, step, before, after), or None."""
    for lane in snap.lanes:
        for e in lane_events(lane.tables, lane.diverged_at):
            if e.kind == "bn_off" and e.before is not None and e.after is not None:
                return lane.label, e.step, e.before, e.after
    return None


def flip_measured(snap, ctx):
    """(label, step, before, after) of BN switched off: on a live page the Story's (or the study's) button, on a
    replay the recording's own switch; None when there was none."""
    if not ctx.live:
        return recorded_flip(snap)
    result = st.session_state.get(Key.FLIP_RESULT)
    if result and result[1]:
        label, _, step, before, after = result
        return label, step, before, after
    return None


def race_results(ctx):
    job = ctx.registry.job(ctx.key, "race") if ctx.live else None
    return job.result if job is not None and job.done and job.result else None


def answer(i, snap, ctx) -> Answer:
    """What this run says to question ``i``."""
    if i == 0:
        return story_answers.first_to_target(snap)
    if i == 1:
        return story_answers.why_plateau(snap)
    if i == 2:
        return story_answers.what_bn_does(snap, "bn1")
    if i == 3:
        flip = flip_measured(snap, ctx)
        if flip is None:
            return Answer(None, NO_FLIP_LIVE if ctx.live else NO_FLIP_REPLAY)
        return story_answers.after_the_flip(flip[2], flip[3])
    results = race_results(ctx)
    if results is None:
        return Answer(None, NO_RACE_LIVE if ctx.live else NO_RACE_REPLAY)
    return story_answers.largest_rate(results)


NO_FLIP_LIVE = "switch BN off first (the button above), then Reveal"
NO_FLIP_REPLAY = (
    "this recording never switched BN off, and a recording cannot: on a live page the button here switches BN off "
    "in the trained lane"
)
NO_RACE_LIVE = "run the race first (Experiments → Learning-rate race), then come back and Reveal"
NO_RACE_REPLAY = "the race runs from a live page (Experiments → Learning-rate race); a recording holds none"


def reveal(i, snap, ctx):
    if i == 0:
        st.markdown(captions.training(snap))
        chart(figure(figures.accuracy_figure, snap, ctx.last_n), "story-acc")
    elif i == 1:
        st.markdown(
            captions.plateau(snap) or "No lane is on a plateau in this run right now. " + captions.gradients(snap)
        )
        chart(figure(figures.gradient_figure, snap, "grad_norm", ctx.last_n), "story-grad")
    elif i == 2:
        st.markdown(captions.inside_bn(snap, "bn1"))
        chart(figure(figures.histogram_figure, snap, "bn1"), "story-hist")
    elif i == 3:
        flip = flip_measured(snap, ctx)
        if flip:
            label, step, before, after = flip
            st.markdown(
                f"**{label}** at step {step:,}: validation accuracy {before:.1%} with BN, {after:.1%} without "
                "(measured at once, on the same images). The weights were learned for normalised inputs: BN is "
                "part of the function the network computes."
            )
        chart(figure(figures.accuracy_figure, snap, ctx.last_n), "story-flip-acc")
    else:
        results = race_results(ctx)
        if results:
            st.markdown(captions.race(results))
            chart(figures.race_figure(results), "story-race")
