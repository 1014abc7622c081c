"""A study running in the background: its progress, its result or its error, and a way to stop it."""
import threading


class Job:
    def __init__(self, fn, *args, name="job", **kwargs):
        """fn(*args, progress=callable(fraction), should_stop=callable() -> bool, **kwargs) -> result."""
        self.name, self.progress, self.result, self.error = name, 0.0, None, None
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, args=(fn, args, kwargs), name=f"bnviz-job-{name}",
                                        daemon=True)
        self._thread.start()

    def _run(self, fn, args, kwargs):
        try:
            self.result = fn(*args, progress=self._report, should_stop=self._stop.is_set, **kwargs)
            self.progress = 1.0
        except Exception as e:  # lands in the job's status, shown as a message
            self.error = f"{type(e).__name__}: {e}"

    def _report(self, fraction):
        self.progress = float(fraction)

    @property
    def done(self):
        return not self._thread.is_alive()

    def stop(self, timeout=1.0):
        self._stop.set()
        self._thread.join(timeout)
        return self.done

    def wait(self, timeout=None):
        self._thread.join(timeout)
        return self.done
