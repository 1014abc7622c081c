"""A study's function in a child process (bnviz.child_run): its result, its progress, its error, Stop."""

import multiprocessing
import os
import time

import pytest

from bnviz.child_run import in_child


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
