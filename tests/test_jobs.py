"""Job: a study in a background thread, with progress, result, error, done, wait and stop."""

import threading
import time

from conftest import until

from bnviz.live.jobs import Job


def job_threads(name):
    return [t for t in threading.enumerate() if t.name == f"bnviz-job-{name}" and t.is_alive()]


def stepped(steps, gate, progress=None, should_stop=lambda: False):
    """A study of ``steps`` steps, each waiting for ``gate`` to let it through; the steps it did."""
    done = 0
    for i in range(steps):
        if should_stop():
            break
        assert gate.acquire(timeout=30), "the test never let this step through"
        done += 1
        progress((i + 1) / steps)
    return done


def test_progress_then_result():
    gate = threading.Semaphore(0)
    job = Job(stepped, 4, gate, name="progress")
    assert job.progress == 0.0 and not job.done and job.result is None and job.error is None
    assert not job.wait(timeout=0.05)  # still waiting at its first step
    gate.release()
    assert until(lambda: job.progress == 0.25)
    gate.release(2)
    assert until(lambda: job.progress == 0.75)
    assert not job.done and job.result is None
    gate.release()
    assert job.wait(timeout=30)
    assert job.done and job.result == 4 and job.error is None and job.progress == 1.0
    assert not job_threads("progress")  # wait() returned with the thread gone


def test_an_error_is_kept_as_a_message_not_raised():
    def broken(progress, should_stop):
        progress(0.5)
        raise ValueError("This network has no BN layers")

    job = Job(broken, name="broken")
    assert job.wait(timeout=30)
    assert job.done and job.error == "ValueError: This network has no BN layers"
    assert job.result is None and job.progress == 0.5  # as far as it got
    assert isinstance(job.future.exception(), ValueError)


def test_stop_asks_the_study_to_stop_and_waits_for_it():
    gate = threading.Semaphore(0)
    job = Job(stepped, 100, gate, name="stopped")
    gate.release(3)
    assert until(lambda: job.progress == 0.03)
    stopping = threading.Thread(target=lambda: job.stop(timeout=30))
    stopping.start()
    gate.release()  # the step in progress finishes; should_stop() is then true
    stopping.join(30)
    assert job.done and job.error is None
    assert job.result == 4  # what it had done when it stopped: a partial result, not an error
    assert not job_threads("stopped")


def test_stop_without_waiting_returns_at_once():
    gate = threading.Semaphore(0)
    job = Job(stepped, 10, gate, name="no-wait")
    assert job.stop(timeout=0) is False  # the study is blocked in a step: not done yet
    assert not job.done
    gate.release()
    assert job.wait(timeout=30) and job.result == 1
    assert job.stop() is True  # stopping a finished job is harmless


def test_arguments_reach_the_study():
    def study(a, b, progress, should_stop, scale=1):
        return (a + b) * scale, should_stop()

    job = Job(study, 1, 2, name="args", scale=10)
    assert job.wait(timeout=30) and job.result == (30, False)
    assert job.name == "args"


def test_the_thread_is_a_named_daemon():
    release = threading.Event()
    job = Job(lambda progress, should_stop: release.wait(30), name="daemon")
    (thread,) = job_threads("daemon")
    assert thread.daemon  # a study running when the server exits does not hold the exit up
    release.set()
    assert job.wait(timeout=30) and job.result is True


def test_a_stopped_job_says_so_and_a_finished_one_does_not():
    def study(progress, should_stop):
        while not should_stop():
            time.sleep(0.01)
        return "partial"

    job = Job(study, name="stoppable")
    assert not job.stopped
    assert job.stop(timeout=10) and job.stopped and job.result == "partial"
    plain = Job(lambda progress, should_stop: 1, name="plain")
    assert plain.wait(10) and not plain.stopped
