"""An experiment over time: the engine's worker thread (``engine``), its frozen ``snapshot``, the tables
(``history``) and the file they are saved in, replay, the experiment in a child process, the server-wide
registry and jobs. May import ``machine``, ``norms``, ``data``, ``step``."""
