"""A study's function in a child process (bnviz.live.child_run): its result, its progress, its error, Stop."""

import multiprocessing
import os
import time

import pytest

from bnviz.live.child_run import in_child


def counting(n, *, progress):
    for i in range(n):
        progress((i + 1) / n)
    return {"pid": os.getpid(), "n": n}


def failing(*, progress):
    raise ValueError("a study's own error")


def sleeping(*, progress):
    progress(0.5)
    time.sleep(60)


def test_it_runs_in_another_process_and_brings_back_result_and_progress():
    seen = []
    result = in_child(counting, 4, progress=seen.append)
    assert result["n"] == 4 and result["pid"] != os.getpid()
    assert seen == [0.25, 0.5, 0.75, 1.0]


def test_its_error_is_raised_here():
    with pytest.raises(ValueError, match="a study's own error"):
        in_child(failing)


def test_stop_ends_the_child_at_once():
    seen, asked = [], time.monotonic() + 5.0
    result = in_child(sleeping, progress=seen.append, should_stop=lambda: bool(seen) or time.monotonic() > asked)
    assert result is None and seen == [0.5]
    assert not [p for p in multiprocessing.active_children() if p.name.endswith("study")]  # none left behind


def own_niceness(*, progress):
    return os.getpriority(os.PRIO_PROCESS, 0)


@pytest.mark.parametrize("asked, lowered", [(None, 10), ("0", 0), ("3", 3), ("25", 10)])
def test_a_study_runs_below_the_page_in_cpu_priority(monkeypatch, asked, lowered):
    # $BNVIZ_CHILD_NICE is read here, in the parent (the forkserver keeps the environment it started with);
    # a value out of 0-19 falls back to 10
    if asked is None:
        monkeypatch.delenv("BNVIZ_CHILD_NICE", raising=False)
    else:
        monkeypatch.setenv("BNVIZ_CHILD_NICE", asked)
    here = os.getpriority(os.PRIO_PROCESS, 0)
    assert in_child(own_niceness) == min(19, here + lowered)
