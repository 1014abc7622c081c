"""Asking the class under AppTest: the teacher's Ask button, a watch page's vote reaching the live tally, and the
reveal that puts the tally beside the measured answer (ui/ask.py, ui/vote.py; the rules: tests/test_votes.py).

The fixtures are test_dashboard's (random images, everything the page starts tracked and stopped)."""

import csv
import io
import secrets

import pytest
from test_dashboard import Page, owned, page, show, synthetic  # noqa: F401 (fixtures)

from bnviz.pictures.story_answers import after_the_flip
from ui.views.story import STEPS

pytestmark = pytest.mark.slow  # trains a few steps in a child process


def tally_texts(p, choices=STEPS[3].options):
    """The tally's bars: one per choice, "choice: count (share)" (the status bar is a progress bar too)."""
    return [e.proto.text for e in p.at.get("progress") if e.proto.text.split(":")[0] in choices]


def test_the_teacher_asks_the_class_a_phone_votes_and_the_reveal_sets_the_tally_beside_the_run(page, owned):  # noqa: F811
    page.start_and_pause_after(12)
    show(page, "Story")
    for _ in range(3):
        page.click("Next")
    step = STEPS[3]
    assert step.title.startswith("4 · Take BN away")
    assert not tally_texts(page)  # nothing asked yet: no tally
    page.click("Ask the class")
    page.assert_clean()
    assert not page.has_button("Ask the class")
    polls = page.registry.polls(page.key)
    assert polls.current().question == step.question
    assert tally_texts(page) == [f"{c}: 0 (0%)" for c in step.options]

    # a student's watch page shows the question; a tap votes, a second tap on another choice changes the vote
    watch_id = page.registry.watch_id(page.key)
    phone = Page(owned, watch=watch_id)
    phone.assert_clean()
    assert any(step.question in m for m in phone.texts("markdown"))
    assert [b.label for b in phone.at.button] == list(step.options)
    assert not any(page.key in m for m in phone.texts("markdown"))  # the control key is not on the student's page
    phone.click(step.options[2])
    phone.click(step.options[0])
    phone.assert_clean()
    assert any("Your vote: *it stays about the same*" in c for c in phone.texts("caption"))
    show(phone, "Story")  # a student's Story at the asked question: no Ask button, no tally (the teacher's only)
    for _ in range(3):
        phone.click("Next")
    assert any(step.title in m for m in phone.texts("markdown"))
    assert not phone.has_button("Ask the class") and not tally_texts(phone)
    assert not any(m.startswith("**The class:") for m in phone.texts("markdown"))
    for _ in range(2):  # two more students, on the engine side
        polls.current().vote(secrets.token_urlsafe(12), 2)
    page.run()
    assert tally_texts(page) == [
        f"{step.options[0]}: 1 (33%)",
        f"{step.options[1]}: 0 (0%)",
        f"{step.options[2]}: 2 (67%)",
    ]
    assert any("3 votes" in m for m in page.texts("markdown"))

    # the run decides: BN off, Reveal closes the question and sets the tally beside the measured answer
    page.click("Switch BN off in B · BN scratch")
    page.click("Reveal")
    page.assert_clean()
    assert polls.current() is None and not polls.get("story-3").open
    _, _, _, before, after = page.at.session_state["flip_result"]
    truth = after_the_flip(before, after).option
    counts = (1, 0, 2)
    right = step.options[truth]
    said = (  # the most votes went to choice 2
        f"2 of 3 predicted *{right}*; the run agrees."
        if truth == 2
        else f"2 of 3 predicted *{step.options[2]}*; the run shows *{right}*, which {counts[truth]} of 3 predicted."
    )
    assert f"**The class:** {said}" in page.texts("markdown"), page.texts("markdown")
    assert any("3 votes** (closed)" in m for m in page.texts("markdown"))

    # the tally exports with the run's CSV: a file of its own beside the metrics, no voter in it
    rows = list(csv.DictReader(io.StringIO(owned.downloads["bnviz-class-predictions.csv"]())))
    assert [(r["question_id"], r["choice"], r["votes"], r["open"]) for r in rows] == [
        ("story-3", c, str(n), "no") for c, n in zip(step.options, counts)
    ]

    # after the reveal the watch page has no choice to tap and says the question is closed; the tally stays
    phone.run()
    assert not phone.has_button(step.options[1]) and any("closed this question" in c for c in phone.texts("caption"))
    assert polls.get("story-3").tally().counts == counts


def test_an_exercise_asked_of_the_class_runs_without_the_teacher_s_own_guess(page):  # noqa: F811
    show(page, "Exercises")
    assert any("Choose a prediction first, or ask the class" in i for i in page.texts("info"))
    assert not any(b.label.startswith("Run it") for b in page.at.button)
    page.click("Ask the class")
    page.assert_clean()
    assert any(b.label.startswith("Run it") for b in page.at.button)  # the class predicts: the run may start
    polls = page.registry.polls(page.key)
    qid = polls.current().qid
    assert qid.startswith("exercise-")
    next(b for b in page.at.button if b.label.startswith("Run it")).click()
    page.run()
    page.assert_clean()
    assert polls.current() is None and not polls.get(qid).open  # running it closes the question
