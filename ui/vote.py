"""The open question on a watch page, sized for a phone: its choices as full-width buttons, one vote per browser.

A browser's vote is keyed by a random voter id kept in a cookie (``bnviz_voter``): a reload is a new script
session, which reads the same id back from ``st.context.cookies``, so it changes this browser's vote and never adds
a second one. The id is drawn here (``secrets``, 96 bits) and set in the cookie by a small inline script, as
ui/access.py keeps the teacher's key. It says nothing about the student: the tally has no names.
"""

import json
import secrets

import streamlit as st
import streamlit.components.v1 as components

from bnviz.live.votes import VOTER_ID, VoteError

from .state import Key

COOKIE = "bnviz_voter"
COOKIE_S = 12 * 3600  # a lecture day
CAN_CHANGE = "Tap a choice to vote; you may change your vote until the teacher closes the question."
CHANGE_IT = "You may change it until the teacher closes the question."
CLOSED = "The teacher has closed this question: the answer comes from the run, on the teacher's screen."


def voter_id() -> str:
    """This browser's voter id: from its cookie, or drawn now (and put in the cookie)."""
    ss = st.session_state
    if Key.VOTER not in ss:
        kept = st.context.cookies.get(COOKIE)
        ss[Key.VOTER] = kept if isinstance(kept, str) and VOTER_ID.fullmatch(kept) else secrets.token_urlsafe(12)
    if st.context.cookies.get(COOKIE) != ss[Key.VOTER]:
        cookie = f"{COOKIE}={ss[Key.VOTER]}; path=/; max-age={COOKIE_S}; SameSite=Strict"
        components.html(f"<script>document.cookie = {json.dumps(cookie)};</script>", height=0)
    return ss[Key.VOTER]


def cast(poll, voter: str, choice: int) -> None:
    try:
        poll.vote(voter, choice)
        st.session_state.pop(Key.VOTE_PROBLEM, None)
    except VoteError as e:
        st.session_state[Key.VOTE_PROBLEM] = str(e)


def render(polls) -> None:
    """The run's open question (``polls``: the run's Polls); nothing when none was asked. A vote reruns only this
    fragment; a question asked or closed redraws the watch page (ui/watch.py watches for it)."""
    voter = voter_id()

    @st.fragment
    def question():
        poll = polls.current()
        with st.container(key="class-question"):
            if poll is None:
                latest = polls.tallies()[-1:]
                last = polls.get(latest[0].qid) if latest else None
                mine = last.vote_of(voter) if last is not None else None
                if mine is not None:
                    st.caption(f"You voted *{last.choices[mine]}*. {CLOSED}")
                return
            mine = poll.vote_of(voter)
            st.markdown(f"**The teacher asks:** {poll.question}")
            for i, choice in enumerate(poll.choices):
                st.button(
                    choice,
                    key=f"vote-{poll.qid}-{i}",
                    type="primary" if mine == i else "secondary",
                    width="stretch",
                    on_click=cast,
                    args=(poll, voter, i),
                )
            problem = st.session_state.get(Key.VOTE_PROBLEM)
            if problem:
                st.warning(problem)
            elif mine is None:
                st.caption(CAN_CHANGE)
            else:
                st.caption(
                    f"Your vote: *{poll.choices[mine]}*. You may change it until the teacher closes the question."
                )

    question()
