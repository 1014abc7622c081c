"""The class's predictions (bnviz/live/votes.py): one vote per voter, a changed vote counted once, the cap, a closed
question, bad voter ids and choices refused with a message; the registry holds a run's polls and drops them with it."""

import csv
import io
import secrets

import pytest

from bnviz.live.registry import Registry
from bnviz.live.votes import Poll, Polls, VoteError, tallies_csv

CHOICES = ("it stays about the same", "it falls a little", "it collapses towards chance")


def voter():
    return secrets.token_urlsafe(12)  # what a student's browser keeps


def poll(cap=1000):
    return Poll("story-3", "What happens to lane B's accuracy?", CHOICES, cap)


def test_one_vote_per_voter_and_a_changed_vote_counts_once():
    p = poll()
    a, b = voter(), voter()
    p.vote(a, 0)
    p.vote(a, 0)  # the same vote again (a double tap, a reload): still one
    assert p.tally().counts == (1, 0, 0)
    p.vote(b, 2)
    p.vote(a, 1)  # a changed mind replaces the old vote
    t = p.tally()
    assert t.counts == (0, 1, 1) and t.total == 2
    assert p.vote_of(a) == 1 and p.vote_of(b) == 2 and p.vote_of(voter()) is None
    assert t.share(1) == 0.5 and t.share(0) == 0.0


def test_the_cap_refuses_a_new_voter_but_not_a_changed_vote():
    p = poll(cap=3)
    voters = [voter() for _ in range(3)]
    for v in voters:
        p.vote(v, 0)
    with pytest.raises(VoteError, match="already has 3 votes, its limit"):
        p.vote(voter(), 1)
    p.vote(voters[0], 2)  # someone already counted may still change their vote
    assert p.tally().counts == (2, 0, 1)


def test_a_closed_question_counts_no_more_votes():
    p = poll()
    a = voter()
    p.vote(a, 0)
    p.close()
    for who in (a, voter()):
        with pytest.raises(VoteError, match="closed this question"):
            p.vote(who, 1)
    t = p.tally()
    assert t.counts == (1, 0, 0) and not t.open


@pytest.mark.parametrize("bad", ["", "short", "x" * 65, "has space12", "a/b/c/d/e/f", "<script>1", None, 12345678])
def test_a_bad_voter_id_is_refused_with_what_to_do(bad):
    p = poll()
    with pytest.raises(VoteError, match="voter id is not valid.*Reload the page"):
        p.vote(bad, 0)
    assert p.tally().total == 0


@pytest.mark.parametrize("bad", [-1, 3, 1.0, "0", None, True])
def test_a_bad_choice_is_refused_with_what_to_do(bad):
    p = poll()
    with pytest.raises(VoteError, match="pick one of the 3 buttons"):
        p.vote(voter(), bad)
    assert p.tally().total == 0


def test_a_question_needs_two_choices():
    with pytest.raises(ValueError, match="at least two choices"):
        Poll("q", "Yes?", ("yes",))


def test_one_question_open_at_a_time_and_asking_again_keeps_the_votes():
    polls = Polls()
    first = polls.ask("story-0", "Which lane first?", ("A", "B", "level"))
    a = voter()
    first.vote(a, 1)
    second = polls.ask("story-1", "Why?", ("x", "y"))
    assert not first.open and second.open and polls.current() is second
    again = polls.ask("story-0", "Which lane first?", ("A", "B", "level"))
    assert again is first and again.open and not second.open and again.tally().counts == (0, 1, 0)
    assert polls.close("story-0").counts == (0, 1, 0) and polls.current() is None
    assert polls.close("never asked") is None
    assert [t.qid for t in polls.tallies()] == ["story-1", "story-0"]


def test_a_run_keeps_a_bounded_number_of_questions():
    polls = Polls(max_questions=3)
    for i in range(5):
        polls.ask(f"q{i}", "?", ("a", "b"))
    assert [t.qid for t in polls.tallies()] == ["q2", "q3", "q4"]


@pytest.mark.parametrize(
    "counts, truth, said",
    [
        ((18, 6, 3), 0, "18 of 27 predicted *it stays about the same*; the run agrees."),
        (
            (5, 20, 2),
            2,
            "20 of 27 predicted *it falls a little*; the run shows *it collapses towards chance*, which 2 of 27 "
            "predicted.",
        ),
        ((10, 10, 0), 1, "10 of 20 predicted *it falls a little*; the run agrees."),  # a tie: the run sides with one
        ((0, 0, 0), 0, "Nobody in the class voted on this question."),
    ],
)
def test_the_reveal_sentence_is_true_for_the_tally(counts, truth, said):
    p = poll()
    for choice, n in enumerate(counts):
        for _ in range(n):
            p.vote(voter(), choice)
    assert p.tally().against(truth) == said


def test_the_tally_as_csv_names_no_voter():
    polls = Polls()
    p = polls.ask("exercise-small", "Does BN help at batch 2?", ("yes", "no"))
    ids = [voter() for _ in range(3)]
    for i, v in enumerate(ids):
        p.vote(v, i % 2)
    text = tallies_csv(polls.tallies())
    rows = list(csv.DictReader(io.StringIO(text)))
    assert [(r["choice"], r["votes"], r["share"], r["open"]) for r in rows] == [
        ("yes", "2", "0.6667", "yes"),
        ("no", "1", "0.3333", "yes"),
    ]
    assert not any(v in text for v in ids)


class Idle:
    status = "idle"

    def stop(self, timeout=1.0):
        pass


def test_the_registry_holds_a_run_s_polls_and_drops_them_with_it():
    clock = [0.0]
    r = Registry(grace_s=10, clock=lambda: clock[0])
    key = r.add(Idle())
    watch = r.watch_id(key)
    polls = r.polls(key)
    assert polls is not None and r.watched_polls(watch) is polls
    assert r.watched_polls(key) is None and r.polls(watch) is None  # each id finds only its own door
    polls.ask("q", "?", ("a", "b")).vote(voter(), 0)
    clock[0] = 11.0
    assert r.reap() == [key]
    assert r.polls(key) is None and r.watched_polls(watch) is None
