"""Run a study's function in a child process, as if it ran here: progress comes back, Stop ends it.

A study that trains in the web server's process takes the GIL from every page (and torch's threads from the
live lanes): the live experiments moved to child processes for that reason (experiment_process.py). A study
does the same through ``in_child``: the function runs in a child from the same forkserver, with one torch
thread; its progress comes back over a pipe; Stop terminates the child; its result comes back pickled.

    job = Job(in_child, run, exercise, data, name="exercise")   # run(exercise, data, progress=, should_stop=)
"""

import time

import torch

from bnviz.live.processes import exit_words, portable, start
from bnviz.machine import device as devices
from bnviz.machine import env

POLL_S = 0.25  # how often the parent looks at Stop and at the child's progress


def _child(conn, fn, args, kwargs, threads, nice=0):
    devices.yield_to_the_page(nice)  # a study, like an experiment, runs after the page when the cores are short
    torch.set_num_threads(threads)
    env.set_threads_variable(threads)
    try:
        result = fn(*args, progress=lambda f: conn.send(("progress", float(f))), **kwargs)
        conn.send(("result", result))
    except BaseException as e:  # noqa: BLE001  (sent to the parent, raised there)
        conn.send(("error", portable(e)))
    finally:
        conn.close()


def in_child(fn, *args, progress=None, should_stop=lambda: False, name="study", **kwargs):
    """``fn(*args, progress=..., **kwargs)`` in a child process; its result, or what it raised.

    A Stop (``should_stop()`` turning true) ends the child at once and returns None: the study's partial
    results die with it, so a stopped study shows nothing rather than half an answer.
    """
    threads = max(1, devices.choose_threads(True))
    proc, here = start(_child, fn, args, kwargs, threads, env.child_nice(), name=name)
    try:
        while True:
            if should_stop():
                return None
            if here.poll(POLL_S):
                try:
                    kind, value = here.recv()
                except EOFError:
                    proc.join(1.0)
                    raise RuntimeError(
                        f"the study's process ended unexpectedly ({exit_words(proc.exitcode)})"
                    ) from None
                if kind == "progress":
                    if progress:
                        progress(value)
                elif kind == "result":
                    return value
                else:
                    raise value
            elif not proc.is_alive():
                time.sleep(POLL_S)  # a last message may still be in the pipe
                if not here.poll():
                    raise RuntimeError(f"the study's process ended unexpectedly ({exit_words(proc.exitcode)})")
    finally:
        if proc.is_alive():
            proc.terminate()
        proc.join(2.0)
        here.close()
