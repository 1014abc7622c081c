"""Story: the chapter's argument as a guided sequence for a class. Each step has one prompt, a question the
class answers before anything is shown, and a reveal written from the run's own numbers (bnviz.pictures.captions)."""

from dataclasses import dataclass

import streamlit as st

from bnviz.pictures import captions, figures

from ..charts import chart
from ..context import figure
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
        "Which lane will leave chance accuracy (10%) first?",
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


def render(snap, ctx):
    ss = st.session_state
    i = ss.setdefault(Key.STORY_STEP, 0)
    step = STEPS[i]
    st.markdown(f"### {step.title}")
    st.markdown(step.prompt)
    st.radio(step.question, step.options, index=None, key=f"{Key.STORY_ANSWER}{i}")
    revealed = ss.get(Key.STORY_REVEAL, False)
    row = st.container(horizontal=True)
    row.button("Back", disabled=i == 0, on_click=go, args=(i - 1,))
    row.button("Reveal", type="primary", disabled=revealed, on_click=lambda: ss.__setitem__(Key.STORY_REVEAL, True))
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
    answer = ss.get(f"{Key.STORY_ANSWER}{i}")
    if answer:
        st.markdown(f"The class said: *{answer}*. What this run shows:")
    reveal(i, snap, ctx)


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
        result = st.session_state.get(Key.FLIP_RESULT)
        if result:
            label, off, step, before, after = result
            st.markdown(
                f"**{label}** at step {step:,}: validation accuracy {before:.1%} with BN, {after:.1%} without "
                "(measured at once, on the same images). The weights were learned for normalised inputs: BN is "
                "part of the function the network computes."
                if off
                else f"**{label}**: BN was switched back on ({after:.1%})."
            )
        else:
            st.markdown("Switch BN off first (the button above), then Reveal.")
        chart(figure(figures.accuracy_figure, snap, ctx.last_n), "story-flip-acc")
    else:
        job = ctx.registry.job(ctx.key, "race") if ctx.live else None
        if job is not None and job.done and job.result:
            st.markdown(captions.race(job.result))
            chart(figures.race_figure(job.result), "story-race")
        else:
            st.markdown("Run the race first: Experiments → Learning-rate race; then come back and Reveal.")
