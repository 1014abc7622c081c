"""Imported first by the forkserver (its preload): a forkserver tied to its starter dies with it.

A command-line run (``bnviz train --devices K``) starts its forkserver from its main thread and marks it tied
(``processes.warm_up(tied=True)``). Here, in the new forkserver, before it spends seconds importing torch, the
kernel is asked to SIGKILL it when that starter ends (``processes.die_with_parent``): a ``kill -9`` of the
command leaves no forkserver behind, even one still importing. Its children (ranks) ask the same of it, and
multiprocessing's resource tracker ends when the last of them has closed its pipe.

The dashboard's forkserver is never tied: it may be started from a Streamlit script thread, which ends long
before the server (the kernel's signal follows the thread that started the process); it ends as
multiprocessing's own forkserver does, when its pipe from the server closes.
"""

from bnviz.live.processes import die_with_parent
from bnviz.machine import env

starter = env.take_forkserver_tied()
if starter is not None:
    die_with_parent(starter)
