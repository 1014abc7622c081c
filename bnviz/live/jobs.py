"""A study running in the background: its progress, its result or its error, and a way to stop it.

The outcome is a ``concurrent.futures.Future`` that the job's thread settles. The thread is a daemon, not a
ThreadPoolExecutor's worker: a study still running when the server exits must not hold the exit up.
"""

import concurrent.futures
import threading


class Job:
    def __init__(self, fn, *args, name="job", **kwargs):
        """fn(*args, progress=callable(fraction), should_stop=callable() -> bool, **kwargs) -> result."""
        self.name, self.progress = name, 0.0
        self.future = concurrent.futures.Future()
        self._stop = threading.Event()
        self._thread = threading.Thread(
            target=self._run, args=(fn, args, kwargs), name=f"bnviz-job-{name}", daemon=True
        )
        self._thread.start()

    def _run(self, fn, args, kwargs):
        self.future.set_running_or_notify_cancel()
        try:
            result = fn(*args, progress=self._report, should_stop=self._stop.is_set, **kwargs)
        except BaseException as e:  # lands in the job's status, shown as a message
            self.future.set_exception(e)
        else:
            self.progress = 1.0
            self.future.set_result(result)

    def _report(self, fraction):
        self.progress = float(fraction)

    @property
    def done(self):
        return self.future.done()

    @property
    def stopped(self):
        """Stop was asked for: a result is then what the study had finished before it stopped."""
        return self._stop.is_set()

    @property
    def result(self):
        """What fn returned; None while it runs, or if it raised."""
        return self.future.result() if self.done and self.future.exception() is None else None

    @property
    def error(self):
        """'ValueError: ...' if fn raised, else None."""
        e = self.future.exception() if self.done else None
        return None if e is None else f"{type(e).__name__}: {e}"

    def wait(self, timeout=None):
        """Block until the job is done (at most timeout seconds); True if it is."""
        concurrent.futures.wait([self.future], timeout)
        if self.done:
            self._thread.join()  # it settled the future as its last act: gone in an instant
        return self.done

    def stop(self, timeout=1.0):
        """Ask fn to stop (its should_stop() turns True) and wait for it; True if it is done."""
        self._stop.set()
        return self.wait(timeout)
