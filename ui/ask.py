"""Asking the class, on the teacher's page: an "Ask the class" button beside a Story question or an exercise's
prediction, the live tally (count and share per choice, no names), and the tally beside the measured answer.

Only the teacher sees it: a view gets a live experiment (``ctx.live``) only on a page that may command
(ui/access.py sends every other page to the watch page). The question then shows on every watch page of this
run (ui/vote.py); running or revealing it closes it. The polls are the registry's (bnviz/live/votes.py).
"""

import streamlit as st

from bnviz.live.votes import Tally

TALLY_S = 2.0  # the tally's refresh while the question is open: a watch page votes within its own 2 s
ASK_HELP = "Every watch page (the link and QR code in Share with the class) shows this question and its choices."
OPEN_NOTE = "Open on the students' watch pages: each browser has one vote and may change it until you reveal or run it."


def polls(ctx):
    """The run's polls on the teacher's page; None elsewhere (a replay, a viewer's page)."""
    return ctx.registry.polls(ctx.key) if ctx.live and ctx.registry is not None else None


def ask(ctx, qid: str, question: str, choices, closed: bool = False) -> None:
    """The Ask button for question ``qid`` (until it is asked, unless ``closed``) and its tally once asked."""
    found = polls(ctx)
    if found is None:
        return
    poll = found.get(qid)
    if poll is None:
        if not closed:
            st.button(
                "Ask the class", key=f"ask-{qid}", on_click=found.ask, args=(qid, question, choices), help=ASK_HELP
            )
        return

    @st.fragment(run_every=TALLY_S if poll.open else None)
    def tally():
        show(poll.tally())

    tally()


def show(t: Tally) -> None:
    """The tally: the number of votes, then each choice's count and share as a bar."""
    with st.container(key=f"tally-{t.qid}"):
        votes = f"{t.total} vote" + ("" if t.total == 1 else "s")
        st.markdown(f"**The class: {votes}**" + ("" if t.open else " (closed)"))
        if t.open:
            st.caption(OPEN_NOTE)
        for i, choice in enumerate(t.choices):
            st.progress(t.share(i), text=f"{choice}: {t.counts[i]} ({t.share(i):.0%})")


def close(ctx, qid: str) -> Tally | None:
    """Close question ``qid`` (the teacher runs or reveals it); its tally, or None when the class was not asked."""
    found = polls(ctx)
    return found.close(qid) if found is not None else None


def verdict(ctx, qid: str, truth: int | None) -> str | None:
    """The class's tally beside the measured answer (choice ``truth``); None when the class was not asked or the
    run cannot tell yet."""
    found = polls(ctx)
    poll = found.get(qid) if found is not None else None
    if poll is None or truth is None:
        return None
    return "**The class:** " + poll.tally().against(truth)
