"""The class's predictions: a ``Poll`` per question the teacher asks, votes keyed by a voter id, and the tally.

A student's browser keeps a random voter id (ui/vote.py); it votes once per question and may change its vote
until the teacher runs or reveals the question, which closes it. A changed vote replaces the old one, so each
voter counts once. A question holds at most ``cap`` voters. The tally has counts and shares per choice, no ids.
Held by the registry next to the run it belongs to, in memory only: the polls go when the run goes. Thread-safe;
no Streamlit here.
"""

import csv
import io
import re
import threading
from dataclasses import dataclass

VOTER_CAP = 1000  # voters per question: a lecture hall, with room to spare
MAX_QUESTIONS = 64  # questions kept per run (the oldest closed one goes first)
VOTER_ID = re.compile(r"[A-Za-z0-9_-]{8,64}")  # what ui/vote.py draws: secrets.token_urlsafe, url-safe and short


class VoteError(ValueError):
    """A vote that cannot be counted; the message says why and what to do."""


@dataclass(frozen=True)
class Tally:
    qid: str
    question: str
    choices: tuple[str, ...]
    counts: tuple[int, ...]
    open: bool

    @property
    def total(self) -> int:
        return sum(self.counts)

    def share(self, i: int) -> float:
        """The share of the votes for choice ``i`` (0 when nobody voted)."""
        return self.counts[i] / self.total if self.total else 0.0

    def against(self, truth: int) -> str:
        """One sentence: the class's prediction beside the answer the run measured (choice ``truth``)."""
        if self.total == 0:
            return "Nobody in the class voted on this question."
        n, total, right = self.counts[truth], self.total, self.choices[truth]
        top = max(range(len(self.counts)), key=lambda i: (self.counts[i], i == truth))
        if top == truth:
            return f"{n} of {total} predicted *{right}*; the run agrees."
        return (
            f"{self.counts[top]} of {total} predicted *{self.choices[top]}*; the run shows *{right}*, which {n} of "
            f"{total} predicted."
        )


class Poll:
    """One question to the class: its choices, open until closed, one vote per voter id."""

    def __init__(self, qid: str, question: str, choices, cap: int = VOTER_CAP):
        choices = tuple(str(c) for c in choices)
        if len(choices) < 2:
            raise ValueError(f"A question needs at least two choices, not {len(choices)}.")
        self.qid, self.question, self.choices, self.cap = qid, question, choices, cap
        self._lock = threading.Lock()
        self._votes: dict[str, int] = {}  # voter id -> the index of the choice
        self._open = True

    @property
    def open(self) -> bool:
        with self._lock:
            return self._open

    def vote(self, voter: str, choice: int) -> None:
        """Count ``voter``'s vote for choice ``choice`` (its index), replacing the voter's earlier vote."""
        if not isinstance(voter, str) or not VOTER_ID.fullmatch(voter):
            raise VoteError(
                "This browser's voter id is not valid (8 to 64 letters, digits, - or _). Reload the page to get a "
                "new one, then vote again."
            )
        if isinstance(choice, bool) or not isinstance(choice, int) or not 0 <= choice < len(self.choices):
            raise VoteError(
                f"There is no choice {choice!r} for this question: pick one of the {len(self.choices)} buttons."
            )
        with self._lock:
            if not self._open:
                raise VoteError("The teacher has closed this question: votes are no longer counted.")
            if voter not in self._votes and len(self._votes) >= self.cap:
                raise VoteError(f"This question already has {self.cap:,} votes, its limit: yours was not counted.")
            self._votes[voter] = choice

    def vote_of(self, voter: str) -> int | None:
        """The choice ``voter`` voted for, or None."""
        with self._lock:
            return self._votes.get(voter)

    def close(self) -> None:
        with self._lock:
            self._open = False

    def reopen(self) -> None:
        """Open again (the teacher asks the same question again): the votes so far are kept."""
        with self._lock:
            self._open = True

    def tally(self) -> Tally:
        with self._lock:
            counts = [0] * len(self.choices)
            for c in self._votes.values():
                counts[c] += 1
            return Tally(self.qid, self.question, self.choices, tuple(counts), self._open)


class Polls:
    """A run's questions, in the order asked; at most one open at a time (the one the watch pages show)."""

    def __init__(self, cap: int = VOTER_CAP, max_questions: int = MAX_QUESTIONS):
        self.cap, self.max_questions = cap, max_questions
        self._lock = threading.Lock()
        self._polls: dict[str, Poll] = {}

    def ask(self, qid: str, question: str, choices) -> Poll:
        """Open question ``qid`` (a new poll, or the same question asked again: its votes kept, open again) and
        close any other open one."""
        with self._lock:
            poll = self._polls.pop(qid, None)
            if poll is None or poll.question != question or poll.choices != tuple(str(c) for c in choices):
                poll = Poll(qid, question, choices, self.cap)
            else:
                poll.reopen()
            for other in self._polls.values():
                other.close()
            self._polls[qid] = poll  # last in the dict: the newest
            while len(self._polls) > self.max_questions:
                del self._polls[next(iter(self._polls))]
            return poll

    def get(self, qid: str) -> Poll | None:
        with self._lock:
            return self._polls.get(qid)

    def current(self) -> Poll | None:
        """The open question, or None."""
        with self._lock:
            return next((p for p in reversed(self._polls.values()) if p.open), None)

    def close(self, qid: str) -> Tally | None:
        """Close question ``qid`` (when the teacher runs or reveals it); its tally, or None if it was never asked."""
        poll = self.get(qid)
        if poll is None:
            return None
        poll.close()
        return poll.tally()

    def tallies(self) -> list[Tally]:
        with self._lock:
            polls = list(self._polls.values())
        return [p.tally() for p in polls]


def tallies_csv(tallies: list[Tally]) -> str:
    """The class's predictions as CSV text, one row per choice: question_id, question, choice, votes, share, open.

    ``share`` is the choice's part of that question's votes (0 to 1); no voter is named."""
    buf = io.StringIO()
    w = csv.writer(buf)
    w.writerow(["question_id", "question", "choice", "votes", "share", "open"])
    for t in tallies:
        for i, choice in enumerate(t.choices):
            w.writerow([t.qid, t.question, choice, t.counts[i], f"{t.share(i):.4f}", "yes" if t.open else "no"])
    return buf.getvalue()
