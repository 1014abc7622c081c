"""The words around a chart, laid out for a projector: one headline above the chart, the rest below it.

A view's captions (``bnviz.pictures.captions``) are computed from the run and can run to several sentences;
above a chart only the first stands, as a headline, so the chart itself lies in the first screen. The whole
caption, and the view's grey explainer (also the headline's help tooltip), go into a "Why?" expander below
the chart.
"""

import re

import streamlit as st

HEADLINE_CHARS = 140  # about one line at 1280 px: the first screen keeps its room for the chart
# a sentence ends at . ! or ? followed by a space and a capital, a digit or Markdown's bold (never inside "0.3")
SENTENCE_END = re.compile(r"(?<=[.!?])\s+(?=[A-Z0-9*_(])")


def sentences(text: str) -> list[str]:
    """The sentences of ``text`` (a caption's Markdown), in order; line breaks end a sentence too."""
    out = []
    for line in (text or "").splitlines():
        out += [s.strip() for s in SENTENCE_END.split(line) if s.strip()]
    return out


def first_sentence(text: str) -> str:
    """The caption's first sentence: a claim of its own, so true on its own where the caption is true."""
    found = sentences(text)
    return found[0] if found else ""


def headline(text: str, explainer: str | None = None) -> None:
    """The caption's first sentence above a chart, the explainer as its help tooltip (the ? beside it)."""
    line = first_sentence(text)
    if line:
        st.markdown(line, help=explainer)
    elif explainer:
        st.caption(explainer)


def why(*parts: str | None) -> None:
    """Below the chart: the full captions and explainers, behind a "Why?" expander (closed)."""
    shown = [p for p in parts if p]
    if shown:
        with st.expander("Why?", icon=":material/help:"):
            st.markdown("\n\n".join(shown))  # one element (one message on the wire), paragraphs as before


def rest(text: str) -> str:
    """The caption without its first sentence: what the headline above the chart did not say."""
    return " ".join(sentences(text)[1:])


# Every page: a compact header (the title one short line, little space above it), so the first screen keeps its
# room for the charts; the page's own style sheets and the hidden key buttons take no row (a style sheet applies
# wherever it stands, shown or not).
COMPACT_CSS = """<style>
.block-container {padding-top: 2.4rem !important; padding-bottom: 2rem !important;}
h1 {font-size: 1.5rem !important; padding: 0 !important; line-height: 1.4 !important;}
[data-testid="stHeader"] {height: 2.4rem; min-height: 2.4rem; background: transparent;}
[data-testid="stElementContainer"]:has(style), [data-testid="stElementContainer"]:has(.st-key-view-keys),
.st-key-view-keys {display: none;}
</style>"""


def compact() -> None:
    st.markdown(COMPACT_CSS, unsafe_allow_html=True)
